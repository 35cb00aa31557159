//! The purge-cache service through the official client: requests recorded, listed per pool
//! (with `since`) and in all, Taskcluster's errors for bad input and missing scopes.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, PurgeCache};

fn client(s: &Server, creds: Credentials) -> PurgeCache {
    PurgeCache::new(ClientBuilder::new(&s.root_url).credentials(creds)).unwrap()
}

#[tokio::test]
async fn purge_requests_are_recorded_listed_and_checked() {
    let s = Server::start(&[]).await;
    let root = Credentials::new("static/taskcluster/root", ROOT_TOKEN);
    let p = client(&s, root.clone());
    p.purgeCache("it-prov/wt-a", &json!({ "cacheName": "cargo" }))
        .await
        .unwrap();
    p.purgeCache("it-prov/wt-a", &json!({ "cacheName": "npm" }))
        .await
        .unwrap();
    p.purgeCache("it-prov/wt-b", &json!({ "cacheName": "cargo" }))
        .await
        .unwrap();

    let a = p.purgeRequests("it-prov/wt-a", None).await.unwrap();
    let names: Vec<&str> = a["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cacheName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cargo", "npm"], "{a}");
    let first = &a["requests"][0];
    assert_eq!(first["provisionerId"], "it-prov");
    assert_eq!(first["workerType"], "wt-a");
    let before = first["before"].as_str().unwrap().to_string();

    // a repeat moves `before` forward and keeps one request
    tokio::time::sleep(Duration::from_millis(5)).await;
    p.purgeCache("it-prov/wt-a", &json!({ "cacheName": "cargo" }))
        .await
        .unwrap();
    let again = p.purgeRequests("it-prov/wt-a", None).await.unwrap();
    assert_eq!(again["requests"].as_array().unwrap().len(), 2);
    let moved = again["requests"][0]["before"].as_str().unwrap();
    assert!(moved > before.as_str(), "{moved} after {before}");
    // `since`: only requests made at or after it
    let since = p.purgeRequests("it-prov/wt-a", Some(moved)).await.unwrap();
    assert_eq!(since["requests"].as_array().unwrap().len(), 1, "{since}");
    let later = p
        .purgeRequests("it-prov/wt-a", Some("2100-01-01T00:00:00.000Z"))
        .await
        .unwrap();
    assert_eq!(later, json!({ "requests": [] }));

    // all of them, a page at a time
    let page = p.allPurgeRequests(None, Some("2")).await.unwrap();
    assert_eq!(page["requests"].as_array().unwrap().len(), 2);
    let token = page["continuationToken"].as_str().unwrap().to_string();
    let rest = p.allPurgeRequests(Some(&token), Some("2")).await.unwrap();
    assert_eq!(rest["requests"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest.get("continuationToken").is_none());
    assert_eq!(rest["requests"][0]["workerType"], "wt-b");

    // bad input: Taskcluster's codes, nothing recorded
    for (pool, body, code) in [
        (
            "no-slash",
            json!({ "cacheName": "x" }),
            "InvalidRequestArguments",
        ),
        (
            "it-prov/wt a",
            json!({ "cacheName": "x" }),
            "InvalidRequestArguments",
        ),
        ("it-prov/wt-c", json!({}), "InputValidationError"),
        (
            "it-prov/wt-c",
            json!({ "cacheName": "x", "extra": 1 }),
            "InputValidationError",
        ),
        (
            "it-prov/wt-c",
            json!({ "cacheName": 5 }),
            "InputValidationError",
        ),
    ] {
        let path = format!(
            "/api/purge-cache/v1/purge-cache/{}",
            pool.replace(' ', "%20")
        );
        let (status, answer) = s.root_call("POST", &path, &body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some(code)),
            "{pool} {body}: {answer}"
        );
    }
    let (status, answer) = s
        .root_call(
            "GET",
            "/api/purge-cache/v1/purge-cache/it-prov/wt-a?since=yesterday",
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("InvalidRequestArguments")),
        "{answer}"
    );
    // `since` as clients send it: a date alone reads as midnight UTC
    let dated = p
        .purgeRequests("it-prov/wt-a", Some("2000-01-01"))
        .await
        .unwrap();
    assert_eq!(dated["requests"].as_array().unwrap().len(), 2, "{dated}");
    let (status, answer) = s
        .root_call(
            "GET",
            "/api/purge-cache/v1/purge-cache/list?continuationToken=bm90aGluZw",
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("InputError")),
        "{answer}"
    );
    // `list` is no pool: a POST there is refused by the pool's pattern, not an unknown route
    let (status, answer) = s
        .root_call(
            "POST",
            "/api/purge-cache/v1/purge-cache/list",
            &json!({ "cacheName": "x" }),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("InvalidRequestArguments")),
        "{answer}"
    );
    let all = p.allPurgeRequests(None, None).await.unwrap();
    assert_eq!(all["requests"].as_array().unwrap().len(), 3, "{all}");

    // scopes: purge-cache:<pool>:<cacheName>, and the two-colon purge-requests scope
    let narrow = root
        .create_temp_creds(Duration::from_secs(600), ["purge-cache:it-prov/wt-a:cargo"])
        .unwrap();
    let n = client(&s, narrow);
    n.purgeCache("it-prov/wt-a", &json!({ "cacheName": "cargo" }))
        .await
        .unwrap();
    let refused = n
        .purgeCache("it-prov/wt-a", &json!({ "cacheName": "npm" }))
        .await
        .unwrap_err();
    assert_eq!(status_of(&refused), Some(403));
    let refused = n.purgeRequests("it-prov/wt-a", None).await.unwrap_err();
    assert_eq!(status_of(&refused), Some(403));
    let reader = root
        .create_temp_creds(
            Duration::from_secs(600),
            ["purge-cache:purge-requests::it-prov/wt-a"],
        )
        .unwrap();
    let listed = client(&s, reader)
        .purgeRequests("it-prov/wt-a", None)
        .await
        .unwrap();
    assert_eq!(listed["requests"].as_array().unwrap().len(), 2);
}
