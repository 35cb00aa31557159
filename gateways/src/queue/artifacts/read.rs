//! The artifact reads: getArtifact and the latest-run, content and info variants, and the
//! listings, links followed with a scope check per hop.

use super::*;

/// Follows links from `name` on a run, checking `queue:get-artifact:<n>` for every hop.
fn resolve(
    st: &AppState,
    caller: &crate::hawk::Caller,
    task: &TaskId,
    run: u32,
    name: &str,
) -> Result<Artifact, ApiError> {
    let mut seen = Vec::new();
    let mut current = name.to_string();
    loop {
        caller.require(&ScopeExpr::scope(format!("queue:get-artifact:{current}")))?;
        if seen.contains(&current) {
            return Err(ApiError::input("Artifact leads to a link cycle"));
        }
        let a = st
            .engine
            .view()
            .artifact(task, run, &current)?
            .filter(|a| a.present)
            .ok_or_else(|| ApiError::not_found("Artifact not found"))?;
        if a.expires < Millis::now() {
            return Err(ApiError::new(
                ErrorCode::ResourceExpired,
                "Artifact expired",
            ));
        }
        seen.push(current.clone());
        match &a.storage {
            ArtifactStorage::Link { target } => current = target.clone(),
            ArtifactStorage::Object { .. }
            | ArtifactStorage::S3 { .. }
            | ArtifactStorage::Reference { .. }
            | ArtifactStorage::Error { .. } => return Ok(a),
        }
    }
}

fn with_storage_header(mut r: Response, storage: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(storage) {
        r.headers_mut()
            .insert("x-taskcluster-artifact-storage-type", v);
    }
    r
}

fn artifact_redirect(st: &AppState, task: &TaskId, run: u32, a: &Artifact) -> Response {
    let storage = a.storage.type_str();
    let r = match &a.storage {
        ArtifactStorage::Error { reason, message } => (
            StatusCode::FAILED_DEPENDENCY,
            axum::Json(json!({ "reason": reason.as_str(), "message": message })),
        )
            .into_response(),
        ArtifactStorage::Reference { url } => redirect(storage, url),
        ArtifactStorage::Object { .. } => redirect(
            storage,
            &crate::object::object_url(st, "GET", &object_name(task, run, &a.name), 30 * MINUTE),
        ),
        ArtifactStorage::S3 { .. } | ArtifactStorage::Link { .. } => redirect(
            storage,
            &signed_blob_url(st, "GET", task, run, &a.name, 30 * MINUTE),
        ),
    };
    with_storage_header(r, storage)
}

fn redirect(storage: &str, url: &str) -> Response {
    let mut r = (
        StatusCode::SEE_OTHER,
        axum::Json(json!({ "storageType": storage, "url": url })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn artifact_content(st: &AppState, task: &TaskId, run: u32, a: &Artifact) -> Response {
    let storage = a.storage.type_str();
    let body = match &a.storage {
        ArtifactStorage::Error { reason, message } => {
            json!({ "storageType": "error", "reason": reason.as_str(), "message": message })
        }
        ArtifactStorage::Reference { url } => json!({ "storageType": "reference", "url": url }),
        ArtifactStorage::Object { .. } => {
            let name = object_name(task, run, &a.name);
            let client = format!("artifact-download/{task}/{run}/{}", a.name);
            let scopes = [format!("object:download:{name}")];
            let expiry = Millis::now().plus(60 * MINUTE);
            json!({
                "storageType": "object",
                "name": name,
                "credentials": credentials(st, &client, &scopes, expiry),
            })
        }
        ArtifactStorage::S3 { .. } | ArtifactStorage::Link { .. } => {
            json!({ "storageType": "s3", "url": signed_blob_url(st, "GET", task, run, &a.name, 30 * MINUTE) })
        }
    };
    with_storage_header(ok(body), storage)
}

fn latest_run(st: &AppState, id: &TaskId) -> Result<u32, ApiError> {
    let t = st
        .engine
        .view()
        .task(id)?
        .ok_or_else(|| ApiError::not_found("Task not found"))?;
    t.runs
        .len()
        .checked_sub(1)
        .map(|r| r as u32)
        .ok_or_else(|| ApiError::not_found("Task doesn't have any runs"))
}

async fn get_artifact_inner(
    st: &AppState,
    auth: &Auth,
    uri: &Uri,
    task_id: &str,
    run: Option<&str>,
    name: &str,
    content: bool,
) -> Result<Response, ApiError> {
    let caller = auth.caller()?;
    name_param(name)?;
    let id = slug_param("taskId", task_id)?;
    let run = run.map(run_param).transpose()?;
    no_query(uri)?;
    // the latest-run variant asks for the scope in its handler, before it looks up the task
    if run.is_none() {
        caller.require(&ScopeExpr::scope(format!("queue:get-artifact:{name}")))?;
    }
    let run = match run {
        Some(r) => r,
        None => latest_run(st, &id)?,
    };
    let a = resolve(st, caller, &id, run, name)?;
    Ok(if content {
        artifact_content(st, &id, run, &a)
    } else {
        artifact_redirect(st, &id, run, &a)
    })
}

pub async fn get_artifact(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "getArtifact",
        json!({ "taskId": task_id, "runId": run_id, "name": name }),
    )
    .run(get_artifact_inner(
        &st,
        &auth,
        &uri,
        &task_id,
        Some(&run_id),
        &name,
        false,
    ))
    .await
}

pub async fn get_latest_artifact(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, name)): Path<(String, String)>,
) -> Response {
    Call::new(
        "getLatestArtifact",
        json!({ "taskId": task_id, "name": name }),
    )
    .run(get_artifact_inner(
        &st, &auth, &uri, &task_id, None, &name, false,
    ))
    .await
}

pub async fn artifact(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "artifact",
        json!({ "taskId": task_id, "runId": run_id, "name": name }),
    )
    .run(get_artifact_inner(
        &st,
        &auth,
        &uri,
        &task_id,
        Some(&run_id),
        &name,
        true,
    ))
    .await
}

pub async fn latest_artifact(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, name)): Path<(String, String)>,
) -> Response {
    Call::new("latestArtifact", json!({ "taskId": task_id, "name": name }))
        .run(get_artifact_inner(
            &st, &auth, &uri, &task_id, None, &name, true,
        ))
        .await
}

async fn list_inner(
    st: &AppState,
    auth: &Auth,
    task_id: &str,
    run: Option<&str>,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let caller = auth.caller()?;
    let scope = match run {
        Some(r) => format!("queue:list-artifacts:{task_id}:{r}"),
        None => format!("queue:list-artifacts:{task_id}"),
    };
    caller.require(&ScopeExpr::scope(scope))?;
    let id = slug_param("taskId", task_id)?;
    let run = run.map(run_param).transpose()?;
    let q = query(uri, &["continuationToken", "limit"])?;
    let task = st
        .engine
        .view()
        .task(&id)?
        .ok_or_else(|| ApiError::not_found("Task not found"))?;
    let run = match run {
        Some(r) => r,
        None => latest_run(st, &id)?,
    };
    if task.runs.is_empty() {
        return Err(ApiError::not_found("Task doesn't have any runs"));
    }
    if run as usize >= task.runs.len() {
        return Err(ApiError::not_found(format!(
            "Task with taskId: `{id}` has no run with runId: {run}"
        )));
    }
    let prefix = keys::artifact_prefix(&id, run);
    let after =
        keyset_token(&q).map(|name| keys::artifact(&id, run, &String::from_utf8_lossy(&name)));
    let lim = limit(&q);
    let rows = st
        .engine
        .view()
        .scan(keys::CF_ARTIFACTS, &prefix, after.as_deref(), lim + 1)?;
    let mut out = Vec::new();
    let mut last = None;
    for (_, v) in rows.iter().take(lim) {
        let a: Artifact = taskledger_projections::QueueView::decode(v)?;
        last = Some(a.name.clone());
        out.push(artifact_info(&a));
    }
    let mut v = json!({ "artifacts": out });
    if rows.len() > lim {
        if let Some(l) = last {
            v["continuationToken"] = json!(encode_token(l.as_bytes()));
        }
    }
    Ok(ok(v))
}

pub async fn list_artifacts(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    Call::new(
        "listArtifacts",
        json!({ "taskId": task_id, "runId": run_id }),
    )
    .run(list_inner(&st, &auth, &task_id, Some(&run_id), &uri))
    .await
}

pub async fn list_latest_artifacts(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
    uri: Uri,
) -> Response {
    Call::new("listLatestArtifacts", json!({ "taskId": task_id }))
        .run(list_inner(&st, &auth, &task_id, None, &uri))
        .await
}

async fn info_inner(
    st: &AppState,
    auth: &Auth,
    uri: &Uri,
    task_id: &str,
    run: Option<&str>,
    name: &str,
) -> Result<Response, ApiError> {
    let caller = auth.caller()?;
    let scope = match run {
        Some(r) => format!("queue:list-artifacts:{task_id}:{r}"),
        None => format!("queue:list-artifacts:{task_id}"),
    };
    caller.require(&ScopeExpr::scope(scope))?;
    name_param(name)?;
    let id = slug_param("taskId", task_id)?;
    let run = run.map(run_param).transpose()?;
    no_query(uri)?;
    let run = match run {
        Some(r) => r,
        None => latest_run(st, &id)?,
    };
    let a = st
        .engine
        .view()
        .artifact(&id, run, name)?
        .filter(|a| a.present)
        .ok_or_else(|| ApiError::not_found("Artifact not found"))?;
    Ok(ok(artifact_info(&a)))
}

pub async fn artifact_info_route(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "artifactInfo",
        json!({ "taskId": task_id, "runId": run_id, "name": name }),
    )
    .run(info_inner(&st, &auth, &uri, &task_id, Some(&run_id), &name))
    .await
}

pub async fn latest_artifact_info(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, name)): Path<(String, String)>,
) -> Response {
    Call::new(
        "latestArtifactInfo",
        json!({ "taskId": task_id, "name": name }),
    )
    .run(info_inner(&st, &auth, &uri, &task_id, None, &name))
    .await
}

// ---- signed blob URLs ----
