//! The auth service end to end with the official `taskcluster` crate: clients and roles decide
//! what a caller may do, temporary credentials, disable/reset, audit history, bewits, and no
//! access token in the raw log.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;
use taskcluster::{Auth, ClientBuilder, Credentials, Queue};

pub(crate) fn auth_as(s: &Server, creds: Credentials) -> Auth {
    Auth::new(ClientBuilder::new(&s.root_url).credentials(creds)).unwrap()
}

pub(crate) fn root_auth(s: &Server) -> Auth {
    auth_as(s, Credentials::new("static/taskcluster/root", ROOT_TOKEN))
}

fn client_body(scopes: &[&str]) -> serde_json::Value {
    json!({
        "description": "integration test client",
        "expires": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        "scopes": scopes,
    })
}

pub(crate) async fn create_client(s: &Server, id: &str, scopes: &[&str]) -> Credentials {
    let created = root_auth(s)
        .createClient(id, &client_body(scopes))
        .await
        .unwrap();
    assert_eq!(created["clientId"], id);
    let token = created["accessToken"].as_str().unwrap();
    assert_eq!(token.len(), 44);
    Credentials::new(id, token)
}

fn queue_as(s: &Server, creds: Credentials) -> Queue {
    Queue::new(ClientBuilder::new(&s.root_url).credentials(creds)).unwrap()
}

/// createTask as `creds` on `queue`: Ok, or the HTTP status.
async fn try_create(s: &Server, creds: &Credentials, queue: &str) -> Result<(), u16> {
    queue_as(s, creds.clone())
        .createTask(&slugid::nice(), &task_def(queue, 600))
        .await
        .map(|_| ())
        .map_err(|e| status_of(&e).unwrap_or(0))
}

pub(crate) fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            files_contain(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[tokio::test]
async fn client_scopes_and_roles_decide_create_task() {
    let s = Server::start(&[]).await;
    let allowed = fresh_queue();
    let other = fresh_queue();
    let base = ["queue:create-task:project:none", "queue:scheduler-id:-"];

    // a client with exactly the scopes for one queue
    let mut scopes = base.to_vec();
    let create_scope = format!("queue:create-task:lowest:{allowed}");
    scopes.push(&create_scope);
    let limited = create_client(&s, "it/limited", &scopes).await;
    assert_eq!(try_create(&s, &limited, &allowed).await, Ok(()));
    assert_eq!(try_create(&s, &limited, &other).await, Err(403));

    // a parameterized role grants the other queue through `assume:`
    let worker_type = other.split('/').nth(1).unwrap().to_string();
    root_auth(&s)
        .createRole(
            "it-queue:*",
            &json!({ "description": "d", "scopes": ["queue:create-task:lowest:it-prov/<..>"] }),
        )
        .await
        .unwrap();
    let assume = format!("assume:it-queue:{worker_type}");
    let mut role_scopes = base.to_vec();
    role_scopes.push(&assume);
    let via_role = create_client(&s, "it/via-role", &role_scopes).await;
    assert_eq!(try_create(&s, &via_role, &other).await, Ok(()));
    assert_eq!(try_create(&s, &via_role, &allowed).await, Err(403));
    let client = root_auth(&s).client("it/via-role").await.unwrap();
    let expanded: Vec<&str> = client["expandedScopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(expanded.contains(&format!("queue:create-task:lowest:{other}").as_str()));

    // changing the role changes what the client may do, at once
    root_auth(&s)
        .updateRole("it-queue:*", &json!({ "description": "d", "scopes": [] }))
        .await
        .unwrap();
    assert_eq!(try_create(&s, &via_role, &other).await, Err(403));

    // an update keeps the scopes in the order given (upstream sorts on creation only), and
    // upstream's texts name the role
    let updated = root_auth(&s)
        .updateRole(
            "it-queue:*",
            &json!({ "description": "d", "scopes": ["it:b", "it:a"] }),
        )
        .await
        .unwrap();
    assert_eq!(updated["scopes"], json!(["it:b", "it:a"]));
    let err = root_auth(&s)
        .updateRole("it-none", &json!({ "description": "d", "scopes": [] }))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("Role with roleId 'it-none' not found"),
        "{err:#}"
    );
    let err = root_auth(&s)
        .createRole(
            "it-queue:*",
            &json!({ "description": "other", "scopes": [] }),
        )
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("Role with roleId 'it-queue:*' already exists"),
        "{err:#}"
    );

    // a role that would assume itself is refused
    let err = root_auth(&s)
        .createRole(
            "loop",
            &json!({ "description": "d", "scopes": ["assume:loop"] }),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400));

    // a client may only grant scopes it holds
    let grantor = create_client(&s, "it/grantor", &["auth:create-client:it/sub/*", "a:b"]).await;
    let grantor_auth = auth_as(&s, grantor);
    assert!(grantor_auth
        .createClient("it/sub/ok", &client_body(&["a:b"]))
        .await
        .is_ok());
    let err = grantor_auth
        .createClient("it/sub/wide", &client_body(&["a:c"]))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403));
    let err = grantor_auth
        .createClient("it/elsewhere", &client_body(&["a:b"]))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403));
    let err = root_auth(&s)
        .createClient("it/sub/ok", &client_body(&[]))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(409));
    let err = root_auth(&s)
        .createClient("static/mine", &client_body(&[]))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400));
}

#[tokio::test]
async fn temporary_credentials_disable_reset_and_no_token_in_the_log() {
    let s = Server::start(&[]).await;
    let q = fresh_queue();
    let create_scope = format!("queue:create-task:lowest:{q}");
    let perm = create_client(
        &s,
        "it/issuer",
        &[
            "queue:create-task:project:none",
            "queue:scheduler-id:-",
            &create_scope,
            "auth:create-client:it/issuer/*",
            "auth:current-scopes",
        ],
    )
    .await;

    // narrower named temporary credentials work; wider ones are refused with 401
    let narrow = perm
        .create_named_temp_creds(
            "it/issuer/temp",
            Duration::from_secs(600),
            [
                "queue:create-task:project:none",
                "queue:scheduler-id:-",
                create_scope.as_str(),
                "auth:current-scopes",
            ],
        )
        .unwrap();
    assert_eq!(try_create(&s, &narrow, &q).await, Ok(()));
    let narrower = perm
        .create_temp_creds(Duration::from_secs(600), ["queue:scheduler-id:-"])
        .unwrap();
    assert_eq!(try_create(&s, &narrower, &q).await, Err(403));
    let wider = perm
        .create_temp_creds(Duration::from_secs(600), ["queue:create-task:lowest:*"])
        .unwrap();
    assert_eq!(try_create(&s, &wider, &q).await, Err(401));
    let who = auth_as(&s, narrow.clone()).currentScopes().await.unwrap();
    assert!(who["scopes"]
        .as_array()
        .unwrap()
        .contains(&json!(create_scope)));

    // disabled clients (and their temporary credentials) stop authenticating
    let root = root_auth(&s);
    root.disableClient("it/issuer").await.unwrap();
    assert_eq!(try_create(&s, &perm, &q).await, Err(401));
    assert_eq!(try_create(&s, &narrow, &q).await, Err(401));
    root.enableClient("it/issuer").await.unwrap();
    assert_eq!(try_create(&s, &perm, &q).await, Ok(()));

    // a reset token replaces the old one
    let reset = root.resetAccessToken("it/issuer").await.unwrap();
    let new_token = reset["accessToken"].as_str().unwrap().to_string();
    assert_ne!(new_token, perm.access_token);
    assert_eq!(try_create(&s, &perm, &q).await, Err(401));
    let renewed = Credentials::new("it/issuer", &new_token);
    assert_eq!(try_create(&s, &renewed, &q).await, Ok(()));

    // the audit history says who did what
    let history = root
        .getEntityHistory("client", "it/issuer", None, None)
        .await
        .unwrap();
    let actions: Vec<&str> = history["auditHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actionType"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "created",
            "client disabled",
            "client enabled",
            "access token reset"
        ]
    );
    assert_eq!(
        history["auditHistory"][0]["clientId"],
        "static/taskcluster/root"
    );

    // neither token is anywhere in the data directory in clear (log, projections, WAL)
    let db = s.data_dir.join("db");
    assert!(
        files_contain(&db, b"it/issuer"),
        "the scan must see the client id"
    );
    assert!(!files_contain(&db, perm.access_token.as_bytes()));
    assert!(!files_contain(&db, new_token.as_bytes()));

    // the tokens survive a restart (sealed in the log, opened with the data dir's key)
    let mut s = s;
    s.restart().await;
    assert_eq!(try_create(&s, &renewed, &q).await, Ok(()));
}

#[tokio::test]
async fn listing_expansion_bewit_and_conformance_endpoints() {
    let s = Server::start(&[]).await;
    let root = root_auth(&s);
    for i in 0..5 {
        create_client(&s, &format!("it/list/{i}"), &[]).await;
    }
    // paging with limit 2 sees every client exactly once
    let root_ref = &root;
    let pages = all_pages(|t| async move {
        root_ref
            .listClients(Some("it/list/"), t.as_deref(), Some("2"))
            .await
    })
    .await;
    let mut seen = Vec::new();
    for page in &pages {
        for c in page["clients"].as_array().unwrap() {
            seen.push(c["clientId"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        seen,
        (0..5).map(|i| format!("it/list/{i}")).collect::<Vec<_>>()
    );

    root.createRole(
        "group:devs",
        &json!({ "description": "d", "scopes": ["dev-scope"] }),
    )
    .await
    .unwrap();
    root.createRole(
        "group:admins",
        &json!({ "description": "d", "scopes": ["admin-scope", "assume:group:devs"] }),
    )
    .await
    .unwrap();
    let expanded = root
        .expandScopes(&json!({ "scopes": ["assume:group:admins", "my-scope"] }))
        .await
        .unwrap();
    assert_eq!(
        expanded["scopes"],
        json!([
            "admin-scope",
            "assume:group:admins",
            "assume:group:devs",
            "dev-scope",
            "my-scope"
        ])
    );
    // the schemas' rules: `scopes` is required, and no scope list repeats an item
    let err = root.expandScopes(&json!({})).await.unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    let err = root
        .expandScopes(&json!({ "scopes": ["a", "b", "a"] }))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    let err = root
        .createClient("it/dup", &client_body(&["x:y", "x:y"]))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    assert_eq!(
        status_of(&root.client("it/dup").await.unwrap_err()),
        Some(404)
    );
    // a client's scopes keep the order they were given in; a role's are in canonical order
    let made = root
        .createClient("it/order", &client_body(&["z:1", "a:1"]))
        .await
        .unwrap();
    assert_eq!(made["scopes"], json!(["z:1", "a:1"]), "{made}");
    let role = root
        .createRole(
            "it-order",
            &json!({ "description": "d", "scopes": ["y:b", "y:a", "y:a*"] }),
        )
        .await
        .unwrap();
    assert_eq!(role["scopes"], json!(["y:a*", "y:a", "y:b"]), "{role}");
    root.deleteRole("it-order").await.unwrap();
    let ids = root.listRoleIds(None, None).await.unwrap();
    assert_eq!(ids["roleIds"], json!(["group:admins", "group:devs"]));
    let err = root.role("nope").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404));

    // the anonymous role applies to requests without credentials
    let anonymous = Auth::new(ClientBuilder::new(&s.root_url)).unwrap();
    assert_eq!(
        status_of(&anonymous.listRoleIds(None, None).await.unwrap_err()),
        Some(403)
    );
    root.createRole(
        "anonymous",
        &json!({ "description": "public", "scopes": ["auth:list-roles"] }),
    )
    .await
    .unwrap();
    assert!(anonymous.listRoleIds(None, None).await.is_ok());
    // an empty Authorization header or bewit is no credentials at all, as upstream
    let role_ids = format!("{}/api/auth/v1/roleids/", s.root_url);
    let http = reqwest::Client::new();
    let empty_header = http
        .get(&role_ids)
        .header("Authorization", "")
        .send()
        .await
        .unwrap();
    assert_eq!(empty_header.status(), 200);
    let empty_bewit = http.get(format!("{role_ids}?bewit=")).send().await.unwrap();
    assert_eq!(empty_bewit.status(), 200);
    // a caller without credentials is named as upstream names it
    let got = anonymous.testAuthenticate(&json!({})).await.unwrap();
    assert_eq!(got["clientId"], "auth-failed:no-auth");
    // a certificate is checked against its issuer's own scopes: the anonymous role's do not
    // count there (they are added back to every request afterwards)
    let plain = create_client(&s, "it/plain", &["auth:current-scopes"]).await;
    let via_anonymous = plain
        .create_temp_creds(Duration::from_secs(600), ["auth:list-roles"])
        .unwrap();
    let err = auth_as(&s, via_anonymous)
        .listRoleIds(None, None)
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(401));
    let own = plain
        .create_temp_creds(Duration::from_secs(600), ["auth:current-scopes"])
        .unwrap();
    let held = auth_as(&s, own).currentScopes().await.unwrap();
    assert_eq!(
        held["scopes"],
        json!(["assume:anonymous", "auth:current-scopes", "auth:list-roles"])
    );

    // conformance endpoints: tester/no-secret, with a header and with a bewit
    let tester = auth_as(&s, Credentials::new("tester", "no-secret"));
    let got = tester
        .testAuthenticate(&json!({ "clientScopes": ["test:*"], "requiredScopes": ["test:a"] }))
        .await
        .unwrap();
    assert_eq!(got["clientId"], "tester");
    let err = tester
        .testAuthenticate(&json!({ "clientScopes": ["test:a"], "requiredScopes": ["test:b"] }))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403));
    let url = tester
        .testAuthenticateGet_signed_url(Duration::from_secs(300))
        .unwrap();
    assert!(url.contains("bewit="));
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["clientId"], "tester");
    let tampered = url.replace("?bewit=", "?x=1&bewit=");
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 401);

    // authenticateHawk answers for other services
    let res = root
        .authenticateHawk(&json!({
            "method": "get", "resource": "/x", "host": "example.com", "port": 443,
            "authorization": "Hawk id=\"nobody\", ts=\"1\", nonce=\"n\", mac=\"bQ==\""
        }))
        .await
        .unwrap();
    assert_eq!(res["status"], "auth-failed");
    // authenticateHawk takes a bewit by its pattern: an empty one fails as the hawk library's
    let res = root
        .authenticateHawk(&json!({
            "method": "get", "resource": "/x?bewit=", "host": "example.com", "port": 443
        }))
        .await
        .unwrap();
    assert_eq!(res["status"], "auth-failed", "{res}");
    assert_eq!(res["message"], "Unauthorized: Empty bewit", "{res}");
    // its request schema: a lower-case method of its enum, a host name, an IP address
    for (bad, says) in [
        (
            json!({ "method": "GET", "resource": "/x", "host": "example.com", "port": 443 }),
            "data/method",
        ),
        (
            json!({ "method": "get", "resource": "/x", "host": "not a host", "port": 443 }),
            "data/host",
        ),
        (
            json!({ "method": "get", "resource": "/x", "host": "example.com", "port": 443,
                    "sourceIp": "999.1.1.1" }),
            "data/sourceIp",
        ),
    ] {
        let (status, body) = s
            .root_call("POST", "/api/auth/v1/authenticate-hawk", &bad)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
    let res = root
        .authenticateHawk(&json!({
            "method": "get", "resource": "/x", "host": "10.0.0.1", "port": 443,
            "sourceIp": "::1"
        }))
        .await
        .unwrap();
    assert_eq!(res["status"], "no-auth", "{res}");
    // a request it refuses is echoed without the caller's header or bewit
    let (status, body) = s
        .root_call(
            "POST",
            "/api/auth/v1/authenticate-hawk",
            &json!({
                "method": "get", "resource": "/x?bewit=c2VjcmV0", "host": "example.com",
                "port": "not a port", "authorization": "Hawk mac=\"c2VjcmV0\""
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["requestInfo"]["payload"]["authorization"], "(OMITTED)");
    assert_eq!(body["requestInfo"]["payload"]["resource"], "(OMITTED)");
    assert!(!body.to_string().contains("c2VjcmV0"), "{body}");

    // a signed URL for a queue endpoint, made by a client of the auth projection
    let reader = create_client(&s, "it/reader", &["auth:list-roles"]).await;
    let url = auth_as(&s, reader)
        .listRoles_signed_url(Duration::from_secs(60))
        .unwrap();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);

    // the operator CLI: create-client prints the client with its token; create-role creates
    // and, run again, updates
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
            .args(args)
            .env("TASKCLUSTER_ROOT_URL", &s.root_url)
            .env("TASKCLUSTER_CLIENT_ID", "static/taskcluster/root")
            .env("TASKCLUSTER_ACCESS_TOKEN", ROOT_TOKEN)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let made = run(&[
        "auth",
        "create-client",
        "it/cli",
        "--scope",
        "a:b",
        "--scope",
        "c:d",
    ]);
    assert_eq!(made["accessToken"].as_str().unwrap().len(), 44);
    assert_eq!(
        root.client("it/cli").await.unwrap()["scopes"],
        json!(["a:b", "c:d"])
    );
    run(&["auth", "create-role", "cli-role", "--scope", "x"]);
    let updated = run(&["auth", "create-role", "cli-role", "--scope", "y"]);
    assert_eq!(updated["scopes"], json!(["y"]));

    // cloud credentials are not configured
    let err = root.sentryDSN("proj").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404));
}

/// updateClient, the role listings, deleteRole and a client's audit history through the
/// official Rust client, paged calls included (the crate signs their path without the query).
#[tokio::test]
async fn update_client_roles_and_audit_history() {
    let s = Server::start(&[]).await;
    let root = root_auth(&s);
    create_client(&s, "it/upd", &["a:1"]).await;
    // omitted scopes stay; a new description and scopes replace the old
    let later = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let kept = root
        .updateClient(
            "it/upd",
            &json!({ "description": "kept", "expires": later }),
        )
        .await
        .unwrap();
    assert_eq!(kept["description"], "kept", "{kept}");
    assert_eq!(kept["scopes"], json!(["a:1"]), "{kept}");
    let replaced = root
        .updateClient(
            "it/upd",
            &json!({ "description": "new", "expires": later, "scopes": ["b:2"] }),
        )
        .await
        .unwrap();
    assert_eq!(replaced["scopes"], json!(["b:2"]), "{replaced}");
    assert_eq!(root.client("it/upd").await.unwrap()["description"], "new");
    // deleteOnExpiration takes its schema default (false) when omitted
    let deleting = root
        .updateClient(
            "it/upd",
            &json!({ "description": "new", "expires": later, "deleteOnExpiration": true }),
        )
        .await
        .unwrap();
    assert_eq!(deleting["deleteOnExpiration"], true, "{deleting}");
    let omitted = root
        .updateClient("it/upd", &json!({ "description": "new", "expires": later }))
        .await
        .unwrap();
    assert_eq!(omitted["deleteOnExpiration"], false, "{omitted}");
    assert_eq!(omitted["scopes"], json!(["b:2"]), "{omitted}");

    // roles: the bare list, the paged list, and deletion (idempotent)
    for id in ["it-r1", "it-r2", "it-r3"] {
        root.createRole(
            id,
            &json!({ "description": id, "scopes": [format!("s:{id}")] }),
        )
        .await
        .unwrap();
    }
    let bare = root.listRoles().await.unwrap();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["roleId"].as_str())
            .filter(|r| r.starts_with("it-r"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(ids(&bare), ["it-r1", "it-r2", "it-r3"], "{bare}");
    let root_ref = &root;
    let pages =
        all_pages(|t| async move { root_ref.listRoles2(t.as_deref(), Some("1")).await }).await;
    let paged: Vec<String> = pages.iter().flat_map(|p| ids(&p["roles"])).collect();
    assert_eq!(paged, ["it-r1", "it-r2", "it-r3"]);
    root.deleteRole("it-r2").await.unwrap();
    root.deleteRole("it-r2").await.unwrap();
    assert_eq!(ids(&root.listRoles().await.unwrap()), ["it-r1", "it-r3"]);

    // what root did, newest entries included, paged
    let pages = all_pages(|t| async move {
        root_ref
            .listAuditHistory("static/taskcluster/root", t.as_deref(), Some("2"))
            .await
    })
    .await;
    let mut actions = Vec::new();
    for page in &pages {
        for entry in page["auditHistory"].as_array().unwrap() {
            assert_eq!(entry["clientId"], "static/taskcluster/root", "{entry}");
            actions.push((
                entry["entityId"].as_str().unwrap().to_owned(),
                entry["actionType"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for (entity, action) in [
        ("it/upd", "created"),
        ("it/upd", "updated"),
        ("it-r1", "created"),
        ("it-r2", "deleted"),
    ] {
        assert!(
            actions.iter().any(|(e, a)| e == entity && a == action),
            "{entity} {action}: {actions:?}"
        );
    }
}

/// A configured static client reads as upstream's: its description with the static suffix,
/// scopes in the configured order; the deployment's own are "Internal client". A change is
/// refused with upstream's words, and listClients checks its prefix's pattern.
#[tokio::test]
async fn static_clients_read_as_configured() {
    let config = json!([{
        "clientId": "static/it-bot", "accessToken": "it-bot-token-0123456789abcdef",
        "description": "CI bot", "scopes": ["it:b", "it:a"]
    }])
    .to_string();
    let s = Server::start(&[("TASKLEDGER_STATIC_CLIENTS", config.as_str())]).await;
    let root = root_auth(&s);
    let bot = root.client("static/it-bot").await.unwrap();
    let description = bot["description"].as_str().unwrap();
    assert!(
        description.starts_with("CI bot\n---\n\nThis is a **static client**"),
        "{description}"
    );
    assert_eq!(bot["scopes"], json!(["it:b", "it:a"]));
    let own = root.client("static/taskcluster/root").await.unwrap();
    assert!(
        own["description"]
            .as_str()
            .unwrap()
            .starts_with("Internal client\n---\n"),
        "{own}"
    );
    let err = root.deleteClient("static/it-bot").await.unwrap_err();
    assert!(
        format!("{err:#}").contains("Contact your administrator to change static clients."),
        "{err:#}"
    );
    let (status, body) = s
        .root_call("GET", "/api/auth/v1/clients/?prefix=a%20b", &json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "InvalidRequestArguments", "{body}");
}
