"""The secrets service driven by the official Python client."""

import datetime

import pytest
import taskcluster

from test_queue import ROOT_TOKEN, root_url  # noqa: F401  (fixture)


def secrets(root_url):
    creds = {"clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}
    return taskcluster.Secrets({"rootUrl": root_url, "credentials": creds, "maxRetries": 0})


def test_secrets_round_trip_with_pagination(root_url):
    s = secrets(root_url)
    expires = taskcluster.fromNowJSON("1 hour")
    names = [f"project/py/{i}" for i in range(5)]
    for i, name in enumerate(names):
        s.set(name, {"secret": {"i": i, "token": "py-hunter2"}, "expires": expires})
    got = s.get("project/py/3")
    assert got["secret"] == {"i": 3, "token": "py-hunter2"}
    sent = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00"))
    back = datetime.datetime.fromisoformat(got["expires"].replace("Z", "+00:00"))
    assert abs((back - sent).total_seconds()) < 0.001

    listed = []
    s.list(query={"limit": 2}, paginationHandler=lambda page: listed.extend(page["secrets"]))
    assert [n for n in listed if n.startswith("project/py/")] == names

    s.remove("project/py/3")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        s.get("project/py/3")
    assert e.value.status_code == 404
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        s.set("project/py/bad", {"secret": [1, 2], "expires": expires})
    assert e.value.status_code == 400
    assert e.value.body["code"] == "InputValidationError"
