//! The notify service (`/api/notify/v1`, reference/notify.md): emails, Pulse messages and the
//! denylist. Each call is a `NotifyCommand` on the notify partition.
//!
//! - `email` puts the email in the outbox (`EmailQueued`) and answers 200 once that is durable;
//!   the delivery reactor (`workers::mail`) sends it by SMTP or into a directory of `.eml`
//!   files and records the outcome. Duplicates and emails over the rate answer 204.
//! - `pulse` records a `PulseSent`, which the Pulse bridge publishes on
//!   `exchange/taskcluster-notify/v1/notification` (routing key `primary.<routingKey>`).
//! - `matrix` and `slack` are checked (schema, scopes, denylist) and answer 204: this server
//!   has no Matrix or Slack client, which is upstream's answer when Slack is not configured.
//! - Task routes (`notify.<type>.<address>.on-<event>`) become notifications through the
//!   Pulse listener (`listen`), as upstream's.

mod listen;

pub use listen::run_listener;

use crate::error::{ApiError, ErrorCode};
use crate::hawk::{actor, Auth};
use crate::queue::call::*;
use crate::{AppState, Mount};
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use taskledger_core::notify::{
    Address, Channel, Email, Link, NotifyCommand, NotifyError, Template, MAX_ROUTING_KEY_BYTES,
};

type St = State<Arc<AppState>>;

const EMAIL_SCHEMA: &str = "/schemas/notify/v1/email-request.json#";
const PULSE_SCHEMA: &str = "/schemas/notify/v1/pulse-request.json#";
const MATRIX_SCHEMA: &str = "/schemas/notify/v1/matrix-request.json#";
const SLACK_SCHEMA: &str = "/schemas/notify/v1/slack-request.json#";
const ADDRESS_SCHEMA: &str = "/schemas/notify/v1/notification-address.json#";

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        match err {
            NotifyError::Denylisted(m) => ApiError::new(ErrorCode::DenylistedAddress, m),
        }
    }
}

/// Routes under `/api/notify/v1`.
pub fn routes(service: Mount) -> Mount {
    service
        .route("/email", post(email))
        .route("/pulse", post(pulse))
        .route("/matrix", post(matrix))
        .route("/slack", post(slack))
        .route("/denylist/add", post(add_denylist))
        .route("/denylist/delete", delete(delete_denylist))
        .route("/denylist/list", get(list_denylist))
}

/// 200 with the plain text `OK` (upstream's `res.sendStatus(200)`).
fn ok_text() -> Response {
    let mut r = (StatusCode::OK, "OK").into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// 200 `OK` when the command wrote something, 204 when it was dropped.
fn sent_or_dropped(written: usize) -> Response {
    if written == 0 {
        no_content()
    } else {
        ok_text()
    }
}

/// Checks of one request body, gathering every problem as Ajv words it.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<String>,
}

impl<'a> Fields<'a> {
    fn new(obj: &'a Map<String, Value>) -> Fields<'a> {
        Fields {
            obj,
            errors: Vec::new(),
        }
    }

    /// A string at `data/<path>/<key>` of `min..=max` characters (`max` 0: no bound); a
    /// missing one is `None` (the required ones are checked before).
    fn text_in(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        key: &str,
        min: usize,
        max: usize,
    ) -> Option<String> {
        text_field(obj, path, key, min, max, false, &mut self.errors)
    }

    fn text(&mut self, key: &str, min: usize, max: usize) -> Option<String> {
        let obj = self.obj;
        self.text_in(obj, "", key, min, max)
    }

    fn email(&mut self, key: &str) -> Option<String> {
        let t = self.text(key, 0, 0)?;
        if crate::hooks::is_email(&t) {
            Some(t)
        } else {
            self.errors
                .push(format!("data/{key} must match format \"email\""));
            None
        }
    }

    fn one_of(&mut self, key: &str, allowed: &[&str]) -> Option<String> {
        let t = self.text(key, 0, 0)?;
        if allowed.contains(&t.as_str()) {
            Some(t)
        } else {
            self.errors.push(format!(
                "data/{key} must be equal to one of the allowed values"
            ));
            None
        }
    }

    fn kind(&mut self, key: &str, ok: fn(&Value) -> bool, name: &str) {
        if self.obj.get(key).is_some_and(|v| !ok(v)) {
            self.errors.push(format!("data/{key} must be {name}"));
        }
    }

    fn done<T>(self, schema: &str, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(ApiError::validation(schema, &self.errors)),
        }
    }
}

/// `email-request`, its `template` defaulted to `simple`.
fn email_body(body: &Value) -> Result<Email, ApiError> {
    let keys = [
        "address", "subject", "content", "link", "replyTo", "template",
    ];
    let obj = crate::auth::check_keys(
        body,
        EMAIL_SCHEMA,
        &keys,
        &["address", "subject", "content"],
    )?;
    let mut f = Fields::new(&obj);
    let address = f.email("address");
    let subject = f.text("subject", 1, 255);
    let content = f.text("content", 1, 102_400);
    let reply_to = obj.get("replyTo").and_then(|_| f.email("replyTo"));
    let template = match obj.get("template") {
        None => Some(Template::Simple),
        Some(_) => f.one_of("template", &["simple", "fullscreen"]).map(|t| {
            if t == "fullscreen" {
                Template::Fullscreen
            } else {
                Template::Simple
            }
        }),
    };
    let link = match obj.get("link") {
        None => Some(None),
        Some(Value::Object(l)) => {
            for k in l.keys() {
                if !["text", "href"].contains(&k.as_str()) {
                    f.errors.push(format!(
                        "data/link must NOT have additional properties: {}",
                        Value::from(k.as_str())
                    ));
                }
            }
            for k in ["text", "href"] {
                if !l.contains_key(k) {
                    f.errors
                        .push(format!("data/link must have required property '{k}'"));
                }
            }
            let text = f.text_in(l, "link", "text", 1, 40);
            let href = f.text_in(l, "link", "href", 1, 1024);
            if href
                .as_deref()
                .is_some_and(|h| !crate::queue::json::is_uri(h))
            {
                f.errors
                    .push("data/link/href must match format \"uri\"".to_string());
            }
            match (text, href) {
                (Some(text), Some(href)) => Some(Some(Link { text, href })),
                _ => None,
            }
        }
        Some(_) => {
            f.errors.push("data/link must be object".to_string());
            None
        }
    };
    let email = match (address, subject, content, link, template) {
        (Some(address), Some(subject), Some(content), Some(link), Some(template)) => Some(Email {
            address,
            subject,
            content,
            link,
            reply_to,
            template,
        }),
        _ => None,
    };
    f.done(EMAIL_SCHEMA, email)
}

/// What a send call asks for: the scope it needs and the command.
type Asked = (String, NotifyCommand);

/// A send call (`email`, `pulse`, `matrix`, `slack`), as upstream orders its steps: the
/// caller, the query, the body against its schema (`parse`), the scope the body names, then the
/// command; 200 `OK` when it was written, 204 when dropped.
async fn send(
    name: &'static str,
    parse: fn(&Value) -> Result<Asked, ApiError>,
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new(name, json!({}))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            no_query(&uri)?;
            let (scope, cmd) = parse(&body.input()?)?;
            caller.require(&s(scope))?;
            // the handler's own check, after the scope, as upstream's handlers check after
            // `authorize`
            if let NotifyCommand::Pulse { routing_key, .. } = &cmd {
                if routing_key.len() > MAX_ROUTING_KEY_BYTES {
                    return Err(ApiError::input(format!(
                        "routingKey may have at most {MAX_ROUTING_KEY_BYTES} bytes: it is published as `primary.<routingKey>`, and AMQP takes routing keys of at most 255"
                    )));
                }
            }
            let chat = match &cmd {
                NotifyCommand::Undeliverable(a) if a.channel == Channel::MatrixRoom => {
                    Some("Matrix")
                }
                NotifyCommand::Undeliverable(_) => Some("Slack"),
                NotifyCommand::Email(_)
                | NotifyCommand::Pulse { .. }
                | NotifyCommand::Deny(_)
                | NotifyCommand::Allow(_)
                | NotifyCommand::Delivered { .. } => None,
            };
            let written = st.notify.execute(actor(caller), cmd).await?;
            if let Some(client) = chat {
                tracing::warn!(
                    "notify: a {client} message was dropped (this server has no {client} client)"
                );
            }
            Ok(sent_or_dropped(written.len()))
        })
        .await
}

async fn email(uri: Uri, st: St, auth: Extension<Auth>, h: HeaderMap, b: Bytes) -> Response {
    send("email", email_request, uri, st, auth, h, b).await
}

async fn pulse(uri: Uri, st: St, auth: Extension<Auth>, h: HeaderMap, b: Bytes) -> Response {
    send("pulse", pulse_request, uri, st, auth, h, b).await
}

async fn matrix(uri: Uri, st: St, auth: Extension<Auth>, h: HeaderMap, b: Bytes) -> Response {
    send("matrix", matrix_request, uri, st, auth, h, b).await
}

async fn slack(uri: Uri, st: St, auth: Extension<Auth>, h: HeaderMap, b: Bytes) -> Response {
    send("slack", slack_request, uri, st, auth, h, b).await
}

fn email_request(input: &Value) -> Result<Asked, ApiError> {
    let email = email_body(input)?;
    Ok((
        format!("notify:email:{}", email.address),
        NotifyCommand::Email(email),
    ))
}

/// `pulse-request`.
fn pulse_request(input: &Value) -> Result<Asked, ApiError> {
    let obj = crate::auth::check_keys(
        input,
        PULSE_SCHEMA,
        &["routingKey", "message"],
        &["routingKey", "message"],
    )?;
    let mut f = Fields::new(&obj);
    let routing_key = f.text("routingKey", 0, 255);
    f.kind("message", Value::is_object, "object");
    let message = obj
        .get("message")
        .filter(|m| m.is_object())
        .map(Value::to_string);
    let (routing_key, message) = f.done(PULSE_SCHEMA, routing_key.zip(message))?;
    Ok((
        format!("notify:pulse:{routing_key}"),
        NotifyCommand::Pulse {
            routing_key,
            message,
        },
    ))
}

/// `matrix-request`: checked, then undeliverable here.
fn matrix_request(input: &Value) -> Result<Asked, ApiError> {
    let keys = ["roomId", "body", "format", "formattedBody", "msgtype"];
    let obj = crate::auth::check_keys(input, MATRIX_SCHEMA, &keys, &["roomId", "body"])?;
    let mut f = Fields::new(&obj);
    let room = f.text("roomId", 0, 0);
    f.text("body", 0, 0);
    f.text("format", 0, 0);
    f.text("formattedBody", 0, 0);
    if obj.contains_key("msgtype") {
        f.one_of("msgtype", &["m.notice", "m.text", "m.emote"]);
    }
    let room = f.done(MATRIX_SCHEMA, room)?;
    Ok(undeliverable(Channel::MatrixRoom, room))
}

/// `slack-request`: checked, then undeliverable here.
fn slack_request(input: &Value) -> Result<Asked, ApiError> {
    let keys = [
        "channelId",
        "text",
        "blocks",
        "attachments",
        "unfurlLinks",
        "unfurlMedia",
    ];
    let obj = crate::auth::check_keys(input, SLACK_SCHEMA, &keys, &["channelId", "text"])?;
    let mut f = Fields::new(&obj);
    let channel = f.text("channelId", 0, 0);
    f.text("text", 0, 0);
    f.kind("blocks", Value::is_array, "array");
    f.kind("attachments", Value::is_array, "array");
    f.kind("unfurlLinks", Value::is_boolean, "boolean");
    f.kind("unfurlMedia", Value::is_boolean, "boolean");
    let channel = f.done(SLACK_SCHEMA, channel)?;
    Ok(undeliverable(Channel::SlackChannel, channel))
}

/// A Matrix or Slack message: refused when denylisted, otherwise dropped (204), since this
/// server posts to neither.
fn undeliverable(channel: Channel, address: String) -> Asked {
    (
        format!("notify:{}:{address}", channel.as_str()),
        NotifyCommand::Undeliverable(Address { channel, address }),
    )
}

/// `notification-address`.
fn address_body(body: &Value) -> Result<Address, ApiError> {
    let keys = ["notificationType", "notificationAddress"];
    let obj = crate::auth::check_keys(body, ADDRESS_SCHEMA, &keys, &keys)?;
    let mut f = Fields::new(&obj);
    let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
    let channel = f
        .one_of("notificationType", &names)
        .and_then(|t| Channel::parse(&t));
    let address = f.text("notificationAddress", 0, 0);
    let address = channel
        .zip(address)
        .map(|(channel, address)| Address { channel, address });
    f.done(ADDRESS_SCHEMA, address)
}

async fn add_denylist(
    uri: Uri,
    st: St,
    auth: Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    edit_denylist(true, uri, st, auth, headers, body).await
}

async fn delete_denylist(
    uri: Uri,
    st: St,
    auth: Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    edit_denylist(false, uri, st, auth, headers, body).await
}

/// addDenylistAddress (`add`) or deleteDenylistAddress: both idempotent, both `OK`.
async fn edit_denylist(
    add: bool,
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let name = if add {
        "addDenylistAddress"
    } else {
        "deleteDenylistAddress"
    };
    Call::new(name, json!({}))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            caller.require(&s("notify:manage-denylist".to_string()))?;
            no_query(&uri)?;
            let address = address_body(&body.input()?)?;
            let cmd = if add {
                NotifyCommand::Deny(address)
            } else {
                NotifyCommand::Allow(address)
            };
            st.notify.execute(actor(caller), cmd).await?;
            Ok(ok_text())
        })
        .await
}

async fn list_denylist(uri: Uri, State(st): St, Extension(auth): Extension<Auth>) -> Response {
    Call::new("listDenylist", json!({}))
        .run(async {
            auth.caller()?
                .require(&s("notify:manage-denylist".to_string()))?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let after = decode_token(&q)?;
            let (addresses, more) = st.notify.view().denylist(after.as_deref(), limit(&q))?;
            let mut out = json!({
                "addresses": addresses.iter().map(|a| json!({
                    "notificationType": a.channel.as_str(),
                    "notificationAddress": a.address,
                })).collect::<Vec<_>>(),
            });
            if let Some(k) = more {
                out["continuationToken"] = json!(encode_token(&k));
            }
            Ok(ok(out))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(v: Value) -> String {
        format!("{:?}", email_body(&v).unwrap_err())
    }

    #[test]
    fn email_requests_as_the_schema_reads_them() {
        let e = email_body(&json!({
            "address": "a@example.com", "subject": "s", "content": "c",
            "link": {"text": "t", "href": "https://example.com/x"},
        }))
        .unwrap();
        assert_eq!(e.template, Template::Simple);
        assert_eq!(e.link.unwrap().href, "https://example.com/x");
        let m = refused(json!({"address": "nope", "subject": "", "content": "c", "extra": 1}));
        assert!(m.contains("must NOT have additional properties"), "{m}");
        let m = refused(json!({"address": "nope", "subject": "", "content": "c"}));
        assert!(
            m.contains("data/address must match format \\\"email\\\""),
            "{m}"
        );
        assert!(
            m.contains("data/subject must NOT have fewer than 1 characters"),
            "{m}"
        );
        let m = refused(json!({
            "address": "a@example.com", "subject": "s", "content": "c",
            "link": {"text": "t"}, "template": "fancy",
        }));
        assert!(
            m.contains("data/link must have required property 'href'"),
            "{m}"
        );
        assert!(
            m.contains("data/template must be equal to one of the allowed values"),
            "{m}"
        );
        let m = refused(json!({
            "address": "a@example.com", "subject": "s".repeat(256), "content": "c",
            "link": {"text": "t", "href": "not a uri"},
        }));
        assert!(
            m.contains("data/subject must NOT have more than 255 characters"),
            "{m}"
        );
        assert!(
            m.contains("data/link/href must match format \\\"uri\\\""),
            "{m}"
        );
    }

    #[test]
    fn addresses_as_the_schema_reads_them() {
        let a = address_body(&json!({
            "notificationType": "matrix-room", "notificationAddress": "!r:x.org",
        }))
        .unwrap();
        assert_eq!(a.channel, Channel::MatrixRoom);
        let m = format!(
            "{:?}",
            address_body(&json!({"notificationType": "irc-user", "notificationAddress": 3}))
                .unwrap_err()
        );
        assert!(
            m.contains("data/notificationType must be equal to one of the allowed values"),
            "{m}"
        );
        assert!(m.contains("data/notificationAddress must be string"), "{m}");
    }
}
