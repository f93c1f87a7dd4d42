//! Deploy markers and regression suspects: `GET|POST /api/v1/deploys`,
//! `GET /api/v1/regressions`.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use critpath_analyzer::deploys::{self, AroundError, DeployError};
use critpath_analyzer::graph::{Pair, Ranking, Report};
use critpath_analyzer::query::{MAX_TIME_MS, Selector, parse_duration_ms, parse_time_ms};
use serde::Deserialize;

use super::{
    ApiError, AppState, QueryErrors, WindowParams, error, json_response, now_ms, run_query,
};

/// Default length of the windows either side of a deploy.
pub const DEFAULT_WINDOW: &str = "15m";
/// Default number of suspects answered.
const DEFAULT_TOP: usize = 20;

impl From<DeployError> for ApiError {
    fn from(err: DeployError) -> Self {
        match err {
            DeployError::Invalid { field, message } => ApiError::invalid(field, message),
            err => ApiError::internal(err),
        }
    }
}

impl From<AroundError> for ApiError {
    fn from(err: AroundError) -> Self {
        match err {
            AroundError::Unknown(_) => ApiError::not_found(err.to_string()),
            AroundError::Invalid { field, message } => ApiError::invalid(field, message),
            AroundError::Deploys(err) => err.into(),
            AroundError::Query(err) => err.into(),
        }
    }
}

/// Deploys in the window: marked ones, and those found in the store (an executable's new build
/// id), oldest first. The selector applies to the found ones' samples and to the marked ones'
/// `service`.
#[utoipa::path(get, path = "/api/v1/deploys", tag = "deploys", params(WindowParams),
    responses((status = 200, description = "`{deploys: [{id, service, version, at_ms, source: marked|build_id, exe?}]}`", content_type = "application/json"),
        QueryErrors))]
pub(super) async fn list(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let w = params.window(&state.config)?;
    let deploys = run_query(&state, "deploys", move |r| Ok(deploys::in_window(r, &w)?)).await?;
    Ok(json_response(&serde_json::json!({ "deploys": deploys })))
}

/// A deploy to mark.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewDeploy {
    /// The service deployed (the `service` label of its samples).
    service: String,
    /// The version deployed.
    version: String,
    /// When: RFC 3339, Unix ms (a string or a number), or now-DURATION. Default: now.
    #[schema(value_type = Option<String>)]
    at: Option<serde_json::Value>,
}

/// Marks a deploy (kept in the store directory, fsynced before the answer).
#[utoipa::path(post, path = "/api/v1/deploys", tag = "deploys", request_body = NewDeploy,
    responses(
        (status = 201, description = "Marked: `{id, service, version, at_ms, source}`", content_type = "application/json"),
        (status = 400, description = "Not a deploy, or an invalid field (named)", body = error::Body),
        (status = 401, description = "A bearer token is required or wrong", body = error::Body),
    ))]
pub(super) async fn mark(
    State(state): State<AppState>,
    body: Result<Json<NewDeploy>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body.map_err(|e| ApiError::invalid("body", e.body_text()))?;
    let now = now_ms();
    let at_ms = match &new.at {
        None | Some(serde_json::Value::Null) => now,
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .filter(|ms| (0..=MAX_TIME_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::invalid(
                    "at",
                    format!("not Unix milliseconds from 1970 to the year 9999: {n}"),
                )
            })?,
        Some(serde_json::Value::String(text)) => {
            parse_time_ms(text, now).map_err(|e| ApiError::invalid("at", e.to_string()))?
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "at",
                format!("expected a time (string) or Unix ms (number), not {other}"),
            ));
        }
    };
    let dir = state.config.data_dir.clone();
    let deploy =
        tokio::task::spawn_blocking(move || deploys::mark(&dir, &new.service, &new.version, at_ms))
            .await
            .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, json_response(&deploy)).into_response())
}

/// `GET /api/v1/regressions` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegressionsParams {
    /// Label selector. Default: the deploy's service (everything for `at`).
    query: Option<String>,
    /// A deploy's id (from `GET /api/v1/deploys`). Exactly one of `deploy` and `at`.
    deploy: Option<String>,
    /// The moment of the change: RFC 3339, Unix ms, or now-DURATION.
    at: Option<String>,
    /// Length of the windows before and after. Default: 15m.
    window: Option<String>,
    /// Suspects answered. Default: 20.
    top: Option<usize>,
    /// Ranking after the regressions: `auto` (default: the regressions model when the server
    /// has one that the ship rule made the default, else `graph`), `graph` (the growth of each
    /// function's critical-path share when the windows have off-CPU waits and wakeups, else of
    /// its on-CPU time) or `model` (the regressions model's score of the pair of windows).
    method: Option<String>,
}

/// Which functions regressed at a deploy: on-CPU time per function in the window before it
/// against the window after; a change counts only when statistically significant (sampling
/// noise scaled by each function's dispersion over the store's intervals, Bonferroni-corrected)
/// and large enough to matter; significant growths are regressions and come first, the rest
/// ranked by `method` (reported in the answer: `critical_path_delta`, `cpu_delta` or `model`).
#[utoipa::path(get, path = "/api/v1/regressions", tag = "deploys", params(RegressionsParams),
    responses((status = 200, description = "`{deploy, at_ms, before: {from_ms, to_ms}, after: {from_ms, to_ms}, method, regressions, significant, alpha, min_relative, min_share, noise, degrees_of_freedom, suspects: [{function, before, after, delta, critical_path_before, critical_path_after, path_per_s_before, path_per_s_after, score, z, dispersion, significant, regression, pattern, route, why}]}` (before/after: on-CPU seconds per second; critical_path_*: shares of the critical path (of the requests' time outside the run queue); path_per_s_*: the requests' time charged to it per second, or null without a timeline; score: what the method ranked by; route: how most of its share reached the requests — on_cpu, blocked, waited_on_cpu, waited_blocked, knot — or null; why: one line on its rank)", content_type = "application/json"),
        (status = 404, description = "No deploy has this id", body = error::Body),
        QueryErrors))]
pub(super) async fn regressions(
    State(state): State<AppState>,
    Query(params): Query<RegressionsParams>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let selector = Selector::parse(params.query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::invalid("query", e.to_string()))?;
    let at = params
        .at
        .as_deref()
        .map(|t| parse_time_ms(t, now).map_err(|e| ApiError::invalid("at", e.to_string())))
        .transpose()?;
    let window_ms = parse_duration_ms(params.window.as_deref().unwrap_or(DEFAULT_WINDOW))
        .map_err(|e| ApiError::invalid("window", e.to_string()))?;
    if window_ms > state.config.max_range.as_millis() as i64 {
        return Err(ApiError::too_large(
            "window",
            format!("at most {} s are allowed", state.config.max_range.as_secs()),
        ));
    }
    let top = params.top.unwrap_or(DEFAULT_TOP);
    let model = match params.method.as_deref().unwrap_or("auto") {
        "model" => Some(state.regressions_model.clone().ok_or_else(|| {
            ApiError::invalid(
                "method",
                "this server has no regressions model (--regressions-model DIR)",
            )
        })?),
        "auto" => state.regressions_model.clone().filter(|m| m.is_default()),
        "graph" => None,
        other => {
            return Err(ApiError::invalid(
                "method",
                format!("unknown method {other:?}: expected auto, graph or model"),
            ));
        }
    };
    let answer = run_query(&state, "regressions", move |r| {
        let around = deploys::around(
            r,
            params.deploy.as_deref(),
            at,
            window_ms,
            &selector,
            now,
        )?;
        let pair = Pair::in_store(r, &around.before, &around.after)?;
        let (mut suspects, mut ranking) = pair.regressions();
        if let Some(model) = &model {
            model
                .rank_suspects(&pair, &mut suspects)
                .map_err(ApiError::internal)?;
            ranking = Ranking::Model;
        }
        let report = Report::new(suspects, ranking, &pair.dispersion, top);
        let range = |w: &critpath_analyzer::query::Window| {
            serde_json::json!({ "from_ms": w.from_ms, "to_ms": w.to_ms })
        };
        let mut json = serde_json::to_value(&report).map_err(ApiError::internal)?;
        json["deploy"] = serde_json::to_value(&around.deploy).map_err(ApiError::internal)?;
        json["at_ms"] = around.at_ms.into();
        json["before"] = range(&around.before);
        json["after"] = range(&around.after);
        Ok(json)
    })
    .await?;
    Ok(json_response(&answer))
}
