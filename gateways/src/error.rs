//! The one error type of the HTTP API and its Taskcluster-shaped body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use taskledger_core::access::AuthError;
use taskledger_core::index::IndexError;
use taskledger_core::log::LogError;
use taskledger_core::object::ObjectError;
use taskledger_core::queue::QueueError;
use taskledger_core::secrets::SecretError;
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::WorkerManagerError;
use taskledger_projections::single::ServiceError;
use taskledger_projections::store::StoreError;
use taskledger_projections::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MalformedPayload,
    InvalidRequestArguments,
    InputValidationError,
    InputError,
    InputTooLarge,
    /// notify: the destination is on the denylist (400).
    DenylistedAddress,
    /// github: GitHub refused the App's call (403).
    ForbiddenByGithub,
    AuthenticationFailed,
    InsufficientScopes,
    ResourceNotFound,
    RequestConflict,
    ResourceExpired,
    NoMatchingMethod,
    InternalServerError,
    ServiceUnavailable,
}

impl ErrorCode {
    fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedPayload
            | ErrorCode::InvalidRequestArguments
            | ErrorCode::InputValidationError
            | ErrorCode::InputError
            | ErrorCode::DenylistedAddress => StatusCode::BAD_REQUEST,
            ErrorCode::InputTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::AuthenticationFailed => StatusCode::UNAUTHORIZED,
            ErrorCode::InsufficientScopes | ErrorCode::ForbiddenByGithub => StatusCode::FORBIDDEN,
            ErrorCode::ResourceNotFound => StatusCode::NOT_FOUND,
            ErrorCode::RequestConflict => StatusCode::CONFLICT,
            ErrorCode::ResourceExpired => StatusCode::GONE,
            ErrorCode::NoMatchingMethod => StatusCode::NOT_ACCEPTABLE,
            ErrorCode::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedPayload => "MalformedPayload",
            ErrorCode::InvalidRequestArguments => "InvalidRequestArguments",
            ErrorCode::InputValidationError => "InputValidationError",
            ErrorCode::InputError => "InputError",
            ErrorCode::InputTooLarge => "InputTooLarge",
            ErrorCode::DenylistedAddress => "DenylistedAddress",
            ErrorCode::ForbiddenByGithub => "ForbiddenByGithub",
            ErrorCode::AuthenticationFailed => "AuthenticationFailed",
            ErrorCode::InsufficientScopes => "InsufficientScopes",
            ErrorCode::ResourceNotFound => "ResourceNotFound",
            ErrorCode::RequestConflict => "RequestConflict",
            ErrorCode::ResourceExpired => "ResourceExpired",
            ErrorCode::NoMatchingMethod => "NoMatchingMethod",
            ErrorCode::InternalServerError => "InternalServerError",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

/// Validation errors a message lists (a body of 10 MB may hold millions of bad items).
const MAX_LISTED_ERRORS: usize = 100;

/// An error raised while handling a call; becomes a `Failure` once the call is known.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub fn input(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InputError, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::ResourceNotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::RequestConflict, message)
    }
    /// Taskcluster's schema failure text: the errors joined by `\n  * `, nothing after the last.
    pub fn validation(schema: &str, errors: &[String]) -> ApiError {
        let mut m = format!("\nSchema Validation Failed!\nRejecting Schema: {schema}\nErrors:");
        for e in errors.iter().take(MAX_LISTED_ERRORS) {
            m.push_str("\n  * ");
            m.push_str(e);
        }
        if errors.len() > MAX_LISTED_ERRORS {
            let more = errors.len() - MAX_LISTED_ERRORS;
            m.push_str(&format!("\n  * ... and {more} more"));
        }
        ApiError::new(ErrorCode::InputValidationError, m)
    }
    /// A URL parameter off its pattern; upstream shows the pattern as a JavaScript regex
    /// literal (`/^...$/`).
    pub fn bad_param(name: &str, value: &str, re: &str) -> ApiError {
        ApiError::new(
            ErrorCode::InvalidRequestArguments,
            format!("Invalid URL patterns:\nURL parameter '{name}' given as '{value}' must match regular expression: '/{re}/'"),
        )
    }
    /// The error code's name (`InputError`, ...).
    pub fn code_str(&self) -> &'static str {
        self.code.as_str()
    }
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        let incident = uuid::Uuid::new_v4();
        tracing::error!(%incident, error = %cause, "internal error");
        ApiError::new(
            ErrorCode::InternalServerError,
            format!("Internal Server Error, incidentId {incident}."),
        )
    }
}

/// 503 for a log that cannot be written (the cause is logged, not shown).
fn unavailable(cause: &str) -> ApiError {
    tracing::warn!(error = %cause, "log unavailable");
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        "The event log is unavailable; try again shortly.",
    )
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match &err {
            QueueError::TaskNotFound(_)
            | QueueError::RunNotFound { .. }
            | QueueError::ArtifactNotFound => ApiError::not_found(err.to_string()),
            QueueError::Conflict(_) => ApiError::conflict(err.to_string()),
            QueueError::Input(_) => ApiError::input(err.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Domain(e) => e.into(),
            EngineError::Unavailable(m) => unavailable(&m),
            EngineError::TooLarge(m) => ApiError::new(ErrorCode::InputTooLarge, m),
            EngineError::Store(e) => ApiError::internal(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::ClientNotFound(_) => ApiError::not_found("Client not found"),
            AuthError::RoleNotFound(id) => {
                ApiError::not_found(format!("Role with roleId '{id}' not found"))
            }
            AuthError::ClientExists(_) => ApiError::conflict("Client already exists"),
            AuthError::RoleExists(id) => {
                ApiError::conflict(format!("Role with roleId '{id}' already exists"))
            }
            AuthError::InvalidRole(e) => ApiError::input(e.0),
            AuthError::Input(m) => ApiError::input(m),
        }
    }
}

impl From<WorkerManagerError> for ApiError {
    fn from(err: WorkerManagerError) -> Self {
        match err {
            WorkerManagerError::NotFound(m) => ApiError::not_found(m),
            WorkerManagerError::Input(m) => ApiError::input(m),
            WorkerManagerError::Conflict(m) => ApiError::conflict(m),
            WorkerManagerError::InvalidConfig {
                provider_type,
                errors,
            } => ApiError::validation(
                &format!("/schemas/worker-manager/v1/config-{provider_type}.json#"),
                &errors,
            ),
        }
    }
}

impl From<ObjectError> for ApiError {
    fn from(err: ObjectError) -> Self {
        match err {
            ObjectError::NotFound(m) => ApiError::not_found(m),
            ObjectError::Input(m) => ApiError::input(m),
            ObjectError::Conflict(m) => ApiError::conflict(m),
        }
    }
}

impl From<SecretError> for ApiError {
    fn from(err: SecretError) -> Self {
        match err {
            SecretError::Input(m) => ApiError::input(m),
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(err: IndexError) -> Self {
        match err {
            IndexError::Input(m) => ApiError::input(m),
        }
    }
}

/// The auth, worker-manager, object, secrets, index and hooks engines' errors.
impl<R: std::error::Error + Into<ApiError>> From<ServiceError<R>> for ApiError {
    fn from(err: ServiceError<R>) -> Self {
        match err {
            ServiceError::Domain(e) => e.into(),
            ServiceError::Unavailable(m) => unavailable(&m),
            ServiceError::TooLarge(m) => ApiError::new(ErrorCode::InputTooLarge, m),
            ServiceError::Store(e) => ApiError::internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            // a broker that is down or slow to answer a history's reads: try again later
            StoreError::Log(LogError::Unavailable(m)) => unavailable(&m),
            err @ (StoreError::Log(_)
            | StoreError::Rocks(_)
            | StoreError::Codec(_)
            | StoreError::MissingCf(_)) => ApiError::internal(err),
        }
    }
}

/// A failed call: the error plus what Taskcluster echoes in `requestInfo`.
#[derive(Debug)]
pub struct Failure {
    pub error: ApiError,
    pub method: &'static str,
    pub params: Value,
    pub payload: Value,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let code = self.error.code;
        let time = Millis::now().to_rfc3339();
        let message = format!(
            "{}\n\n---\n\n* method:     {}\n* errorCode:  {}\n* statusCode: {}\n* time:       {}",
            self.error.message,
            self.method,
            code.as_str(),
            code.status().as_u16(),
            time
        );
        let body = json!({
            "code": code.as_str(),
            "message": message,
            "requestInfo": {
                "method": self.method,
                "params": self.params,
                "payload": self.payload,
                "time": time,
            }
        });
        let mut resp = (code.status(), axum::Json(body)).into_response();
        if code == ErrorCode::AuthenticationFailed {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("hawk"));
        }
        resp
    }
}
