//! The auth API's cloud-credential endpoints: scopes checked as upstream, then "not
//! configured" (no backend is set up).

use super::*;

fn level_expr(level: &str, read_only: String, read_write: String) -> ScopeExpr {
    if level == "read-only" {
        ScopeExpr::any(vec![s(read_only), s(read_write)])
    } else {
        s(read_write)
    }
}

pub(super) async fn aws_s3_credentials(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((level, bucket, prefix)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "awsS3Credentials",
        json!({ "level": level, "bucket": bucket, "prefix": prefix }),
    )
    .run(async {
        let caller = auth.caller()?;
        if level != "read-only" && level != "read-write" {
            return Err(ApiError::input(
                "level must be either read-only or read-write",
            ));
        }
        caller.require(&level_expr(
            &level,
            format!("auth:aws-s3:read-only:{bucket}/{prefix}"),
            format!("auth:aws-s3:read-write:{bucket}/{prefix}"),
        ))?;
        query(&uri, &["format"])?;
        if prefix.starts_with('/') {
            return Err(ApiError::input("The `prefix` may not start with \"/\""));
        }
        Err(ApiError::not_found(format!(
            "Bucket `{bucket}` is not configured for this deployment"
        )))
    })
    .await
}

pub(super) async fn azure_accounts(uri: Uri, Extension(auth): Extension<Auth>) -> Response {
    Call::new("azureAccounts", json!({}))
        .run(async {
            auth.caller()?
                .require(&s("auth:azure-table:list-accounts".into()))?;
            no_query(&uri)?;
            Ok(ok(json!({ "accounts": [] })))
        })
        .await
}

fn unknown_account(account: &str) -> ApiError {
    ApiError::not_found(format!("Account '{account}' not found, can't list tables"))
}

pub(super) async fn azure_tables(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path(account): Path<String>,
) -> Response {
    Call::new("azureTables", json!({ "account": account }))
        .run(async {
            auth.caller()?
                .require(&s(format!("auth:azure-table:list-tables:{account}")))?;
            query(&uri, &["continuationToken"])?;
            Err(unknown_account(&account))
        })
        .await
}

/// azureTableSAS and azureContainerSAS: level check, then the level's scopes; no Azure
/// account is configured, so every account is unknown.
async fn azure_sas(
    uri: &Uri,
    auth: Auth,
    method: &'static str,
    kind: &str,
    params: [String; 3],
) -> Response {
    let [account, name, level] = params;
    let name_key = if kind == "table" {
        "table"
    } else {
        "container"
    };
    Call::new(
        method,
        json!({ "account": account, name_key: name, "level": level }),
    )
    .run(async {
        let caller = auth.caller()?;
        if level != "read-only" && level != "read-write" {
            return Err(ApiError::bad_param(
                "level",
                &level,
                "^(read-write|read-only)$",
            ));
        }
        caller.require(&level_expr(
            &level,
            format!("auth:azure-{kind}:read-only:{account}/{name}"),
            format!("auth:azure-{kind}:read-write:{account}/{name}"),
        ))?;
        no_query(uri)?;
        Err(unknown_account(&account))
    })
    .await
}

pub(super) async fn azure_table_sas(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((account, table, level)): Path<(String, String, String)>,
) -> Response {
    azure_sas(
        &uri,
        auth,
        "azureTableSAS",
        "table",
        [account, table, level],
    )
    .await
}

pub(super) async fn azure_containers(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path(account): Path<String>,
) -> Response {
    Call::new("azureContainers", json!({ "account": account }))
        .run(async {
            auth.caller()?.require(&s(format!(
                "auth:azure-container:list-containers:{account}"
            )))?;
            query(&uri, &["continuationToken"])?;
            Err(unknown_account(&account))
        })
        .await
}

pub(super) async fn azure_container_sas(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((account, container, level)): Path<(String, String, String)>,
) -> Response {
    azure_sas(
        &uri,
        auth,
        "azureContainerSAS",
        "container",
        [account, container, level],
    )
    .await
}

pub(super) async fn sentry_dsn(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path(project): Path<String>,
) -> Response {
    Call::new("sentryDSN", json!({ "project": project }))
        .run(async {
            auth.caller()?
                .require(&s(format!("auth:sentry:{project}")))?;
            no_query(&uri)?;
            Err(ApiError::not_found(
                "Sentry is not configured for this deployment",
            ))
        })
        .await
}

pub(super) async fn websocktunnel_token(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((audience, wst_client)): Path<(String, String)>,
) -> Response {
    Call::new(
        "websocktunnelToken",
        json!({ "wstAudience": audience, "wstClient": wst_client }),
    )
    .run(async {
        auth.caller()?.require(&s(format!(
            "auth:websocktunnel-token:{audience}/{wst_client}"
        )))?;
        no_query(&uri)?;
        Err(ApiError::not_found(
            "websocktunnel is not configured for this deployment",
        ))
    })
    .await
}

pub(super) async fn gcp_credentials(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((project, account)): Path<(String, String)>,
) -> Response {
    Call::new(
        "gcpCredentials",
        json!({ "projectId": project, "serviceAccount": account }),
    )
    .run(async {
        auth.caller()?
            .require(&s(format!("auth:gcp:access-token:{project}/{account}")))?;
        no_query(&uri)?;
        Err(ApiError::not_found(format!(
            "The project `{project}` is not configured for this deployment"
        )))
    })
    .await
}

pub(super) async fn github_repo_token(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((app, owner)): Path<(String, String)>,
) -> Response {
    Call::new("githubRepoToken", json!({ "appName": app, "owner": owner }))
        .run(async {
            auth.caller()?;
            no_query(&uri)?;
            Err(ApiError::not_found(format!(
                "GitHub app `{app}` is not configured"
            )))
        })
        .await
}
