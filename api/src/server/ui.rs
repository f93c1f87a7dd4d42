//! The web page (`api/ui`), built into the binary by `build.rs`: `GET /` and its two assets;
//! with a token configured, the form that signs a browser in (`POST /login`).

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

static INDEX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/index.html"));
static APP_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.js"));
static APP_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.css"));

/// `GET /`: the page. Its state lives in the query string, which the page reads itself.
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        INDEX,
    )
        .into_response()
}

/// The pages' content security policy: their own script and styles only (names in the data
/// come from binaries anyone can build, and are never markup), no framing by other sites.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                      object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /assets/{file}`: the page's script and styles.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The sign-in page a browser gets for `/` when the server requires a token: it asks for the
/// token and nothing else (no data, no names).
pub fn login_form(status: StatusCode, problem: Option<&str>) -> Response {
    let problem = problem.map_or(String::new(), |p| format!("<p class=\"problem\">{p}</p>"));
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>critpath: sign in</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family: sans-serif; max-width: 28em; margin: 4em auto\">\
         <h1>critpath</h1><p>This server requires its access token (the content of the file given to \
         <code>--auth-token-file</code>).</p>{problem}\
         <form method=\"post\" action=\"/login\"><label>Token <input type=\"password\" name=\"token\" \
         autocomplete=\"current-password\" autofocus required></label> <button>Sign in</button></form>\
         </body></html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
        ],
        axum::Extension(Page),
        page,
    )
        .into_response()
}

/// Marks an error answer as a page for people (the sign-in form), which the API's JSON error
/// shape leaves as it is.
#[derive(Clone, Copy)]
pub struct Page;

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login`: with the right token, sets the cookie the page's requests carry
/// (`HttpOnly`: scripts cannot read it; `SameSite=Strict`: other sites' pages do not send it)
/// and goes back to the page; with a wrong one, the form again (401).
pub async fn login(
    State(state): State<super::AppState>,
    peer: Option<axum::Extension<super::limit::Peer>>,
    axum::Form(form): axum::Form<Login>,
) -> Response {
    let Some(token) = state.config.auth_token.as_deref() else {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    };
    let peer = peer.map(|axum::Extension(super::limit::Peer(ip))| ip);
    // Past its failed sign-ins a client is refused before its token is compared.
    if let Some(ip) = peer
        && let Some(seconds) = super::sign_in_wait(&state, ip)
    {
        let problem = super::too_many_sign_ins(ip, seconds);
        let mut page = login_form(StatusCode::TOO_MANY_REQUESTS, Some(&problem));
        page.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return page;
    }
    if !super::constant_time_eq(form.token.trim().as_bytes(), token.as_bytes()) {
        super::failed_sign_in(&state, peer);
        return login_form(StatusCode::UNAUTHORIZED, Some("That is not the token."));
    }
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict",
        super::TOKEN_COOKIE,
        super::cookie_value(token)
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}
