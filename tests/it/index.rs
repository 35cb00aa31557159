//! The index service, driven by the official `taskcluster` crate's Index client: insertTask
//! and its rank rule, findTask, the listings and their paging, findTasksAtIndex, deleteTask,
//! error bodies that change nothing, a restart; and the route indexer, which indexes a
//! completed task (and only a completed one) under its `index.` routes, with
//! findArtifactFromTask's redirects.

use crate::auth::{create_client, root_auth};
use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, Index};

fn index_as(s: &Server, creds: Credentials) -> Index {
    Index::new(ClientBuilder::new(&s.root_url).credentials(creds)).unwrap()
}

fn root_index(s: &Server) -> Index {
    index_as(s, Credentials::new("static/taskcluster/root", ROOT_TOKEN))
}

fn hours_from_now(h: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(h)).to_rfc3339()
}

fn entry(task_id: &str, rank: i64, data: Value, expires: &str) -> Value {
    json!({ "taskId": task_id, "rank": rank, "data": data, "expires": expires })
}

/// Every `field` of every item of a paged listing (`limit` per page).
async fn listed(
    index: &Index,
    tasks: bool,
    namespace: &str,
    limit: &str,
    field: &str,
) -> Vec<String> {
    let pages = all_pages(|t| async move {
        if tasks {
            index.listTasks(namespace, t.as_deref(), Some(limit)).await
        } else {
            index
                .listNamespaces(namespace, t.as_deref(), Some(limit))
                .await
        }
    })
    .await;
    let key = if tasks { "tasks" } else { "namespaces" };
    pages
        .iter()
        .flat_map(|p| p[key].as_array().unwrap().clone())
        .map(|n| n[field].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn entries_are_inserted_found_listed_ranked_and_deleted() {
    let mut s = Server::start(&[]).await;
    let index = root_index(&s);
    let expires = hours_from_now(1);
    let (a, b) = (slugid::nice(), slugid::nice());
    for (path, id) in [
        ("it.proj.v1.linux", &a),
        ("it.proj.v1.mac", &a),
        ("it.proj.v2.linux", &b),
        ("toplevel", &b),
    ] {
        let written = index
            .insertTask(path, &entry(id, 10, json!({ "p": path }), &expires))
            .await
            .unwrap();
        assert_eq!(written["namespace"], path);
    }
    let found = index.findTask("it.proj.v1.linux").await.unwrap();
    assert_eq!(found["taskId"], a.as_str());
    assert_eq!(found["rank"], 10);
    assert_eq!(found["data"], json!({ "p": "it.proj.v1.linux" }));
    let wire = chrono::DateTime::parse_from_rfc3339(found["expires"].as_str().unwrap()).unwrap();
    let sent = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    assert_eq!(wire.timestamp_millis(), sent.timestamp_millis());

    // the rank rule: a lower rank is answered with the entry that stays, an equal one replaces
    let kept = index
        .insertTask(
            "it.proj.v1.linux",
            &entry(&b, 9, json!({ "lower": true }), &expires),
        )
        .await
        .unwrap();
    assert_eq!((&kept["taskId"], &kept["rank"]), (&json!(a), &json!(10)));
    assert_eq!(
        index.findTask("it.proj.v1.linux").await.unwrap()["taskId"],
        a.as_str()
    );
    index
        .insertTask("it.proj.v1.mac", &entry(&b, 10, json!({}), &expires))
        .await
        .unwrap();
    assert_eq!(
        index.findTask("it.proj.v1.mac").await.unwrap()["taskId"],
        b.as_str()
    );

    // namespaces: direct children only, in name order, one page at a time as in one
    assert_eq!(listed(&index, false, "", "1000", "namespace").await, ["it"]);
    for limit in ["1", "1000"] {
        assert_eq!(
            listed(&index, false, "it.proj", limit, "namespace").await,
            ["it.proj.v1", "it.proj.v2"]
        );
        assert_eq!(
            listed(&index, false, "it.proj", limit, "name").await,
            ["v1", "v2"]
        );
        assert_eq!(
            listed(&index, true, "it.proj.v1", limit, "namespace").await,
            ["it.proj.v1.linux", "it.proj.v1.mac"]
        );
    }
    assert_eq!(
        listed(&index, true, "", "10", "namespace").await,
        ["toplevel"]
    );
    // a namespace expires at the start of the day after its latest entry
    let ns = index.listNamespaces("it", None, None).await.unwrap();
    let ns_expires = ns["namespaces"][0]["expires"].as_str().unwrap();
    assert!(ns_expires.ends_with("T00:00:00.000Z"), "{ns}");

    // findTasksAtIndex: the entries of the paths that have one, in order, paged
    let asked = json!({ "indexes": ["toplevel", "it.nothing", "it.proj.v2.linux"] });
    let pages = all_pages(|t| {
        let index = &index;
        let asked = &asked;
        async move { index.findTasksAtIndex(asked, t.as_deref(), Some("1")).await }
    })
    .await;
    let paths: Vec<&str> = pages
        .iter()
        .flat_map(|p| p["tasks"].as_array().unwrap())
        .map(|t| t["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["toplevel", "it.proj.v2.linux"]);

    // bad input: Taskcluster's error and status, and nothing changes
    let before = index.findTask("it.proj.v1.linux").await.unwrap();
    let (status, body) = s
        .root_call(
            "PUT",
            "/api/index/v1/task/it.proj.v1.linux",
            &entry(&b, 11, json!({}), "tomorrow"),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("InputValidationError")),
        "{body}"
    );
    let (status, body) = s
        .root_call(
            "PUT",
            "/api/index/v1/task/it.proj.v1.linux",
            &json!({ "taskId": b, "rank": 11.5, "data": {}, "expires": expires }),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("InputValidationError")),
        "{body}"
    );
    let (status, body) = s
        .root_call(
            "PUT",
            "/api/index/v1/task/it..bad",
            &entry(&b, 11, json!({}), &expires),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("InvalidRequestArguments")),
        "{body}"
    );
    assert_eq!(index.findTask("it.proj.v1.linux").await.unwrap(), before);

    // scopes: a reader of it.proj.* may find, not insert
    let creds = create_client(&s, "it/index-reader", &["index:find-task:it.proj.*"]).await;
    let reader = index_as(&s, creds);
    reader.findTask("it.proj.v2.linux").await.unwrap();
    let err = reader.findTask("toplevel").await.unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:#}");
    let err = reader
        .insertTask("it.proj.v9", &entry(&b, 1, json!({}), &expires))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403), "{err:#}");
    let err = index.findTask("it.proj.v9").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404), "{err:#}");

    // deleteTask: gone, twice without error
    index.deleteTask("it.proj.v1.mac").await.unwrap();
    index.deleteTask("it.proj.v1.mac").await.unwrap();
    let (status, body) = s
        .root_call("GET", "/api/index/v1/task/it.proj.v1.mac", &json!({}))
        .await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("ResourceNotFound")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Indexed task not found"),
        "{body}"
    );

    // the index comes back from the log after a restart
    s.restart().await;
    let index = root_index(&s);
    assert_eq!(index.findTask("it.proj.v1.linux").await.unwrap(), before);
    assert_eq!(
        listed(&index, true, "it.proj.v1", "10", "namespace").await,
        ["it.proj.v1.linux"]
    );
    let (ok, text, err) = crate::audit::cli(&s, &["events", "tail", "--service", "index"]);
    assert!(ok, "{err}");
    // four inserts, the equal-rank replacement (the lower rank wrote nothing), one delete
    assert_eq!(
        text.matches("\"eventType\":\"TaskIndexed\"").count(),
        5,
        "{text}"
    );
    assert_eq!(
        text.matches("\"eventType\":\"IndexedTaskDeleted\"").count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn completed_tasks_are_indexed_under_their_index_routes() {
    let s = Server::start(&[]).await;
    let q = s.queue();
    let index = root_index(&s);
    let failed = slugid::nice();
    let mut def = task_def("built-in/fail", 600);
    def["routes"] = json!(["index.it.routes.failed"]);
    q.createTask(&failed, &def).await.unwrap();
    eventually(Duration::from_secs(30), || async {
        (state_of(&q, &failed).await["state"] == "failed").then_some(())
    })
    .await;

    let done = slugid::nice();
    let mut def = task_def("built-in/succeed", 600);
    def["routes"] = json!([
        "index.it.routes.latest",
        "index.it.routes.rev.abc123",
        "index.bad..path",
        "tc-treeherder.v2.x"
    ]);
    def["extra"] = json!({ "index": { "rank": 1700000000, "data": { "rev": "abc123" } } });
    q.createTask(&done, &def).await.unwrap();
    let found = eventually(Duration::from_secs(30), || async {
        index.findTask("it.routes.latest").await.ok()
    })
    .await;
    assert_eq!(found["taskId"], done.as_str());
    assert_eq!(found["rank"], 1_700_000_000i64);
    assert_eq!(found["data"], json!({ "rev": "abc123" }));
    // the expiry is the task's (the definition's default: a year after created)
    let status = q.status(&done).await.unwrap();
    let task_expires =
        chrono::DateTime::parse_from_rfc3339(status["status"]["expires"].as_str().unwrap())
            .unwrap();
    let entry_expires =
        chrono::DateTime::parse_from_rfc3339(found["expires"].as_str().unwrap()).unwrap();
    assert_eq!(entry_expires, task_expires);
    assert_eq!(
        index.findTask("it.routes.rev.abc123").await.unwrap()["taskId"],
        done.as_str()
    );
    assert_eq!(
        listed(&index, false, "it.routes", "10", "namespace").await,
        ["it.routes.rev"]
    );
    // the failed task, resolved before, was passed over
    let err = index.findTask("it.routes.failed").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404), "{err:#}");

    // a lower rank inserted by hand does not displace what the completion wrote
    let kept = index
        .insertTask(
            "it.routes.latest",
            &entry(&failed, 5, json!({}), &hours_from_now(1)),
        )
        .await
        .unwrap();
    assert_eq!(kept["taskId"], done.as_str());

    // findArtifactFromTask: 303 to the queue's latest-artifact URL, signed unless the name is
    // public; the signature lets an anonymous caller past the scope check (the artifact does
    // not exist, so the queue answers 404, not 403)
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = index
        .findArtifactFromTask_signed_url(
            "it.routes.latest",
            "private/build/log.txt",
            Duration::from_secs(60),
        )
        .unwrap();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let expected = format!(
        "{}/api/queue/v1/task/{done}/artifacts/private/build/log.txt?bewit=",
        s.root_url
    );
    assert!(location.starts_with(&expected), "{location}");
    let unsigned = location.split('?').next().unwrap();
    let r = http.get(unsigned).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = http.get(&location).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "{:?}", r.text().await);

    // a name the anonymous role may read gets the plain URL
    root_auth(&s)
        .createRole(
            "anonymous",
            &json!({ "scopes": ["queue:get-artifact:public/*"], "description": "public artifacts" }),
        )
        .await
        .unwrap();
    let url = index
        .findArtifactFromTask_signed_url(
            "it.routes.latest",
            "public/a.txt",
            Duration::from_secs(60),
        )
        .unwrap();
    let location = eventually(Duration::from_secs(10), || async {
        let r = http.get(&url).send().await.unwrap();
        let location = r.headers()["location"].to_str().unwrap().to_string();
        (!location.contains("bewit")).then_some(location)
    })
    .await;
    assert_eq!(
        location,
        format!(
            "{}/api/queue/v1/task/{done}/artifacts/public/a.txt",
            s.root_url
        )
    );
    // an index path nothing is at: 404
    let url = index
        .findArtifactFromTask_signed_url("it.routes.none", "public/a.txt", Duration::from_secs(60))
        .unwrap();
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 404);
}
