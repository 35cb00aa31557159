"""The GitHub integration driven by the official Python client: renderTaskclusterYml shows the
tasks a `.taskcluster.yml` would create for a made-up event, and the builds list answers (and
refuses a repository without its organization) with upstream's shapes."""

import pytest
import taskcluster

from test_queue import ROOT_TOKEN, root_url  # noqa: F401  (fixture)

TASKCLUSTER_YML = """
version: 1
tasks:
  $if: 'tasks_for == "github-pull-request"'
  then:
    - taskId: {$eval: as_slugid("lint")}
      taskQueueId: proj-py/lint
      deadline: {$fromNow: '1 hour'}
      payload: {head: '${event.pull_request.head.ref}'}
      metadata: {name: lint, description: lint, owner: 'py@example.com', source: 'https://example.com'}
"""


def github(root_url):
    creds = {"clientId": "static/taskcluster/root", "accessToken": ROOT_TOKEN}
    return taskcluster.Github({"rootUrl": root_url, "credentials": creds, "maxRetries": 0})


def test_render_taskcluster_yml_for_a_pull_request(root_url):
    g = github(root_url)
    out = g.renderTaskclusterYml({
        "body": TASKCLUSTER_YML, "organization": "acme", "repository": "app",
        "fakeEvent": {"type": "github-pull-request", "action": "opened"}})
    assert len(out["tasks"]) == 1
    task = out["tasks"][0]
    assert task["payload"] == {"head": "feature"}
    assert task["taskGroupId"] == task["taskId"], "a single task is its own group"
    assert task["schedulerId"] == "taskcluster-github"
    assert task["routes"] == ["statuses"]
    assert out["scopes"][0] == "assume:repo:github.com/acme/app:pull-request"

    pushed = g.renderTaskclusterYml({"body": TASKCLUSTER_YML, "fakeEvent": {"type": "github-push"}})
    assert pushed["tasks"] == []

    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        g.renderTaskclusterYml({"body": "version: 1\nnope: 1\n"})
    assert e.value.status_code == 400
    assert e.value.body["code"] == "InputError"


def test_builds_list_and_its_rules(root_url):
    g = github(root_url)
    assert g.builds()["builds"] == []
    with pytest.raises(taskcluster.TaskclusterRestFailure) as e:
        g.builds(query={"repository": "app"})
    assert e.value.status_code == 400
    assert "organization" in e.value.body["message"]
