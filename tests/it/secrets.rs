//! The secrets service, driven by the official `taskcluster` crate's Secrets client: set, get,
//! list and remove, expiry, scopes, error bodies, the audit history, and values that never
//! reach the disk, the event log's tools or an error body in clear.

use crate::auth::{create_client, files_contain, root_auth};
use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, Secrets};

fn secrets_as(s: &Server, creds: Credentials) -> Secrets {
    Secrets::new(ClientBuilder::new(&s.root_url).credentials(creds)).unwrap()
}

fn root_secrets(s: &Server) -> Secrets {
    secrets_as(s, Credentials::new("static/taskcluster/root", ROOT_TOKEN))
}

fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
}

/// Every name `list` gives, page by page (`limit` per page).
async fn all_names(secrets: &Secrets, limit: &str) -> Vec<String> {
    let pages = all_pages(|t| async move { secrets.list(t.as_deref(), Some(limit)).await }).await;
    pages
        .iter()
        .flat_map(|p| p["secrets"].as_array().unwrap())
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn secrets_are_set_read_listed_replaced_and_removed() {
    let mut s = Server::start(&[]).await;
    let secrets = root_secrets(&s);
    let marker = format!("hunter2-{}", slugid::nice());
    let expires = in_an_hour();
    let names = ["project/it/b", "project/it/a/one", "project/it/c:d"];
    for (i, name) in names.iter().enumerate() {
        let body = json!({ "secret": { "password": marker, "n": i }, "expires": expires });
        secrets.set(name, &body).await.unwrap();
    }
    let got = secrets.get("project/it/a/one").await.unwrap();
    assert_eq!(got["secret"], json!({ "password": marker, "n": 1 }));
    let wire = chrono::DateTime::parse_from_rfc3339(got["expires"].as_str().unwrap()).unwrap();
    let sent = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    assert_eq!(wire.timestamp_millis(), sent.timestamp_millis());

    // `/` in a name, raw or encoded, names the same secret
    let (status, raw) = s
        .root_call(
            "GET",
            "/api/secrets/v1/secret/project/it/a%2Fone",
            &json!({}),
        )
        .await;
    assert_eq!((status, &raw["secret"]), (200, &got["secret"]), "{raw}");

    // set replaces value and expiry: the last write wins
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    secrets
        .set(
            "project/it/b",
            &json!({ "secret": { "v": 2 }, "expires": later }),
        )
        .await
        .unwrap();
    assert_eq!(
        secrets.get("project/it/b").await.unwrap()["secret"],
        json!({ "v": 2 })
    );

    // names in ascending order, one page at a time as in one
    let mut sorted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted.sort();
    assert_eq!(all_names(&secrets, "1").await, sorted);
    assert_eq!(all_names(&secrets, "1000").await, sorted);

    // remove, twice: both succeed; the secret is gone
    secrets.remove("project/it/c:d").await.unwrap();
    secrets.remove("project/it/c:d").await.unwrap();
    let err = secrets.get("project/it/c:d").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404), "{err:#}");
    let (status, body) = s
        .root_call("GET", "/api/secrets/v1/secret/project/it/c:d", &json!({}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "ResourceNotFound", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Secret not found\n"), "{body}");

    // the value is nowhere on disk in clear (log, projection, WAL), nor in the log's tools
    assert!(
        files_contain(&s.data_dir.join("db"), b"project/it/a/one"),
        "the scan must see the name"
    );
    assert!(!files_contain(&s.data_dir.join("db"), marker.as_bytes()));
    let (ok, text, err) = crate::audit::cli(&s, &["events", "tail", "--service", "secrets"]);
    assert!(ok, "{err}");
    assert_eq!(
        text.matches("\"eventType\":\"SecretWritten\"").count(),
        4,
        "{text}"
    );
    assert_eq!(
        text.matches("\"eventType\":\"SecretRemoved\"").count(),
        2,
        "{text}"
    );
    assert!(
        !text.contains(&marker) && text.contains("[redacted]"),
        "{text}"
    );

    // the secrets come back from the log after a restart, readable with the kept key
    s.restart().await;
    let secrets = root_secrets(&s);
    let got = secrets.get("project/it/a/one").await.unwrap();
    assert_eq!(got["secret"]["password"], marker.as_str());
    assert_eq!(
        all_names(&secrets, "10").await,
        vec!["project/it/a/one".to_string(), "project/it/b".to_string()]
    );
}

#[tokio::test]
async fn an_expired_secret_is_not_found_at_once_and_removed_with_its_history() {
    let s = Server::start(&[("TASKLEDGER_EXPIRY_SCAN_SECS", "1")]).await;
    let secrets = root_secrets(&s);
    let past = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    secrets
        .set("project/it/old", &json!({ "secret": {}, "expires": past }))
        .await
        .unwrap();
    secrets
        .set(
            "project/it/new",
            &json!({ "secret": {}, "expires": in_an_hour() }),
        )
        .await
        .unwrap();
    let err = secrets.get("project/it/old").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404), "{err:#}");
    assert_eq!(
        all_names(&secrets, "10").await,
        vec!["project/it/new".to_string()]
    );

    // the expiry reactor removes it: its history ends `expired`
    let auth = &root_auth(&s);
    let history = eventually(Duration::from_secs(20), || async move {
        let h = auth
            .getEntityHistory("secret", "project/it/old", None, None)
            .await
            .unwrap();
        let actions: Vec<String> = h["auditHistory"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["actionType"].as_str().unwrap().to_string())
            .collect();
        (actions.len() == 2).then_some(h)
    })
    .await;
    let entries = history["auditHistory"].as_array().unwrap();
    assert_eq!(entries[0]["actionType"], "created");
    assert_eq!(entries[0]["clientId"], "static/taskcluster/root");
    assert_eq!(entries[0]["entityType"], "secret");
    assert_eq!(entries[1]["actionType"], "expired");
    // the live one stays
    assert_eq!(
        secrets.get("project/it/new").await.unwrap()["secret"],
        json!({})
    );
}

#[tokio::test]
async fn scopes_bad_bodies_and_the_audit_history() {
    let s = Server::start(&[]).await;
    // the root's own history will interleave a secret between two clients (times apart by
    // milliseconds, so the merged order is certain)
    let reader = create_client(&s, "it/secret-reader", &["secrets:get:project/x/*"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    root_secrets(&s)
        .set(
            "other/root-made",
            &json!({ "secret": {}, "expires": in_an_hour() }),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let writer = create_client(
        &s,
        "it/secret-writer",
        &["secrets:set:project/x/*", "secrets:list-secrets"],
    )
    .await;
    let (reader_s, writer_s) = (
        secrets_as(&s, reader.clone()),
        secrets_as(&s, writer.clone()),
    );
    let body = json!({ "secret": { "k": "v" }, "expires": in_an_hour() });

    // each call needs its own scope; remove needs the set scope
    writer_s.set("project/x/one", &body).await.unwrap();
    let err = writer_s.set("project/y/one", &body).await.unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:#}");
    assert_eq!(
        reader_s.get("project/x/one").await.unwrap()["secret"],
        json!({ "k": "v" })
    );
    let err = reader_s.set("project/x/one", &body).await.unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:#}");
    let err = reader_s.remove("project/x/one").await.unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:#}");
    let err = reader_s.list(None, None).await.unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:#}");
    // 403 comes before the lookup: a missing secret outside the scope is not a 404
    let err = reader_s.get("project/y/none").await.unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:#}");
    let err = reader_s.get("project/x/none").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404), "{err:#}");
    assert_eq!(
        writer_s.list(None, None).await.unwrap()["secrets"],
        json!(["other/root-made", "project/x/one"])
    );
    let (status, bad_auth) = s
        .call_as(
            ("it/secret-reader", "not-the-token"),
            "GET",
            "/api/secrets/v1/secret/project/x/one",
            &json!({}),
        )
        .await;
    assert_eq!(status, 401, "{bad_auth}");

    // bodies against secret.json, the value left out of the echoed request
    let marker = format!("hunter2-{}", slugid::nice());
    for (bad, why) in [
        (
            json!({ "secret": "text", "expires": in_an_hour() }),
            "data/secret must be object",
        ),
        (
            json!({ "secret": { "p": marker }, "expires": "soon" }),
            "data/expires must match format",
        ),
        (
            json!({ "secret": { "p": marker } }),
            "must have required property 'expires'",
        ),
        (
            json!({ "secret": { "p": marker }, "expires": in_an_hour(), "extra": 1 }),
            "must NOT have additional properties",
        ),
    ] {
        let (status, answer) = s
            .root_call("PUT", "/api/secrets/v1/secret/project/x/bad", &bad)
            .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["code"], "InputValidationError", "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(why),
            "{answer}"
        );
        assert!(!answer.to_string().contains(&marker), "{answer}");
    }
    let err = root_secrets(&s).get("project/x/bad").await.unwrap_err();
    assert_eq!(
        status_of(&err),
        Some(404),
        "a refused set changed nothing: {err:#}"
    );
    let (status, answer) = s
        .root_call(
            "GET",
            "/api/secrets/v1/secret/project/x/one?x=1",
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (400, &json!("InvalidRequestArguments")),
        "{answer}"
    );

    // who did what: per secret, and per client together with its other actions
    writer_s.remove("project/x/one").await.unwrap();
    let auth = root_auth(&s);
    let history = auth
        .getEntityHistory("secret", "project/x/one", None, None)
        .await
        .unwrap();
    let entries: Vec<(Value, Value)> = history["auditHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["clientId"].clone(), e["actionType"].clone()))
        .collect();
    assert_eq!(
        entries,
        vec![
            (json!("it/secret-writer"), json!("created")),
            (json!("it/secret-writer"), json!("deleted"))
        ]
    );
    let auth_ref = &auth;
    let pages = all_pages(|t| async move {
        auth_ref
            .listAuditHistory("static/taskcluster/root", t.as_deref(), Some("1"))
            .await
    })
    .await;
    let seen: Vec<(Value, Value, Value)> = pages
        .iter()
        .flat_map(|p| p["auditHistory"].as_array().unwrap())
        .map(|e| {
            (
                e["entityType"].clone(),
                e["entityId"].clone(),
                e["actionType"].clone(),
            )
        })
        .collect();
    // the root's actions from the auth and secrets logs, in time order, one per page (the
    // token carries a position in each log); its refused sets left nothing
    assert_eq!(
        seen,
        vec![
            (json!("client"), json!("it/secret-reader"), json!("created")),
            (json!("secret"), json!("other/root-made"), json!("created")),
            (json!("client"), json!("it/secret-writer"), json!("created")),
        ]
    );
    // a token of two positions, as a server without secrets gave, still reads; a garbled one not
    let two_logs = "A".repeat(24); // 18 zero bytes: no position in either log
    let page = auth
        .listAuditHistory("static/taskcluster/root", Some(&two_logs), None)
        .await
        .unwrap();
    assert_eq!(page["auditHistory"].as_array().unwrap().len(), 3, "{page}");
    let err = auth
        .listAuditHistory("static/taskcluster/root", Some("AAAAAAAA"), None)
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400), "{err:#}");
    let writer_history = auth
        .listAuditHistory("it/secret-writer", None, None)
        .await
        .unwrap();
    let kinds: Vec<&Value> = writer_history["auditHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["entityType"])
        .collect();
    assert_eq!(
        kinds,
        vec![&json!("secret"), &json!("secret")],
        "{writer_history}"
    );
}
