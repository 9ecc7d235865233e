//! [`ApiError`]: every failure the REST API reports, as JSON with a stable `code`.
//! Client errors explain themselves and name the field; internal errors return only a
//! request id, with the detail logged under the same id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::{FieldError, Invalid};
use crate::snapshot::ChangeError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    NotFound(String),
    Conflict(String),
    PreconditionFailed {
        current: u64,
    },
    BadRequest {
        code: &'static str,
        field: String,
        message: String,
    },
    Invalid(Invalid),
    /// Existed, but is gone for good (a history entry whose body retention dropped).
    Gone(String),
    /// The database cannot be reached: nothing can be read or written now.
    Unavailable,
    /// Another part of the system must answer and cannot now (e.g. no replica leads
    /// rollouts): `code` names it.
    Busy {
        code: &'static str,
        message: String,
    },
    Internal(String),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `unauthorized`, `not_found`, `conflict`,
    /// `version_mismatch`, `invalid_json`, `invalid_config`, `internal`...
    pub code: String,
    /// Human-readable; for field errors, `field: problem`.
    pub message: String,
    /// Each problem with the field it concerns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The current configuration version, on `version_mismatch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// On `internal`: quote this id when reporting; the detail is in the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = ErrorBody {
            code: String::new(),
            message: String::new(),
            errors: Vec::new(),
            current_version: None,
            request_id: None,
        };
        let status = match self {
            ApiError::Unauthorized => {
                body.code = "unauthorized".into();
                body.message = "a valid bearer token is required".into();
                StatusCode::UNAUTHORIZED
            }
            ApiError::NotFound(m) => {
                body.code = "not_found".into();
                body.message = m;
                StatusCode::NOT_FOUND
            }
            ApiError::Conflict(m) => {
                body.code = "conflict".into();
                body.message = m;
                StatusCode::CONFLICT
            }
            ApiError::PreconditionFailed { current } => {
                body.code = "version_mismatch".into();
                body.message = format!(
                    "the configuration changed: it is at version {current}; reload and retry"
                );
                body.current_version = Some(current);
                StatusCode::PRECONDITION_FAILED
            }
            ApiError::BadRequest {
                code,
                field,
                message,
            } => {
                body.code = code.into();
                body.message = format!("{field}: {message}");
                body.errors.push(FieldError { field, message });
                StatusCode::BAD_REQUEST
            }
            ApiError::Invalid(Invalid(errors)) => {
                body.code = "invalid_config".into();
                body.message = errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                body.errors = errors;
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Gone(m) => {
                body.code = "gone".into();
                body.message = m;
                StatusCode::GONE
            }
            ApiError::Unavailable => {
                body.code = "database_unavailable".into();
                body.message =
                    "the database cannot be reached; nothing was changed — retry later".into();
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Busy { code, message } => {
                body.code = code.into();
                body.message = message;
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(detail) => {
                let id = format!("{:016x}", rand::random::<u64>());
                tracing::error!(request_id = %id, %detail, "internal error");
                body.code = "internal".into();
                body.message = "internal error".into();
                body.request_id = Some(id);
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict { current } => ApiError::PreconditionFailed { current },
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "database unavailable");
                ApiError::Unavailable
            }
            e => ApiError::Internal(format!("{e}: {:?}", std::error::Error::source(&e))),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Precondition { current } => ApiError::PreconditionFailed { current },
            ChangeError::Invalid(i) => ApiError::Invalid(i),
            ChangeError::NotFound(m) => ApiError::NotFound(m),
            ChangeError::Conflict(m) => ApiError::Conflict(m),
            ChangeError::Store(s) => s.into(),
        }
    }
}
