"""The hooks service driven by the official Python client: a hook (with a `/` in its id)
defined, triggered by API and by token, its fires listed, removed."""

import pytest
import taskcluster

from test_queue import ROOT_TOKEN, root_url  # noqa: F401  (fixture)


def options(root_url, credentials=True):
    opts = {"rootUrl": root_url, "maxRetries": 0}
    if credentials:
        opts["credentials"] = {"clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}
    return opts


def test_hook_defined_triggered_listed_and_removed(root_url):
    hooks = taskcluster.Hooks(options(root_url))
    auth = taskcluster.Auth(options(root_url))
    queue = taskcluster.Queue(options(root_url))
    group, hook_id = "py-hooks", "release/nightly"
    task_queue = f"py-prov/hooks-{taskcluster.slugId().lower()[:8].replace('_', 'x').replace('-', 'x')}"
    auth.createRole(f"hook-id:{group}/{hook_id}", {
        "description": "py hook",
        "scopes": [f"queue:create-task:lowest:{task_queue}",
                   "queue:create-task:project:none", "queue:scheduler-id:-"],
    })
    definition = {
        "metadata": {"name": "py", "description": "py hook", "owner": "py@example.com",
                     "emailOnError": False},
        "task": {
            "taskQueueId": task_queue,
            "payload": {"revision": "${payload.revision}"},
            "metadata": {"name": "build ${payload.revision}", "description": "d",
                         "owner": "py@example.com", "source": "https://example.com/py"},
        },
        "triggerSchema": {"type": "object", "required": ["revision"],
                          "properties": {"revision": {"type": "string"}}},
    }
    created = hooks.createHook(group, hook_id, definition)
    assert created["hookId"] == hook_id
    assert created["metadata"]["emailOnError"] is False
    assert hooks.hook(group, hook_id)["task"] == definition["task"]

    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        hooks.triggerHook(group, hook_id, {})
    assert e.value.status_code == 400
    fired = hooks.triggerHook(group, hook_id, {"revision": "abc123"})
    task = queue.task(fired["taskId"])
    assert task["payload"] == {"revision": "abc123"}
    assert task["metadata"]["name"] == "build abc123"

    token = hooks.getTriggerToken(group, hook_id)["token"]
    anonymous = taskcluster.Hooks(options(root_url, credentials=False))
    by_token = anonymous.triggerHookWithToken(group, hook_id, token, {"revision": "def456"})
    assert queue.task(by_token["taskId"])["payload"] == {"revision": "def456"}

    fires = hooks.listLastFires(group, hook_id)["lastFires"]
    assert [f["firedBy"] for f in fires] == ["triggerHookWithToken", "triggerHook"]
    assert [f["taskId"] for f in fires] == [by_token["taskId"], fired["taskId"]]
    assert all(f["result"] == "success" and f["taskState"] == "pending" for f in fires)

    hooks.removeHook(group, hook_id)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        hooks.hook(group, hook_id)
    assert e.value.status_code == 404
