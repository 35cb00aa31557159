//! Task routes become notifications (reference/notify.md §1): one durable queue
//! `queue/<broker user>/<name>` (`serve --notify-queue`,
//! default `taskledger-notify`) bound to the queue's task exchanges with upstream's
//! patterns (`route.notify.#.on-<event>.#`); for each message, every CC'd route of the form
//! `notify.<type>.<address>.on-<event>` whose event fits the task's state is sent through the
//! notify engine, so the denylist, the duplicate check and the email rate apply (a denylisted
//! destination is dropped silently, as upstream's).
//!
//! Emails and Pulse messages are sent; Matrix rooms and Slack channels are passed over (this
//! server has no client for either). A task resolved `exception` for a reason in
//! `IGNORED_REASONS` notifies nobody. Runs only while this node writes the notify partition.

use crate::queue::json::TaskJson;
use crate::AppState;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::envelope::Actor;
use taskledger_core::ids::Slug;
use taskledger_core::log::QUEUE_TOPIC;
use taskledger_core::notify::{
    Channel, Email, Link, NotifyCommand, NotifyError, Route, Template, MAX_ROUTING_KEY_BYTES,
};
use taskledger_projections::single::ServiceError;

/// The routes' first segment (upstream's `routePrefix`).
const ROUTE_PREFIX: &str = "notify";

/// Reasons of an `exception` that notify nobody (upstream's `ignoreTaskReasonResolved`).
const IGNORED_REASONS: [&str; 2] = ["canceled", "deadline-exceeded"];

/// The queue's exchanges and the events whose routes each one's messages may fire.
const BINDINGS: [(&str, &[&str]); 6] = [
    ("task-defined", &["defined", "transition"]),
    ("task-pending", &["pending", "transition"]),
    ("task-running", &["running", "transition"]),
    (
        "task-completed",
        &["completed", "any", "resolved", "transition"],
    ),
    ("task-failed", &["failed", "any", "resolved", "transition"]),
    (
        "task-exception",
        &["exception", "any", "resolved", "transition"],
    ),
];

const PREFETCH: u16 = 16;

/// Listens on the broker at `url` (reconnecting after a failure) while this node writes the
/// notify partition.
pub async fn run_listener(st: Arc<AppState>, url: String, name: String) {
    let queue = format!("queue/{}/{name}", crate::hooks::broker_user(&url));
    let mut tries: HashMap<String, u32> = HashMap::new();
    loop {
        let mut pause = Duration::from_secs(1);
        if st.notify.role().is_writer() {
            match listen(&st, &url, &queue, &mut tries).await {
                Ok(again) => pause = again,
                Err(e) => tracing::warn!(error = %e, "notify listener: reconnecting to Pulse"),
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// How often a message that could not be handled is handed back before it is dropped.
const MAX_TRIES: u32 = 5;

/// One connection's life: bind, then consume until the connection fails or this node stops
/// writing the notify partition.
/// Ends with the pause before the next session: a second, or longer after a message was
/// handed back (a second more for each time it was).
async fn listen(
    st: &Arc<AppState>,
    url: &str,
    queue: &str,
    tries: &mut HashMap<String, u32>,
) -> Result<Duration, lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    for (name, events) in BINDINGS {
        let exchange = format!("exchange/taskcluster-queue/v1/{name}");
        // as the bridge declares it, so whichever comes first makes it
        ch.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        for event in events {
            let pattern = format!("route.{ROUTE_PREFIX}.#.on-{event}.#");
            ch.queue_bind(
                queue.into(),
                exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
    }
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut deliveries = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(%queue, "notify listener: consuming task messages");
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        if !st.notify.role().is_writer() {
            // another node writes now: leave the message to it
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = delivery.nack(requeue).await;
            return Ok(Duration::from_secs(1));
        }
        // the bridge's messages carry their event's id; a message without one is its bytes
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| String::from_utf8_lossy(&delivery.data).into_owned());
        let routes = cc_routes(delivery.properties.headers().as_ref());
        let handled = match serde_json::from_slice::<Value>(&delivery.data) {
            Ok(body) => notify_routes(st, &body, &routes).await,
            Err(e) => {
                tracing::debug!(error = %e, "notify listener: a body that is not JSON");
                Handled::Done
            }
        };
        let n = match handled {
            Handled::Done => 0,
            Handled::Again => tries.get(&id).copied().unwrap_or(0) + 1,
        };
        if n == 0 || n >= MAX_TRIES {
            if n > 0 {
                tracing::error!(tries = n, "notify listener: a task message could not be handled; its notifications are dropped");
            }
            tries.remove(&id);
            let _ = delivery.ack(BasicAckOptions::default()).await;
            continue;
        }
        // the notify or queue projection could not answer now: the message goes back to the
        // queue (its routes handled before are sent again: duplicates, dropped while still in
        // the window) and this session ends; the next starts a little later each time
        if tries.len() >= 1_000 {
            tries.clear();
        }
        tries.insert(id, n);
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        let _ = delivery.nack(requeue).await;
        return Ok(Duration::from_secs(u64::from(n)));
    }
    Ok(Duration::from_secs(1))
}

/// The routes a message was CC'd to (`route.<route>`), without the `route.`.
fn cc_routes(headers: Option<&FieldTable>) -> Vec<String> {
    let Some(AMQPValue::FieldArray(cc)) = headers.and_then(|h| h.inner().get("CC")) else {
        return vec![];
    };
    cc.as_slice()
        .iter()
        .filter_map(|v| {
            if let AMQPValue::LongString(s) = v {
                Some(s.to_string())
            } else {
                None
            }
        })
        .filter_map(|r| r.strip_prefix("route.").map(str::to_string))
        .collect()
}

/// The notifications one task message's routes ask for, given the task's state.
pub(crate) fn fired_routes(status: &Value, routes: &[String]) -> Vec<Route> {
    let state = status["state"].as_str().unwrap_or("");
    if state == "exception" {
        let reason = status["runs"]
            .as_array()
            .and_then(|runs| runs.last())
            .and_then(|run| run["reasonResolved"].as_str());
        if reason.is_some_and(|r| IGNORED_REASONS.contains(&r)) {
            return vec![];
        }
    }
    routes
        .iter()
        .filter_map(|r| Route::parse(ROUTE_PREFIX, r))
        .filter(|r| r.fires(state))
        .collect()
}

/// What became of a message.
enum Handled {
    /// Notified, or nothing to notify: acknowledged.
    Done,
    /// A failure that may pass (the notify writer or a projection unavailable): handed back.
    Again,
}

async fn notify_routes(st: &AppState, body: &Value, routes: &[String]) -> Handled {
    let status = &body["status"];
    let fired = fired_routes(status, routes);
    if fired.is_empty() {
        return Handled::Done;
    }
    let Some(task_id) = status["taskId"]
        .as_str()
        .and_then(|t| t.parse::<Slug>().ok())
    else {
        return Handled::Done;
    };
    let mut task = st.engine.view().task(&task_id);
    if matches!(task, Ok(None)) {
        // the bridge may publish a task's event a moment before this node's queue
        // projection holds it (a follower, or a writer between its append and its fold)
        crate::follow_to_end(st, QUEUE_TOPIC, 0, st.engine.role()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        task = st.engine.view().task(&task_id);
    }
    let task = match task {
        Ok(Some(task)) => task,
        // expired since: nothing to tell about
        Ok(None) => return Handled::Done,
        Err(e) => {
            tracing::warn!(error = %e, "notify listener: reading a task");
            return Handled::Again;
        }
    };
    let task = serde_json::to_value(TaskJson::of(&task)).unwrap_or(Value::Null);
    let task_id = task_id.text();
    for route in fired {
        let cmd = match route.channel {
            Channel::Email if !crate::hooks::is_email(&route.address) => {
                tracing::debug!("notify listener: a route's email address is none");
                continue;
            }
            Channel::Email => NotifyCommand::Email(task_email(
                &st.public_url,
                task_id.as_str(),
                &task,
                status,
                route.address,
            )),
            Channel::Pulse if route.address.len() > MAX_ROUTING_KEY_BYTES => {
                tracing::debug!("notify listener: a route's Pulse routing key is too long");
                continue;
            }
            Channel::Pulse => NotifyCommand::Pulse {
                routing_key: route.address,
                message: status.to_string(),
            },
            Channel::MatrixRoom | Channel::SlackChannel => {
                tracing::debug!(
                    kind = route.channel.as_str(),
                    "notify listener: no client for this kind of route"
                );
                continue;
            }
        };
        let actor = Actor {
            client_id: "static/taskcluster/notify".into(),
            request_id: Some(uuid::Uuid::new_v4()),
        };
        match st.notify.execute(actor, cmd).await {
            Ok(_) | Err(ServiceError::Domain(NotifyError::Denylisted(_))) => {}
            // too large for the log: no retry mends it
            Err(ServiceError::TooLarge(e)) => {
                tracing::warn!(error = %e, "notify listener: a route's notification is too large");
            }
            // the routes before this one come again with the message: duplicates, dropped
            Err(e @ (ServiceError::Unavailable(_) | ServiceError::Store(_))) => {
                tracing::warn!(error = %e, "notify listener: a route's notification failed; the message is handed back");
                return Handled::Again;
            }
        }
    }
    Handled::Done
}

/// A JSON-e override from `extra.notify.*`; an error becomes the text upstream sends.
fn rendered(template: &Value, context: &Value) -> Value {
    match json_e::render(template, context) {
        Ok(v) => v,
        Err(e) => Value::String(format!("Error parsing custom message: {e}")),
    }
}

fn as_text(v: Value) -> String {
    if let Value::String(s) = v {
        s
    } else {
        v.to_string()
    }
}

/// The email a task route sends (upstream's wording, in markdown), with the task's
/// `extra.notify.email` overrides (`subject`, `content`, `link`, `template`).
pub(crate) fn task_email(
    root_url: &str,
    task_id: &str,
    task: &Value,
    status: &Value,
    address: String,
) -> Email {
    let state = status["state"].as_str().unwrap_or("unknown");
    let meta = &task["metadata"];
    let field = |k: &str| meta[k].as_str().unwrap_or("").to_string();
    let group = task["taskGroupId"].as_str().unwrap_or("");
    let href = format!("{root_url}/tasks/{task_id}");
    let runs = status["runs"].as_array().map_or(0, Vec::len);
    let mut subject = format!("Task {state}: {} - {task_id}", field("name"));
    let mut content = format!(
        "Task [`{task_id}`]({href}) in task-group [`{group}`]({root_url}/tasks/groups/{group}/tasks) is {state}.\n\n\
         **Status:** {state} (after {runs} run{plural})\n\
         **Name:** {name}\n\
         **Description:** {description}\n\
         **Owner:** {owner}\n\
         **Source:** {source}\n",
        plural = if runs == 1 { "" } else { "s" },
        name = field("name"),
        description = field("description"),
        owner = field("owner"),
        source = field("source"),
    );
    let mut link = Some(Link {
        text: "Inspect Task".into(),
        href,
    });
    let mut template = Template::Simple;
    let overrides = &task["extra"]["notify"]["email"];
    if overrides.is_object() {
        let context = json!({
            "task": task, "status": status, "taskId": task_id, "rootUrl": root_url,
        });
        if let Some(t) = overrides.get("subject") {
            subject = as_text(rendered(t, &context));
        }
        if let Some(t) = overrides.get("content") {
            content = as_text(rendered(t, &context));
        }
        let narrow = json!({ "task": task, "status": status, "rootUrl": root_url });
        if let Some(t) = overrides.get("link") {
            let l = rendered(t, &narrow);
            link = match (l["text"].as_str(), l["href"].as_str()) {
                (Some(text), Some(href)) => Some(Link {
                    text: text.into(),
                    href: href.into(),
                }),
                (None, _) | (_, None) => None,
            };
        }
        if let Some(t) = overrides.get("template") {
            let narrow = json!({ "task": task, "status": status });
            if rendered(t, &narrow).as_str() == Some("fullscreen") {
                template = Template::Fullscreen;
            }
        }
    }
    Email {
        address,
        subject,
        content,
        link,
        reply_to: None,
        template,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fire_by_state_and_ignored_exceptions_fire_none() {
        let routes = vec![
            "index.x.y".to_string(),
            "notify.email.a@example.com.on-failed".to_string(),
            "notify.pulse.k.on-resolved".to_string(),
            "notify.slack-channel.C1.on-completed".to_string(),
        ];
        let failed = json!({"state": "failed", "runs": [{"reasonResolved": "failed"}]});
        let fired: Vec<Channel> = fired_routes(&failed, &routes)
            .into_iter()
            .map(|r| r.channel)
            .collect();
        assert_eq!(fired, vec![Channel::Email, Channel::Pulse]);
        let canceled = json!({"state": "exception", "runs": [{"reasonResolved": "canceled"}]});
        assert!(fired_routes(&canceled, &routes).is_empty());
        let crashed =
            json!({"state": "exception", "runs": [{"reasonResolved": "worker-shutdown"}]});
        assert_eq!(fired_routes(&crashed, &routes).len(), 1);
    }

    #[test]
    fn a_task_email_with_and_without_overrides() {
        let task = json!({
            "taskGroupId": "G",
            "metadata": {"name": "build", "description": "d", "owner": "o@example.com", "source": "https://s"},
            "extra": {},
        });
        let status = json!({"state": "failed", "runs": [{}]});
        let e = task_email("http://tl", "T", &task, &status, "a@example.com".into());
        assert_eq!(e.subject, "Task failed: build - T");
        assert!(
            e.content.contains("[`T`](http://tl/tasks/T)"),
            "{}",
            e.content
        );
        assert!(e.content.contains("(after 1 run)"), "{}", e.content);
        assert_eq!(e.link.unwrap().href, "http://tl/tasks/T");

        let mut custom = task.clone();
        custom["extra"] = json!({"notify": {"email": {
            "subject": "${task.metadata.name} is ${status.state}",
            "content": {"$if": "nope(", "then": "x"},
            "link": null,
            "template": "fullscreen",
        }}});
        let e = task_email("http://tl", "T", &custom, &status, "a@example.com".into());
        assert_eq!(e.subject, "build is failed");
        assert!(
            e.content.starts_with("Error parsing custom message: "),
            "{}",
            e.content
        );
        assert_eq!(e.link, None);
        assert_eq!(e.template, Template::Fullscreen);
    }
}
