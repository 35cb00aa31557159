//! The GitHub integration's Pulse messages (reference/github.md §5), on
//! `exchange/taskcluster-github/v1/<exchange>`: each webhook taken (`pull-request`, `push`,
//! `release`, `rerun`), routing key `primary.<organization>.<repository>` (and `.<action>`
//! for pull requests), and `task-group-creation-requested` once a job created its tasks,
//! CC'd to the first task's routes. Every body carries `version: 1`.

use serde_json::{json, Value};
use taskledger_core::github::{details, sanitize, Exchange, GithubEvent, JobOutcome, Webhook};

use super::{bytes, Message};

pub const GITHUB_EXCHANGE_PREFIX: &str = "exchange/taskcluster-github/v1/";
pub const GITHUB_EXCHANGES: &[&str] = &[
    "pull-request",
    "push",
    "release",
    "rerun",
    "task-group-creation-requested",
];

fn webhook_message(w: &Webhook) -> Message {
    // written from a body that parsed as an object, so it reads back
    let body: Value = serde_json::from_str(&w.body).unwrap_or(Value::Null);
    let (organization, repository) = (w.organization(), w.repository());
    let mut m = json!({
        "version": 1,
        "organization": organization,
        "repository": repository,
        "installationId": w.installation_id,
        "eventId": w.event_id,
        "details": details(w, &body),
        "tasks_for": w.tasks_for,
        "body": body,
    });
    let mut routing_key = format!("primary.{organization}.{repository}");
    match w.exchange {
        Exchange::PullRequest => {
            let action = w.action.clone().unwrap_or_default();
            routing_key = format!("{routing_key}.{action}");
            m["action"] = json!(action);
            m["branch"] = json!(w.branch);
        }
        Exchange::Push | Exchange::Release => m["branch"] = json!(w.branch),
        Exchange::Rerun => {
            m["checkRunId"] = json!(w.check_run_id);
            m["checkSuiteId"] = json!(w.check_suite_id);
        }
    }
    Message {
        exchange: format!("{GITHUB_EXCHANGE_PREFIX}{}", w.exchange.as_str()),
        routing_key,
        cc: vec![],
        body: bytes(&m),
    }
}

/// The message for a github event: a webhook taken, or the tasks of a job created.
pub fn github_message(event: &GithubEvent) -> Option<Message> {
    match event {
        GithubEvent::WebhookReceived(w) => Some(webhook_message(w)),
        GithubEvent::JobDone {
            outcome:
                JobOutcome::Created {
                    task_group_id,
                    routes,
                    owner,
                    repo,
                    ..
                },
            ..
        } => {
            let (organization, repository) = (sanitize(owner), sanitize(repo));
            Some(Message {
                exchange: format!("{GITHUB_EXCHANGE_PREFIX}task-group-creation-requested"),
                routing_key: format!("primary.{organization}.{repository}"),
                cc: routes.iter().map(|r| format!("route.{r}")).collect(),
                body: bytes(&json!({
                    "version": 1,
                    "organization": organization,
                    "repository": repository,
                    "taskGroupId": task_group_id.to_string(),
                })),
            })
        }
        GithubEvent::JobDone { .. }
        | GithubEvent::InstallationSet { .. }
        | GithubEvent::BuildCreated(_)
        | GithubEvent::BuildStateChanged { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_core::github::derived_slug;

    fn webhook(exchange: Exchange, event: &str) -> Webhook {
        Webhook {
            event_id: "d-1".into(),
            event: event.into(),
            exchange,
            owner: "acme.co".into(),
            repo: "app".into(),
            action: Some("opened".into()),
            installation_id: 5,
            tasks_for: "github-pull-request".into(),
            branch: Some("feature".into()),
            comment: None,
            check_run_id: Some(1),
            check_suite_id: Some(2),
            body: r#"{"sender":{"login":"me"}}"#.into(),
        }
    }

    #[test]
    fn webhooks_as_upstream_publishes_them() {
        let m = github_message(&GithubEvent::WebhookReceived(webhook(
            Exchange::PullRequest,
            "pull_request",
        )))
        .unwrap();
        assert_eq!(m.exchange, "exchange/taskcluster-github/v1/pull-request");
        assert_eq!(m.routing_key, "primary.acme%co.app.opened");
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body["version"], 1);
        assert_eq!(body["organization"], "acme%co");
        assert_eq!(body["installationId"], 5);
        assert_eq!(body["branch"], "feature");
        assert_eq!(body["body"]["sender"]["login"], "me");
        assert_eq!(body["details"]["event.type"], "pull_request.opened");
        let rerun = github_message(&GithubEvent::WebhookReceived(webhook(
            Exchange::Rerun,
            "check_run",
        )))
        .unwrap();
        assert_eq!(rerun.routing_key, "primary.acme%co.app");
        let body: Value = serde_json::from_slice(&rerun.body).unwrap();
        assert_eq!(
            (body["checkRunId"].clone(), body["checkSuiteId"].clone()),
            (json!(1), json!(2))
        );
    }

    #[test]
    fn a_created_group_is_announced_to_its_first_tasks_routes() {
        let g = derived_slug("d-1", "\0taskGroupId");
        let done = |outcome| GithubEvent::JobDone {
            queued: 1,
            event_id: "d-1".into(),
            outcome,
        };
        let m = github_message(&done(JobOutcome::Created {
            task_group_id: g,
            tasks: 2,
            routes: vec!["statuses".into(), "index.x".into()],
            owner: "acme".into(),
            repo: "app".into(),
        }))
        .unwrap();
        assert_eq!(
            m.exchange,
            "exchange/taskcluster-github/v1/task-group-creation-requested"
        );
        assert_eq!(m.cc, vec!["route.statuses", "route.index.x"]);
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body["taskGroupId"], g.to_string());
        assert!(github_message(&done(JobOutcome::Skipped {
            reason: "none".into()
        }))
        .is_none());
    }
}
