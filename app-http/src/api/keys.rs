//! `/v1/keys`: create, list and revoke API keys (admin keys only). A key's secret is in the
//! answer to its creation and nowhere else.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_adapters::keys::generate_secret;
use clarion_domain::auth::{ApiKey, ApiKeyId, KeyScope};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath};
use crate::routes::AppState;

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// What the key is for (1 to 100 characters).
    pub name: String,
    /// `admin` or `app:<application id>`.
    pub scope: String,
}

/// A stored key (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    pub id: i64,
    pub name: String,
    /// `admin` or `app:<application id>`.
    pub scope: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<ApiKey> for KeyResponse {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id.0,
            name: key.name,
            scope: key.scope.to_text(),
            prefix: key.prefix,
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A key just created, with its secret: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyResponse {
    #[serde(flatten)]
    pub key: KeyResponse,
    /// Send as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// Every key, revoked ones included.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyResponse>,
}

/// List the API keys.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, body = KeyList),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_keys(State(state): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let keys = state.service.list_api_keys().await?;
    Ok(Json(KeyList {
        items: keys.into_iter().map(Into::into).collect(),
    }))
}

/// Create an API key; the answer holds its secret, shown this once.
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys",
    request_body = CreateKeyBody,
    responses(
        (status = 201, body = CreatedKeyResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKeyResponse>), ApiError> {
    let scope: KeyScope = body
        .scope
        .parse()
        .map_err(|e| ApiError::invalid("scope", e))?;
    let secret = generate_secret().map_err(ApiError::Internal)?;
    let created = state
        .service
        .create_api_key(&body.name, scope, secret)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyResponse {
            key: created.key.into(),
            secret: created.secret,
        }),
    ))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(
    delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = i64, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The revoked key", body = KeyResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<KeyResponse>, ApiError> {
    let key = state.service.revoke_api_key(ApiKeyId(id)).await?;
    Ok(Json(key.into()))
}
