//! The admin port (loopback by default; it has no authentication, so never expose it):
//! `GET /metrics` (Prometheus text), `GET /healthz`, `GET /admin/queue/pending?limit=N`,
//! `GET /admin/queue/dead?limit=N`, `POST /admin/queue/dead/{consumer}/{messageId}/replay`.

use crate::queue::{DeliveryState, QueueError};
use crate::server::{Body, error_response, full};
use crate::state::AppCtx;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub async fn serve(listener: TcpListener, app: Arc<AppCtx>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let app = app.clone();
        let svc = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&app, req).await) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(full(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn limit_of(query: Option<&str>) -> Result<usize, String> {
    for pair in query.unwrap_or_default().split('&') {
        if let Some(v) = pair.strip_prefix("limit=") {
            return v.parse::<usize>().map_err(|_| format!("limit must be a whole number, got {v:?}"));
        }
    }
    Ok(100)
}

async fn handle(app: &AppCtx, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["metrics"]) => {
            let depth = app.queue.depth().await.ok();
            let mut r = hyper::Response::new(full(Bytes::from(app.metrics.render(depth.as_ref()))));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        (&Method::GET, ["healthz"]) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (&Method::GET, ["admin", "queue", which @ ("pending" | "dead")]) => {
            let state = if *which == "dead" { DeliveryState::Dead } else { DeliveryState::Pending };
            let limit = match limit_of(req.uri().query()) {
                Ok(l) => l,
                Err(e) => return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", &e),
            };
            match app.queue.list(state, limit).await {
                Ok(items) => json(StatusCode::OK, &serde_json::to_value(items).unwrap_or_default()),
                Err(e) => {
                    tracing::error!("listing the queue failed: {e}");
                    error_response(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "queue backend unavailable")
                }
            }
        }
        (&Method::POST, ["admin", "queue", "dead", consumer, id, "replay"]) => match app
            .queue
            .replay(consumer, id)
            .await
        {
            Ok(()) => {
                if let Some(n) = app.wake.get(*consumer) {
                    n.notify_one();
                }
                json(StatusCode::OK, &serde_json::json!({"consumer": consumer, "messageId": id, "state": "pending"}))
            }
            Err(QueueError::NotFound(m)) => error_response(StatusCode::NOT_FOUND, "NOT_FOUND", &m),
            Err(e) => {
                tracing::error!("replay failed: {e}");
                error_response(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "queue backend unavailable")
            }
        },
        _ => error_response(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no admin route {} {path}", req.method())),
    }
}
