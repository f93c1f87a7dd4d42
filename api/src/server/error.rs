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
    /// Seconds to wait before retrying (`Retry-After`), when the server knows.
    retry_after: Option<u64>,
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
    /// `unauthorized`, `forbidden`, `unsupported_media_type`, `not_found`, `internal`,
    /// `out_of_range`, `method_not_allowed`, `invalid_request`, `misdirected`, `timeout`,
    /// `rate_limited`.
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
            retry_after: None,
        }
    }

    /// The request asks for more work than the server allows (422).
    pub fn too_large(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "limit_exceeded",
            message: message.into(),
            param: Some(param),
            retry_after: None,
        }
    }

    /// A body larger than the server takes, or one that would take too much memory to
    /// decode (413).
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "limit_exceeded",
            message: message.into(),
            param: Some("body"),
            retry_after: None,
        }
    }

    /// The client did not send its body within the deadline (408).
    pub fn body_timeout(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "timeout",
            message: message.into(),
            param: Some("body"),
            retry_after: None,
        }
    }

    /// Well-formed data the server will not keep: out of its accepted range (422).
    pub fn out_of_range(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "out_of_range",
            message: message.into(),
            param: Some(param),
            retry_after: None,
        }
    }

    /// A request addressed to a host name this server does not answer to (421).
    pub fn misdirected(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::MISDIRECTED_REQUEST,
            code: "misdirected",
            message: message.into(),
            param: Some("Host"),
            retry_after: None,
        }
    }

    /// The server is at capacity or the request ran out of time (503).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// A request target (414) or header block (431) over the server's limits.
    pub fn head_too_large(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: "limit_exceeded",
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// A sender over its rate (429); say when to retry with [`ApiError::retry_after`].
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// The same error, telling the client to retry in `seconds` (`Retry-After`).
    pub fn retry_after(self, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// Missing or wrong credentials (401).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// The server does not do this (403).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// A body in a format or version the server does not read (415).
    pub fn unsupported(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: message.into(),
            param: Some(param),
            retry_after: None,
        }
    }

    /// No such route (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            param: None,
            retry_after: None,
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
            retry_after: None,
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
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Largest body of a rejection made by the HTTP layer that is read back to be wrapped.
const MAX_REJECTION_BYTES: usize = 4096;

/// Gives every error answer the one shape, including the rejections that axum's extractors
/// and layers make themselves (a query string that does not deserialize, a body over the
/// limit, a method the route does not take): a 4xx or 5xx whose body is not JSON is answered
/// `{"error": {...}}` with its own status, its text as the message. The sign-in page, meant
/// for people, is left as it is.
pub async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let page = response.extensions().get::<super::ui::Page>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_json || page {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, default) = match status {
        StatusCode::BAD_REQUEST => ("invalid_parameter", "the request is not valid"),
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take this method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("limit_exceeded", "the body is too large"),
        StatusCode::URI_TOO_LONG => ("limit_exceeded", "the URI is too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("limit_exceeded", "the headers are too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("invalid_request", "the request was refused"),
    };
    let message = if text.is_empty() {
        default.to_owned()
    } else {
        text
    };
    let mut out = (
        status,
        Json(Body {
            error: Detail {
                code,
                message: &message,
                param: None,
            },
        }),
    )
        .into_response();
    // Headers the rejection set (Allow on a 405) are kept.
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
