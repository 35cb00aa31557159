"""The index service driven by the official Python client."""

import pytest
import taskcluster

from test_queue import ROOT_TOKEN, root_url  # noqa: F401  (fixture)


def index(root_url):
    creds = {"clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}
    return taskcluster.Index({"rootUrl": root_url, "credentials": creds, "maxRetries": 0})


def test_index_insert_find_list_and_delete(root_url):
    ix = index(root_url)
    expires = taskcluster.fromNowJSON("1 hour")
    ids = [taskcluster.slugId() for _ in range(5)]
    for i, task_id in enumerate(ids):
        entry = {"taskId": task_id, "rank": i, "data": {"i": i}, "expires": expires}
        written = ix.insertTask(f"py.builds.b{i}", entry)
        assert written["namespace"] == f"py.builds.b{i}"
    assert ix.findTask("py.builds.b3")["taskId"] == ids[3]

    # a lower rank leaves the entry as it was, and is answered with it
    kept = ix.insertTask("py.builds.b3", {"taskId": ids[0], "rank": 1, "data": {}, "expires": expires})
    assert kept["taskId"] == ids[3]

    listed = []
    ix.listTasks("py.builds", query={"limit": 2},
                 paginationHandler=lambda page: listed.extend(page["tasks"]))
    assert [t["namespace"] for t in listed] == [f"py.builds.b{i}" for i in range(5)]
    namespaces = ix.listNamespaces("py")["namespaces"]
    assert [(n["namespace"], n["name"]) for n in namespaces] == [("py.builds", "builds")]

    ix.deleteTask("py.builds.b3")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        ix.findTask("py.builds.b3")
    assert e.value.status_code == 404
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        ix.insertTask("py.builds.bad", {"taskId": ids[0], "rank": "high", "data": {}, "expires": expires})
    assert e.value.status_code == 400
    assert e.value.body["code"] == "InputValidationError"
