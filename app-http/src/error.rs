//! The API's one error type. Every failure of a handler or of an extractor becomes an
//! [`ApiError`], answered as an RFC 9457 `application/problem+json` document.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clarion_domain::auth::AuthError;
use clarion_domain::device::DeviceFieldError;
use clarion_domain::ids::IdError;
use clarion_domain::message::OptionError;
use clarion_domain::ports::{RenderError, StoreError};
use clarion_domain::service::{
    BulkDeviceError, DeviceError, KeyError, MessageError, SendError, TemplateError,
};
use clarion_domain::text::UnstorableText;
use clarion_domain::token::TokenError;
use serde::Serialize;
use utoipa::ToSchema;

/// The `Retry-After` of a 503: about how long a full disk takes to be noticed and freed, or a
/// database server to restart; clients that retry sooner only add load.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The fields that failed validation (422 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's path in the request, such as `options.time_to_live` or `token`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl ToString) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read: malformed JSON, a body that is not JSON, or a bad path
    /// or query string.
    #[error("{0}")]
    BadRequest(String),
    /// 401, with `WWW-Authenticate: Bearer`: no credentials, or credentials that are not valid.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: valid credentials that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the application, device, message, template or key does not exist (or, for a
    /// client token, belongs to another user).
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 408: the body did not arrive within `http.body_read_timeout_secs`.
    #[error("{0}")]
    RequestTimeout(String),
    /// 409: the request conflicts with the current state (a slug that exists, an illegal
    /// state transition, a template that may not send).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than `http.body_limit_bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 414: the request line is longer than `http.max_header_bytes`.
    #[error("{0}")]
    UriTooLong(String),
    /// 431: the request line and headers are larger than `http.max_header_bytes`, or there
    /// are too many header fields.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// 422: the request is well-formed but some fields are not valid; `errors` names them.
    #[error("{detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// 429, with `Retry-After`: the credential made more requests than
    /// `http.rate_limit_per_second` and `http.rate_limit_burst` allow.
    #[error("too many requests with this credential; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// 503, with `Retry-After`: the server is not ready (`/readyz`); the text says why, with
    /// no secret.
    #[error("{0}")]
    NotReady(String),
    /// 503, with `Retry-After`: the store cannot be reached or cannot write now (a full disk,
    /// a read-only or damaged file, a database server that is down), or it failed while
    /// authenticating; the cause is logged.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500: anything else; the cause is logged and the answer is opaque.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 422 about one field.
    pub fn invalid(field: impl Into<String>, message: impl ToString) -> Self {
        let error = FieldError::new(field, message);
        ApiError::Validation {
            detail: format!("{}: {}", error.field, error.message),
            errors: vec![error],
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::RequestTimeout(_) => "request-timeout",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UriTooLong(_) => "uri-too-long",
            ApiError::HeadersTooLarge(_) => "request-header-fields-too-large",
            ApiError::Validation { .. } => "validation",
            ApiError::TooManyRequests { .. } => "too-many-requests",
            ApiError::NotReady(_) => "not-ready",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The problem document of this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (detail, errors) = match self {
            ApiError::Validation { detail, errors } => (detail.clone(), errors.clone()),
            ApiError::Unavailable(_) => (
                "the service cannot answer now; try again later".to_owned(),
                Vec::new(),
            ),
            ApiError::Internal(_) => ("an internal error occurred".to_owned(), Vec::new()),
            other => (other.to_string(), Vec::new()),
        };
        Problem {
            kind: format!("urn:clarion:problem:{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(cause) | ApiError::Internal(cause) = &self {
            tracing::error!(
                error = format!("{cause:#}"),
                status = self.status().as_u16(),
                "request failed"
            );
        }
        let problem = self.problem();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unauthorized(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if let ApiError::NotReady(_) | ApiError::Unavailable(_) = self {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

// ----- domain errors -----

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(detail) => ApiError::Conflict(detail),
            // The database cannot be reached or cannot write now: the client may try again.
            unavailable @ StoreError::Unavailable(_) => {
                ApiError::Unavailable(anyhow::Error::new(unavailable))
            }
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::Unauthorized(error.to_string())
    }
}

/// The request field a token error is about.
fn token_field(error: &TokenError) -> &'static str {
    match error {
        TokenError::UnknownPlatform(_) => "platform",
        TokenError::P256dhEncoding(_)
        | TokenError::P256dhLength(_)
        | TokenError::P256dhPrefix(_)
        | TokenError::WrongShape { .. } => "p256dh",
        TokenError::AuthEncoding(_) | TokenError::AuthLength(_) => "auth",
        _ => "token",
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Unstorable(e) => e.into(),
            other => ApiError::invalid(token_field(&other), &other),
        }
    }
}

/// A 422 naming the field whose text cannot be stored (it holds a NUL character).
impl From<UnstorableText> for ApiError {
    fn from(error: UnstorableText) -> Self {
        ApiError::invalid(error.field(), error.reason())
    }
}

impl From<DeviceError> for ApiError {
    fn from(error: DeviceError) -> Self {
        match error {
            DeviceError::UnknownApplication(e) => ApiError::NotFound(e.to_string()),
            DeviceError::InvalidToken(e) => e.into(),
            DeviceError::InvalidField(e) => {
                let field = match e {
                    DeviceFieldError::NameTooLong(_) => "name",
                    DeviceFieldError::DeviceIdTooLong(_) => "device_id",
                    DeviceFieldError::Unstorable(e) => return e.into(),
                };
                ApiError::invalid(field, e)
            }
            DeviceError::NotFound(id) => ApiError::NotFound(format!("device {id} not found")),
            DeviceError::Store(e) => e.into(),
        }
    }
}

/// A bulk registration's error, with the field of an invalid device named by its place in
/// the list (`devices[3].token`).
pub(crate) fn bulk_error(error: BulkDeviceError) -> ApiError {
    match error {
        BulkDeviceError::UnknownApplication(e) => ApiError::NotFound(e.to_string()),
        BulkDeviceError::TooMany { .. } => ApiError::invalid("devices", error),
        BulkDeviceError::Invalid { index, error } => match ApiError::from(error) {
            ApiError::Validation { errors, .. } => {
                let errors: Vec<FieldError> = errors
                    .into_iter()
                    .map(|e| FieldError::new(format!("devices[{index}].{}", e.field), e.message))
                    .collect();
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError::Validation { detail, errors }
            }
            other => other,
        },
        BulkDeviceError::Store(e) => e.into(),
    }
}

/// The request field a message option error is about.
fn option_field(error: &OptionError) -> String {
    match error {
        OptionError::Priority(_) => "priority".to_owned(),
        OptionError::CollapseKeyTooLong(_) | OptionError::CollapseKeyCharacters(_) => {
            "options.collapse_key".to_owned()
        }
        OptionError::TimeToLive(_) => "options.time_to_live".to_owned(),
        OptionError::Empty(name) => format!("options.{name}"),
        OptionError::NothingToSend => "body".to_owned(),
        OptionError::Url(_) => "url".to_owned(),
        OptionError::ExtraData(_) => "extra_data".to_owned(),
        OptionError::NoDevices => "target.device_ids".to_owned(),
        OptionError::Unstorable(e) => e.field().to_owned(),
    }
}

impl From<OptionError> for ApiError {
    fn from(error: OptionError) -> Self {
        match error {
            OptionError::Unstorable(e) => e.into(),
            other => ApiError::invalid(option_field(&other), &other),
        }
    }
}

/// A template that does not parse, uses an undefined variable or breaks a limit is the
/// request's fault (422 naming the field, and the limit's setting); a renderer that cannot
/// take it now is not (503).
impl From<RenderError> for ApiError {
    fn from(error: RenderError) -> Self {
        match error {
            RenderError::Unavailable { .. } => ApiError::Unavailable(anyhow::Error::new(error)),
            other => ApiError::invalid(other.field().to_owned(), &other),
        }
    }
}

impl From<SendError> for ApiError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::UnknownApplication(e) => ApiError::NotFound(e.to_string()),
            SendError::Invalid(e) => e.into(),
            SendError::UnknownDevices(_) => ApiError::invalid("target.device_ids", &error),
            SendError::Unsupported(detail) => ApiError::invalid("target", detail),
            SendError::Payload(e) => ApiError::invalid("payload", e),
            SendError::TemplateNotFound(slug) => {
                ApiError::NotFound(format!("template {slug} not found"))
            }
            SendError::Render(e) => e.into(),
            SendError::Store(e) => e.into(),
        }
    }
}

impl From<MessageError> for ApiError {
    fn from(error: MessageError) -> Self {
        match error {
            MessageError::UnknownApplication(e) => ApiError::NotFound(e.to_string()),
            MessageError::NotFound(id) => ApiError::NotFound(format!("message {id} not found")),
            MessageError::Illegal(e) => ApiError::Conflict(e.to_string()),
            MessageError::Busy(_) => ApiError::Conflict(error.to_string()),
            MessageError::Store(e) => e.into(),
        }
    }
}

impl From<TemplateError> for ApiError {
    fn from(error: TemplateError) -> Self {
        match error {
            TemplateError::UnknownApplication(e) => ApiError::NotFound(e.to_string()),
            TemplateError::NotFound(slug) => {
                ApiError::NotFound(format!("template {slug} not found"))
            }
            TemplateError::Render(e) => e.into(),
            TemplateError::Unstorable(e) => e.into(),
            TemplateError::Store(e) => e.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::UnknownApplication(e) => ApiError::invalid("scope", e),
            KeyError::BadName => ApiError::invalid("name", &error),
            KeyError::Unstorable(e) => e.into(),
            KeyError::NotFound(id) => ApiError::NotFound(format!("API key {id} not found")),
            KeyError::WeakSecret => ApiError::Internal(anyhow::Error::new(error)),
            KeyError::Store(e) => e.into(),
        }
    }
}

/// An id or label error about `field`.
pub fn id_error(field: &str, error: &IdError) -> ApiError {
    ApiError::invalid(field, error)
}

// ----- extractor rejections -----

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if crate::limits::is_body_timeout(&rejection) {
            return ApiError::RequestTimeout(
                "the request body did not arrive in time (http.body_read_timeout_secs)".into(),
            );
        }
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("the request body is larger than the server accepts".into())
        } else {
            ApiError::BadRequest(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    }
}

impl From<clarion_domain::app::UnknownApplication> for ApiError {
    fn from(error: clarion_domain::app::UnknownApplication) -> Self {
        ApiError::NotFound(error.to_string())
    }
}
