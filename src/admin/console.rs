//! The ops console at `/ui/` (docs/interface.md, admin HTTP): server-rendered pages for people, every
//! asset compiled into the binary, nothing fetched from elsewhere.
//!
//! * [`overview`]: throughput and latency by message type, in flight, outbox backlog,
//!   dead letters waiting (refreshed every few seconds by `console.js`), and the
//!   gateways with their circuits and a reset button.
//! * [`dead_letters`]: the dead letters of the store in failure groups and by error kind
//!   and type, a paged list with filters, one dead letter in full (its secrets masked),
//!   replay and purge, and the history of replays and purges.
//!
//! Security: off (404) without an admin token; otherwise the token is the HTTP Basic
//! password (401 with a `Basic` challenge without it); every action is a POST whose
//! `Origin` must be this site and which carries the console's form token (403
//! otherwise); a strict Content-Security-Policy; no token or secret on any page.

mod auth;
mod dead_letters;
mod layout;
mod live;
mod overview;

use super::AdminState;
use auth::FormToken;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// What the console's handlers share.
#[derive(Clone)]
struct Console {
    admin: AdminState,
    /// Recent metric samples, for rates and percentiles.
    live: Arc<live::Window>,
    form_token: FormToken,
}

impl Console {
    /// Whether a submitted form came from a console page.
    fn form_is_ours(&self, sent: &str) -> bool {
        self.form_token.matches(sent)
    }
}

/// The console's routes; none when there is no admin token (then `/ui/` is a 404).
pub fn router(admin: &AdminState) -> Router<AdminState> {
    if admin.token.as_ref().is_none_or(|t| t.is_empty()) {
        return Router::new();
    }
    let console = Console {
        admin: admin.clone(),
        live: live::Window::start(admin.metrics.clone()),
        form_token: FormToken::random(),
    };
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(overview::page))
        .route("/ui/live", get(overview::live))
        .route("/ui/gateways/reset", post(overview::reset_circuit))
        .route("/ui/dlq", get(dead_letters::page))
        .route("/ui/dlq/list", get(dead_letters::list))
        .route("/ui/dlq/history", get(dead_letters::history))
        .route("/ui/dlq/show", get(dead_letters::show))
        .route("/ui/dlq/replay", post(dead_letters::replay))
        .route("/ui/dlq/purge", post(dead_letters::purge))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

/// Checks the password (and, for a POST, the origin) before any handler runs, and adds
/// the security headers to whatever is answered.
async fn guard(State(console): State<Console>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let token = console
        .admin
        .token
        .as_ref()
        .expect("the console runs with a token");
    let mut response = if !auth::password_matches(headers, token) {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            "the admin token is the password\n",
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(auth::CHALLENGE),
        );
        response
    } else if request.method() != Method::GET
        && request.method() != Method::HEAD
        && !auth::same_origin(headers)
    {
        tracing::warn!(method = %request.method(), path = request.uri().path(), "console: cross-origin request refused");
        forbidden()
    } else {
        next.run(request).await
    };
    for (name, value) in auth::SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The answer to an action without the site's origin or form token.
fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "refused: the request did not come from a console page\n",
    )
        .into_response()
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("console/assets/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("console/assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
