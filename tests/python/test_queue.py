"""The queue driven by the official Python client (`pip install taskcluster`)."""

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest
import requests
import taskcluster

ROOT_TOKEN = "python-test-root-access-token-0123456789abc"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(**extra_env):
    """Runs `taskledger serve` on a free port with a fresh data directory; yields its root URL
    and checks that SIGTERM stops it cleanly."""
    binary = os.environ["TASKLEDGER_BIN"]
    port = free_port()
    data = tempfile.mkdtemp(prefix="taskledger-py-")
    env = dict(os.environ, TASKLEDGER_LISTEN=f"127.0.0.1:{port}", TASKLEDGER_DATA_DIR=data,
               TASKLEDGER_ROOT_ACCESS_TOKEN=ROOT_TOKEN, RUST_LOG="warn", **extra_env)
    proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/queue/v1/ping") as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert time.time() < deadline, "taskledger did not start"
        time.sleep(0.05)
    yield url
    proc.terminate()
    assert proc.wait(timeout=30) == 0, "SIGTERM must stop the server cleanly"


@pytest.fixture(scope="module")
def root_url():
    yield from serve()


def queue(root_url, creds=None):
    creds = creds or {"clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}
    return taskcluster.Queue({"rootUrl": root_url, "credentials": creds, "maxRetries": 0})


def definition(task_queue):
    return {
        "taskQueueId": task_queue,
        "created": taskcluster.stringDate(taskcluster.fromNow("0 seconds")),
        "deadline": taskcluster.stringDate(taskcluster.fromNow("1 hour")),
        "payload": {"command": ["true"]},
        "metadata": {"name": "py", "description": "python client", "owner": "py@example.com",
                     "source": "https://example.com/py"},
    }


def test_task_life_with_task_credentials(root_url):
    q = queue(root_url)
    task_queue = "py-prov/life"
    task_id = taskcluster.slugId()
    status = q.createTask(task_id, definition(task_queue))["status"]
    assert status["state"] == "pending"

    claim = q.claimWork(task_queue, {"workerGroup": "py", "workerId": "w1", "tasks": 1})
    item = claim["tasks"][0]
    assert item["status"]["taskId"] == task_id
    worker = queue(root_url, item["credentials"])
    worker.reclaimTask(task_id, "0")
    art = worker.createArtifact(task_id, "0", "public/out.txt", {
        "storageType": "s3", "contentType": "text/plain",
        "expires": taskcluster.stringDate(taskcluster.fromNow("1 day"))})
    put = requests.put(art["putUrl"], data=b"from python", headers={"Content-Type": "text/plain"})
    assert put.status_code == 200
    done = worker.reportCompleted(task_id, "0")["status"]
    assert done["state"] == "completed"

    content = q.artifact(task_id, "0", "public/out.txt")
    assert requests.get(content["url"]).content == b"from python"
    assert q.listArtifacts(task_id, "0")["artifacts"][0]["name"] == "public/out.txt"


def test_errors_map_to_client_exceptions(root_url):
    q = queue(root_url)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        q.status(taskcluster.slugId())
    assert e.value.status_code == 404

    task_id = taskcluster.slugId()
    d = definition("py-prov/errors")
    q.createTask(task_id, d)
    q.createTask(task_id, d)  # idempotent
    d2 = dict(d, retries=1)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        q.createTask(task_id, d2)
    assert e.value.status_code == 409

    bad = queue(root_url, {"clientId": "static/taskcluster/root", "accessToken": "nope-nope-nope-nope-nope"})
    with pytest.raises(taskcluster.TaskclusterAuthFailure) as e:
        bad.status(task_id)
    assert e.value.status_code == 401


def test_rerun_and_paginated_group_listing(root_url):
    q = queue(root_url)
    group = taskcluster.slugId()
    for _ in range(5):
        d = definition("py-prov/group")
        d["taskGroupId"] = group
        q.createTask(taskcluster.slugId(), d)
    seen = []
    q.listTaskGroup(group, paginationHandler=lambda page: seen.extend(page["tasks"]),
                    query={"limit": 2})
    assert len(seen) == 5


def test_object_artifacts_with_the_upload_and_download_helpers(root_url):
    """What generic-worker and modern tooling do: an `object` artifact uploaded through the
    object service with the client's own helper, read back with its download helper (which
    insists on matching hashes)."""
    from taskcluster import download, upload

    q = queue(root_url)
    task_queue = "py-prov/objects"
    task_id = taskcluster.slugId()
    q.createTask(task_id, definition(task_queue))
    item = q.claimWork(task_queue, {"workerGroup": "py", "workerId": "w2", "tasks": 1})["tasks"][0]
    worker = queue(root_url, item["credentials"])
    for name, data in [("public/inline.txt", b"tiny"), ("public/put.bin", bytes(range(256)) * 400)]:
        expires = taskcluster.fromNow("1 day")
        art = worker.createArtifact(task_id, "0", name, {
            "storageType": "object", "contentType": "application/x-py",
            "expires": taskcluster.stringDate(expires)})
        objects = taskcluster.Object({"rootUrl": root_url, "credentials": art["credentials"]})
        upload.uploadFromBuf(projectId=art["projectId"], name=art["name"],
                             contentType="application/x-py", contentLength=len(data),
                             expires=expires, uploadId=art["uploadId"], data=data,
                             objectService=objects)
        worker.finishArtifact(task_id, "0", name, {"uploadId": art["uploadId"]})
        got, content_type = download.downloadArtifactToBuf(taskId=task_id, runId="0", name=name,
                                                           queueService=q)
        assert got == data
        assert content_type == "application/x-py"
    worker.reportCompleted(task_id, "0")


def test_statuses_claim_task_and_worker_views(root_url):
    q = queue(root_url)
    # a fresh worker type: hex digits, so it never ends in "-" as a cut slugid could
    task_queue = f"py-prov/views-{uuid.uuid4().hex[:8]}"
    ids = [taskcluster.slugId() for _ in range(3)]
    for task_id in ids:
        q.createTask(task_id, definition(task_queue))
    # several ids at once, paged; an unknown id is skipped
    asked = {"taskIds": [ids[0], taskcluster.slugId(), ids[1], ids[2]]}
    statuses = []
    q.statuses(payload=asked, paginationHandler=lambda page: statuses.extend(page["statuses"]),
               query={"limit": 2})
    assert [s["taskId"] for s in statuses] == ids
    assert all(s["status"] == q.status(s["taskId"])["status"] for s in statuses)
    tasks = []
    q.tasks(payload=asked, paginationHandler=lambda page: tasks.extend(page["tasks"]),
            query={"limit": 3})
    assert [t["taskId"] for t in tasks] == ids
    # claimTask, then the worker as the views show it
    claim = q.claimTask(ids[0], "0", {"workerGroup": "pyg", "workerId": "pyw"})
    assert claim["status"]["state"] == "running"
    assert claim["workerId"] == "pyw"
    provisioner, worker_type = task_queue.split("/")
    polled = q.claimWork(task_queue, {"workerGroup": "pyg", "workerId": "pyw", "tasks": 1})
    assert polled["tasks"][0]["status"]["taskId"] == ids[1]
    workers = q.listWorkers(provisioner, worker_type)["workers"]
    assert [(w["workerGroup"], w["workerId"]) for w in workers] == [("pyg", "pyw")]
    assert workers[0]["latestTask"] == {"taskId": ids[1], "runId": 0}
    assert q.getTaskQueue(task_queue)["taskQueueId"] == task_queue
    assert q.pendingTasks(task_queue)["pendingTasks"] == 1


def test_exceptions_retry_and_group_priority(root_url):
    q = queue(root_url)
    task_queue = f"py-prov/exc-{uuid.uuid4().hex[:8]}"
    group = taskcluster.slugId()
    flaky, broken = taskcluster.slugId(), taskcluster.slugId()
    for task_id in (flaky, broken):
        q.createTask(task_id, dict(definition(task_queue), taskGroupId=group, retries=1,
                                   priority="low"))

    # the group's priority moves for both (neither is resolved yet)
    changed = q.changeTaskGroupPriority(group, {"newPriority": "very-high"})
    assert sorted(changed["taskIds"]) == sorted([flaky, broken])
    assert changed["tasksAffected"] == 2
    assert q.status(flaky)["status"]["priority"] == "very-high"

    claimed = q.claimWork(task_queue, {"workerGroup": "pyg", "workerId": "pyw", "tasks": 2})
    assert len(claimed["tasks"]) == 2
    retried = q.reportException(flaky, "0", {"reason": "intermittent-task"})["status"]
    assert [r["state"] for r in retried["runs"]] == ["exception", "pending"]
    assert retried["runs"][1]["reasonCreated"] == "task-retry"
    assert retried["retriesLeft"] == 0
    resolved = q.reportException(broken, "0", {"reason": "resource-unavailable"})["status"]
    assert resolved["state"] == "exception"
    assert len(resolved["runs"]) == 1
    with pytest.raises(taskcluster.exceptions.TaskclusterRestFailure) as conflict:
        q.reportException(broken, "0", {"reason": "internal-error"})
    assert conflict.value.status_code == 409
