//! GitHub's REST API as a GitHub App: a JWT signed with the App's private key (RS256) buys
//! an installation token (kept until a few minutes before it expires), which every call on a
//! repository carries. The API's address is configurable (`--github-api-url`) for GitHub
//! Enterprise and for tests.

use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A call that failed: GitHub's status (none when it was not reached) and what it said.
#[derive(Debug, Clone)]
pub struct GithubError {
    pub status: Option<u16>,
    pub message: String,
    /// Worth trying again later: a rate limit (429, or 403 with no requests left) or a token
    /// GitHub no longer takes (401).
    pub transient: bool,
}

impl std::fmt::Display for GithubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "GitHub answered {s}: {}", self.message),
            None => write!(f, "GitHub could not be reached: {}", self.message),
        }
    }
}

impl std::error::Error for GithubError {}

impl GithubError {
    fn unreachable(e: impl std::fmt::Display) -> GithubError {
        GithubError {
            status: None,
            message: e.to_string(),
            transient: false,
        }
    }

    fn answered(status: u16, message: String) -> GithubError {
        GithubError {
            status: Some(status),
            message,
            transient: false,
        }
    }

    /// GitHub refused the call for lack of permission (403) or did not find what it names
    /// (404): not worth retrying (a rate limit or a stale token is).
    pub fn is_refusal(&self) -> bool {
        matches!(self.status, Some(400..=499)) && !self.transient
    }
}

type Answer<T> = Result<T, GithubError>;

/// The App's identity and its way to GitHub.
pub struct GithubApp {
    api: String,
    app_id: String,
    key: jsonwebtoken::EncodingKey,
    http: reqwest::Client,
    /// Installation tokens and when to stop using them.
    tokens: Mutex<HashMap<u64, (String, Instant)>>,
}

impl GithubApp {
    /// `private_key_pem`: the App's key as GitHub hands it out (PKCS#1 or PKCS#8 PEM).
    pub fn new(api: &str, app_id: &str, private_key_pem: &[u8]) -> anyhow::Result<GithubApp> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem)
            .map_err(|e| anyhow::anyhow!("the GitHub App's private key: {e}"))?;
        let http = reqwest::Client::builder()
            .user_agent("taskledger-github")
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(GithubApp {
            api: api.trim_end_matches('/').to_string(),
            app_id: app_id.to_string(),
            key,
            http,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The App's own JWT: issued a minute ago (clock drift), valid nine minutes.
    fn jwt(&self) -> Answer<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({ "iat": now - 60, "exp": now + 540, "iss": self.app_id });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &self.key,
        )
        .map_err(GithubError::unreachable)
    }

    async fn token(&self, installation: u64) -> Answer<String> {
        let mut tokens = self.tokens.lock().await;
        if let Some((t, until)) = tokens.get(&installation) {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            self.api
        );
        let req = self
            .http
            .post(url)
            .bearer_auth(self.jwt()?)
            .header("Accept", "application/vnd.github+json");
        let answer = send(req).await?.ok_or_else(|| {
            GithubError::answered(404, format!("installation {installation} not found"))
        })?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| GithubError::unreachable("an access token answer without a token"))?
            .to_string();
        // GitHub's tokens last an hour; this one is used for at most fifty minutes
        tokens.insert(
            installation,
            (token.clone(), Instant::now() + Duration::from_secs(50 * 60)),
        );
        Ok(token)
    }

    fn on(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .header("Authorization", format!("token {token}"))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    }

    /// A token GitHub refused is not used again.
    async fn forget_on_401<T>(&self, installation: u64, answer: Answer<T>) -> Answer<T> {
        if answer.as_ref().is_err_and(|e| e.status == Some(401)) {
            self.tokens.lock().await.remove(&installation);
        }
        answer
    }

    /// A GET as the installation; `None` for a 404.
    pub async fn get(&self, installation: u64, path: &str) -> Answer<Option<Value>> {
        let token = self.token(installation).await?;
        let answer = send(self.on(reqwest::Method::GET, path, &token)).await;
        self.forget_on_401(installation, answer).await
    }

    async fn post(&self, installation: u64, path: &str, body: &Value) -> Answer<Value> {
        let token = self.token(installation).await?;
        let answer = send(self.on(reqwest::Method::POST, path, &token).json(body)).await;
        self.forget_on_401(installation, answer)
            .await?
            .ok_or_else(|| GithubError::answered(404, format!("{path} not found")))
    }

    /// A file's text at `git_ref`; `None` when there is no such file.
    pub async fn file(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
        path: &str,
        git_ref: &str,
    ) -> Answer<Option<String>> {
        let at = format!(
            "/repos/{}/{}/contents/{path}?ref={}",
            enc(owner),
            enc(repo),
            enc(git_ref)
        );
        let Some(v) = self.get(installation, &at).await? else {
            return Ok(None);
        };
        let content: String = v["content"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|e| GithubError::unreachable(format!("{path}'s content: {e}")))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| GithubError::unreachable(format!("{path} is not UTF-8 text")))
    }

    /// The repository as the installation sees it; `None` when it does not.
    pub async fn repository(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
    ) -> Answer<Option<Value>> {
        self.get(
            installation,
            &format!("/repos/{}/{}", enc(owner), enc(repo)),
        )
        .await
    }

    pub async fn default_branch(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
    ) -> Answer<String> {
        let v = self
            .get(
                installation,
                &format!("/repos/{}/{}", enc(owner), enc(repo)),
            )
            .await?
            .unwrap_or_default();
        Ok(v["default_branch"].as_str().unwrap_or("main").to_string())
    }

    /// Whether `user` is a collaborator of the repository.
    pub async fn is_collaborator(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
        user: &str,
    ) -> Answer<bool> {
        let path = format!(
            "/repos/{}/{}/collaborators/{}",
            enc(owner),
            enc(repo),
            enc(user)
        );
        Ok(self.get(installation, &path).await?.is_some())
    }

    /// The commit a ref names.
    pub async fn commit_sha(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
        commitish: &str,
    ) -> Answer<Option<String>> {
        let path = format!(
            "/repos/{}/{}/commits/{}",
            enc(owner),
            enc(repo),
            enc(commitish)
        );
        Ok(self
            .get(installation, &path)
            .await?
            .and_then(|v| v["sha"].as_str().map(str::to_string)))
    }

    pub async fn pull_request(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Answer<Option<Value>> {
        let path = format!("/repos/{}/{}/pulls/{number}", enc(owner), enc(repo));
        self.get(installation, &path).await
    }

    /// A commit status (`state`: pending, success, error, failure).
    pub async fn create_status(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
        sha: &str,
        status: &Value,
    ) -> Answer<()> {
        let path = format!("/repos/{}/{}/statuses/{}", enc(owner), enc(repo), enc(sha));
        self.post(installation, &path, status).await.map(drop)
    }

    /// A comment on an issue or pull request.
    pub async fn create_comment(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Answer<()> {
        let path = format!(
            "/repos/{}/{}/issues/{number}/comments",
            enc(owner),
            enc(repo)
        );
        self.post(installation, &path, &json!({ "body": body }))
            .await
            .map(drop)
    }

    /// A comment on a commit.
    pub async fn create_commit_comment(
        &self,
        installation: u64,
        owner: &str,
        repo: &str,
        sha: &str,
        body: &str,
    ) -> Answer<()> {
        let path = format!(
            "/repos/{}/{}/commits/{}/comments",
            enc(owner),
            enc(repo),
            enc(sha)
        );
        self.post(installation, &path, &json!({ "body": body }))
            .await
            .map(drop)
    }
}

/// A path segment or query value, percent-encoded.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sends a request; the JSON answer (`Null` for an empty one), `None` for a 404.
async fn send(req: reqwest::RequestBuilder) -> Answer<Option<Value>> {
    let resp = req.send().await.map_err(GithubError::unreachable)?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    let rate_limited = status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || (status == reqwest::StatusCode::FORBIDDEN
            && (header("x-ratelimit-remaining") == Some("0") || header("retry-after").is_some()));
    let transient = rate_limited || status == reqwest::StatusCode::UNAUTHORIZED;
    let bytes = resp.bytes().await.map_err(GithubError::unreachable)?;
    if !status.is_success() {
        let said: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = said["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        return Err(GithubError {
            status: Some(status.as_u16()),
            message,
            transient,
        });
    }
    if bytes.is_empty() {
        return Ok(Some(Value::Null));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| GithubError::unreachable(format!("an answer that is not JSON: {e}")))
}
