//! Router-level tests (`oneshot`): every endpoint's answer and its bad-input cases, over a small
//! hand-made store.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use critpath_analyzer::Frame;
use critpath_analyzer::export;
use critpath_analyzer::store::{Batch, Retention, Row, SampleKind, SeriesLabels, Store, wire};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;

/// 2025-11-25T12:00:00Z.
const T0: i64 = 1_764_072_000_000;

fn batch(start_ms: i64, rows: &[(&str, &[&str], i64)]) -> Batch {
    let mut b = Batch {
        start_ms,
        end_ms: start_ms + 10_000,
        period_ns: 52_631_578,
        ..Batch::default()
    };
    for (service, stack, value) in rows {
        b.series.push(SeriesLabels {
            host: "h".into(),
            pid: 10 + b.series.len() as u32,
            comm: (*service).into(),
            exe: format!("/srv/{service}"),
            build_id: String::new(),
            service: (*service).into(),
        });
        let mut ids = Vec::new();
        for name in *stack {
            b.frames.push(Frame::user(*name, format!("/srv/{service}")));
            ids.push((b.frames.len() - 1) as u32);
        }
        b.stacks.push(ids);
        b.rows.push(Row {
            series: (b.series.len() - 1) as u32,
            stack: (b.stacks.len() - 1) as u32,
            kind: SampleKind::Cpu,
            value: *value,
        });
    }
    b
}

/// A store where `api` runs `parse` in [T0, T0+60 s) and `render` in [T0+60 s, T0+120 s).
fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    for i in 0..12 {
        let leaf = if i < 6 { "parse" } else { "render" };
        store
            .append(&batch(
                T0 + i * 10_000,
                &[
                    ("api", &["main", "handle", leaf], 5),
                    ("batch", &["main", "crunch"], 2),
                ],
            ))
            .unwrap();
    }
    store.close().unwrap();
    dir
}

fn app(dir: &tempfile::TempDir, config: ServerConfig) -> Router {
    router(AppState::new(
        ServerConfig {
            data_dir: dir.path().to_owned(),
            ..config
        },
        None,
        None,
    ))
}

async fn get_raw(app: &Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body.to_vec())
}

async fn get_json(app: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let (status, content_type, body) = get_raw(app, uri).await;
    assert_eq!(content_type, "application/json", "{uri}");
    (status, serde_json::from_slice(&body).unwrap())
}

/// Asserts a 4xx/5xx JSON error naming `param`.
async fn assert_error(
    app: &Router,
    uri: &str,
    status: StatusCode,
    param: Option<&str>,
    needle: &str,
) {
    let (got, body) = get_json(app, uri).await;
    assert_eq!(got, status, "{uri}: {body}");
    let error = &body["error"];
    assert_eq!(error["param"].as_str(), param, "{uri}: {body}");
    assert!(error["code"].is_string(), "{uri}: {body}");
    assert!(
        error["message"].as_str().unwrap().contains(needle),
        "{uri}: {body}"
    );
}

/// Percent-encodes a query parameter's value.
/// A writer for pushed batches that keeps everything (the tests' batches are old).
fn keep_all_writer(dir: &std::path::Path) -> crate::writer::StoreWriter {
    let keep_all = Retention {
        max_age: None,
        max_bytes: None,
    };
    crate::writer::StoreWriter::open(dir, keep_all).unwrap()
}

fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn window(from_s: i64, to_s: i64) -> String {
    format!("from={}&to={}", T0 + from_s * 1000, T0 + to_s * 1000)
}

/// Health reports the build and the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let (status, body) = get_json(&app, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["store"]["exists"], true);
    assert!(body["store"]["bytes"].as_u64().unwrap() > 0);
    assert!(body["sampler"].is_null(), "no agent in this process");
}

/// Label names and values; an unknown label is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let (status, body) = get_json(&app, &format!("/api/v1/labels?{}", window(0, 120))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["names"],
        serde_json::json!(["comm", "exe", "host", "pid", "service"])
    );
    let (status, body) = get_json(
        &app,
        &format!("/api/v1/labels/service/values?{}", window(0, 120)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["values"][0],
        serde_json::json!({"value": "api", "cpu_samples": 60})
    );
    assert_eq!(
        body["values"][1],
        serde_json::json!({"value": "batch", "cpu_samples": 24})
    );
    assert_error(
        &app,
        &format!("/api/v1/labels/colour/values?{}", window(0, 120)),
        StatusCode::BAD_REQUEST,
        Some("name"),
        "unknown label",
    )
    .await;
}

/// Series per service at a step, and every bad parameter named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let (status, body) = get_json(
        &app,
        &format!(
            "/api/v1/series?{}&step=30s&group_by=service",
            window(0, 120)
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["timestamps"].as_array().unwrap().len(), 4);
    assert_eq!(body["series"][0]["labels"]["service"], "api");
    assert_eq!(
        body["series"][0]["values"],
        serde_json::json!([15.0, 15.0, 15.0, 15.0])
    );
    let (_, body) = get_json(
        &app,
        &format!(
            "/api/v1/series?{}&step=60&query={}",
            window(0, 120),
            enc(r#"{service="batch"}"#)
        ),
    )
    .await;
    assert_eq!(body["series"].as_array().unwrap().len(), 1);
    assert_eq!(body["series"][0]["values"], serde_json::json!([12.0, 12.0]));

    let w = window(0, 120);
    for (uri, status, param, needle) in [
        (
            format!("/api/v1/series?{w}&step=1ms"),
            StatusCode::BAD_REQUEST,
            "step",
            "at most 11000",
        ),
        (
            format!("/api/v1/series?{w}&step=-5"),
            StatusCode::BAD_REQUEST,
            "step",
            "positive",
        ),
        (
            format!("/api/v1/series?{w}&step=soon"),
            StatusCode::BAD_REQUEST,
            "step",
            "soon",
        ),
        (
            format!("/api/v1/series?{w}&type=gpu"),
            StatusCode::BAD_REQUEST,
            "type",
            "gpu",
        ),
        (
            format!("/api/v1/series?{w}&group_by=colour"),
            StatusCode::BAD_REQUEST,
            "group_by",
            "unknown label",
        ),
        (
            format!("/api/v1/series?{w}&query={}", enc("{service=api}")),
            StatusCode::BAD_REQUEST,
            "query",
            "position 9",
        ),
        (
            format!("/api/v1/series?from={}&to={}", T0 + 5000, T0),
            StatusCode::BAD_REQUEST,
            "from",
            "before",
        ),
        (
            "/api/v1/series?from=yesterday".to_owned(),
            StatusCode::BAD_REQUEST,
            "from",
            "yesterday",
        ),
        (
            format!("/api/v1/series?from={}&to={}", T0 - 40 * 86_400_000, T0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "from",
            "at most",
        ),
    ] {
        assert_error(&app, &uri, status, Some(param), needle).await;
    }
    // A series-count limit.
    let small = app_with_limits(&dir, 1, 16_384);
    assert_error(
        &small,
        &format!("/api/v1/series?{w}&group_by=pid"),
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("group_by"),
        "2 series match",
    )
    .await;
}

fn app_with_limits(dir: &tempfile::TempDir, max_series: usize, max_nodes: usize) -> Router {
    app(
        dir,
        ServerConfig {
            max_series,
            max_nodes,
            ..ServerConfig::default()
        },
    )
}

/// Profiles in every format: the hot function is in each; bad formats and limits are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let w = window(0, 120);
    let (status, tree) = get_json(&app, &format!("/api/v1/profile?{w}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tree["total"], 84);
    assert_eq!(tree["root"]["children"][0]["name"], "api");
    assert_eq!(tree["root"]["children"][0]["total"], 60);

    let (_, fb) = get_json(&app, &format!("/api/v1/profile?{w}&format=flamebearer")).await;
    assert_eq!(fb["flamebearer"]["numTicks"], 84);
    assert!(
        fb["flamebearer"]["names"]
            .as_array()
            .unwrap()
            .contains(&"render".into())
    );

    let (status, content_type, folded) = get_raw(
        &app,
        &format!(
            "/api/v1/profile?{w}&format=folded&query={}",
            enc(r#"{service="api"}"#)
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"));
    let folded = String::from_utf8(folded).unwrap();
    assert!(folded.contains("api;main;handle;parse 30\n"), "{folded}");
    assert!(!folded.contains("crunch"), "the selector applies");

    let (status, _, pprof) = get_raw(&app, &format!("/api/v1/profile?{w}&format=pprof")).await;
    assert_eq!(status, StatusCode::OK);
    let decoded = export::pprof::decode(&pprof).unwrap();
    assert_eq!(decoded.totals(), vec![84]);

    let (status, speedscope) =
        get_json(&app, &format!("/api/v1/profile?{w}&format=speedscope")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(speedscope["profiles"].is_array());

    let (_, trimmed) = get_json(&app, &format!("/api/v1/profile?{w}&max_nodes=3")).await;
    assert_eq!(trimmed["trimmed_nodes"], 6);

    assert_error(
        &app,
        &format!("/api/v1/profile?{w}&format=svg"),
        StatusCode::BAD_REQUEST,
        Some("format"),
        "svg",
    )
    .await;
    assert_error(
        &app,
        &format!("/api/v1/profile?{w}&max_nodes=0"),
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("max_nodes"),
        "between",
    )
    .await;
    assert_error(
        &app,
        &format!("/api/v1/profile?{w}&max_nodes=many"),
        StatusCode::BAD_REQUEST,
        Some("max_nodes"),
        "many",
    )
    .await;
    let small = app_with_limits(&dir, 1000, 100);
    assert_error(
        &small,
        &format!("/api/v1/profile?{w}&max_nodes=101"),
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("max_nodes"),
        "100",
    )
    .await;
}

/// The diff of the second minute against the first (the default baseline): `render` grew
/// most, `parse` shrank most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let (status, d) = get_json(&app, &format!("/api/v1/diff?{}", window(60, 120))).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(
        (d["base_total"].as_i64(), d["comparison_total"].as_i64()),
        (Some(42), Some(42))
    );
    let handle = &d["root"]["children"][0]["children"][0]["children"][0];
    assert_eq!(handle["name"], "handle");
    assert_eq!(handle["children"][0]["name"], "render");
    assert!(handle["children"][0]["delta_share"].as_f64().unwrap() > 0.7);
    assert_eq!(handle["children"][1]["name"], "parse");

    let explicit = format!(
        "/api/v1/diff?{}&baseline_from={}&baseline_to={}&format=flamebearer",
        window(60, 120),
        T0,
        T0 + 60_000
    );
    let (status, fb) = get_json(&app, &explicit).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fb["metadata"]["format"], "double");
    assert_eq!(
        (fb["leftTicks"].as_i64(), fb["rightTicks"].as_i64()),
        (Some(42), Some(42))
    );

    assert_error(
        &app,
        &format!("/api/v1/diff?{}&format=pprof", window(60, 120)),
        StatusCode::BAD_REQUEST,
        Some("format"),
        "tree or flamebearer",
    )
    .await;
    assert_error(
        &app,
        &format!(
            "/api/v1/diff?{}&baseline_from={}&baseline_to={}",
            window(60, 120),
            T0 + 9000,
            T0
        ),
        StatusCode::BAD_REQUEST,
        Some("baseline_from"),
        "before",
    )
    .await;
    assert_error(
        &app,
        &format!("/api/v1/diff?{}&baseline_to=later", window(60, 120)),
        StatusCode::BAD_REQUEST,
        Some("baseline_to"),
        "later",
    )
    .await;
}

/// Metrics count queries by endpoint; unknown routes and a store-less server answer in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_fallbacks() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    get_json(&app, &format!("/api/v1/profile?{}", window(0, 120))).await;
    let (status, content_type, text) = get_raw(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"));
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("critpath_query_duration_seconds_count{endpoint=\"profile\"} 1"),
        "{text}"
    );
    assert_error(
        &app,
        "/api/v2/nothing",
        StatusCode::NOT_FOUND,
        None,
        "no such endpoint",
    )
    .await;

    let empty = tempfile::tempdir().unwrap();
    let app = router(AppState::new(
        ServerConfig {
            data_dir: empty.path().join("none"),
            ..ServerConfig::default()
        },
        None,
        None,
    ));
    assert_error(
        &app,
        "/api/v1/profile",
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "no store",
    )
    .await;
}

/// Parameters chosen to overflow or to cost: every one is a 4xx naming it, answered at once
/// (times outside 1970..9999, a window whose span overflows, a step of ~2^63 ms, a selector
/// of 150 large regular expressions, a deploy dated past any calendar).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_parameters() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let huge = "now-9223372036854775807ms";
    for endpoint in ["profile", "labels", "series", "explain", "diff"] {
        assert_error(
            &app,
            &format!(
                "/api/v1/{endpoint}?from={}&to=9223372036854775807",
                enc(huge)
            ),
            StatusCode::BAD_REQUEST,
            Some("from"),
            "out of range",
        )
        .await;
        assert_error(
            &app,
            &format!("/api/v1/{endpoint}?from=0&to=253402300799999"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("from"),
            "at most",
        )
        .await;
    }
    assert_error(
        &app,
        &format!(
            "/api/v1/series?{}&step=99999999999999999999ms",
            window(0, 120)
        ),
        StatusCode::BAD_REQUEST,
        Some("step"),
        "invalid duration",
    )
    .await;
    // Steps longer than the window (the first one was a 500 once): one point.
    for step in ["9223372036852075809ms", "9223372036854775s", "1e300"] {
        let (status, body) = get_json(
            &app,
            &format!("/api/v1/series?{}&step={step}", window(0, 120)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{step}: {body}");
        assert_eq!(
            body["timestamps"].as_array().unwrap().len(),
            1,
            "{step}: {body}"
        );
    }
    let selector = format!("{{{}}}", vec![r#"comm=~"\\w{200}""#; 150].join(","));
    let started = Instant::now();
    for endpoint in ["profile", "explain", "regressions"] {
        let extra = if endpoint == "regressions" {
            "&at=now"
        } else {
            ""
        };
        assert_error(
            &app,
            &format!(
                "/api/v1/{endpoint}?{}&query={}{extra}",
                window(0, 120),
                enc(&selector)
            ),
            StatusCode::BAD_REQUEST,
            Some("query"),
            "terms",
        )
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = post(
        &app,
        "/api/v1/deploys",
        "application/json",
        br#"{"service": "api", "version": "2", "at": 9223372036854775807}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "at", "{body}");
}

/// Rejections made by the HTTP layer itself (a duplicated or mistyped parameter, a method
/// the route does not take) have the one JSON error shape, their status kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_json() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    for (uri, status, needle) in [
        (
            format!("/api/v1/profile?{}&from=1", window(0, 120)),
            StatusCode::BAD_REQUEST,
            "duplicate field `from`",
        ),
        (
            "/api/v1/regressions?at=now&top=many".to_owned(),
            StatusCode::BAD_REQUEST,
            "top",
        ),
    ] {
        let (got, body) = get_json(&app, &uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(body["error"]["code"].is_string(), "{uri}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{uri}: {body}"
        );
    }
    let (status, body) = post(&app, "/api/v1/profile", "application/json", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}

/// On loopback only loopback names are answered: a page whose name was rebound to 127.0.0.1
/// sends its own `Host` and gets a 421; `--allow-host` names are answered on any address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_is_refused() {
    let dir = store();
    let ask = |app: Router, host: &'static str| async move {
        let response = app
            .oneshot(
                Request::get("/api/v1/health")
                    .header(header::HOST, host)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        response.status()
    };
    let local = app(&dir, ServerConfig::default());
    for host in [
        "127.0.0.1:7070",
        "localhost:7070",
        "LOCALHOST",
        "[::1]:7070",
        "127.0.0.1",
    ] {
        assert_eq!(ask(local.clone(), host).await, StatusCode::OK, "{host}");
    }
    for host in [
        "attacker.example",
        "attacker.example:7070",
        "127.0.0.1.attacker.example",
    ] {
        assert_eq!(
            ask(local.clone(), host).await,
            StatusCode::MISDIRECTED_REQUEST,
            "{host}"
        );
    }
    let named = app(
        &dir,
        ServerConfig {
            listen: "0.0.0.0:7070".parse().unwrap(),
            allowed_hosts: Some(vec!["critpath.internal".into()]),
            ..ServerConfig::default()
        },
    );
    assert_eq!(
        ask(named.clone(), "critpath.internal:7070").await,
        StatusCode::OK
    );
    assert_eq!(
        ask(named, "localhost").await,
        StatusCode::MISDIRECTED_REQUEST
    );
}

/// A query past the deadline is answered 503, not left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline() {
    let dir = store();
    let app = app(
        &dir,
        ServerConfig {
            request_timeout: Duration::ZERO,
            ..ServerConfig::default()
        },
    );
    assert_error(
        &app,
        &format!("/api/v1/profile?{}", window(0, 120)),
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "did not finish",
    )
    .await;
}

/// With a token, every endpoint but health needs it; beyond loopback a token (or --insecure)
/// is required to start at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication() {
    let dir = store();
    let app = app(
        &dir,
        ServerConfig {
            auth_token: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    );
    let (status, body) = get_json(&app, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK, "health stays open");
    // Without the token it says the server is up, not where its data is.
    assert_eq!(body["status"], "ok", "{body}");
    assert!(body.get("store").is_none(), "{body}");
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/v1/health")
                .header(header::AUTHORIZATION, "Bearer s3cret")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(body["store"]["dir"].is_string(), "{body}");
    let uri = format!("/api/v1/profile?{}", window(0, 120));
    assert_error(&app, &uri, StatusCode::UNAUTHORIZED, None, "Authorization").await;
    for (header_value, expected) in [
        ("Bearer wrong", StatusCode::UNAUTHORIZED),
        ("Bearer s3cre", StatusCode::UNAUTHORIZED),
        ("s3cret", StatusCode::UNAUTHORIZED),
        ("Bearer s3cret", StatusCode::OK),
    ] {
        let response = app
            .clone()
            .oneshot(
                Request::get(&uri)
                    .header(header::AUTHORIZATION, header_value)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{header_value}");
    }
    // The page, its assets and the API's description need the token too; a browser asking
    // for the page gets the sign-in form, which names nothing of the data.
    for uri in ["/assets/app.js", "/api/v1/openapi.json", "/metrics"] {
        let (status, _, _) = get_raw(&app, uri).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, content_type, page) = get_raw(&app, "/").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("action=\"/login\""), "{page}");
    let login = |token: &'static str| {
        app.clone().oneshot(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={token}")))
                .unwrap(),
        )
    };
    let wrong = login("s3cre").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    let signed_in = login("s3cret").await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    // The page's own requests carry the cookie: the page and the API answer.
    for uri in ["/", "/assets/app.js", uri.as_str()] {
        let response = app
            .clone()
            .oneshot(
                Request::get(uri)
                    .header(header::COOKIE, format!("theme=dark; {cookie}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
    }
    let forged = app
        .clone()
        .oneshot(
            Request::get(&uri)
                .header(header::COOKIE, "critpath_token=73336372657")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let open = |listen: &str, token: Option<&str>, insecure: bool| ServerConfig {
        listen: listen.parse().unwrap(),
        auth_token: token.map(str::to_owned),
        insecure,
        ..ServerConfig::default()
    };
    assert!(open("127.0.0.1:7070", None, false).check_exposure().is_ok());
    assert!(open("[::1]:7070", None, false).check_exposure().is_ok());
    let err = open("0.0.0.0:7070", None, false)
        .check_exposure()
        .unwrap_err();
    assert!(err.to_string().contains("--auth-token-file"), "{err}");
    assert!(
        open("0.0.0.0:7070", Some("t"), false)
            .check_exposure()
            .is_ok()
    );
    assert!(open("0.0.0.0:7070", None, true).check_exposure().is_ok());
}

/// Wrong tokens, from a bearer header, a cookie or the sign-in form, are counted per client
/// address: past its burst a client gets 429s (with `Retry-After`), even with the right token,
/// while health still answers it (without the details) and other clients are not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_slowed_per_client() {
    let dir = store();
    let app = app(
        &dir,
        ServerConfig {
            auth_token: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    );
    let uri = format!("/api/v1/profile?{}", window(0, 120));
    let from = |ip: &str, request: axum::http::request::Builder, body: Body| {
        let mut request = request.body(body).unwrap();
        request
            .extensions_mut()
            .insert(limit::Peer(ip.parse().unwrap()));
        app.clone().oneshot(request)
    };
    let bearer =
        |token: &str| Request::get(&uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
    let guesser = "10.0.0.1";
    for i in 0..limit::SIGN_IN_BURST {
        let request = match i % 3 {
            0 => bearer("guess"),
            1 => Request::get(&uri).header(header::COOKIE, "critpath_token=00"),
            _ => Request::get("/api/v1/health").header(header::AUTHORIZATION, "Bearer guess"),
        };
        let status = from(guesser, request, Body::empty())
            .await
            .unwrap()
            .status();
        let expected = if i % 3 == 2 {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, expected, "wrong token {i}");
    }
    // Past the burst: the right token is refused too, and says when to come back.
    let refused = from(guesser, bearer("s3cret"), Body::empty())
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value =
        serde_json::from_slice(&refused.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(guesser),
        "{body}"
    );
    let form = from(
        guesser,
        Request::post("/login").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
        Body::from("token=s3cret"),
    )
    .await
    .unwrap();
    assert_eq!(form.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(form.headers().get(header::SET_COOKIE).is_none());
    assert!(form.headers().contains_key(header::RETRY_AFTER));
    // Health answers, without the details the token would show.
    let health = from(
        guesser,
        Request::get("/api/v1/health").header(header::AUTHORIZATION, "Bearer s3cret"),
        Body::empty(),
    )
    .await
    .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&health.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(body.get("store").is_none(), "{body}");
    // A request with no token is no guess: it gets the usual 401.
    let bare = from(guesser, Request::get(&uri), Body::empty())
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    // Another client signs in.
    let other = from("10.0.0.2", bearer("s3cret"), Body::empty())
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    let form = from(
        "10.0.0.2",
        Request::post("/login").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
        Body::from("token=s3cret"),
    )
    .await
    .unwrap();
    assert_eq!(form.status(), StatusCode::SEE_OTHER);
}

async fn post(
    app: &Router,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let response = app
        .clone()
        .oneshot(
            Request::post(uri)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// Pushed batches are stored with their own host label and queryable at once; a body that is
/// not a request, another version, another content type or an invalid batch is refused with
/// an error naming it (and nothing stored); a server without a writer refuses pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest() {
    let dir = tempfile::tempdir().unwrap();
    let writer = keep_all_writer(dir.path());
    let app = router(AppState::new(
        ServerConfig {
            data_dir: dir.path().to_owned(),
            // The test's batches are dated T0, a while ago.
            ingest_max_age: Duration::from_secs(100 * 365 * 86_400),
            ..ServerConfig::default()
        },
        None,
        Some(writer.handle()),
    ));
    let mut pushed = batch(T0, &[("remote", &["main", "serve_remote"], 7)]);
    pushed.series[0].host = "remote-1".into();
    let remote_profile = format!(
        "/api/v1/profile?{}&query={}",
        window(0, 10),
        enc(r#"{host="remote-1"}"#)
    );
    // Answered (and cached) before the push: empty.
    let (status, tree) = get_json(&app, &remote_profile).await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    assert_eq!(tree["total"], 0, "{tree}");
    let (status, body) = post(
        &app,
        "/api/v1/ingest",
        wire::CONTENT_TYPE,
        wire::encode(&[pushed.clone()]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({"batches": 1, "rows": 1}));

    let (status, body) = get_json(
        &app,
        &format!("/api/v1/labels/host/values?{}", window(0, 10)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["values"],
        serde_json::json!([{"value": "remote-1", "cpu_samples": 7}])
    );
    // The same request after the push: the cached answer is not reused (the data changed).
    let (status, tree) = get_json(&app, &remote_profile).await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    assert_eq!(tree["total"], 7, "{tree}");
    // Once more, unchanged data: the cached answer, identical.
    let (_, again) = get_json(&app, &remote_profile).await;
    assert_eq!(again, tree);
    assert_eq!(
        tree["root"]["children"][0]["children"][0]["children"][0]["name"], "serve_remote",
        "{tree}"
    );

    let refused = |status: StatusCode, param: Option<&'static str>, needle: &'static str| {
        move |(got, body): (StatusCode, serde_json::Value)| {
            assert_eq!(got, status, "{body}");
            assert_eq!(body["error"]["param"].as_str(), param, "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{body}");
        }
    };
    refused(
        StatusCode::BAD_REQUEST,
        Some("body"),
        "not a critpath IngestRequest",
    )(
        post(
            &app,
            "/api/v1/ingest",
            wire::CONTENT_TYPE,
            b"\xff\xff".to_vec(),
        )
        .await,
    );
    refused(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Some("Content-Type"),
        "protobuf",
    )(
        post(
            &app,
            "/api/v1/ingest",
            "application/json",
            wire::encode(&[pushed.clone()]),
        )
        .await,
    );
    // An IngestRequest with version = 2 (field 1, varint 2).
    refused(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Some("version"),
        "version 2",
    )(post(&app, "/api/v1/ingest", wire::CONTENT_TYPE, vec![0x08, 0x02]).await);
    let mut invalid = pushed.clone();
    invalid.rows[0].series = 5;
    refused(
        StatusCode::BAD_REQUEST,
        Some("body"),
        "batch 1: row 0 refers to series 5",
    )(
        post(
            &app,
            "/api/v1/ingest",
            wire::CONTENT_TYPE,
            wire::encode(&[pushed.clone(), invalid]),
        )
        .await,
    );
    // Nothing of the refused requests was stored.
    let (_, body) = get_json(
        &app,
        &format!("/api/v1/labels/host/values?{}", window(0, 10)),
    )
    .await;
    assert_eq!(body["values"][0]["cpu_samples"], 7, "{body}");
    let (_, metrics, text) = get_raw(&app, "/metrics").await;
    let text = String::from_utf8(text).unwrap();
    assert!(metrics.starts_with("text/plain"));
    assert!(text.contains("critpath_ingest_batches_total 1"), "{text}");
    assert!(text.contains("critpath_ingest_refused_total 4"), "{text}");
    assert!(text.contains("critpath_query_cache_hits_total 1"), "{text}");

    let read_only = self::app(&dir, ServerConfig::default());
    refused(StatusCode::FORBIDDEN, None, "does not accept pushes")(
        post(
            &read_only,
            "/api/v1/ingest",
            wire::CONTENT_TYPE,
            wire::encode(&[pushed]),
        )
        .await,
    );
    drop(app);
    writer.close().unwrap();
}

/// A corrupt record found in the log when the writer starts is counted where an operator
/// looks: health's `store.recovered` and `/metrics` (it was only a log line before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_loss_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    for i in 0..3 {
        store
            .append(&batch(T0 + i * 10_000, &[("api", &["main", "parse"], 5)]))
            .unwrap();
    }
    drop(store); // no compaction: the batches stay in the log
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // A byte inside the first record's payload (after its 12-byte header).
    bytes[12 + 3] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let writer = crate::writer::StoreWriter::open(dir.path(), Retention::default()).unwrap();
    let app = router(AppState::new(
        ServerConfig {
            data_dir: dir.path().to_owned(),
            ..ServerConfig::default()
        },
        None,
        Some(writer.handle()),
    ));
    let (status, body) = get_json(&app, "/api/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    let skipped = body["store"]["recovered"]["bytes_skipped"]
        .as_u64()
        .unwrap();
    assert!(skipped > 12, "{body}");
    assert_eq!(body["store"]["recovered"]["bytes_cut"], 0, "{body}");
    let (status, _, text) = get_raw(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(&format!("critpath_wal_recovery_skipped_bytes {skipped}\n")),
        "{text}"
    );
    drop(app);
    writer.close().unwrap();
}

/// Batches the store would drop at once (older than the accepted age: retention), never reach
/// (the year 2100) or sum wrongly (values of i64::MAX) are refused with a 422 naming the
/// batch, and nothing of the request is stored; a batch of now is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_what_it_would_lose() {
    let dir = tempfile::tempdir().unwrap();
    let writer = crate::writer::StoreWriter::open(dir.path(), Retention::default()).unwrap();
    let app = router(AppState::new(
        ServerConfig {
            data_dir: dir.path().to_owned(),
            ..ServerConfig::default()
        },
        None,
        Some(writer.handle()),
    ));
    let now = now_ms() / 1000 * 1000;
    let fresh = batch(now - 20_000, &[("api", &["main", "handle"], 3)]);
    let mut huge = fresh.clone();
    huge.rows[0].value = i64::MAX;
    for (bad, needle) in [
        (
            batch(0, &[("api", &["main"], 1)]),
            "batch 1 covers 1970-01-01T00:00:00Z",
        ),
        (
            batch(4_102_444_800_000, &[("api", &["main"], 1)]),
            "batch 1 covers 2100-01-01",
        ),
        (huge, "batch 1 has a row of value 9223372036854775807"),
    ] {
        let (status, body) = post(
            &app,
            "/api/v1/ingest",
            wire::CONTENT_TYPE,
            wire::encode(&[fresh.clone(), bad]),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "out_of_range", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
    let labels = format!(
        "/api/v1/labels/service/values?from={}&to={}",
        now - 60_000,
        now + 60_000
    );
    let (_, body) = get_json(&app, &labels).await;
    assert_eq!(body["values"], serde_json::json!([]), "{body}");
    let (status, body) = post(
        &app,
        "/api/v1/ingest",
        wire::CONTENT_TYPE,
        wire::encode(&[fresh]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = get_json(&app, &labels).await;
    assert_eq!(body["values"][0]["cpu_samples"], 3, "{body}");
    drop(app);
    writer.close().unwrap();
}

/// The committed `api/openapi.json` is what the code generates (regenerate with
/// `UPDATE_OPENAPI=1 cargo test -p critpath openapi`), and the served document lists every
/// route, each of which the router answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document() {
    use utoipa::OpenApi as _;
    let generated = openapi::ApiDoc::openapi().to_pretty_json().unwrap() + "\n";
    let committed_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "api/openapi.json is not what the code generates: run `UPDATE_OPENAPI=1 cargo test -p critpath openapi` and commit it"
    );

    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let (status, doc) = get_json(&app, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "/api/v1/deploys",
        "/api/v1/diff",
        "/api/v1/explain",
        "/api/v1/health",
        "/api/v1/ingest",
        "/api/v1/labels",
        "/api/v1/labels/{name}/values",
        "/api/v1/profile",
        "/api/v1/regressions",
        "/api/v1/series",
        "/metrics",
    ];
    want.sort();
    assert_eq!(paths, want);
    // Every documented method of every path is routed.
    let routes = paths.iter().flat_map(|&path| {
        doc["paths"][path]
            .as_object()
            .unwrap()
            .keys()
            .map(move |method| (path, method.to_uppercase()))
    });
    for (path, method) in routes {
        let uri = path.replace("{name}", "service");
        let response = app
            .clone()
            .oneshot(
                Request::builder()
                    .method(method.as_str())
                    .uri(&uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_ne!(response.status(), StatusCode::NOT_FOUND, "{method} {uri}");
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
    }
    // Every parameter of the profile endpoint is documented.
    let params: Vec<&str> = doc["paths"]["/api/v1/profile"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["query", "from", "to", "type", "format", "max_nodes"] {
        assert!(params.contains(&p), "{p} missing from {params:?}");
    }
}

/// Deploys are marked (201, numbered, on disk), listed in their window and by service, and
/// `regressions` at a deploy compares the windows either side within the deploy's service;
/// bad input is refused naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_and_regressions() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let mark = |body: serde_json::Value| {
        let app = app.clone();
        async move {
            post(
                &app,
                "/api/v1/deploys",
                "application/json",
                body.to_string().into_bytes(),
            )
            .await
        }
    };
    let at = T0 + 60_000;
    let (status, d) =
        mark(serde_json::json!({"service": "api", "version": "v2", "at": at.to_string()})).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    assert_eq!(
        (d["id"].as_str(), d["at_ms"].as_i64()),
        (Some("1"), Some(at))
    );
    assert_eq!(d["source"], "marked");
    let (status, d) =
        mark(serde_json::json!({"service": "batch", "version": "v9", "at": T0 + 90_000})).await;
    assert_eq!((status, d["id"].as_str()), (StatusCode::CREATED, Some("2")));
    assert_eq!(
        critpath_analyzer::deploys::marked(dir.path())
            .unwrap()
            .len(),
        2
    );
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["deploys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = get_json(&app, &format!("/api/v1/deploys?{}", window(0, 120))).await;
    assert_eq!(
        (status, ids(&all)),
        (StatusCode::OK, vec!["1".into(), "2".into()])
    );
    let api = enc(r#"{service="api"}"#);
    let (_, some) = get_json(
        &app,
        &format!("/api/v1/deploys?{}&query={api}", window(0, 120)),
    )
    .await;
    assert_eq!(ids(&some), ["1"]);
    let (_, none) = get_json(&app, &format!("/api/v1/deploys?{}", window(0, 30))).await;
    assert!(ids(&none).is_empty());

    // `render` replaced `parse` at the deploy; `batch`'s `crunch` is another service.
    let (status, r) = get_json(&app, "/api/v1/regressions?deploy=1&window=60s").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let first = &r["suspects"][0];
    assert_eq!(first["function"], "render", "{r}");
    assert_eq!(
        (&first["pattern"], &first["regression"]),
        (&"new".into(), &true.into())
    );
    assert_eq!(r["regressions"], 1, "{r}");
    assert_eq!(
        (
            r["before"]["from_ms"].as_i64(),
            r["after"]["to_ms"].as_i64()
        ),
        (Some(T0), Some(T0 + 120_000))
    );
    assert_eq!(r["deploy"]["version"], "v2");
    let functions: Vec<&str> = r["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["function"].as_str().unwrap())
        .collect();
    assert!(
        functions.contains(&"parse") && !functions.contains(&"crunch"),
        "{functions:?}"
    );
    // The same by moment, over everything: `crunch` is there, unchanged.
    let (_, r) = get_json(
        &app,
        &format!("/api/v1/regressions?at={at}&window=60s&top=50"),
    )
    .await;
    assert!(
        r["suspects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["function"] == "crunch" && s["significant"] == false),
        "{r}"
    );

    assert_error(
        &app,
        "/api/v1/regressions?deploy=7",
        StatusCode::NOT_FOUND,
        None,
        "no deploy \"7\"",
    )
    .await;
    assert_error(
        &app,
        "/api/v1/regressions",
        StatusCode::BAD_REQUEST,
        Some("deploy"),
        "give a deploy id",
    )
    .await;
    assert_error(
        &app,
        &format!("/api/v1/regressions?deploy=1&at={at}"),
        StatusCode::BAD_REQUEST,
        Some("at"),
        "not both",
    )
    .await;
    assert_error(
        &app,
        "/api/v1/regressions?at=4102444800000",
        StatusCode::BAD_REQUEST,
        Some("at"),
        "future",
    )
    .await;
    assert_error(
        &app,
        "/api/v1/regressions?deploy=1&window=0s",
        StatusCode::BAD_REQUEST,
        Some("window"),
        "positive",
    )
    .await;
    assert_error(
        &app,
        "/api/v1/regressions?deploy=1&window=2d&query=%7B",
        StatusCode::BAD_REQUEST,
        Some("query"),
        "position",
    )
    .await;
    for (body, param) in [
        (
            serde_json::json!({"service": "", "version": "v"}),
            "service",
        ),
        (
            serde_json::json!({"service": "api", "version": "v", "at": true}),
            "at",
        ),
        (
            serde_json::json!({"service": "api", "version": "v", "at": "yesterday"}),
            "at",
        ),
        (serde_json::json!({"service": "api"}), "body"),
    ] {
        let (status, e) = mark(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    assert_eq!(
        critpath_analyzer::deploys::marked(dir.path())
            .unwrap()
            .len(),
        2,
        "refused markers are not kept"
    );
}

/// A store where `api`'s `req` thread waits on a lock (8 s per 10 s) that `holder` releases
/// after running `critical` (8 s of CPU), while `burner` burns 10 s in `spin` and waits for
/// nobody.
fn lock_store() -> tempfile::TempDir {
    use critpath_analyzer::offcpu::Cause;
    use critpath_analyzer::store::Wakeup;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    for i in 0..6 {
        let series = |comm: &str| SeriesLabels {
            host: "h".into(),
            pid: 10,
            comm: comm.into(),
            exe: "/srv/api".into(),
            build_id: String::new(),
            service: "api".into(),
        };
        let f = |name: &str| Frame::user(name, "/srv/api");
        let row = |series, stack, kind, value| Row {
            series,
            stack,
            kind,
            value,
        };
        let batch = Batch {
            start_ms: T0 + i * 10_000,
            end_ms: T0 + (i + 1) * 10_000,
            period_ns: 10_000_000,
            frames: vec![
                f("main"),
                f("handle"),
                f("critical"),
                f("spin"),
                Cause::Lock.frame(),
            ],
            stacks: vec![vec![0, 1, 4], vec![0, 2], vec![0, 3], vec![0, 1]],
            series: vec![series("req"), series("holder"), series("burner")],
            rows: vec![
                row(0, 0, SampleKind::OffCpu, 8_000_000_000),
                row(0, 3, SampleKind::Cpu, 100),
                row(1, 1, SampleKind::Cpu, 800),
                row(2, 2, SampleKind::Cpu, 1000),
            ],
            wakeups: vec![Wakeup {
                wakee: 0,
                wakee_stack: 3,
                waker: 1,
                waker_stack: 1,
                cause: Cause::Lock,
                in_interrupt: false,
                count: 1000,
                weight: 1000.0,
                blocked_ns: 8_000_000_000,
            }],
            ..Batch::default()
        };
        store.append(&batch).unwrap();
    }
    store.close().unwrap();
    dir
}

/// `explain` over the store: the critical path ranks the lock holder's `critical` first and puts
/// `req` and `holder` on the request path, the CPU baseline ranks `spin` first, `cpu_delta`
/// compares with the preceding window by default, and a bad method is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain() {
    let dir = lock_store();
    let app = app(&dir, ServerConfig::default());
    let first = |v: &serde_json::Value| v["functions"][0]["function"].as_str().unwrap().to_owned();
    let uri =
        |method: &str, from: i64| format!("/api/v1/explain?{}&method={method}", window(from, 60));
    let (status, critical) = get_json(&app, &uri("critical_path", 0)).await;
    assert_eq!(status, StatusCode::OK, "{critical}");
    assert_eq!(first(&critical), "critical", "{critical:#}");
    assert_eq!(critical["method"], "critical_path");
    let threads = critical["request_threads"].to_string();
    assert!(
        threads.contains("req (pid 10)") && threads.contains("holder (pid 10)"),
        "{threads}"
    );
    assert!(!threads.contains("burner"), "{threads}");
    assert_eq!(
        critical["critical_path"][1]["actor"], "holder (pid 10)",
        "{critical:#}"
    );
    // Who waited on whom: `handle` blocked 48 s in waits `critical` ended.
    let evidence = |name: &str| {
        critical["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .unwrap()["evidence"]
            .clone()
    };
    let peer = serde_json::json!([{"function": "critical", "waited_s": 48.0}]);
    assert_eq!(evidence("handle")["waited_on"], peer, "{critical:#}");
    let peer = serde_json::json!([{"function": "handle", "waited_s": 48.0}]);
    assert_eq!(evidence("critical")["waited_by"], peer, "{critical:#}");
    // Throughput: `holder` is busy 80% of the time in `critical`; `burner` is off the path.
    let top = &critical["functions"][0];
    assert!(
        (top["throughput_impact"].as_f64().unwrap() - 0.8).abs() < 1e-9,
        "{top:#}"
    );
    assert!(top["latency_impact"].as_f64().unwrap() > 0.5, "{top:#}");
    assert_eq!(evidence("spin")["utilization"], 0.0);
    let (_, cpu) = get_json(&app, &uri("cpu", 0)).await;
    assert_eq!(first(&cpu), "spin", "{cpu:#}");
    assert!(
        (cpu["functions"][0]["evidence"]["cpu_self_s"]
            .as_f64()
            .unwrap()
            - 60.0)
            .abs()
            < 1e-6
    );
    // Against the preceding window by default (before T0: empty), every function is new.
    assert!(
        (cpu["functions"][0]["change"]["cpu_self_per_s"]
            .as_f64()
            .unwrap()
            - 1.0)
            .abs()
            < 1e-9,
        "{cpu:#}"
    );
    // [T0+30 s, T0+60 s) against [T0, T0+30 s): nothing grew.
    let (status, delta) = get_json(&app, &uri("cpu_delta", 30)).await;
    assert_eq!(status, StatusCode::OK, "{delta}");
    assert!(
        delta["functions"][0]["score"].as_f64().unwrap().abs() < 1e-9,
        "{delta:#}"
    );
    assert_error(
        &app,
        &uri("vibes", 0),
        StatusCode::BAD_REQUEST,
        Some("method"),
        "unknown method",
    )
    .await;
}

/// The impact model: loaded once from `--model DIR` (the committed `models/impact`), named
/// with its weights' hash in health, ranking by `method=model`; `auto` takes it only when the
/// ship rule made it the default. Without a model, `method=model` is refused and `auto` is the
/// critical path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_with_the_model() {
    let dir = lock_store();
    let uri = |method: &str| format!("/api/v1/explain?{}&method={method}", window(0, 60));
    let none = app(
        &dir,
        ServerConfig {
            model_dir: None,
            ..ServerConfig::default()
        },
    );
    let (_, health) = get_json(&none, "/api/v1/health").await;
    assert!(health["model"].is_null(), "{health:#}");
    assert_error(
        &none,
        &uri("model"),
        StatusCode::BAD_REQUEST,
        Some("method"),
        "no impact model",
    )
    .await;
    let (_, auto) = get_json(&none, &uri("auto")).await;
    assert_eq!(auto["method"], "critical_path");

    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/impact");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join("config.json")).unwrap()).unwrap();
    let with = app(
        &dir,
        ServerConfig {
            model_dir: Some(models),
            ..ServerConfig::default()
        },
    );
    let (_, health) = get_json(&with, "/api/v1/health").await;
    let version = health["model"]["version"].as_str().unwrap();
    assert!(
        version.starts_with("impact@") && version.len() == 15,
        "{health:#}"
    );
    assert!(health["model"]["parameters"].as_u64().unwrap() > 100_000);
    assert_eq!(health["model"]["default"], config["ship"]["default"]);
    let (status, body) = get_json(&with, &uri("model")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["method"], "model");
    let functions = body["functions"].as_array().unwrap();
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"critical") && names.contains(&"spin"),
        "{body:#}"
    );
    for f in functions {
        assert_eq!(f["score"], f["latency_impact"], "{f:#}");
        assert!(
            f["throughput_impact"].as_f64().unwrap().is_finite(),
            "{f:#}"
        );
    }
    let (_, auto) = get_json(&with, &uri("auto")).await;
    let expected = if config["ship"]["default"] == true {
        "model"
    } else {
        "critical_path"
    };
    assert_eq!(auto["method"], expected);
}

/// The regressions model: loaded once from `--regressions-model DIR` (the committed
/// `models/regressions`), named in health, ranking by `method=model`; `auto` takes it only when
/// the ship rule made it the default, else the graph ranking, which with the windows' waits is
/// the growth of the critical-path share. A model of the other task is not loaded for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regressions_with_the_model() {
    let dir = lock_store();
    let uri = |method: &str| {
        format!(
            "/api/v1/regressions?at={}&window=30s&method={method}",
            T0 + 30_000
        )
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let none = app(
        &dir,
        ServerConfig {
            regressions_model_dir: None,
            ..ServerConfig::default()
        },
    );
    let (_, health) = get_json(&none, "/api/v1/health").await;
    assert!(health["regressions_model"].is_null(), "{health:#}");
    assert_error(
        &none,
        &uri("model"),
        StatusCode::BAD_REQUEST,
        Some("method"),
        "no regressions model",
    )
    .await;
    assert_error(
        &none,
        &uri("best"),
        StatusCode::BAD_REQUEST,
        Some("method"),
        "unknown method",
    )
    .await;
    for method in ["auto", "graph"] {
        let (status, r) = get_json(&none, &uri(method)).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["method"], "critical_path_delta", "{r:#}");
        let holder = r["suspects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["function"] == "critical")
            .unwrap();
        assert!(
            holder["critical_path_after"].as_f64().unwrap() > 0.0,
            "{r:#}"
        );
    }

    let models = root.join("models/regressions");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join("config.json")).unwrap()).unwrap();
    let with = app(
        &dir,
        ServerConfig {
            regressions_model_dir: Some(models.clone()),
            // The wrong task: not loaded.
            model_dir: Some(models),
            ..ServerConfig::default()
        },
    );
    let (_, health) = get_json(&with, "/api/v1/health").await;
    assert!(health["model"].is_null(), "{health:#}");
    let version = health["regressions_model"]["version"].as_str().unwrap();
    assert!(version.starts_with("regressions@"), "{health:#}");
    assert_eq!(
        health["regressions_model"]["default"],
        config["ship"]["default"]
    );
    let (status, r) = get_json(&with, &uri("model")).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["method"], "model");
    let suspects = r["suspects"].as_array().unwrap();
    assert!(suspects.len() >= 3, "{r:#}");
    for s in suspects {
        assert!(s["score"].as_f64().unwrap().is_finite(), "{s:#}");
    }
    let (_, auto) = get_json(&with, &uri("auto")).await;
    let expected = if config["ship"]["default"] == true {
        "model"
    } else {
        "critical_path_delta"
    };
    assert_eq!(auto["method"], expected);
}

/// The page and its assets are served from the binary, with their content types; an unknown
/// asset is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_web_page() {
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let response = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    // Its own script only, and no framing by other sites (the Chromium test runs under it).
    let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let (status, content_type, page) = get_raw(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains(r#"<script src="assets/app.js">"#), "{page}");
    let (status, content_type, script) = get_raw(&app, "/assets/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/javascript"));
    // The bundle holds the page's code and uPlot, nothing to fetch elsewhere.
    let script = String::from_utf8(script).unwrap();
    assert!(script.contains("/api/v1/profile") && script.contains("uplot"));
    let (status, content_type, _) = get_raw(&app, "/assets/app.css").await;
    assert_eq!(
        (status, content_type.starts_with("text/css")),
        (StatusCode::OK, true)
    );
    let (status, _, _) = get_raw(&app, "/assets/other.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Reads what the server sends on `stream` until it closes the connection or `limit` passes;
/// `None` when it was still open then.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

/// A server on a real socket (an ephemeral port of 127.0.0.1), serving `state` until stopped.
struct Served {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(state: AppState) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, state, async {
            let _ = stopped.await;
        }));
        Served { addr, stop, server }
    }

    /// Stops the server and waits for it (at most 10 s).
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

/// Over real sockets: a request target or header block over the server's limits is answered
/// 414 or 431 in the API's error shape (hyper's own answers to these carry no body), while one
/// just under them reaches the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_the_error_shape() {
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    let dir = store();
    let served = Served::start(AppState::new(
        ServerConfig {
            data_dir: dir.path().to_owned(),
            ..ServerConfig::default()
        },
        None,
        None,
    ))
    .await;
    let addr = served.addr;
    let ask = |target: String, headers: String| async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .expect("an answer");
        let status: u16 = answer[9..12].parse().unwrap();
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let body: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {answer:.300}"));
        (status, body)
    };
    let profile =
        |len: usize| format!("/api/v1/profile?{}&pad={}", window(0, 120), "x".repeat(len));
    let field = |name: &str, len: usize| format!("{name}: {}\r\n", "v".repeat(len));
    let cases = [
        (profile(MAX_URI_BYTES), String::new(), 414),
        (
            "/api/v1/labels".to_owned(),
            (0..MAX_HEADER_FIELDS + 1)
                .map(|i| field(&format!("x-{i}"), 4))
                .collect(),
            431,
        ),
        (
            "/api/v1/labels".to_owned(),
            field("x-big", MAX_HEADER_BYTES),
            431,
        ),
    ];
    for (target, headers, expected) in cases {
        let (status, body) = ask(target.clone(), headers).await;
        assert_eq!(status, expected, "{:.80}: {body}", target);
        assert_eq!(body["error"]["code"], "limit_exceeded", "{body}");
    }
    // Just under the limits: the API answers.
    let (status, body) = ask(profile(MAX_URI_BYTES - 200), field("x-big", 60 << 10)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["root"].is_object(), "{body}");
    served.stop().await;
}

/// Over real sockets: a connection past the limit is answered 503 in the API's error shape and
/// closed; a client that sends its request head a byte at a time is closed at the header
/// deadline (it was kept for good before); once those are gone, requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_slow_heads_cut() {
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    let dir = store();
    let served = Served::start(AppState::new(
        ServerConfig {
            data_dir: dir.path().to_owned(),
            max_connections: 2,
            header_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        },
        None,
        None,
    ))
    .await;
    let addr = served.addr;
    // Two connections that send nothing hold both places.
    let idle = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("the connection over the limit is closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // The idle ones are closed at the header deadline.
    for mut s in idle {
        let started = Instant::now();
        assert!(
            read_until_closed(&mut s, Duration::from_secs(5))
                .await
                .is_some(),
            "an idle connection is kept past the header deadline"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    // A head sent a byte every 100 ms: closed at the deadline, not kept while it trickles.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        if slow.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        if read_until_closed(&mut slow, Duration::from_millis(100))
            .await
            .is_some()
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a head trickled for 5 s is still being read");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Served again.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut ok, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    served.stop().await;
}

/// Pushes are limited per host (peer address): past its burst a host gets a 429 in the error
/// shape with `Retry-After`, and nothing of the push is stored, while another address (here
/// 127.0.0.2, also loopback) still pushes; the limited host pushes again once its rate has
/// refilled its bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_limited_per_host() {
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::{TcpSocket, TcpStream};
    let dir = tempfile::tempdir().unwrap();
    let writer = keep_all_writer(dir.path());
    let served = Served::start(AppState::new(
        ServerConfig {
            data_dir: dir.path().to_owned(),
            ingest_max_age: Duration::from_secs(100 * 365 * 86_400),
            // Four smallest pushes at once, then one every 100 ms.
            ingest_host_rate: 10 * limit::MIN_COST,
            ingest_host_burst: 4 * limit::MIN_COST,
            ..ServerConfig::default()
        },
        None,
        Some(writer.handle()),
    ))
    .await;
    let port = served.addr.port();
    let body = wire::encode(&[batch(T0, &[("remote", &["main"], 1)])]);
    let push = |from: &'static str| {
        let body = body.clone();
        async move {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
            let mut stream: TcpStream = socket
                .connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
                .unwrap();
            let head = format!(
                "POST /api/v1/ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: {}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                wire::CONTENT_TYPE,
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
            read_until_closed(&mut stream, Duration::from_secs(10))
                .await
                .expect("an answer")
        }
    };
    for i in 0..4 {
        let answer = push("127.0.0.1").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "push {i}: {answer}");
    }
    let answer = push("127.0.0.1").await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{answer}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(json["error"]["code"], "rate_limited", "{json}");
    let answer = push("127.0.0.2").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "another host: {answer}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let answer = push("127.0.0.1").await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after its refill: {answer}"
    );
    // Six pushes stored, the refused one not.
    let stored: usize = critpath_analyzer::store::Store::batches(dir.path(), 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|b| b.rows.len())
        .sum();
    assert_eq!(stored, 6);
    served.stop().await;
}

/// Fuzzes every GET endpoint through the router: arbitrary and near-valid values for every
/// parameter the endpoints take (and some they do not), percent-encoded. Every answer must be
/// a 2xx or a 4xx in the error shape — never a panic, a 5xx or a hang. `CRITPATH_FUZZ_CASES`
/// sets the cases (default 30,000: seconds in CI; the README's long run used more).
#[test]
fn fuzz_get_endpoints() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let cases: u32 = std::env::var("CRITPATH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = store();
    let app = app(&dir, ServerConfig::default());
    let endpoints = [
        "/api/v1/labels",
        "/api/v1/labels/comm/values",
        "/api/v1/labels/%FF%00/values",
        "/api/v1/series",
        "/api/v1/profile",
        "/api/v1/diff",
        "/api/v1/deploys",
        "/api/v1/regressions",
        "/api/v1/explain",
        "/api/v1/health",
        "/metrics",
    ];
    let keys = [
        "from",
        "to",
        "query",
        "type",
        "format",
        "step",
        "group_by",
        "max_nodes",
        "baseline_from",
        "baseline_to",
        "method",
        "top",
        "at",
        "window",
        "limit",
        "min_share",
        "x",
    ];
    let value = prop_oneof![
        any::<String>(),
        r"(now-)?[0-9]{0,20}(ms|s|m|h|d)?",
        Just((T0).to_string()),
        Just((T0 + 60_000).to_string()),
        r#"\{[a-z]{0,6}(=|!=|=~|!~)"[a-z.*\\]{0,12}"\}"#,
        "(cpu|offcpu|wall|folded|pprof|json|flamebearer|tree|graph|model|critical_path|comm|service|-1|0|99999999999999999999)",
    ];
    let strategy = (
        0..endpoints.len(),
        proptest::collection::vec((0..keys.len(), value), 0..6),
    );
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let slowest = std::cell::Cell::new(Duration::ZERO);
    let slowest_uri = std::cell::RefCell::new(String::new());
    let answered = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |(endpoint, params)| {
            let query: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("{}={}", keys[*k], enc(v)))
                .collect();
            let uri = format!("{}?{}", endpoints[endpoint], query.join("&"));
            let t = Instant::now();
            let (status, content_type, body) = runtime.block_on(get_raw(&app, &uri));
            if t.elapsed() > slowest.get() {
                slowest.set(t.elapsed());
                *slowest_uri.borrow_mut() = uri.clone();
            }
            answered.set(answered.get() + u32::from(status.is_success()));
            prop_assert!(
                !status.is_server_error(),
                "{uri}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            if status.is_client_error() {
                prop_assert_eq!(content_type.as_str(), "application/json", "{}", uri);
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                prop_assert!(v["error"]["code"].is_string(), "{uri}: {v}");
            }
            Ok(())
        })
        .unwrap();
    let slowest = slowest.get();
    eprintln!(
        "fuzz GET endpoints: {cases} cases ({} answered 2xx, the rest 4xx) in {:.1} s, slowest {:.1} ms ({})",
        answered.get(),
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        slowest_uri.borrow()
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a request took {slowest:?}"
    );
}
