"""The purge-cache service driven by the official Python client."""

import pytest
import taskcluster

from test_queue import ROOT_TOKEN, root_url  # noqa: F401  (fixture)


def purge_cache(root_url):
    creds = {"clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}
    return taskcluster.PurgeCache({"rootUrl": root_url, "credentials": creds, "maxRetries": 0})


def test_purge_requests_round_trip(root_url):
    p = purge_cache(root_url)
    assert p.purgeCache("py-prov/py-wt", {"cacheName": "py-cache"}) is None
    got = p.purgeRequests("py-prov/py-wt")["requests"]
    assert [(r["provisionerId"], r["workerType"], r["cacheName"]) for r in got] == \
        [("py-prov", "py-wt", "py-cache")]
    later = p.purgeRequests("py-prov/py-wt", query={"since": "2100-01-01T00:00:00.000Z"})
    assert later["requests"] == []
    assert any(r["cacheName"] == "py-cache" for r in p.allPurgeRequests()["requests"])
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        p.purgeCache("py-prov/py-wt", {"cacheName": "x", "extra": True})
    assert e.value.status_code == 400
    assert e.value.body["code"] == "InputValidationError"
