//! The `/metrics` HTTP endpoints of `atelier coordinator`, `worker` and `up`: plain
//! HTTP/1.1, one route, the text the coordinator's or worker's metrics render.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::{CliError, CliResult};

/// What `prometheus-client` writes (Prometheus reads it, and so does curl).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the exposition at each scrape; an error becomes a 500 with its text.
pub type Render =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Serves `render` at `http://<listen>/metrics` in the background and says so
/// (`what`: whose metrics); returns the bound address (`listen` may have port 0).
/// `setting` names where `listen` came from.
pub async fn serve(
    listen: &str,
    setting: &str,
    what: &str,
    render: Render,
) -> CliResult<SocketAddr> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| CliError::invalid(format!("{setting} `{listen}`: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::failure(format!("{setting}: cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::failure(format!("{setting}: {e}")))?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { respond(render().await) }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint on {bound} stopped: {e}");
        }
    });
    crate::logging::banner(format!("atelier {what} metrics on http://{bound}/metrics"));
    Ok(bound)
}

fn respond(rendered: Result<String, String>) -> Response {
    match rendered {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!("metrics scrape failed: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

/// The coordinator's metrics, read from its database at each scrape.
pub fn coordinator(c: Arc<atelier_coordinator::service::Coordinator>) -> Render {
    Arc::new(move || {
        let c = c.clone();
        Box::pin(async move {
            c.metrics
                .render(&c.store, c.config.worker_offline_after())
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// A worker's metrics.
pub fn worker(t: Arc<atelier_worker::telemetry::Telemetry>) -> Render {
    Arc::new(move || {
        let t = t.clone();
        Box::pin(async move { Ok(t.render().await) })
    })
}

/// Both on one endpoint (`atelier up`): the coordinator's exposition, then the
/// worker's, with one end marker.
pub fn both(coordinator: Render, worker: Render) -> Render {
    Arc::new(move || {
        let (c, w) = (coordinator(), worker());
        Box::pin(async move {
            let c = c.await?;
            let w = w.await?;
            Ok(format!("{}{w}", c.trim_end_matches("# EOF\n")))
        })
    })
}
