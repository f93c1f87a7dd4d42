//! The API's one error type: 4xx name the bad parameter, 5xx are generic and logged.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use critpath_analyzer::query::QueryError;
use serde::Serialize;

/// An error answer: `{"error": {"code", "message", "param"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
}

/// Every error answer's body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct Body<'a> {
    error: Detail<'a>,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct Detail<'a> {
    /// Machine-readable: `invalid_parameter`, `limit_exceeded`, `unavailable`,
    /// `unauthorized`, `forbidden`, `unsupported_media_type`, `not_found`, `internal`.
    code: &'a str,
    /// For people.
    message: &'a str,
    /// The parameter at fault, when one is.
    param: Option<&'a str>,
}

impl ApiError {
    /// A bad parameter (400).
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_parameter",
            message: message.into(),
            param: Some(param),
        }
    }

    /// The request asks for more work than the server allows (422).
    pub fn too_large(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "limit_exceeded",
            message: message.into(),
            param: Some(param),
        }
    }

    /// The server is at capacity or the request ran out of time (503).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            param: None,
        }
    }

    /// Missing or wrong credentials (401).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
            param: None,
        }
    }

    /// The server does not do this (403).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
            param: None,
        }
    }

    /// A body in a format or version the server does not read (415).
    pub fn unsupported(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: message.into(),
            param: Some(param),
        }
    }

    /// No such route (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            param: None,
        }
    }

    /// An internal failure: logged with its detail, answered with a generic message (500).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        log::error!("internal error: {detail}");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; the server log has the details".into(),
            param: None,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::Invalid { param, message } => Self::invalid(param, message),
            QueryError::Store(critpath_analyzer::store::StoreError::NoStore(dir)) => {
                Self::unavailable(format!(
                    "no store in {} yet: the agent creates it when it starts",
                    dir.display()
                ))
            }
            QueryError::Store(err) => Self::internal(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                param: self.param,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
