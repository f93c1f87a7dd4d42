//! `GET /api/v1/explain`: why a window was slow.

use axum::extract::{Query, State};
use axum::response::Response;
use critpath_analyzer::graph::{Analysis, Evidence, Explanation, Method};
use critpath_analyzer::query::QueryError;
use serde::Deserialize;

use super::{ApiError, AppState, QueryErrors, WindowParams, json_response, run_query};

/// Default number of functions answered.
const DEFAULT_TOP: usize = 20;

/// `GET /api/v1/explain` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExplainParams {
    #[serde(flatten)]
    #[param(ignore)]
    window: WindowParams,
    /// `auto` (default: the impact model when the server has one that the ship rule made the
    /// default, else `critical_path`), `model` (the impact model's predicted p50
    /// elasticity), `critical_path` (waits redistributed along the wait-for graph), `cpu`
    /// (on-CPU self time), `wall` (on + off CPU, inclusive), `knot` (wPerf knots),
    /// `utilization` (of the resource the function is: throughput) or `cpu_delta` (growth of
    /// on-CPU time against the baseline). The answer's `method` says which ranked.
    method: Option<String>,
    /// Functions answered. Default: 20.
    top: Option<usize>,
    /// The baseline window's start: each function's change is reported against it, and
    /// `cpu_delta` ranks by it. Default: the window of equal length just before.
    baseline_from: Option<String>,
    /// The baseline window's end.
    baseline_to: Option<String>,
}

/// Why the window was slow: its functions ranked by likely impact on request latency, from the
/// wait-for graph of the selected threads and the threads that woke them (who waited for whom,
/// and what they ran meanwhile), each with its evidence and its change against the baseline
/// window, plus the request threads and the critical path.
#[utoipa::path(get, path = "/api/v1/explain", tag = "queries", params(WindowParams, ExplainParams),
    responses((status = 200, description = "`{method, seconds, request_threads: [string], functions: [{function, score, latency_impact, throughput_impact, evidence: {cpu_self_s, cpu_total_s, off_cpu_total_s: [lock, io, sleep, poll, runqueue, other], waits_ended_s, waits_in_s, blame_s, critical_path_share, knot_s, utilization, threads, waited_on: [{function, waited_s}], waited_by: [{function, waited_s}]}, change: {cpu_self_per_s, critical_path_share}}], critical_path: [{actor, waited_s, functions: [[name, s]]}]}`", content_type = "application/json"),
        QueryErrors))]
pub(super) async fn explain(
    State(state): State<AppState>,
    Query(params): Query<ExplainParams>,
) -> Result<Response, ApiError> {
    let w = params.window.window(&state.config)?;
    let requested = params.method.as_deref().unwrap_or("auto");
    let model = match requested {
        "model" => Some(state.model.clone().ok_or_else(|| {
            ApiError::invalid("method", "this server has no impact model (--model DIR)")
        })?),
        "auto" => state.model.clone().filter(|m| m.is_default()),
        _ => None,
    };
    let method: Method = match requested {
        "model" | "auto" => Method::CriticalPath,
        m => m
            .parse()
            .map_err(|e: String| ApiError::invalid("method", e))?,
    };
    // Every function's change is reported against the baseline, not only by `cpu_delta`.
    let baseline = super::baseline(
        &state.config,
        &params.window,
        &w,
        params.baseline_from.as_deref(),
        params.baseline_to.as_deref(),
    )?;
    let top = params.top.unwrap_or(DEFAULT_TOP);
    let explanation = run_query(&state, "explain", move |r| {
        let read =
            |w| Evidence::from_store(r.dir(), w).map_err(|e| ApiError::from(QueryError::Store(e)));
        let ev = read(&w)?;
        let analysis = Analysis::new(&ev);
        let base = read(&baseline)?;
        let base_analysis = Analysis::new(&base);
        let baseline = Some((&base_analysis, &base));
        match &model {
            Some(m) => {
                Explanation::by_model(&ev, &analysis, m, baseline, top).map_err(ApiError::internal)
            }
            None => Ok(Explanation::new(&ev, &analysis, method, baseline, top)),
        }
    })
    .await?;
    Ok(json_response(&explanation))
}
