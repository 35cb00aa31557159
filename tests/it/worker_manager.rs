//! The worker-manager with the `static` provider, through the official `taskcluster` crate:
//! pools, a static worker, registration whose credentials claim work, reregistration, errors,
//! removal, and static secrets that never reach the data directory in clear.

use crate::harness::*;
use serde_json::{json, Value};
use taskcluster::{ClientBuilder, Credentials, WorkerManager};

const GROUP: &str = "it-group";
const WORKER: &str = "it-worker";

fn manager(s: &Server, creds: Option<Credentials>) -> WorkerManager {
    let builder = ClientBuilder::new(&s.root_url);
    let builder = match creds {
        Some(c) => builder.credentials(c),
        None => builder,
    };
    WorkerManager::new(builder).unwrap()
}

fn root(s: &Server) -> WorkerManager {
    manager(
        s,
        Some(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
}

fn secret() -> String {
    format!("{}{}", slugid::nice(), slugid::nice())
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
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

fn pool_body(config: Value) -> Value {
    json!({
        "providerId": "static",
        "description": "integration test pool",
        "config": config,
        "owner": "it@example.com",
        "emailOnError": false,
    })
}

/// A fresh static worker pool with an empty config; its id.
async fn static_pool(m: &WorkerManager) -> String {
    let pool = fresh_queue();
    m.createWorkerPool(&pool, &pool_body(json!({})))
        .await
        .unwrap();
    pool
}

fn register_body(pool: &str, static_secret: &str) -> Value {
    json!({
        "workerPoolId": pool,
        "providerId": "static",
        "workerGroup": GROUP,
        "workerId": WORKER,
        "workerIdentityProof": { "staticSecret": static_secret },
    })
}

fn credentials_of(answer: &Value) -> Credentials {
    let c = &answer["credentials"];
    Credentials::new_with_certificate(
        c["clientId"].as_str().unwrap(),
        c["accessToken"].as_str().unwrap(),
        c["certificate"].as_str().unwrap(),
    )
}

/// Hours from now until an RFC 3339 time.
fn hours_until(t: &Value) -> f64 {
    let at = chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap();
    (at.timestamp_millis() - chrono::Utc::now().timestamp_millis()) as f64 / 3_600_000.0
}

#[tokio::test]
async fn pools_providers_and_bad_input() {
    let s = Server::start(&[]).await;
    let m = root(&s);
    let providers = m.listProviders(None, None).await.unwrap();
    assert_eq!(
        providers["providers"],
        json!([{ "providerId": "static", "providerType": "static" }])
    );
    let (a, b) = (fresh_queue(), fresh_queue());
    let created = m.createWorkerPool(&a, &pool_body(json!({}))).await.unwrap();
    assert_eq!(created["workerPoolId"], a.as_str());
    assert_eq!(created["providerId"], "static");
    assert_eq!(created["currentCapacity"], 0);
    m.createWorkerPool(&b, &pool_body(json!({}))).await.unwrap();
    // the same definition again is the pool as it is (creation is idempotent); another is 409
    let again = m.createWorkerPool(&a, &pool_body(json!({}))).await.unwrap();
    assert_eq!(again, created);
    let mut other = pool_body(json!({}));
    other["description"] = json!("another description");
    let conflict = m.createWorkerPool(&a, &other).await.unwrap_err();
    assert_eq!(status_of(&conflict), Some(409));
    // updateWorkerPool: a pool as read may be sent back, its extra fields checked and ignored;
    // the provider is judged before the body's pool id, as upstream does
    let mut read_back = created.clone();
    for counter in [
        "currentCapacity",
        "requestedCount",
        "runningCount",
        "stoppingCount",
        "stoppedCount",
        "requestedCapacity",
        "runningCapacity",
        "stoppingCapacity",
        "stoppedCapacity",
    ] {
        read_back.as_object_mut().unwrap().remove(counter);
    }
    read_back["description"] = json!("updated");
    let updated = m.updateWorkerPool(&a, &read_back).await.unwrap();
    assert_eq!(updated["description"], "updated");
    for (change, says) in [
        (
            json!({ "providerId": "nope", "workerPoolId": b }),
            "Invalid Provider",
        ),
        (json!({ "workerPoolId": b }), "Incorrect workerPoolId"),
        (
            json!({ "created": "garbage" }),
            "data/created must match format",
        ),
    ] {
        let mut body = read_back.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let err = m.updateWorkerPool(&a, &body).await.unwrap_err();
        assert_eq!(status_of(&err), Some(400), "{change}: {err:#}");
        assert!(format!("{err:#}").contains(says), "{change}: {err:#}");
    }
    // a config the static provider does not take, an unknown provider: 400, nothing created
    let c = fresh_queue();
    let bad = m
        .createWorkerPool(&c, &pool_body(json!({ "minCapacity": 1 })))
        .await
        .unwrap_err();
    assert_eq!(status_of(&bad), Some(400));
    let mut aws = pool_body(json!({}));
    aws["providerId"] = json!("aws");
    assert_eq!(
        status_of(&m.createWorkerPool(&c, &aws).await.unwrap_err()),
        Some(400)
    );
    assert_eq!(status_of(&m.workerPool(&c).await.unwrap_err()), Some(404));
    // paging
    let page = m.listWorkerPools(None, Some("1")).await.unwrap();
    assert_eq!(page["workerPools"].as_array().unwrap().len(), 1);
    let token = page["continuationToken"].as_str().unwrap().to_string();
    let rest = m.listWorkerPools(Some(&token), Some("1")).await.unwrap();
    assert_eq!(rest["workerPools"].as_array().unwrap().len(), 1);
    assert!(rest.get("continuationToken").is_none());
    // deleting switches to the null provider; the pool stays listed
    let deleted = m.deleteWorkerPool(&b).await.unwrap();
    assert_eq!(deleted["providerId"], "null-provider");
    // who did what to a pool: the audit history of the worker pool entity, and of the client
    // that acted, in order and paged together with its client and role changes
    let auth = crate::auth::root_auth(&s);
    let history = auth
        .getEntityHistory("worker-pool", &b, None, None)
        .await
        .unwrap();
    let actions: Vec<&str> = history["auditHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actionType"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "deleted"], "{history}");
    assert_eq!(history["auditHistory"][0]["entityType"], "worker-pool");
    assert_eq!(
        history["auditHistory"][0]["clientId"],
        "static/taskcluster/root"
    );
    let history = auth
        .getEntityHistory("worker-pool", &a, None, None)
        .await
        .unwrap();
    assert_eq!(
        history["auditHistory"][1]["actionType"], "updated",
        "{history}"
    );
    let auth_ref = &auth;
    let pages = all_pages(|t| async move {
        auth_ref
            .listAuditHistory("static/taskcluster/root", t.as_deref(), Some("1"))
            .await
    })
    .await;
    let by_root: Vec<(String, String)> = pages
        .iter()
        .flat_map(|p| p["auditHistory"].as_array().unwrap())
        .map(|e| {
            (
                e["entityId"].as_str().unwrap().to_string(),
                e["actionType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let b_created = by_root
        .iter()
        .position(|e| *e == (b.clone(), "created".to_string()));
    let b_deleted = by_root
        .iter()
        .position(|e| *e == (b.clone(), "deleted".to_string()));
    assert!(b_created.is_some() && b_created < b_deleted, "{by_root:?}");
    // page by page, the same rows as in one page, and in time order
    let whole = auth
        .listAuditHistory("static/taskcluster/root", None, None)
        .await
        .unwrap();
    let entries = whole["auditHistory"].as_array().unwrap();
    let all: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["entityId"].as_str().unwrap().to_string(),
                e["actionType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(by_root, all);
    let times: Vec<&str> = entries
        .iter()
        .map(|e| e["created"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    // a later update of the deleted pool is an update, not another deletion
    let mut revive = pool_body(json!({}));
    revive["providerId"] = json!("null-provider");
    m.updateWorkerPool(&b, &revive).await.unwrap();
    let history = auth
        .getEntityHistory("worker-pool", &b, None, None)
        .await
        .unwrap();
    assert_eq!(
        history["auditHistory"][2]["actionType"], "updated",
        "{history}"
    );
    // a worker in a deleted pool cannot be created; a badly shaped secret is refused
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let body = json!({ "expires": expires, "providerInfo": { "staticSecret": secret() } });
    let refused = m.createWorker(&b, GROUP, WORKER, &body).await.unwrap_err();
    assert_eq!(status_of(&refused), Some(400));
    let short = json!({ "expires": expires, "providerInfo": { "staticSecret": "short" } });
    let refused = m.createWorker(&a, GROUP, WORKER, &short).await.unwrap_err();
    assert_eq!(status_of(&refused), Some(400));
    // the error body echoes the payload, but never the secret
    let (status, echoed) = s
        .root_call(
            "PUT",
            &format!(
                "/api/worker-manager/v1/workers/{}/{GROUP}/{WORKER}",
                a.replace('/', "%2F")
            ),
            &short,
        )
        .await;
    assert_eq!(status, 400);
    let payload = &echoed["requestInfo"]["payload"];
    assert_eq!(payload["expires"], short["expires"]);
    assert_eq!(payload["providerInfo"]["staticSecret"], "(OMITTED)");
    assert_eq!(
        status_of(&m.worker(&a, GROUP, WORKER).await.unwrap_err()),
        Some(404)
    );
    // anonymous callers hold no worker-manager scopes
    let anon = manager(&s, None);
    assert_eq!(
        status_of(&anon.listWorkerPools(None, None).await.unwrap_err()),
        Some(403)
    );
}

#[tokio::test]
async fn static_worker_registers_claims_work_and_is_removed() {
    let s = Server::start(&[]).await;
    let m = root(&s);
    let pool = fresh_queue();
    let config = json!({ "workerConfig": { "greeting": "hello" } });
    m.createWorkerPool(&pool, &pool_body(config)).await.unwrap();
    let static_secret = secret();
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let body = json!({
        "expires": expires,
        "capacity": 2,
        "providerInfo": { "staticSecret": static_secret },
    });
    let worker = m.createWorker(&pool, GROUP, WORKER, &body).await.unwrap();
    assert_eq!(worker["state"], "running");
    assert_eq!(worker["capacity"], 2);
    assert_eq!(worker["providerId"], "static");
    // an identical re-create is accepted; a different one conflicts
    m.createWorker(&pool, GROUP, WORKER, &body).await.unwrap();
    let mut other = body.clone();
    other["capacity"] = json!(3);
    let conflict = m
        .createWorker(&pool, GROUP, WORKER, &other)
        .await
        .unwrap_err();
    assert_eq!(status_of(&conflict), Some(409));

    let listed = m
        .listWorkersForWorkerPool(&pool, None, None, None, None)
        .await
        .unwrap();
    assert_eq!(listed["workers"][0]["workerId"], WORKER);
    assert_eq!(listed["workers"].as_array().unwrap().len(), 1);
    let by_group = m
        .listWorkersForWorkerGroup(&pool, GROUP, None, None)
        .await
        .unwrap();
    assert_eq!(by_group["workers"].as_array().unwrap().len(), 1);
    let pool_state = m.workerPool(&pool).await.unwrap();
    assert_eq!(pool_state["runningCount"], 1);
    assert_eq!(pool_state["currentCapacity"], 2);

    // registration: no credentials needed, the secret is the proof
    let anon = manager(&s, None);
    let wrong = anon
        .registerWorker(&register_body(&pool, &secret()))
        .await
        .unwrap_err();
    assert_eq!(status_of(&wrong), Some(400));
    let reg = anon
        .registerWorker(&register_body(&pool, &static_secret))
        .await
        .unwrap();
    let client_id = format!("worker/static/{pool}/{GROUP}/{WORKER}");
    assert_eq!(reg["credentials"]["clientId"], client_id.as_str());
    assert_eq!(reg["workerConfig"], json!({ "greeting": "hello" }));
    let hours = hours_until(&reg["expires"]);
    assert!((95.9..96.1).contains(&hours), "{hours}");
    let first_secret = reg["secret"].as_str().unwrap().to_string();
    assert_eq!(first_secret.len(), 44);

    // the credentials carry exactly the scopes to claim from this pool's task queue
    let task_id = slugid::nice();
    s.queue()
        .createTask(&task_id, &task_def(&pool, 600))
        .await
        .unwrap();
    let creds = credentials_of(&reg);
    let q = s.queue_as(creds.clone());
    let claim_body = json!({ "workerGroup": GROUP, "workerId": WORKER, "tasks": 1 });
    let claimed = q.claimWork(&pool, &claim_body).await.unwrap();
    assert_eq!(claimed["tasks"][0]["status"]["taskId"], task_id.as_str());
    let elsewhere = q.claimWork(&fresh_queue(), &claim_body).await.unwrap_err();
    assert_eq!(status_of(&elsewhere), Some(403));
    let as_other = json!({ "workerGroup": GROUP, "workerId": "someone-else", "tasks": 1 });
    let spoofed = q.claimWork(&pool, &as_other).await.unwrap_err();
    assert_eq!(status_of(&spoofed), Some(403));

    // the worker's own credentials: reregister (the old secret is then spent), report errors
    let own = manager(&s, Some(creds));
    let rereg_body = |secret: &str| json!({ "workerPoolId": pool, "workerGroup": GROUP, "workerId": WORKER, "secret": secret });
    let rereg = own
        .reregisterWorker(&rereg_body(&first_secret))
        .await
        .unwrap();
    let second_secret = rereg["secret"].as_str().unwrap().to_string();
    assert_ne!(second_secret, first_secret);
    assert_eq!(rereg["credentials"]["clientId"], client_id.as_str());
    let spent = own
        .reregisterWorker(&rereg_body(&first_secret))
        .await
        .unwrap_err();
    assert_eq!(status_of(&spent), Some(400));
    // a secret this service cannot have made fails its schema, before any scope is asked for
    let malformed = anon
        .reregisterWorker(&rereg_body("short"))
        .await
        .unwrap_err();
    assert_eq!(status_of(&malformed), Some(400), "{malformed:#}");
    assert!(
        format!("{malformed:#}").contains("Schema Validation Failed"),
        "{malformed:#}"
    );
    let report = json!({
        "workerGroup": GROUP,
        "workerId": WORKER,
        "kind": "disk-full",
        "title": "Disk full",
        "description": "no space left on /",
        "extra": { "free": 0 },
    });
    let reported = own.reportWorkerError(&pool, &report).await.unwrap();
    let errors = m
        .listWorkerPoolErrors(&pool, None, None, None, None)
        .await
        .unwrap();
    let listed = &errors["workerPoolErrors"];
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["errorId"], reported["errorId"]);
    // a later error is listed first, as upstream orders them, also page by page
    let mut later_report = report.clone();
    later_report["title"] = json!("Disk full again");
    let later = own.reportWorkerError(&pool, &later_report).await.unwrap();
    let both = m
        .listWorkerPoolErrors(&pool, None, None, None, None)
        .await
        .unwrap();
    let ids: Vec<&Value> = both["workerPoolErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["errorId"])
        .collect();
    assert_eq!(ids, [&later["errorId"], &reported["errorId"]], "{both}");
    let first_page = m
        .listWorkerPoolErrors(&pool, None, Some("1"), None, None)
        .await
        .unwrap();
    assert_eq!(
        first_page["workerPoolErrors"][0]["errorId"],
        later["errorId"]
    );
    let token = first_page["continuationToken"].as_str().unwrap();
    let second_page = m
        .listWorkerPoolErrors(&pool, Some(token), Some("1"), None, None)
        .await
        .unwrap();
    assert_eq!(
        second_page["workerPoolErrors"][0]["errorId"],
        reported["errorId"]
    );
    // the experimental stats: errors by day, hour, title, code and pool
    let stats = m.workerPoolErrorStats(Some(&pool)).await.unwrap();
    assert_eq!(stats["workerPoolId"], pool.as_str(), "{stats}");
    let totals = &stats["totals"];
    assert_eq!(totals["total"], 2, "{stats}");
    for (bucket, n) in [("daily", 7), ("hourly", 24)] {
        let counts: Vec<u64> = totals[bucket]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(counts.len(), n, "{stats}");
        assert_eq!(counts.iter().sum::<u64>(), 2, "{stats}");
        assert!(counts[n - 1] >= 1, "the newest bucket is now's: {stats}");
    }
    assert_eq!(
        totals["title"],
        json!({ "Disk full": 1, "Disk full again": 1 })
    );
    assert_eq!(totals["code"], json!({ "other": 2 }));
    assert_eq!(totals["launchConfig"], json!({}));
    assert_eq!(totals["workerPool"], json!({ pool.as_str(): 2 }));
    let everywhere = m.workerPoolErrorStats(None).await.unwrap();
    assert_eq!(everywhere["workerPoolId"], "");
    assert_eq!(everywhere["totals"]["workerPool"][pool.as_str()], 2);
    // a pool's workers counted by launch configuration (static workers have none), and
    // every pool's counts
    let by_config = m.workerPoolStats(&pool).await.unwrap();
    assert_eq!(
        by_config["launchConfigStats"][0]["launchConfigId"], "unknown",
        "{by_config}"
    );
    assert_eq!(by_config["launchConfigStats"][0]["runningCount"], 1);
    let configs = m
        .listWorkerPoolLaunchConfigs(&pool, None, None, None)
        .await
        .unwrap();
    assert_eq!(configs, json!({ "workerPoolLaunchConfigs": [] }));
    let all_stats = m.listWorkerPoolsStats(None, None).await.unwrap();
    let mine = all_stats["workerPoolsStats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["workerPoolId"] == pool.as_str())
        .cloned()
        .unwrap();
    assert_eq!(mine["runningCount"], 1, "{mine}");
    // listWorkers and getWorker: the queue's workers, joined with the worker-manager's; one
    // that claimed work without being a worker of the pool is standalone
    let (provisioner, worker_type) = pool.split_once('/').unwrap();
    let root_queue = s.queue();
    root_queue
        .createTask(&slugid::nice(), &task_def(&pool, 600))
        .await
        .unwrap();
    let lone = json!({ "workerGroup": "lone-group", "workerId": "lone", "tasks": 1 });
    root_queue.claimWork(&pool, &lone).await.unwrap();
    let workers = m
        .listWorkers(provisioner, worker_type, None, None, None, None, None)
        .await
        .unwrap();
    let find = |id: &str| {
        workers["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["workerId"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {workers}"))
    };
    let managed = find(WORKER);
    assert_eq!(managed["state"], "running", "{managed}");
    assert_eq!(managed["providerId"], "static", "{managed}");
    assert_eq!(managed["workerPoolId"], pool.as_str(), "{managed}");
    assert!(managed["firstClaim"].is_string(), "{managed}");
    let standalone = find("lone");
    assert_eq!(standalone["state"], "standalone", "{standalone}");
    assert_eq!(standalone["providerId"], "none", "{standalone}");
    assert_eq!(standalone["capacity"], 0, "{standalone}");
    let running = m
        .listWorkers(
            provisioner,
            worker_type,
            None,
            None,
            None,
            None,
            Some("running"),
        )
        .await
        .unwrap();
    let ids: Vec<&Value> = running["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["workerId"])
        .collect();
    assert_eq!(ids, [&json!(WORKER)], "{running}");
    for (quarantined, state) in [(Some("maybe"), None), (None, Some("gone"))] {
        let err = m
            .listWorkers(
                provisioner,
                worker_type,
                None,
                None,
                None,
                quarantined,
                state,
            )
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(400), "{err:#}");
    }
    let one = m
        .getWorker(provisioner, worker_type, GROUP, WORKER)
        .await
        .unwrap();
    assert_eq!(one["state"], "running", "{one}");
    assert_eq!(one["provisionerId"], provisioner, "{one}");
    assert!(one["recentTasks"].is_array(), "{one}");
    assert!(one.get("taskQueueId").is_none(), "{one}");
    assert!(one.get("actions").is_none(), "{one}");
    assert_eq!(one["quarantineDetails"], json!([]), "{one}");
    // each quarantineWorker call is kept: who, when, until and why (a date in the past
    // lifts the quarantine, so the worker goes on claiming)
    let lifted = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    s.queue()
        .quarantineWorker(
            provisioner,
            worker_type,
            GROUP,
            WORKER,
            &json!({ "quarantineUntil": lifted, "quarantineInfo": "checked the disk" }),
        )
        .await
        .unwrap();
    let one = m
        .getWorker(provisioner, worker_type, GROUP, WORKER)
        .await
        .unwrap();
    let details = one["quarantineDetails"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{one}");
    assert_eq!(details[0]["clientId"], "static/taskcluster/root", "{one}");
    assert_eq!(details[0]["quarantineInfo"], "checked the disk", "{one}");
    let until =
        chrono::DateTime::parse_from_rfc3339(details[0]["quarantineUntil"].as_str().unwrap())
            .unwrap();
    let asked = chrono::DateTime::parse_from_rfc3339(&lifted).unwrap();
    assert!((until - asked).num_milliseconds().abs() < 1, "{one}");
    assert!(details[0]["updatedAt"].is_string(), "{one}");
    let missing = m
        .getWorker(provisioner, worker_type, GROUP, "nobody")
        .await
        .unwrap_err();
    assert_eq!(status_of(&missing), Some(404));
    assert_eq!(listed[0]["kind"], "disk-full");
    assert_eq!(
        listed[0]["extra"],
        json!({ "free": 0, "workerGroup": GROUP, "workerId": WORKER })
    );
    let as_other = json!({ "workerGroup": GROUP, "workerId": "someone-else", "kind": "k",
        "title": "t", "description": "d", "extra": {} });
    let denied = own.reportWorkerError(&pool, &as_other).await.unwrap_err();
    assert_eq!(status_of(&denied), Some(403));

    // removal: the worker is told to terminate and can no longer register
    let verdict = own
        .shouldWorkerTerminate(&pool, GROUP, WORKER)
        .await
        .unwrap();
    assert_eq!(verdict, json!({ "terminate": false, "reason": "none" }));
    own.removeWorker(&pool, GROUP, WORKER).await.unwrap();
    let verdict = own
        .shouldWorkerTerminate(&pool, GROUP, WORKER)
        .await
        .unwrap();
    assert_eq!(verdict["terminate"], true);
    assert_eq!(verdict["reason"], "worker was removed");
    let after = anon
        .registerWorker(&register_body(&pool, &static_secret))
        .await
        .unwrap_err();
    assert_eq!(status_of(&after), Some(400));
    let stopped = m
        .listWorkersForWorkerPool(&pool, None, None, None, Some("stopped"))
        .await
        .unwrap();
    assert_eq!(stopped["workers"][0]["state"], "stopped");

    // a restart reloads the projection from its column family
    let mut s = s;
    s.restart().await;
    let m = root(&s);
    assert_eq!(
        m.worker(&pool, GROUP, WORKER).await.unwrap()["state"],
        "stopped"
    );
    let errors = m
        .listWorkerPoolErrors(&pool, None, None, None, None)
        .await
        .unwrap();
    assert_eq!(errors["workerPoolErrors"].as_array().unwrap().len(), 2);

    // no secret is stored in clear, anywhere under the data directory
    for needle in [&static_secret, &first_secret, &second_secret] {
        assert!(
            !files_contain(&s.data_dir, needle.as_bytes()),
            "a secret reached the data directory in clear"
        );
    }
}

/// Paging through a pool's workers one at a time returns each worker once, also when one
/// group's name is another's followed by `-...` (workers come in (group, id) order).
#[tokio::test]
async fn listing_a_pools_workers_page_by_page_misses_none() {
    let s = Server::start(&[]).await;
    let m = root(&s);
    let pool = static_pool(&m).await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let made = [
        ("us-east", "w9"),
        ("us-east-1", "w1"),
        ("us-east-1", "w2"),
        ("us", "w5"),
    ];
    for (group, id) in made {
        let body = json!({ "expires": expires, "providerInfo": { "staticSecret": secret() } });
        m.createWorker(&pool, group, id, &body).await.unwrap();
    }
    let (m_ref, pool_ref) = (&m, &pool);
    let pages = all_pages(|t| async move {
        m_ref
            .listWorkersForWorkerPool(pool_ref, t.as_deref(), Some("1"), None, None)
            .await
    })
    .await;
    let mut seen = Vec::new();
    for page in &pages {
        for w in page["workers"].as_array().unwrap() {
            seen.push(format!("{}/{}", w["workerGroup"], w["workerId"]).replace('"', ""));
        }
        assert!(seen.len() <= made.len(), "{seen:?}");
    }
    assert_eq!(
        seen,
        ["us/w5", "us-east/w9", "us-east-1/w1", "us-east-1/w2"],
        "in (group, id) order, each once"
    );
}

/// updateWorker through the official Rust client: capacity, expiry and the static secret
/// change, the old secret no longer registers, an unknown worker is 404.
#[tokio::test]
async fn update_worker_changes_capacity_and_secret() {
    let s = Server::start(&[]).await;
    let m = root(&s);
    let pool = static_pool(&m).await;
    let (old, new) = (secret(), secret());
    let expires = |days| (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339();
    let body =
        json!({ "expires": expires(1), "capacity": 1, "providerInfo": { "staticSecret": old } });
    m.createWorker(&pool, GROUP, WORKER, &body).await.unwrap();
    let update =
        json!({ "expires": expires(3), "capacity": 3, "providerInfo": { "staticSecret": new } });
    let updated = m.updateWorker(&pool, GROUP, WORKER, &update).await.unwrap();
    assert_eq!(updated["capacity"], 3, "{updated}");
    assert_eq!(updated["state"], "running", "{updated}");
    let hours = hours_until(&updated["expires"]);
    assert!((71.9..72.1).contains(&hours), "{hours}");
    assert_eq!(m.workerPool(&pool).await.unwrap()["currentCapacity"], 3);
    let anon = manager(&s, None);
    let refused = anon
        .registerWorker(&register_body(&pool, &old))
        .await
        .unwrap_err();
    assert_eq!(status_of(&refused), Some(400));
    anon.registerWorker(&register_body(&pool, &new))
        .await
        .unwrap();
    let missing = m
        .updateWorker(&pool, GROUP, "no-such-worker", &update)
        .await
        .unwrap_err();
    assert_eq!(status_of(&missing), Some(404));
}

/// A worker past its `expires` is removed by the expiry job (upstream's `expireWorkers`),
/// whatever its state: it answers 404 and no longer counts in its pool.
#[tokio::test]
async fn expired_workers_are_removed() {
    let s = Server::start(&[("TASKLEDGER_EXPIRY_SCAN_SECS", "1")]).await;
    let m = root(&s);
    let pool = static_pool(&m).await;
    let expires = |hours: i64| (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339();
    for (id, hours) in [("stays", 24), ("goes", 24)] {
        let body =
            json!({ "expires": expires(hours), "providerInfo": { "staticSecret": secret() } });
        m.createWorker(&pool, GROUP, id, &body).await.unwrap();
    }
    // updateWorker takes an expiry in the past
    let past = json!({ "expires": expires(-1), "providerInfo": { "staticSecret": secret() } });
    m.updateWorker(&pool, GROUP, "goes", &past).await.unwrap();
    eventually(std::time::Duration::from_secs(10), || async {
        let gone = m.worker(&pool, GROUP, "goes").await.err();
        gone.filter(|e| status_of(e) == Some(404))
    })
    .await;
    m.worker(&pool, GROUP, "stays").await.unwrap();
    let counted = m.workerPool(&pool).await.unwrap();
    assert_eq!(counted["runningCount"], 1, "{counted}");
}
