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
    /// `critical_path` (default: waits redistributed along the wait-for graph), `cpu` (on-CPU
    /// self time), `wall` (on + off CPU, inclusive), `knot` (wPerf knots), `utilization` (of
    /// the resource the function is: throughput) or `cpu_delta` (growth of on-CPU time
    /// against the baseline).
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
    let method: Method = params
        .method
        .as_deref()
        .unwrap_or("critical_path")
        .parse()
        .map_err(|e: String| ApiError::invalid("method", e))?;
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
        Ok(Explanation::new(
            &ev,
            &analysis,
            method,
            Some((&base_analysis, &base)),
            top,
        ))
    })
    .await?;
    Ok(json_response(&explanation))
}
