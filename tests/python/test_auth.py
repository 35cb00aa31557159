"""The auth service driven by the official Python client: clients, roles, the conformance
endpoints with Hawk headers (mohawk: hash and ext always sent) and signed URLs."""

import urllib.request

import pytest
import requests
import taskcluster

from test_queue import ROOT_TOKEN, definition, queue, root_url  # noqa: F401  (fixture)


def auth(root_url, creds=None):
    creds = creds or {"clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}
    return taskcluster.Auth({"rootUrl": root_url, "credentials": creds, "maxRetries": 0})


def test_client_scopes_decide_what_it_may_do(root_url):
    root = auth(root_url)
    root.createRole("py-project:*", {"description": "py",
                                     "scopes": ["queue:create-task:lowest:py-prov/<..>"]})
    created = root.createClient("py/limited", {
        "description": "python test client",
        "expires": taskcluster.stringDate(taskcluster.fromNow("1 day")),
        "scopes": ["assume:py-project:allowed", "queue:create-task:project:none",
                   "queue:scheduler-id:-", "auth:current-scopes"],
    })
    assert len(created["accessToken"]) == 44
    assert "queue:create-task:lowest:py-prov/allowed" in created["expandedScopes"]
    creds = {"clientId": "py/limited", "accessToken": created["accessToken"]}
    q = queue(root_url, creds)
    assert q.createTask(taskcluster.slugId(), definition("py-prov/allowed"))["status"]["state"] \
        == "pending"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        q.createTask(taskcluster.slugId(), definition("py-prov/other"))
    assert e.value.status_code == 403
    assert e.value.body["code"] == "InsufficientScopes"

    # temporary credentials made by the Python client are accepted, and no wider than asked
    temp = taskcluster.createTemporaryCredentials(
        "py/limited", created["accessToken"], taskcluster.fromNow("-1 minute"),
        taskcluster.fromNow("10 minutes"), ["queue:scheduler-id:-", "auth:current-scopes"])
    scopes = auth(root_url, temp).currentScopes()["scopes"]
    assert "queue:scheduler-id:-" in scopes
    assert "queue:create-task:project:none" not in scopes

    # root sees what happened, in order
    history = root.getEntityHistory("client", "py/limited")["auditHistory"]
    assert [h["actionType"] for h in history] == ["created"]
    assert history[0]["clientId"] == "static/taskcluster/root"


def test_conformance_endpoints_with_python_signing(root_url):
    # the server was started without the test clients; testAuthenticate has its own
    tester = auth(root_url, {"clientId": "tester", "accessToken": "no-secret"})
    got = tester.testAuthenticate({"clientScopes": ["test:*"], "requiredScopes": ["test:x"]})
    assert got["clientId"] == "tester"
    assert "assume:anonymous" in got["scopes"]
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        tester.testAuthenticate({"clientScopes": ["test:a"], "requiredScopes": ["test:b"]})
    assert e.value.status_code == 403
    url = tester.buildSignedUrl("testAuthenticateGet")
    assert "bewit=" in url
    with urllib.request.urlopen(url) as r:
        assert r.status == 200
    assert requests.get(url.replace("bewit=", "x=1&bewit=")).status_code == 401


def test_authorized_scopes_delete_and_oversize_bodies(root_url):
    root = auth(root_url)
    created = root.createClient("py/narrowed", {
        "description": "authorizedScopes",
        "expires": taskcluster.stringDate(taskcluster.fromNow("1 day")),
        "scopes": ["auth:current-scopes", "auth:list-roles", "a:*"],
    })
    creds = {"clientId": "py/narrowed", "accessToken": created["accessToken"]}
    narrowed = taskcluster.Auth({"rootUrl": root_url, "credentials": creds, "maxRetries": 0,
                                 "authorizedScopes": ["auth:current-scopes", "a:b"]})
    scopes = narrowed.currentScopes()["scopes"]
    assert "a:b" in scopes and "a:*" not in scopes and "auth:list-roles" not in scopes
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        narrowed.listRoleIds()
    assert e.value.status_code == 403
    wider = taskcluster.Auth({"rootUrl": root_url, "credentials": creds, "maxRetries": 0,
                              "authorizedScopes": ["auth:current-scopes", "b:c"]})
    with pytest.raises(taskcluster.TaskclusterAuthFailure):
        wider.currentScopes()

    # a deleted client stops authenticating at once; deleting again is fine
    root.deleteClient("py/narrowed")
    root.deleteClient("py/narrowed")
    with pytest.raises(taskcluster.TaskclusterAuthFailure):
        auth(root_url, creds).currentScopes()
    assert [h["actionType"] for h in root.getEntityHistory("client", "py/narrowed")["auditHistory"]] \
        == ["created", "deleted"]

    # bodies over 10 MiB are refused before anything else runs
    r = requests.put(f"{root_url}/api/auth/v1/clients/py%2Fbig", data=b"x" * (11 * 1024 * 1024),
                     headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        root.client("py/big")
    assert e.value.status_code == 404
