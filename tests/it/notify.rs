//! The notify service, driven by the official `taskcluster` crate's Notify client and by
//! signed raw calls (for the statuses the client does not show): an email goes through the
//! outbox into `<data-dir>/mail` as an `.eml` with its plain and HTML parts; the same email
//! again is a duplicate (204); the denylist refuses (400 `DenylistedAddress`), lists and
//! forgets; scopes and schema errors; Slack and Matrix are checked and dropped (204); the
//! projection rebuilds from the log, after a restart too. Pulse and task routes: pulse.rs.

use crate::auth::create_client;
use crate::harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, Notify};

fn root_notify(s: &Server) -> Notify {
    Notify::new(
        ClientBuilder::new(&s.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap()
}

/// An `.eml`'s text as a reader sees it: folded header lines joined, quoted-printable soft
/// line breaks and `=XX` escapes undone (the parts here are ASCII, so lettre picks
/// quoted-printable for their long lines).
fn readable(raw: &str) -> String {
    let text = raw
        .replace("\r\n", "\n")
        .replace("=\n", "")
        .replace("\n ", " ");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `.eml` files written so far, each as readable text.
pub(crate) fn mails(data_dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(dir) = std::fs::read_dir(data_dir.join("mail")) else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let text = readable(&std::fs::read_to_string(&p).unwrap_or_default());
            (p, text)
        })
        .collect()
}

/// Waits for an `.eml` that contains every one of `needles`.
pub(crate) async fn mail_with(data_dir: &Path, needles: &[&str]) -> String {
    eventually(Duration::from_secs(15), || async move {
        mails(data_dir)
            .into_iter()
            .map(|(_, text)| text)
            .find(|t| needles.iter().all(|n| t.contains(n)))
    })
    .await
}

#[tokio::test]
async fn emails_go_through_the_outbox_and_the_denylist_refuses() {
    let mut s = Server::start(&[]).await;
    let notify = root_notify(&s);
    let unique = slugid::nice();
    let email = json!({
        "address": "dev@example.com",
        "subject": format!("build {unique} failed"),
        "content": "The **build** failed.\n\n<script>alert(1)</script>",
        "link": {"text": "Inspect", "href": "https://example.com/tasks/x"},
        "replyTo": "owner@example.com",
    });
    notify.email(&email).await.unwrap();
    let text = mail_with(&s.data_dir, &[unique.as_str()]).await;
    for expected in [
        "To: dev@example.com",
        "Reply-To: owner@example.com",
        "notify@localhost",
        "multipart/alternative",
        "Content-Type: text/plain",
    ] {
        assert!(text.contains(expected), "{expected} missing in\n{text}");
    }
    // the HTML part: the markdown rendered, raw HTML shown as text, the link as a button
    let html = &text[text.find("Content-Type: text/html").expect("an HTML part")..];
    assert!(html.contains("<strong>build</strong>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;") && !html.contains("<script>"),
        "{html}"
    );
    assert!(
        html.contains("href=\"https://example.com/tasks/x\""),
        "{html}"
    );

    // the same email again is a duplicate: 204, and no second file
    let (status, _) = s.root_call("POST", "/api/notify/v1/email", &email).await;
    assert_eq!(status, 204);
    let (status, _) = s
        .root_call(
            "POST",
            "/api/notify/v1/email",
            &json!({"address": "dev@example.com", "subject": "another", "content": "c"}),
        )
        .await;
    assert_eq!(status, 200);
    mail_with(&s.data_dir, &["Subject: another"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mails(&s.data_dir).len(), 2);

    // the denylist: refused, listed (paged), forgotten
    let bad = json!({"notificationType": "email", "notificationAddress": "bad@example.com"});
    notify.addDenylistAddress(&bad).await.unwrap();
    notify.addDenylistAddress(&bad).await.unwrap();
    let pulse_key = json!({"notificationType": "pulse", "notificationAddress": "a.b"});
    notify.addDenylistAddress(&pulse_key).await.unwrap();
    let (status, body) = s
        .root_call(
            "POST",
            "/api/notify/v1/email",
            &json!({"address": "bad@example.com", "subject": "s", "content": "c"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "DenylistedAddress");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Email bad@example.com is denylisted"),
        "{body}"
    );
    let (status, body) = s
        .root_call(
            "POST",
            "/api/notify/v1/pulse",
            &json!({"routingKey": "a.b", "message": {}}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("DenylistedAddress"))
    );
    // a routing key AMQP could not carry as `primary.<key>` is refused, one that fits is sent
    let (status, body) = s
        .root_call(
            "POST",
            "/api/notify/v1/pulse",
            &json!({"routingKey": "k".repeat(248), "message": {}}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("InputError")),
        "{body}"
    );
    let (status, _) = s
        .root_call(
            "POST",
            "/api/notify/v1/pulse",
            &json!({"routingKey": "k".repeat(247), "message": {}}),
        )
        .await;
    assert_eq!(status, 200);
    let page = notify.listDenylist(None, Some("1")).await.unwrap();
    assert_eq!(page["addresses"], json!([bad]));
    let token = page["continuationToken"].as_str().unwrap().to_string();
    let rest = notify.listDenylist(Some(&token), None).await.unwrap();
    assert_eq!(rest["addresses"], json!([pulse_key]));
    assert!(rest.get("continuationToken").is_none(), "{rest}");
    notify.deleteDenylistAddress(&bad).await.unwrap();
    notify.deleteDenylistAddress(&bad).await.unwrap();
    assert_eq!(
        notify.listDenylist(None, None).await.unwrap()["addresses"],
        json!([pulse_key])
    );
    let (status, _) = s
        .root_call(
            "POST",
            "/api/notify/v1/email",
            &json!({"address": "bad@example.com", "subject": "now allowed", "content": "c"}),
        )
        .await;
    assert_eq!(status, 200);

    // schema errors, scopes
    let (status, body) = s
        .root_call(
            "POST",
            "/api/notify/v1/email",
            &json!({"address": "nope", "subject": "", "content": "c"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("InputValidationError"))
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("data/address must match format \"email\""),
        "{message}"
    );
    let limited = create_client(&s, "it-notify-limited", &["notify:email:me@example.org"]).await;
    let (id, token) = (limited.client_id.clone(), limited.access_token.clone());
    let (status, body) = s
        .call_as(
            (&id, &token),
            "POST",
            "/api/notify/v1/email",
            &json!({"address": "dev@example.com", "subject": "s", "content": "c"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("InsufficientScopes"))
    );
    let (status, _) = s
        .call_as(
            (&id, &token),
            "POST",
            "/api/notify/v1/email",
            &json!({"address": "me@example.org", "subject": "s", "content": "c"}),
        )
        .await;
    assert_eq!(status, 200);
    // the scope comes before the routing key's length, as upstream's `authorize` does
    let (status, body) = s
        .call_as(
            (&id, &token),
            "POST",
            "/api/notify/v1/pulse",
            &json!({"routingKey": "k".repeat(248), "message": {}}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("InsufficientScopes"))
    );
    let (status, body) = s
        .call_as(
            (&id, &token),
            "GET",
            "/api/notify/v1/denylist/list",
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("InsufficientScopes"))
    );

    // Slack and Matrix: checked, then dropped (no client here); a denylisted channel refused
    let (status, _) = s
        .root_call(
            "POST",
            "/api/notify/v1/slack",
            &json!({"channelId": "C123", "text": "hi"}),
        )
        .await;
    assert_eq!(status, 204);
    notify
        .addDenylistAddress(
            &json!({"notificationType": "matrix-room", "notificationAddress": "!r:x.org"}),
        )
        .await
        .unwrap();
    let (status, body) = s
        .root_call(
            "POST",
            "/api/notify/v1/matrix",
            &json!({"roomId": "!r:x.org", "body": "hi"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("DenylistedAddress"))
    );
    let (status, body) = s
        .root_call(
            "POST",
            "/api/notify/v1/matrix",
            &json!({"roomId": "!r:x.org", "body": "hi", "msgtype": "m.shout"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("InputValidationError"))
    );

    // after a restart: the denylist, the duplicate window and the delivered outbox stand
    // (four emails went out: the first, "another", "now allowed" and the limited client's)
    let data_dir = s.data_dir.clone();
    eventually(Duration::from_secs(15), || {
        let data_dir = data_dir.clone();
        async move { (mails(&data_dir).len() == 4).then_some(()) }
    })
    .await;
    s.restart().await;
    let (status, _) = s.root_call("POST", "/api/notify/v1/email", &email).await;
    assert_eq!(status, 204);
    assert_eq!(
        root_notify(&s).listDenylist(None, None).await.unwrap()["addresses"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let sent = mails(&s.data_dir).len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(mails(&s.data_dir).len(), sent, "an email was sent twice");
    s.stop().await;
    let (ok, out, err) = crate::audit::cli(&s, &["replay", "--verify", "--projection", "notify"]);
    assert!(ok && out.contains("verified"), "{out}{err}");
    let (ok, text, err) = crate::audit::cli(&s, &["events", "tail", "--service", "notify"]);
    assert!(ok, "{err}");
    for kind in [
        "AddressDenied",
        "AddressAllowed",
        "EmailQueued",
        "EmailDelivered",
    ] {
        assert!(text.contains(kind), "{kind} missing in {text}");
    }
    let delivered: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["eventType"] == "EmailDelivered")
        .collect();
    assert!(
        delivered
            .iter()
            .all(|v| v["envelope"]["payload"]["EmailDelivered"]["error"].is_null()),
        "{delivered:?}"
    );
}
