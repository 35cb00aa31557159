//! The object service and `object` artifacts, driven by the official crates: `taskcluster`'s
//! Object client, `taskcluster-upload` (which negotiates dataInline or putUrl and sends both
//! hashes) and `taskcluster-download` (getUrl, refusing data whose hashes do not match).

use crate::harness::*;
use serde_json::{json, Value};
use taskcluster::retry::Retry;
use taskcluster::{ClientBuilder, Credentials, Object};
use taskledger_core::ids::Slug;
use taskledger_projections::{keys, store};

pub(crate) fn object_as(server: &Server, creds: Credentials) -> Object {
    Object::new(ClientBuilder::new(&server.root_url).credentials(creds)).unwrap()
}

pub(crate) fn temp_creds(v: &Value) -> Credentials {
    Credentials::new_with_certificate(
        v["clientId"].as_str().unwrap(),
        v["accessToken"].as_str().unwrap(),
        v["certificate"].as_str().unwrap(),
    )
}

/// An `s3` artifact on run 0 of a claimed task, its bytes PUT to the URL the queue gave.
async fn s3_artifact(
    worker: &taskcluster::Queue,
    http: &reqwest::Client,
    task_id: &str,
    name: &str,
    expires: chrono::DateTime<chrono::Utc>,
    body: &str,
) {
    let art = worker
        .createArtifact(task_id, "0", name, &json!({ "storageType": "s3", "contentType": "text/plain", "expires": expires.to_rfc3339() }))
        .await
        .unwrap();
    let put = http
        .put(art["putUrl"].as_str().unwrap())
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
}

/// Uploads an object artifact's bytes with the official helper, as the worker that created it
/// (`art`: createArtifact's answer, whose credentials and upload id it uses).
pub(crate) async fn upload(
    server: &Server,
    art: &Value,
    content_type: &str,
    expires: &chrono::DateTime<chrono::Utc>,
    data: &[u8],
) {
    let object = object_as(server, temp_creds(&art["credentials"]));
    taskcluster_upload::upload_from_buf(
        art["projectId"].as_str().unwrap(),
        art["name"].as_str().unwrap(),
        content_type,
        expires,
        data,
        &Retry::default(),
        &object,
        art["uploadId"].as_str().unwrap(),
    )
    .await
    .unwrap();
}

/// A claimed task: its id and the queue client acting with its task credentials.
pub(crate) async fn claimed_task(server: &Server) -> (String, taskcluster::Queue) {
    let q = server.queue();
    let queue = fresh_queue();
    let task_id = slugid::nice();
    q.createTask(&task_id, &task_def(&queue, 600))
        .await
        .unwrap();
    let claim = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    let worker = server.queue_as(temp_creds(&claim["tasks"][0]["credentials"]));
    (task_id, worker)
}

#[tokio::test]
async fn object_artifacts_upload_and_download_with_the_official_helpers() {
    let mut server = Server::start(&[]).await;
    let q = server.queue();
    let (task_id, worker) = claimed_task(&server).await;
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    let retry = Retry::default();
    let small = b"small object artifact".to_vec();
    // one small enough to go inline, one larger than any API body (10 MiB) for a PUT URL
    let large: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut upload_ids = Vec::new();
    let request = json!({ "storageType": "object", "contentType": "application/x-test", "expires": expires.to_rfc3339() });
    for (name, data) in [("public/small.txt", &small), ("public/large.bin", &large)] {
        let art = worker
            .createArtifact(&task_id, "0", name, &request)
            .await
            .unwrap();
        let object_name = format!("t/{task_id}/0/{name}");
        assert_eq!(art["name"], object_name.as_str());
        // not present until the upload finished and the artifact with it
        let missing = q.artifact(&task_id, "0", name).await.unwrap_err();
        assert_eq!(status_of(&missing), Some(404));
        let early = worker
            .finishArtifact(&task_id, "0", name, &json!({ "uploadId": art["uploadId"] }))
            .await
            .unwrap_err();
        assert_eq!(status_of(&early), Some(400));
        assert!(
            format!("{early:#}").contains("Object storing artifact data does not exist"),
            "{early:#}"
        );
        // a wrong upload id is refused first, before the object is looked for
        let wrong = worker
            .finishArtifact(&task_id, "0", name, &json!({ "uploadId": slugid::nice() }))
            .await
            .unwrap_err();
        assert!(
            format!("{wrong:#}").contains("given uploadId does not match that for the artifact"),
            "{wrong:#}"
        );
        // the request takes uploadId and nothing else
        let extra = worker
            .finishArtifact(
                &task_id,
                "0",
                name,
                &json!({ "uploadId": art["uploadId"], "size": 3 }),
            )
            .await
            .unwrap_err();
        assert_eq!(status_of(&extra), Some(400));
        assert!(
            format!("{extra:#}").contains("should NOT have additional properties"),
            "{extra:#}"
        );
        // and an artifact that does not exist is named in the 404
        let none = worker
            .finishArtifact(
                &task_id,
                "0",
                "public/none",
                &json!({ "uploadId": art["uploadId"] }),
            )
            .await
            .unwrap_err();
        assert_eq!(status_of(&none), Some(404));
        assert!(
            format!("{none:#}").contains("name `public/none` not found"),
            "{none:#}"
        );

        upload(&server, &art, "application/x-test", &expires, data).await;
        // a repeated createArtifact answers the same upload id
        let again = worker
            .createArtifact(&task_id, "0", name, &request)
            .await
            .unwrap();
        assert_eq!(again["uploadId"], art["uploadId"]);
        upload_ids.push(art["uploadId"].as_str().unwrap().to_string());
        worker
            .finishArtifact(&task_id, "0", name, &json!({ "uploadId": art["uploadId"] }))
            .await
            .unwrap();

        // the queue hands out download credentials for exactly this object
        let content = q.artifact(&task_id, "0", name).await.unwrap();
        assert_eq!(content["storageType"], "object");
        assert_eq!(content["name"], object_name.as_str());
        let reader = object_as(&server, temp_creds(&content["credentials"]));
        let (bytes, content_type) =
            taskcluster_download::download_to_vec(&object_name, &retry, &reader)
                .await
                .unwrap();
        assert_eq!(&bytes, data);
        assert_eq!(content_type, "application/x-test");
        let meta = reader.object(&object_name).await.unwrap();
        assert_eq!(meta["projectId"], art["projectId"]);
        assert_eq!(meta["hashes"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(meta["hashes"]["sha512"].as_str().unwrap().len(), 128);
        // those credentials reach no other object
        let other = format!("t/{task_id}/0/public/other");
        let denied = reader.object(&other).await.unwrap_err();
        assert_eq!(status_of(&denied), Some(403));

        // getArtifact redirects to the bytes themselves
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = q.getArtifact_url(&task_id, "0", name).unwrap();
        let signed = q
            .getArtifact_signed_url(&task_id, "0", name, std::time::Duration::from_secs(60))
            .unwrap();
        assert!(url.len() < signed.len());
        let redirect = http.get(&signed).send().await.unwrap();
        assert_eq!(redirect.status().as_u16(), 303);
        let location = redirect.headers()["location"].to_str().unwrap().to_string();
        let fetched = http
            .get(&location)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&fetched[..], &data[..]);
    }

    // an upload id is a capability (whoever knows it may finish the upload): no record of the
    // log holds one, as text or as its 16 bytes
    server.kill();
    let db = store::open(&server.data_dir.join("db")).unwrap();
    let log = db.cf_handle(keys::CF_LOG).unwrap();
    let records: Vec<Vec<u8>> = db
        .iterator_cf(log, rocksdb::IteratorMode::Start)
        .map(|r| r.unwrap().1.to_vec())
        .collect();
    assert!(records.len() > 10, "{} records", records.len());
    for id in &upload_ids {
        let bytes = *id.parse::<Slug>().unwrap().as_bytes();
        for record in &records {
            let holds = |needle: &[u8]| record.windows(needle.len()).any(|w| w == needle);
            assert!(
                !holds(&bytes) && !holds(id.as_bytes()),
                "upload id {id} in the log"
            );
        }
    }
}

#[tokio::test]
async fn the_object_service_keeps_its_rules_and_refuses_bad_input() {
    let server = Server::start(&[]).await;
    let root = object_as(
        &server,
        Credentials::new("static/taskcluster/root", ROOT_TOKEN),
    );
    let name = format!("demo/{}", slugid::nice());
    let upload_id = slugid::nice();
    let expires = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let start = |upload_id: &str| json!({ "projectId": "demo", "uploadId": upload_id, "expires": expires, "proposedUploadMethods": {} });
    let locked = root.createUpload(&name, &start(&upload_id)).await.unwrap();
    assert_eq!(locked["uploadMethod"], json!({}));
    assert_eq!(locked["expires"], expires.as_str());
    // another upload id, or an unknown method field, changes nothing
    let other = root
        .createUpload(&name, &start(&slugid::nice()))
        .await
        .unwrap_err();
    assert_eq!(status_of(&other), Some(409));
    let mut bad = start(&upload_id);
    bad["proposedUploadMethods"] = json!({ "carrierPigeon": {} });
    assert_eq!(
        status_of(&root.createUpload(&name, &bad).await.unwrap_err()),
        Some(400)
    );
    let mut bad_hash = start(&upload_id);
    bad_hash["hashes"] = json!({ "sha256": "NOT-HEX" });
    // the hash's pattern is the schema's: checked with the body, before any scope
    let err = root.createUpload(&name, &bad_hash).await.unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    assert!(
        format!("{err:#}").contains("data/hashes/sha256 must match pattern"),
        "{err:#}"
    );
    // a content type no header can carry is refused, as upstream's backend refuses it
    let mut bad_type = start(&upload_id);
    bad_type["proposedUploadMethods"] =
        json!({ "dataInline": { "contentType": "text/plain\n", "objectData": "aGk=" } });
    let err = root.createUpload(&name, &bad_type).await.unwrap_err();
    assert_eq!(status_of(&err), Some(400), "{err:#}");
    // with both methods proposed, both are checked, and the errors name their place
    let mut both = start(&upload_id);
    both["proposedUploadMethods"] = json!({
        "dataInline": { "contentType": "text/plain", "objectData": "aGk=" },
        "putUrl": { "contentType": "text/plain" }
    });
    let err = root.createUpload(&name, &both).await.unwrap_err();
    assert!(
        format!("{err:#}").contains(
            "data/proposedUploadMethods/putUrl must have required property 'contentLength'"
        ),
        "{err:#}"
    );
    // an error echoes the request, but never the upload id (a capability) or inline data
    let mut refused = start(&upload_id);
    refused["proposedUploadMethods"] =
        json!({ "dataInline": { "contentType": "text/plain", "objectData": "c2VjcmV0" }, "x": 1 });
    let (status, body) = server
        .root_call("PUT", &format!("/api/object/v1/upload/{name}"), &refused)
        .await;
    assert_eq!(status, 400, "{body}");
    let echoed = &body["requestInfo"]["payload"];
    assert_eq!(echoed["uploadId"], "(OMITTED)", "{body}");
    assert_eq!(
        echoed["proposedUploadMethods"]["dataInline"]["objectData"],
        "(OMITTED)"
    );
    assert!(!body.to_string().contains(&upload_id), "{body}");
    // nothing to download before it finished; finishing without data is refused
    let download = json!({ "acceptDownloadMethods": { "getUrl": true } });
    let early = root.startDownload(&name, &download).await.unwrap_err();
    assert_eq!(status_of(&early), Some(404));
    let finish = json!({ "projectId": "demo", "uploadId": upload_id });
    assert_eq!(
        status_of(&root.finishUpload(&name, &finish).await.unwrap_err()),
        Some(400)
    );
    // finishing an object that does not exist names it, as upstream does
    let err = root.finishUpload("demo/none", &finish).await.unwrap_err();
    assert_eq!(status_of(&err), Some(404));
    assert!(
        format!("{err:#}").contains("Object \"demo/none\" not found"),
        "{err:#}"
    );

    // inline data, then finish; finishing again is idempotent
    let mut inline = start(&upload_id);
    inline["proposedUploadMethods"] =
        json!({ "dataInline": { "contentType": "text/plain", "objectData": "aGVsbG8=" } });
    let chosen = root.createUpload(&name, &inline).await.unwrap();
    assert_eq!(chosen["uploadMethod"], json!({ "dataInline": true }));
    root.finishUpload(&name, &finish).await.unwrap();
    root.finishUpload(&name, &finish).await.unwrap();
    let after = root.createUpload(&name, &inline).await.unwrap_err();
    assert_eq!(status_of(&after), Some(409));

    // simple downloads; an unknown method is 406
    let simple = root
        .startDownload(
            &name,
            &json!({ "acceptDownloadMethods": { "simple": true } }),
        )
        .await
        .unwrap();
    assert_eq!(simple["method"], "simple");
    let body = reqwest::get(simple["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(body.headers()["content-type"], "text/plain");
    assert_eq!(body.text().await.unwrap(), "hello");
    let none = root
        .startDownload(&name, &json!({ "acceptDownloadMethods": {} }))
        .await
        .unwrap_err();
    assert_eq!(status_of(&none), Some(406));
    assert!(
        format!("{none:#}").contains("Object supports methods simple, getUrl"),
        "{none:#}"
    );
    // finished: a hash it lacks, or another value of one it has, conflicts, named
    let mut late_hash = finish.clone();
    late_hash["hashes"] = json!({ "sha512": "a".repeat(128) });
    let err = root.finishUpload(&name, &late_hash).await.unwrap_err();
    assert_eq!(status_of(&err), Some(409));
    assert!(
        format!("{err:#}").contains("is already finished, but without hash algorithm sha512"),
        "{err:#}"
    );
    // the upload id never reaches the event stream
    let (ok, text, err) = crate::audit::cli(&server, &["events", "tail", "--service", "object"]);
    assert!(ok, "{err}");
    assert!(text.contains("UploadFinished"), "{text}");
    assert!(!text.contains(&upload_id));
}

#[tokio::test]
async fn expired_tasks_artifacts_and_objects_go_with_their_bytes_and_stay_in_the_log() {
    let server = Server::start(&[("TASKLEDGER_EXPIRY_SCAN_SECS", "1")]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let task_id = slugid::nice();
    let mut def = task_def(&queue, 600);
    // time for the setup below (a dozen calls) before the deadline, on a slow machine too
    let soon = chrono::Utc::now() + chrono::Duration::seconds(8);
    def["deadline"] = json!(soon.to_rfc3339());
    def["expires"] = json!(soon.to_rfc3339());
    q.createTask(&task_id, &def).await.unwrap();
    // a task that lives on, in the same group (on a queue of its own: two tasks created in
    // the same millisecond would be claimed in either order)
    let keeper = slugid::nice();
    let keep_queue = fresh_queue();
    let mut keep_def = task_def(&keep_queue, 600);
    keep_def["taskGroupId"] = json!(task_id);
    q.createTask(&keeper, &keep_def).await.unwrap();
    let claim = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    assert_eq!(claim["tasks"][0]["status"]["taskId"], task_id.as_str());
    let worker = server.queue_as(temp_creds(&claim["tasks"][0]["credentials"]));
    let http = reqwest::Client::new();
    // the keeper's run has an artifact that expires soon and one that stays
    let keep_claim = q.claimWork(&keep_queue, &worker_body(1)).await.unwrap();
    assert_eq!(keep_claim["tasks"][0]["status"]["taskId"], keeper.as_str());
    let keep_worker = server.queue_as(temp_creds(&keep_claim["tasks"][0]["credentials"]));
    let a_day = chrono::Utc::now() + chrono::Duration::days(1);
    for (name, expires) in [("public/short.txt", soon), ("public/long.txt", a_day)] {
        s3_artifact(&keep_worker, &http, &keeper, name, expires, name).await;
    }
    s3_artifact(&worker, &http, &task_id, "public/s3.txt", soon, "bytes").await;
    let obj = worker
        .createArtifact(&task_id, "0", "public/obj.txt", &json!({ "storageType": "object", "contentType": "text/plain", "expires": soon.to_rfc3339() }))
        .await
        .unwrap();
    let object = object_as(&server, temp_creds(&obj["credentials"]));
    let object_name = obj["name"].as_str().unwrap().to_string();
    taskcluster_upload::upload_from_buf(
        obj["projectId"].as_str().unwrap(),
        &object_name,
        "text/plain",
        &soon,
        b"object bytes",
        &Retry::default(),
        &object,
        obj["uploadId"].as_str().unwrap(),
    )
    .await
    .unwrap();
    worker
        .finishArtifact(
            &task_id,
            "0",
            "public/obj.txt",
            &json!({ "uploadId": obj["uploadId"] }),
        )
        .await
        .unwrap();
    worker.reportCompleted(&task_id, "0").await.unwrap();
    let s3_url = q.artifact(&task_id, "0", "public/s3.txt").await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        http.get(&s3_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "bytes"
    );
    let blobs = server.data_dir.join("blobs");
    let count_files = |dir: std::path::PathBuf| files_under(&dir);
    assert_eq!(count_files(blobs.join(&task_id).join("0")), 1);
    assert_eq!(count_files(blobs.join("objects")), 1);

    // past `expires` (plus a scan) the task, its artifacts, the object and the bytes are gone
    // (the bytes go just after the events that remove what named them)
    eventually(std::time::Duration::from_secs(40), || async {
        let gone = status_of(&q.task(&task_id).await.err()?) == Some(404);
        let object_gone = count_files(blobs.join("objects")) == 0;
        let bytes_gone = count_files(blobs.join(&task_id).join("0")) == 0;
        let short_gone = count_files(blobs.join(&keeper).join("0")) == 1;
        (gone && object_gone && bytes_gone && short_gone).then_some(())
    })
    .await;
    // the keeper lives on without its short-lived artifact
    let short = q
        .artifact(&keeper, "0", "public/short.txt")
        .await
        .unwrap_err();
    assert_eq!(status_of(&short), Some(404));
    let long = q.artifact(&keeper, "0", "public/long.txt").await.unwrap();
    let long_url = long["url"].as_str().unwrap();
    assert_eq!(
        http.get(long_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "public/long.txt"
    );
    let listed = q.listArtifacts(&keeper, "0", None, None).await.unwrap();
    assert_eq!(listed["artifacts"].as_array().unwrap().len(), 1);
    assert_eq!(status_of(&q.status(&task_id).await.unwrap_err()), Some(404));
    assert_eq!(
        status_of(
            &q.listArtifacts(&task_id, "0", None, None)
                .await
                .unwrap_err()
        ),
        Some(404)
    );
    assert_eq!(
        http.get(&s3_url).send().await.unwrap().status().as_u16(),
        404
    );
    assert_eq!(count_files(blobs.join(&task_id).join("0")), 0);
    let listed = q.listTaskGroup(&task_id, None, None).await.unwrap();
    let ids: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"]["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![keeper.as_str()]);
    // its whole life, the expiry included, stays in the log
    let tail = std::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(["events", "tail", "--service", "all", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tail.stdout);
    for event in ["TaskExpired", "ArtifactExpired", "ObjectExpired"] {
        assert!(text.contains(event), "{event} missing: {text}");
    }
    // and a rebuild of every projection from the log equals the live one
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(["replay", "--projection", "all", "--verify", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
}

/// Regular files anywhere below `dir` (none when it does not exist).
fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}
