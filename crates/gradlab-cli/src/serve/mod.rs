//! `gradlab serve`: the lecture's playground in the browser. A local HTTP server (axum on
//! tokio) with the page embedded in the binary (no CDN: it works offline) and a JSON API
//! ([`api`]) through which every number on the page is computed by the library.
//!
//! Bad input is answered with HTTP 400 and `{"error": "..."}` carrying the parser's message;
//! computations run on tokio's blocking pool, so requests are served concurrently; Ctrl-C
//! stops the server after the requests in flight.

pub mod api;
mod state;

use anyhow::{Context, Result};
use axum::extract::RawQuery;
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::io::Write;
use std::net::IpAddr;

/// The page: HTML, CSS and JavaScript in one file.
const PAGE: &str = include_str!("page.html");

/// Arguments of `gradlab serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Port to listen on (0: any free port; the URL printed says which).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Address to listen on. The default serves this machine only; another address (such
    /// as 0.0.0.0) opens the playground to the network and must be asked for here.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

/// Runs the server until Ctrl-C.
pub fn run(args: ServeArgs) -> Result<()> {
    let host: IpAddr = args.host.parse().with_context(|| {
        format!(
            "--host '{}' is not an IP address such as 127.0.0.1",
            args.host
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host, args.port))
            .await
            .with_context(|| format!("cannot listen on {host} port {}", args.port))?;
        let address = listener.local_addr()?;
        println!("gradlab playground: http://{address}/  (Ctrl-C stops it)");
        std::io::stdout().flush().ok();
        axum::serve(listener, router())
            .with_graceful_shutdown(async {
                tokio::signal::ctrl_c().await.ok();
            })
            .await
            .context("serving")?;
        println!("gradlab playground stopped");
        Ok(())
    })
}

/// The routes.
pub fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/functions", get(|| async { Json(api::functions()) }))
        .route("/api/optimizers", get(|| async { Json(api::optimizers()) }))
        .route(
            "/api/surface",
            get(|RawQuery(q): RawQuery| compute(q, api::SURFACE_KEYS, api::surface)),
        )
        .route(
            "/api/grid",
            get(|RawQuery(q): RawQuery| compute(q, api::GRID_KEYS, api::grid)),
        )
        .route(
            "/api/critical",
            get(|RawQuery(q): RawQuery| compute(q, api::CRITICAL_KEYS, api::critical)),
        )
        .route(
            "/api/quadratic",
            get(|RawQuery(q): RawQuery| compute(q, api::QUADRATIC_KEYS, api::quadratic)),
        )
        .fallback(not_found)
}

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such page: {}; the API is /api/functions, /api/optimizers, /api/surface, /api/grid, /api/critical, /api/quadratic",
            uri.path()
        ),
    )
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Parses the query and runs `f` on the blocking pool; its error is a 400 with the message.
async fn compute(
    raw: Option<String>,
    keys: &'static [&'static str],
    f: fn(&api::Query) -> api::ApiResult,
) -> Response {
    let query = match api::Query::parse(raw.as_deref(), keys) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match tokio::task::spawn_blocking(move || f(&query)).await {
        Ok(Ok(value)) => Json::<Value>(value).into_response(),
        Ok(Err(message)) => error(StatusCode::BAD_REQUEST, message),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the computation failed: {e}"),
        ),
    }
}
