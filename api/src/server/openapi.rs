//! The OpenAPI 3 document of the HTTP API, generated from the handlers and their parameter
//! types (utoipa), served at `GET /api/v1/openapi.json` and kept in the repository as
//! `api/openapi.json`, which a test holds equal to what the code generates.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "critpath",
        description = "Continuous profiling: profiles, diffs, series and labels over the store, deploy markers and regression suspects, and ingest from remote agents. Times are RFC 3339, Unix milliseconds or now-DURATION; `query` is a Prometheus-style label selector. With --auth-token-file, every endpoint but health and this document needs `Authorization: Bearer <token>`."
    ),
    paths(
        super::health,
        super::labels,
        super::label_values,
        super::series,
        super::profile,
        super::diff,
        super::explain::explain,
        super::deploys::list,
        super::deploys::mark,
        super::deploys::regressions,
        super::ingest,
        super::metrics
    ),
    tags(
        (name = "queries", description = "Reading the store"),
        (name = "deploys", description = "Deploy markers and regression suspects"),
        (name = "ingest", description = "Batches pushed by agents on other hosts"),
        (name = "status", description = "Health and metrics")
    )
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Response {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = JSON.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response()
}
