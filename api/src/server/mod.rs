//! `critpath serve`: the HTTP API over the store (axum). `critpath run` serves it beside the
//! agent.
//!
//! Every query runs on the blocking pool behind a semaphore (at most
//! [`ServerConfig::max_concurrent_queries`] at once) and a deadline
//! ([`ServerConfig::request_timeout`]); over either, the answer is 503, never a pile-up.

mod deploys;
mod error;
mod explain;
mod limit;
mod metrics;
mod openapi;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use critpath_analyzer::export::{Format, flamebearer};
use critpath_analyzer::model::{Model, Task};
use critpath_analyzer::query::{Reader, Selector, Window, parse_duration_ms, parse_time_ms};
use critpath_analyzer::store::{Batch, ProfileType, Store, wire};
use serde::Deserialize;
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use metrics::Metrics;

use crate::agent::AgentStatus;
use crate::writer::WriterHandle;

/// Settings of the HTTP server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on. Default: 127.0.0.1:7070.
    pub listen: SocketAddr,
    /// The store directory.
    pub data_dir: PathBuf,
    /// Longest a request may take before it is answered 503. Default: 30 s.
    pub request_timeout: Duration,
    /// Queries running at once; more wait for a slot until their deadline. Default: 4.
    pub max_concurrent_queries: usize,
    /// Pushes read, decoded and stored at once; more wait (their bodies unread) until their
    /// deadline. Each takes at most its body (64 MiB) and 256 MiB decoded. Default: 2.
    pub max_concurrent_ingests: usize,
    /// Body bytes a second each pushing host (peer address) may send to ingest; more is
    /// answered 429 with the seconds to wait (an agent's pushes retry then). Default: 8 MiB/s.
    pub ingest_host_rate: u64,
    /// Bytes a host may push at once before its rate applies (at least one largest body).
    /// Default: 64 MiB.
    pub ingest_host_burst: u64,
    /// Connections open at once; one more is answered 503 and closed. Default: 256.
    pub max_connections: usize,
    /// Longest a connection may take to send a request's head (its request line and
    /// headers); slower ones are closed. Default: 10 s.
    pub header_timeout: Duration,
    /// Longest window a query may cover. Default: 31 days.
    pub max_range: Duration,
    /// Most series a series query may return. Default: 1000.
    pub max_series: usize,
    /// Most nodes a tree or flamebearer may have (also the default of `max_nodes`).
    /// Default: 16384.
    pub max_nodes: usize,
    /// Bearer token every endpoint but health requires; `None`: no authentication.
    pub auth_token: Option<String>,
    /// Serve beyond loopback without a token (refused otherwise). Default: false.
    pub insecure: bool,
    /// Host names answered (`Host` header, port aside); `None`: loopback names when listening
    /// on loopback, any name otherwise. Default: `None`.
    pub allowed_hosts: Option<Vec<String>>,
    /// Memory for the query index. Default: 512 MiB.
    pub cache_bytes: usize,
    /// The impact model's directory; `None` or a directory without a model: graph methods
    /// only. Default: `models/impact`.
    pub model_dir: Option<PathBuf>,
    /// The regressions model's directory; `None` or a directory without one: regressions are
    /// ranked by the graph method. Default: `models/regressions`.
    pub regressions_model_dir: Option<PathBuf>,
    /// Oldest pushed batch accepted, before now; older ones are refused (422) rather than
    /// acknowledged and then dropped by retention. Default: 7 days (less when the store's
    /// retention is shorter).
    pub ingest_max_age: Duration,
}

impl ServerConfig {
    /// Refuses to expose the API beyond loopback without a token, unless `insecure`.
    ///
    /// # Errors
    /// A non-loopback address without a token and without `insecure`.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && self.auth_token.is_none() && !self.insecure {
            anyhow::bail!(
                "refusing to serve on {} without authentication: pass --auth-token-file FILE, \
                 or --insecure to serve it open to the network",
                self.listen
            );
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("critpath-data"),
            request_timeout: Duration::from_secs(30),
            max_concurrent_queries: 4,
            max_concurrent_ingests: 2,
            ingest_host_rate: 8 << 20,
            ingest_host_burst: MAX_INGEST_BYTES as u64,
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            max_range: Duration::from_secs(31 * 24 * 3600),
            max_series: 1000,
            max_nodes: 16_384,
            auth_token: None,
            insecure: false,
            allowed_hosts: None,
            cache_bytes: critpath_analyzer::store::DEFAULT_CACHE_BYTES,
            model_dir: Some(PathBuf::from("models/impact")),
            regressions_model_dir: Some(PathBuf::from("models/regressions")),
            ingest_max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    config: Arc<ServerConfig>,
    reader: Reader,
    queries: Arc<Semaphore>,
    ingests: Arc<Semaphore>,
    hosts: Arc<limit::HostLimiter>,
    sign_ins: Arc<limit::HostLimiter>,
    metrics: Arc<Metrics>,
    agent: Option<Arc<AgentStatus>>,
    writer: Option<WriterHandle>,
    responses: Arc<std::sync::Mutex<ResponseCache>>,
    started: Instant,
    model: Option<Arc<Model>>,
    regressions_model: Option<Arc<Model>>,
}

impl AppState {
    /// State for a server over `config.data_dir`; `agent` is the status of an agent running in
    /// the same process (`critpath run`), if any; `writer` stores pushed batches (ingest is
    /// refused without one).
    pub fn new(
        config: ServerConfig,
        agent: Option<Arc<AgentStatus>>,
        writer: Option<WriterHandle>,
    ) -> Self {
        // Loaded once; a directory without a model leaves the graph methods.
        let load = |dir: Option<&std::path::Path>, task: Task| {
            let dir = dir?;
            match Model::load(dir).and_then(|m| m.check_task(task).map(|()| m)) {
                Ok(m) => Some(Arc::new(m)),
                Err(e) => {
                    if dir.join(critpath_analyzer::model::CONFIG).exists() {
                        log::warn!("no {} model: {e}", task.as_str());
                    }
                    None
                }
            }
        };
        let model = load(config.model_dir.as_deref(), Task::Explain);
        let regressions_model = load(config.regressions_model_dir.as_deref(), Task::Regressions);
        Self {
            model,
            regressions_model,
            reader: Reader::with_cache_bytes(&config.data_dir, config.cache_bytes),
            queries: Arc::new(Semaphore::new(config.max_concurrent_queries.max(1))),
            ingests: Arc::new(Semaphore::new(config.max_concurrent_ingests.max(1))),
            hosts: Arc::new(limit::HostLimiter::new(
                config.ingest_host_rate,
                config.ingest_host_burst,
            )),
            sign_ins: Arc::new(limit::HostLimiter::sign_ins()),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            agent,
            writer,
            responses: Arc::default(),
            started: Instant::now(),
        }
    }
}

/// The API's routes. With a token configured, every route but health requires
/// `Authorization: Bearer <token>`.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/v1/labels", get(labels))
        .route("/api/v1/labels/{name}/values", get(label_values))
        .route("/api/v1/series", get(series))
        .route("/api/v1/profile", get(profile))
        .route("/api/v1/diff", get(diff))
        .route("/api/v1/deploys", get(deploys::list).post(deploys::mark))
        .route("/api/v1/regressions", get(deploys::regressions))
        .route("/api/v1/explain", get(explain::explain))
        .route(
            "/api/v1/ingest",
            post(ingest).layer(DefaultBodyLimit::disable()),
        )
        .route("/metrics", get(metrics))
        .route("/", get(ui::index))
        .route("/assets/{file}", get(ui::asset))
        .route("/api/v1/openapi.json", get(openapi::document))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /api/v1/health") })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/login", post(ui::login))
        .merge(protected)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .layer(axum::middleware::from_fn(check_head))
        .layer(axum::middleware::map_response(error::json_rejections))
        .with_state(state)
}

/// The longest request target answered, bytes: a selector at its longest (4 KiB),
/// percent-encoded, fits with room for the other parameters.
pub const MAX_URI_BYTES: usize = 32 << 10;

/// The most header fields a request may carry.
pub const MAX_HEADER_FIELDS: usize = 100;

/// The most bytes of header fields (names and values) a request may carry.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// The limits hyper itself enforces while it parses a request head, answering with a bare
/// status line (no JSON) past them: set well beyond [`MAX_URI_BYTES`] (hyper's own URI limit
/// is 64 KiB), [`MAX_HEADER_FIELDS`] and [`MAX_HEADER_BYTES`], so that the requests a client
/// can make meet this server's limits first and get the JSON error shape.
const HYPER_MAX_HEADER_FIELDS: usize = 4 * MAX_HEADER_FIELDS;

/// Refuses a request whose target or headers are over the limits ([`MAX_URI_BYTES`]: 414;
/// [`MAX_HEADER_FIELDS`], [`MAX_HEADER_BYTES`]: 431) with the API's error shape, before any
/// other work.
async fn check_head(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // The target as sent (origin form: path and query; absolute form: with scheme and host),
    // measured without rendering it.
    let target = request.uri();
    let uri = target.scheme_str().map_or(0, |s| s.len() + 3)
        + target.authority().map_or(0, |a| a.as_str().len())
        + target.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri > MAX_URI_BYTES {
        return ApiError::head_too_large(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {uri} bytes; at most {MAX_URI_BYTES} are accepted"),
        )
        .into_response();
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_FIELDS || bytes > MAX_HEADER_BYTES {
        return ApiError::head_too_large(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request has {} header fields of {bytes} bytes; at most {MAX_HEADER_FIELDS} fields of {MAX_HEADER_BYTES} bytes are accepted",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Answers only requests addressed to an allowed host name ([`ServerConfig::allowed_hosts`]):
/// on loopback, a page of another site whose name was rebound to 127.0.0.1 (DNS rebinding)
/// sends its own name and is refused. Requests without a `Host` (HTTP/1.0) are answered.
async fn check_host(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match host {
        Some(host) if !host_allowed(&state.config, &host) => ApiError::misdirected(format!(
            "this server does not answer to the host {host:?}; start it with --allow-host to add a name"
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Whether `host` (a `Host` header: a name or address, maybe with a port) may be answered.
fn host_allowed(config: &ServerConfig, host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [::1]:7070
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match &config.allowed_hosts {
        Some(names) => names.iter().any(|n| n.eq_ignore_ascii_case(&name)),
        None if config.listen.ip().is_loopback() => {
            name == "localhost"
                || name.ends_with(".localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => true,
    }
}

/// Checks the token, when one is configured: a bearer token (API clients), or the cookie the
/// login form sets (the web page). A browser asking for the page without it gets the form.
/// Each client address may present a wrong token [`limit::SIGN_IN_BURST`] times, then
/// [`limit::SIGN_IN_PER_MINUTE`] a minute; past that it gets 429s, even with the right one.
async fn authenticate(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if state.config.auth_token.is_none() {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<limit::Peer>().map(|p| p.0);
    let credentials = credentials(&state.config, request.headers());
    if credentials != Credentials::Absent
        && let Some(ip) = peer
        && let Some(seconds) = sign_in_wait(&state, ip)
    {
        return ApiError::rate_limited(too_many_sign_ins(ip, seconds))
            .retry_after(seconds)
            .into_response();
    }
    match credentials {
        Credentials::Valid => return next.run(request).await,
        Credentials::Wrong => failed_sign_in(&state, peer),
        Credentials::Absent => {}
    }
    if request.uri().path() == "/" {
        return ui::login_form(StatusCode::UNAUTHORIZED, None);
    }
    if request.headers().contains_key(header::AUTHORIZATION) {
        ApiError::unauthorized("the bearer token is not valid").into_response()
    } else if credentials == Credentials::Wrong {
        ApiError::unauthorized("the sign-in cookie is not valid: sign in again at /")
            .into_response()
    } else {
        ApiError::unauthorized(
            "this server requires an `Authorization: Bearer <token>` header (or, in a browser, signing in at /)",
        )
        .into_response()
    }
}

/// When `ip` has made too many wrong sign-ins: the seconds until it may try again.
pub(crate) fn sign_in_wait(state: &AppState, ip: std::net::IpAddr) -> Option<u64> {
    let wait = state.sign_ins.check(ip, Instant::now()).err()?;
    Some(wait.as_secs_f64().ceil().max(1.0) as u64)
}

/// The message of a refused sign-in.
pub(crate) fn too_many_sign_ins(ip: std::net::IpAddr, seconds: u64) -> String {
    format!("too many wrong tokens from {ip}; retry in {seconds} s")
}

/// Counts a wrong token against the client's address (when the connection has one).
pub(crate) fn failed_sign_in(state: &AppState, peer: Option<std::net::IpAddr>) {
    if let Some(ip) = peer {
        // A refusal here only means the bucket is already empty: the next try gets the 429.
        let _ = state.sign_ins.take(ip, 1, Instant::now());
        log::info!("a wrong token from {ip}");
    }
}

/// The cookie holding the token for the web page (`HttpOnly`, `SameSite=Strict`; its value
/// is [`cookie_value`]).
pub(crate) const TOKEN_COOKIE: &str = "critpath_token";

/// What a request presents of the configured token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credentials {
    /// No bearer token and no sign-in cookie.
    Absent,
    /// A bearer token or cookie that is not the token.
    Wrong,
    /// The token, as a bearer token or the page's cookie.
    Valid,
}

/// What the request presents of the configured token, as a bearer token or the page's cookie.
fn credentials(config: &ServerConfig, headers: &axum::http::HeaderMap) -> Credentials {
    let Some(token) = config.auth_token.as_deref() else {
        return Credentials::Absent;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value);
    let valid = bearer.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
        || cookie.is_some_and(|given| {
            constant_time_eq(given.as_bytes(), cookie_value(token).as_bytes())
        });
    if valid {
        Credentials::Valid
    } else if bearer.is_some() || cookie.is_some() || headers.contains_key(header::AUTHORIZATION) {
        Credentials::Wrong
    } else {
        Credentials::Absent
    }
}

/// The token as the cookie holds it: hexadecimal, since a token may hold characters a cookie
/// cannot (`;`, `,`, spaces, quotes).
pub(crate) fn cookie_value(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves until `shutdown` resolves.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listen = state.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!(
        "critpath: serving the API on http://{}",
        listener.local_addr().unwrap_or(listen)
    );
    tokio::task::spawn_blocking({
        let reader = state.reader.clone();
        move || warm_index(&reader)
    });
    serve_on(listener, state, shutdown).await;
    Ok(())
}

/// Serves connections accepted from `listener` until `shutdown` resolves, then lets the open
/// ones finish their requests.
///
/// Each connection must send its request head within [`ServerConfig::header_timeout`] (a
/// client that sends its headers a byte at a time is closed, not kept), and at most
/// [`ServerConfig::max_connections`] are open at once: one more is answered 503 and closed.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let config = Arc::clone(&state.config);
    let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let service = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_headers(HYPER_MAX_HEADER_FIELDS)
        .keep_alive(true);
    let mut refused_logged: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a connection reset before it was accepted:
                    // pause instead of spinning, then accept again.
                    log::warn!("accepting a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                log::warn!(
                    "{} connections open (the limit): refusing {peer} and any more for now",
                    config.max_connections
                );
                refused_logged = Some(Instant::now());
            }
            tokio::spawn(refuse(stream, config.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The peer's address rides on each of its requests (the ingest limit is per host).
        let service = tower::ServiceExt::map_request(
            service.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(limit::Peer(peer.ip()));
                request
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                log::debug!("connection from {peer}: {err}");
            }
            drop(permit);
        });
    }
    // Open connections finish the request they are on (their deadline bounds it).
    let drained = tokio::time::timeout(config.request_timeout, graceful.shutdown()).await;
    if drained.is_err() {
        log::warn!("closing connections still busy after the request deadline");
    }
}

/// Answers a connection over the limit 503 (the API's error shape) and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt as _;
    let body = serde_json::json!({
        "error": {
            "code": "unavailable",
            "message": format!("too many connections: at most {limit} are served at once; retry later"),
            "param": null,
        },
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Loads the last 24 hours into the query index, so the first queries are answered from
/// memory too.
fn warm_index(reader: &Reader) {
    let started = Instant::now();
    let now = now_ms();
    let Ok(window) = Window::new(Selector::default(), now - 24 * 3_600_000, now) else {
        return;
    };
    match reader.tree_trimmed(&window, ProfileType::Cpu, 1, 0.0) {
        Ok(tree) => log::info!(
            "query index: the last 24 h ({} samples) loaded in {:.1} s",
            tree.total(),
            started.elapsed().as_secs_f64()
        ),
        Err(err) => log::warn!("query index: loading the last 24 h: {err}"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The parameters every query takes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowParams {
    /// Label selector; empty selects everything.
    query: Option<String>,
    /// Window start: RFC 3339, Unix ms, or now-DURATION. Default: now-1h.
    from: Option<String>,
    /// Window end (exclusive). Default: now.
    to: Option<String>,
}

impl WindowParams {
    fn window(&self, config: &ServerConfig) -> Result<Window, ApiError> {
        let now = now_ms();
        let time = |param: &'static str, text: Option<&str>, default: &str| {
            parse_time_ms(text.unwrap_or(default), now)
                .map_err(|e| ApiError::invalid(param, e.to_string()))
        };
        let from = time("from", self.from.as_deref(), "now-1h")?;
        let to = time("to", self.to.as_deref(), "now")?;
        window(
            config,
            self.query.as_deref().unwrap_or(""),
            from,
            to,
            "from",
        )
    }
}

fn window(
    config: &ServerConfig,
    query: &str,
    from: i64,
    to: i64,
    from_param: &'static str,
) -> Result<Window, ApiError> {
    let selector = Selector::parse(query).map_err(|e| ApiError::invalid("query", e.to_string()))?;
    if from >= to {
        return Err(ApiError::invalid(
            from_param,
            format!("the window is empty or reversed: from ({from}) must be before to ({to})"),
        ));
    }
    let max = i64::try_from(config.max_range.as_millis()).unwrap_or(i64::MAX);
    match to.checked_sub(from) {
        Some(span) if span <= max => {}
        span => {
            return Err(ApiError::too_large(
                from_param,
                format!(
                    "the window spans {} s; at most {} s are allowed",
                    span.map_or(u64::MAX, |ms| (ms / 1000) as u64),
                    config.max_range.as_secs()
                ),
            ));
        }
    }
    Window::new(selector, from, to).map_err(ApiError::from)
}

/// The baseline of window `w` (selected by `params`): `baseline_from` / `baseline_to` when
/// given, else the window of equal length just before.
fn baseline(
    config: &ServerConfig,
    params: &WindowParams,
    w: &Window,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Window, ApiError> {
    let now = now_ms();
    let time = |param: &'static str, text: Option<&str>| {
        text.map(|t| parse_time_ms(t, now).map_err(|e| ApiError::invalid(param, e.to_string())))
            .transpose()
    };
    let (base_from, base_to) =
        w.baseline_range(time("baseline_from", from)?, time("baseline_to", to)?);
    let query = params.query.as_deref().unwrap_or("");
    window(config, query, base_from, base_to, "baseline_from")
}

fn profile_type(text: Option<&str>) -> Result<ProfileType, ApiError> {
    text.unwrap_or("cpu")
        .parse()
        .map_err(|e: String| ApiError::invalid("type", e))
}

/// Runs a query on the blocking pool, within the concurrency limit and the deadline, and
/// records its latency.
async fn run_query<T: Send + 'static>(
    state: &AppState,
    endpoint: &'static str,
    work: impl FnOnce(&Reader) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let deadline = state.config.request_timeout;
    let result = tokio::time::timeout(deadline, async {
        let permit = Arc::clone(&state.queries)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
        let reader = state.reader.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&reader)
        })
        .await
        .map_err(ApiError::internal)?
    })
    .await
    .unwrap_or_else(|_| {
        Err(ApiError::unavailable(format!(
            "the query did not finish within {} s; narrow the window or the selector",
            deadline.as_secs()
        )))
    });
    state
        .metrics
        .observe_query(endpoint, started.elapsed(), result.is_ok());
    result
}

fn json_response(value: &impl serde::Serialize) -> Response {
    json_rendered(value).into_response()
}

/// Build, store and sampler status. Needs no token; with a token configured, a caller without
/// it gets only `{status, version}`.
#[utoipa::path(get, path = "/api/v1/health", tag = "status",
    responses((status = 200, description = "`{status, version, uptime_seconds, model: {version, default, parameters} | null, regressions_model: {version, default, parameters} | null, store: {dir, exists, bytes, recovered: {segments_cut, bytes_cut, bytes_skipped} | null (what the writer's start found lost in the log: a torn tail cut, corrupt records skipped)}, sampler: {running, frequency_hz, off_cpu, samples, off_cpu_waits, batches_written, batches_dropped, events_lost, stack_errors, wal_bytes, unwinding: {mode, stacks, truncated, processes: [{pid, comm, stacks, truncated}], wait_copies, wait_copy_bytes, waits_without_copy, held_wait_copy_bytes}} | null}`", content_type = "application/json")))]
async fn health(
    State(state): State<AppState>,
    peer: Option<axum::Extension<limit::Peer>>,
    headers: axum::http::HeaderMap,
) -> Response {
    // With a token configured, a caller without it learns that the server is up and little
    // else: not the data directory, nor (under `critpath run`) the machine's processes. A
    // wrong token counts as a failed sign-in, and a client past its failed sign-ins is not
    // asked for one: health always answers.
    let peer = peer.map(|axum::Extension(limit::Peer(ip))| ip);
    let signed_in = match credentials(&state.config, &headers) {
        Credentials::Valid => peer.is_none_or(|ip| sign_in_wait(&state, ip).is_none()),
        Credentials::Wrong => {
            failed_sign_in(&state, peer);
            false
        }
        Credentials::Absent => false,
    };
    if state.config.auth_token.is_some() && !signed_in {
        return json_response(&serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
        }));
    }
    let dir = state.config.data_dir.clone();
    let (bytes, store_ok) = tokio::task::spawn_blocking(move || {
        (Store::disk_usage(&dir), dir.join("STORE_VERSION").exists())
    })
    .await
    .unwrap_or((0, false));
    let agent = state.agent.as_ref().map(|a| a.snapshot());
    json_response(&serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "model": state.model.as_deref().map(model_health),
        "regressions_model": state.regressions_model.as_deref().map(model_health),
        "store": {
            "dir": state.config.data_dir,
            "exists": store_ok,
            "bytes": bytes,
            "recovered": state.writer.as_ref().map(|w| {
                let r = w.recovery();
                serde_json::json!({
                    "segments_cut": r.truncated_segments,
                    "bytes_cut": r.truncated_bytes,
                    "bytes_skipped": r.skipped_bytes,
                })
            }),
        },
        "sampler": agent,
    }))
}

/// A loaded model in the health answer.
fn model_health(m: &Model) -> serde_json::Value {
    serde_json::json!({
        "version": m.version(),
        "default": m.is_default(),
        "parameters": m.config().parameters,
    })
}

/// The error answers every query endpoint may give (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[expect(
    dead_code,
    reason = "never built: it only describes the error answers to utoipa"
)]
enum QueryErrors<'a> {
    /// A parameter is invalid (named in `param`)
    #[response(status = 400)]
    Invalid(error::Body<'a>),
    /// A bearer token is required or wrong
    #[response(status = 401)]
    Unauthorized(error::Body<'a>),
    /// The request asks for more than the server's limits
    #[response(status = 422)]
    TooLarge(error::Body<'a>),
    /// At capacity, past the deadline, or no store yet
    #[response(status = 503)]
    Unavailable(error::Body<'a>),
}

/// The label names with a value in the window's selected series.
#[utoipa::path(get, path = "/api/v1/labels", tag = "queries", params(WindowParams),
    responses((status = 200, description = "`{names: [string]}`", content_type = "application/json"),
        QueryErrors))]
async fn labels(
    State(state): State<AppState>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let w = params.window(&state.config)?;
    let names = run_query(&state, "labels", move |r| Ok(r.label_names(&w)?)).await?;
    Ok(json_response(&serde_json::json!({ "names": names })))
}

/// The values of one label in the window, most on-CPU samples first.
#[utoipa::path(get, path = "/api/v1/labels/{name}/values", tag = "queries",
    params(("name" = String, Path, description = "host, pid, comm, exe, build_id or service"), WindowParams),
    responses((status = 200, description = "`{name, values: [{value, cpu_samples}]}`", content_type = "application/json"),
        QueryErrors))]
async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<Response, ApiError> {
    let w = params.window(&state.config)?;
    let values = run_query(&state, "label_values", move |r| {
        Ok(r.label_values(&w, &name)?)
    })
    .await?;
    let values: Vec<_> = values
        .into_iter()
        .map(|(value, cpu_samples)| serde_json::json!({"value": value, "cpu_samples": cpu_samples}))
        .collect();
    Ok(json_response(&serde_json::json!({ "values": values })))
}

/// `GET /api/v1/series` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    #[serde(flatten)]
    #[param(ignore)]
    window: WindowParams,
    /// Step: a duration (`1m`, `30s`) or seconds. Default: the window / 100, at least 10 s.
    step: Option<String>,
    /// `cpu`, `offcpu` or `wall`. Default: cpu.
    #[serde(rename = "type")]
    profile_type: Option<String>,
    /// Comma-separated labels. Default: service.
    group_by: Option<String>,
}

/// Values per step per group of series: sample counts (cpu) or seconds (offcpu, wall).
#[utoipa::path(get, path = "/api/v1/series", tag = "queries", params(WindowParams, SeriesParams),
    responses((status = 200, description = "`{type, unit, step_ms, timestamps: [ms], series: [{labels: {label: value}, values: [number], total}]}`", content_type = "application/json"),
        QueryErrors))]
async fn series(
    State(state): State<AppState>,
    Query(params): Query<SeriesParams>,
) -> Result<Response, ApiError> {
    let w = params.window.window(&state.config)?;
    let ty = profile_type(params.profile_type.as_deref())?;
    let step_ms = match params.step.as_deref() {
        None | Some("") => ((w.to_ms - w.from_ms) / 100 / 1000 * 1000).max(10_000),
        Some(text) => match text.parse::<f64>() {
            Ok(seconds) if seconds > 0.0 => (seconds * 1000.0) as i64,
            Ok(_) => return Err(ApiError::invalid("step", "the step must be positive")),
            Err(_) => {
                parse_duration_ms(text).map_err(|e| ApiError::invalid("step", e.to_string()))?
            }
        },
    };
    let group_by: Vec<String> = params
        .group_by
        .as_deref()
        .unwrap_or("service")
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let max_series = state.config.max_series;
    let set = run_query(&state, "series", move |r| {
        let set = r.series(&w, step_ms, ty, &group_by)?;
        if set.series.len() > max_series {
            return Err(ApiError::too_large(
                "group_by",
                format!(
                    "{} series match; at most {max_series} are returned: narrow the selector or group by fewer labels",
                    set.series.len()
                ),
            ));
        }
        Ok(set)
    })
    .await?;
    Ok(json_response(&set))
}

/// `GET /api/v1/profile` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProfileParams {
    #[serde(flatten)]
    #[param(ignore)]
    window: WindowParams,
    /// `cpu`, `offcpu` or `wall`. Default: cpu.
    #[serde(rename = "type")]
    profile_type: Option<String>,
    /// `tree`, `flamebearer`, `pprof`, `folded` or `speedscope`. Default: tree.
    format: Option<String>,
    /// Most tree nodes (tree, flamebearer). Default and maximum: the server's limit.
    max_nodes: Option<String>,
}

fn max_nodes(text: Option<&str>, limit: usize) -> Result<usize, ApiError> {
    let Some(text) = text else { return Ok(limit) };
    let n: usize = text
        .parse()
        .map_err(|_| ApiError::invalid("max_nodes", format!("not a count: {text:?}")))?;
    if n == 0 || n > limit {
        return Err(ApiError::too_large(
            "max_nodes",
            format!("max_nodes must be between 1 and {limit}"),
        ));
    }
    Ok(n)
}

/// The merged profile of a window: a call tree (root, services, frames), Pyroscope's
/// flamebearer, or an export.
#[utoipa::path(get, path = "/api/v1/profile", tag = "queries", params(WindowParams, ProfileParams),
    responses((status = 200, description = "tree: `{type, unit, total, trimmed_nodes, root: {name, self, total, children: [..]}}`; flamebearer: Pyroscope's single format; pprof: gzipped protobuf; folded: text; speedscope: JSON", content_type = "application/json"),
        QueryErrors))]
async fn profile(
    State(state): State<AppState>,
    Query(params): Query<ProfileParams>,
) -> Result<Response, ApiError> {
    let w = params.window.window(&state.config)?;
    let ty = profile_type(params.profile_type.as_deref())?;
    let nodes = max_nodes(params.max_nodes.as_deref(), state.config.max_nodes)?;
    let format = params.format.as_deref().unwrap_or("tree").to_owned();
    let export = match format.as_str() {
        "tree" | "flamebearer" => None,
        other => Some(other.parse::<Format>().map_err(|_| {
            ApiError::invalid(
                "format",
                format!("unknown format {other:?}: expected tree, flamebearer, pprof, folded or speedscope"),
            )
        })?),
    };
    let key = format!(
        "profile {} {} {:?} {ty} {nodes} {format}",
        w.from_ms,
        w.to_ms,
        params.window.query.as_deref().unwrap_or("")
    );
    run_cached(&state, "profile", key, vec![w.clone()], move |r| {
        Ok(match export {
            Some(f) => {
                let profile = r.profile(&w, ty)?;
                Rendered {
                    content_type: f.content_type(),
                    body: f.encode(&profile, 0, "critpath").into(),
                }
            }
            None => {
                let tree = r.tree_trimmed(&w, ty, nodes, 0.0)?;
                if format == "flamebearer" {
                    json_rendered(&flamebearer::single(&tree, crate::DEFAULT_FREQUENCY_HZ))?
                } else {
                    json_rendered(&tree)?
                }
            }
        })
    })
    .await
}

/// An answer's bytes: what the response cache keeps.
#[derive(Clone, Debug)]
struct Rendered {
    content_type: &'static str,
    body: axum::body::Bytes,
}

impl IntoResponse for Rendered {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, self.content_type)], self.body).into_response()
    }
}

fn json_rendered(value: &impl serde::Serialize) -> Result<Rendered, ApiError> {
    serde_json::to_vec(value)
        .map(|body| Rendered {
            content_type: "application/json",
            body: body.into(),
        })
        .map_err(ApiError::internal)
}

/// Answers already computed, by request and by the stamp of the data they read (see
/// `Reader::data_stamp`): a hit is exactly what the query would answer now. Least recently
/// used answers go first beyond [`ResponseCache::MAX_BYTES`].
#[derive(Debug, Default)]
pub struct ResponseCache {
    entries: std::collections::HashMap<(String, u64), (Rendered, u64)>,
    bytes: usize,
    clock: u64,
}

impl ResponseCache {
    /// Most bytes of answers kept.
    pub const MAX_BYTES: usize = 64 << 20;

    fn get(&mut self, key: &(String, u64)) -> Option<Rendered> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(r, used)| {
            *used = clock;
            r.clone()
        })
    }

    fn put(&mut self, key: (String, u64), rendered: Rendered) {
        let size = rendered.body.len() + key.0.len();
        if size > Self::MAX_BYTES / 8 {
            return;
        }
        self.clock += 1;
        if let Some((old, _)) = self.entries.insert(key, (rendered, self.clock)) {
            self.bytes -= old.body.len();
        }
        self.bytes += size;
        while self.bytes > Self::MAX_BYTES {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((r, _)) = self.entries.remove(&oldest) {
                self.bytes -= r.body.len() + oldest.0.len();
            }
        }
    }
}

/// Runs a query through the response cache: the answer of an identical earlier request is
/// reused while the data its windows read is unchanged.
async fn run_cached(
    state: &AppState,
    endpoint: &'static str,
    key: String,
    windows: Vec<Window>,
    work: impl FnOnce(&Reader) -> Result<Rendered, ApiError> + Send + 'static,
) -> Result<Response, ApiError> {
    let (cache, metrics) = (Arc::clone(&state.responses), Arc::clone(&state.metrics));
    run_query(state, endpoint, move |r| {
        let stamp = r.data_stamp(&windows.iter().collect::<Vec<_>>())?;
        let key = (key, stamp);
        let hit = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key);
        if let Some(hit) = hit {
            metrics.observe_cache_hit();
            return Ok(hit.into_response());
        }
        let rendered = work(r)?;
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, rendered.clone());
        Ok(rendered.into_response())
    })
    .await
}

/// `GET /api/v1/diff` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    #[serde(flatten)]
    #[param(ignore)]
    window: WindowParams,
    /// Baseline start. Default: `from` minus the window's length.
    baseline_from: Option<String>,
    /// Baseline end. Default: `from`.
    baseline_to: Option<String>,
    /// `cpu`, `offcpu` or `wall`. Default: cpu.
    #[serde(rename = "type")]
    profile_type: Option<String>,
    /// `tree` or `flamebearer`. Default: tree.
    format: Option<String>,
    /// Most nodes per window's tree before comparing.
    max_nodes: Option<String>,
}

/// A window against a baseline (default: the window just before, of equal length), by share of
/// each window's total, most grown first.
#[utoipa::path(get, path = "/api/v1/diff", tag = "queries", params(WindowParams, DiffParams),
    responses((status = 200, description = "tree: `{type, unit, base_total, comparison_total, root: {name, base_self, base_total, comparison_self, comparison_total, delta_share, children: [..]}}`; flamebearer: Pyroscope's double format", content_type = "application/json"),
        QueryErrors))]
async fn diff(
    State(state): State<AppState>,
    Query(params): Query<DiffParams>,
) -> Result<Response, ApiError> {
    let w = params.window.window(&state.config)?;
    let ty = profile_type(params.profile_type.as_deref())?;
    let nodes = max_nodes(params.max_nodes.as_deref(), state.config.max_nodes)?;
    let format = params.format.as_deref().unwrap_or("tree").to_owned();
    if !matches!(format.as_str(), "tree" | "flamebearer") {
        return Err(ApiError::invalid(
            "format",
            format!("unknown format {format:?}: expected tree or flamebearer"),
        ));
    }
    let base = baseline(
        &state.config,
        &params.window,
        &w,
        params.baseline_from.as_deref(),
        params.baseline_to.as_deref(),
    )?;
    let query = params.window.query.clone().unwrap_or_default();
    let key = format!(
        "diff {} {} {} {} {query:?} {ty} {nodes} {format}",
        base.from_ms, base.to_ms, w.from_ms, w.to_ms
    );
    run_cached(
        &state,
        "diff",
        key,
        vec![base.clone(), w.clone()],
        move |r| {
            let (d, ..) = r.diff(&base, &w, ty, nodes)?;
            if format == "flamebearer" {
                json_rendered(&flamebearer::double(&d, crate::DEFAULT_FREQUENCY_HZ))
            } else {
                json_rendered(&d)
            }
        },
    )
    .await
}

/// Counters and query latencies in Prometheus' text format.
#[utoipa::path(get, path = "/metrics", tag = "status",
    responses((status = 200, description = "Prometheus exposition text", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let recovery = state.writer.as_ref().map(WriterHandle::recovery);
    let text = state.metrics.render(state.agent.as_deref(), recovery);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests;

/// Largest ingest body accepted (agents send at most [`crate::writer::Pusher::BATCHES_PER_REQUEST`]
/// batches per request).
pub const MAX_INGEST_BYTES: usize = 64 << 20;

/// How far past now a pushed batch may end: clocks of hosts drift, not by hours.
const MAX_INGEST_AHEAD_MS: i64 = 10 * 60_000;
/// Largest value of one pushed row: 2^53 (samples, or ns: 104 days of one stack's waits in one
/// interval). Larger ones are no measurement, and their sums would wrap.
const MAX_ROW_VALUE: i64 = 1 << 53;

/// Refuses pushed batches that would be acknowledged and then lost or wrong: outside the
/// accepted time range `(from, to)` (retention would drop them, or no query would reach them),
/// or with a row's value negative or too large to sum. The error names the batch.
fn check_pushed(batches: &[Batch], (from, to): (i64, i64)) -> Result<(), ApiError> {
    let time = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms).map_or_else(|_| format!("{ms} ms"), |t| t.to_string())
    };
    for (i, b) in batches.iter().enumerate() {
        if b.start_ms < from || b.end_ms > to {
            return Err(ApiError::out_of_range(
                "body",
                format!(
                    "batch {i} covers {} to {}; accepted: {} to {} (at most {} days old, {} minutes ahead)",
                    time(b.start_ms),
                    time(b.end_ms),
                    time(from),
                    time(to),
                    (to - MAX_INGEST_AHEAD_MS - from) / 86_400_000,
                    MAX_INGEST_AHEAD_MS / 60_000
                ),
            ));
        }
        if let Some(row) = b
            .rows
            .iter()
            .find(|r| !(0..=MAX_ROW_VALUE).contains(&r.value))
        {
            return Err(ApiError::out_of_range(
                "body",
                format!(
                    "batch {i} has a row of value {}; values are from 0 to {MAX_ROW_VALUE}",
                    row.value
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a request body of at most `limit` bytes into one buffer sized from its
/// `Content-Length` (never more than `limit`), so a body costs its size once.
async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt as _;
    let too_large = || ApiError::payload_too_large(format!("the body is over {} MiB", limit >> 20));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::invalid("body", format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// `POST /api/v1/ingest`: batches pushed by an agent on another host (`critpath agent
/// --push`), stored with their own labels (the `host` label says where they came from). The
/// answer comes once they are durable.
#[utoipa::path(post, path = "/api/v1/ingest", tag = "ingest",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "An `IngestRequest` (version 1; see `analyzer/src/store/wire.rs`), at most 64 MiB"),
    responses(
        (status = 200, description = "Stored durably: `{batches, rows}`", content_type = "application/json"),
        (status = 400, description = "Not an IngestRequest, or an invalid batch (named)", body = error::Body),
        (status = 401, description = "A bearer token is required or wrong", body = error::Body),
        (status = 403, description = "This server does not accept pushes", body = error::Body),
        (status = 408, description = "The body did not arrive within the request deadline", body = error::Body),
        (status = 413, description = "A body over 64 MiB, or one whose batches would take over 256 MiB decoded (send them in smaller requests)", body = error::Body),
        (status = 415, description = "Another content type or wire version", body = error::Body),
        (status = 422, description = "A batch outside the accepted time range (now less the accepted age to 10 minutes ahead) or with a row value outside 0..2^53 (named); nothing of the request is stored", body = error::Body),
        (status = 429, description = "This host (peer address) pushed more than its rate (8 MiB/s of body, bursts of 64 MiB, each push costing at least 64 KiB); `Retry-After` says when to retry", body = error::Body),
        (status = 503, description = "The store could not write the batches, or the pushes being stored (2 at once by default) left no slot before the deadline", body = error::Body),
    ))]
async fn ingest(
    State(state): State<AppState>,
    peer: Option<axum::Extension<limit::Peer>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let Some(writer) = state.writer.clone() else {
        return Err(ApiError::forbidden(
            "this server does not accept pushes: start it with `critpath serve --ingest` or `critpath run`",
        ));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        state.metrics.observe_ingest(0, 0, false);
        return Err(ApiError::unsupported(
            "Content-Type",
            format!(
                "the body must be a protobuf IngestRequest ({}), not {content_type:?}",
                wire::CONTENT_TYPE
            ),
        ));
    }
    // Each host's bytes a second, charged by the length it announces (the body is read to at
    // most that), before it waits for a slot.
    if let Some(axum::Extension(limit::Peer(ip))) = peer {
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(MAX_INGEST_BYTES as u64);
        if let Err(wait) = state.hosts.take(ip, announced, Instant::now()) {
            state.metrics.observe_ingest(0, 0, false);
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ApiError::rate_limited(format!(
                "{ip} pushes more than {} MiB/s; retry in {seconds} s",
                state.config.ingest_host_rate >> 20
            ))
            .retry_after(seconds));
        }
    }
    // One push at a time per slot, its body read only once it has one: bodies waiting for a
    // slot stay in their senders' buffers, not in this process.
    let deadline = Instant::now() + state.config.request_timeout;
    let Ok(Ok(_slot)) =
        tokio::time::timeout_at(deadline.into(), Arc::clone(&state.ingests).acquire_owned()).await
    else {
        state.metrics.observe_ingest(0, 0, false);
        return Err(ApiError::unavailable(format!(
            "{} pushes are being stored; retry later",
            state.config.max_concurrent_ingests
        )));
    };
    let body =
        tokio::time::timeout_at(deadline.into(), read_body(&headers, body, MAX_INGEST_BYTES))
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::body_timeout(format!(
                    "the body did not arrive within {} s",
                    state.config.request_timeout.as_secs()
                )))
            })
            .inspect_err(|_| state.metrics.observe_ingest(0, 0, false))?;
    // Decoding up to 64 MiB and the fsync both block: off the async workers.
    let now = now_ms();
    let accepted = (
        now.saturating_sub(
            i64::try_from(state.config.ingest_max_age.as_millis()).unwrap_or(i64::MAX),
        ),
        now + MAX_INGEST_AHEAD_MS,
    );
    let stored = tokio::task::spawn_blocking(move || {
        let batches = wire::decode(&body).map_err(|err| match err {
            wire::WireError::Version { .. } => ApiError::unsupported("version", err.to_string()),
            wire::WireError::TooLarge { .. } => ApiError::payload_too_large(err.to_string()),
            _ => ApiError::invalid("body", err.to_string()),
        })?;
        drop(body);
        check_pushed(&batches, accepted)?;
        let counts = (
            batches.len(),
            batches.iter().map(|b| b.rows.len()).sum::<usize>(),
        );
        Ok::<_, ApiError>((counts, writer.append(batches)))
    })
    .await
    .map_err(ApiError::internal)?;
    let ((n, rows), stored) = stored.inspect_err(|_| state.metrics.observe_ingest(0, 0, false))?;
    state.metrics.observe_ingest(n, rows, stored.is_ok());
    stored.map_err(|err| {
        log::error!("ingest: {err}");
        ApiError::unavailable(format!("the store could not write the batches: {err}"))
    })?;
    Ok(json_response(
        &serde_json::json!({ "batches": n, "rows": rows }),
    ))
}
