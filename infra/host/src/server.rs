//! The HTTP trigger: route a request to its component, run an instance of it, answer. The
//! instance is fresh, or with `--instance-reuse-max` one that answered the component's last
//! request cleanly ([`IdleP2`]).
//!
//! Limits, each answered by the host before or instead of the component, with a TMF error body:
//! more than `in_flight_max` requests at once → 503 with `Retry-After`; a body over
//! `body_max_bytes` → 413; a component running past `request_timeout` → 504; no route → 404;
//! a component that traps or fails → 500 without internals (the detail goes to the log).

use crate::runtime::KEEP_RESIDENT_BYTES;
use crate::runtime::{is_deadline, new_store};
use crate::state::{AppCtx, ComponentCtx, HostState};
use anyhow::anyhow;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited, combinators::UnsyncBoxBody};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

pub type Body = UnsyncBoxBody<Bytes, anyhow::Error>;

/// How an HTTP component is called.
pub enum HttpPre {
    /// `wasi:http/incoming-handler@0.2.x` (spin-sdk 2..5, plain wasip2).
    P2(wasmtime_wasi_http::p2::bindings::ProxyPre<HostState>),
    /// `wasi:http/handler@0.3.0` (spin-sdk 7, WASIp3).
    P3(wasmtime_wasi_http::p3::bindings::ServicePre<HostState>),
}

pub struct HttpComponent {
    pub engine: Engine,
    pub ctx: Arc<ComponentCtx>,
    pub pre: HttpPre,
    /// Instances that answered their last request cleanly and may take another (see
    /// [`Limits::instance_reuse_max`]), most recently used last.
    pub idle: std::sync::Mutex<Vec<IdleP2>>,
}

/// A WASIp2 instance between two requests, with its store.
pub struct IdleP2 {
    store: Store<HostState>,
    proxy: wasmtime_wasi_http::p2::bindings::Proxy,
    /// Requests it has answered.
    served: u32,
}

/// Idle instances kept per component: enough for the requests of a busy burst, few enough that
/// their memory stays small.
const IDLE_PER_COMPONENT_MAX: usize = 64;

/// Idle instances kept by all components together. Each holds a component-instance slot of the
/// pooling allocator, so together they take at most half of the slots that `in_flight_max`
/// requests leave free, and the other half stays for queue deliveries.
pub fn idle_instances_max(instances_max: u32, in_flight_max: usize) -> usize {
    (instances_max as usize).saturating_sub(in_flight_max) / 2
}

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub request_timeout: Duration,
    pub body_max_bytes: usize,
    pub in_flight_max: usize,
    pub memory_max_bytes: usize,
    /// Largest response body a component may produce (500 past it).
    pub response_max_bytes: usize,
    /// Requests one WASIp2 instance answers one after another before it is dropped; 1 gives
    /// every request a fresh instance.
    pub instance_reuse_max: u32,
}

pub struct HttpServer {
    pub app: Arc<AppCtx>,
    pub components: std::collections::HashMap<String, HttpComponent>,
    pub limits: Limits,
    pub in_flight: Arc<Semaphore>,
    /// Idle instances kept now, across components, and the most that may be (see
    /// [`idle_instances_max`]).
    pub idle_count: std::sync::atomic::AtomicUsize,
    pub idle_max: usize,
}

/// A TMF630 error body.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> hyper::Response<Body> {
    let body = serde_json::json!({
        "code": code,
        "reason": status.canonical_reason().unwrap_or("Error"),
        "message": message,
        "status": status.as_u16().to_string(),
        "@type": "Error",
    });
    let mut r = hyper::Response::new(full(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

impl HttpServer {
    /// Answer one request. Never fails: every failure becomes an HTTP error answer.
    pub async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
        client: SocketAddr,
    ) -> hyper::Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let Some(route) = crate::manifest::route_for(&self.app.manifest.routes, &path).cloned() else {
            self.app.metrics.rejected("not_found");
            tracing::info!(%method, %path, status = 404, "no route");
            return error_response(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no route for {path}"));
        };
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            self.app.metrics.rejected("overloaded");
            let mut r = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "OVERLOADED",
                "too many requests in flight; retry shortly",
            );
            r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        };
        self.app.metrics.in_flight(1);
        let response = self.clone().dispatch(req, &route, client).await;
        self.app.metrics.in_flight(-1);
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        self.app.metrics.request(&route.component, status, elapsed);
        tracing::info!(component = %route.component, route = %route.pattern, %method, %path, status, latency_us = elapsed.as_micros() as u64, "request");
        response
    }

    async fn dispatch(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
        route: &crate::manifest::Route,
        client: SocketAddr,
    ) -> hyper::Response<Body> {
        let (mut parts, body) = req.into_parts();
        let max = self.limits.body_max_bytes;
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            self.app.metrics.rejected("too_large");
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                &format!("request body exceeds {max} bytes"),
            );
        }
        let bytes = match Limited::new(body, max).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                self.app.metrics.rejected("too_large");
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    &format!("request body exceeds {max} bytes"),
                );
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    &format!("could not read the request body: {e}"),
                );
            }
        };

        // Spin's request headers, and an absolute URI (wasi:http needs an authority).
        let host =
            parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let full_url = format!("http://{host}{path_and_query}");
        let path_info = if route.wildcard { parts.uri.path()[route.base.len()..].to_string() } else { String::new() };
        let spin_headers = [
            ("spin-full-url", full_url.clone()),
            ("spin-path-info", path_info),
            ("spin-matched-route", route.pattern.clone()),
            ("spin-raw-component-route", route.pattern.clone()),
            ("spin-component-route", route.base.clone()),
            ("spin-base-path", "/".to_string()),
            ("spin-client-addr", client.to_string()),
        ];
        for (name, value) in spin_headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                parts.headers.insert(name, v);
            }
        }
        match full_url.parse() {
            Ok(uri) => parts.uri = uri,
            Err(_) => return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", "invalid Host header"),
        }
        let req = hyper::Request::from_parts(parts, Full::new(bytes));

        let Some(component) = self.components.get(&route.component) else {
            tracing::error!(component = %route.component, "route names a component that is not loaded");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error");
        };
        let timeout = self.limits.request_timeout;
        let result = match &component.pre {
            HttpPre::P2(pre) => self.call_p2(component, pre.clone(), req).await,
            HttpPre::P3(pre) => self.call_p3(component, pre.clone(), req).await,
        };
        match result {
            Ok(r) => r,
            Err(e) if is_deadline(&e) => {
                self.app.metrics.rejected("timeout");
                tracing::warn!(component = %route.component, "stopped after {timeout:?}");
                error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "TIMEOUT",
                    &format!("the request did not complete within {} ms", timeout.as_millis()),
                )
            }
            Err(e) => {
                tracing::error!(component = %route.component, "request failed: {e:?}");
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
            }
        }
    }

    async fn call_p2(
        &self,
        component: &HttpComponent,
        pre: wasmtime_wasi_http::p2::bindings::ProxyPre<HostState>,
        req: hyper::Request<Full<Bytes>>,
    ) -> anyhow::Result<hyper::Response<Body>> {
        let timeout = self.limits.request_timeout;
        let ctx = &component.ctx;
        // With reuse off (the default) no instance is ever kept: skip the lock.
        let reuse = self.limits.instance_reuse_max > 1;
        let idle = if reuse { component.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() } else { None };
        if idle.is_some() {
            self.idle_count.fetch_sub(1, Ordering::Relaxed);
        }
        let (mut store, warm, served) = match idle {
            Some(IdleP2 { mut store, proxy, served }) => {
                crate::runtime::arm(&mut store, timeout);
                (store, Some(proxy), served)
            }
            None => (new_store(&component.engine, &self.app, ctx, self.limits.memory_max_bytes, timeout), None, 0),
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let body_max = self.limits.response_max_bytes;
        // Run the guest and read its response in the same task: the guest streams the body
        // after the head, so both must make progress together. The body is collected (up to
        // `response_max_bytes`), which saves a task and a cross-thread wake-up per request.
        let app = &self.app;
        // The store moves into the guest future. It comes back only when the guest returned
        // cleanly; otherwise it is dropped the moment the guest is done, so a guest that trapped
        // closes its response channel right away.
        let guest = async move {
            let proxy = match warm {
                Some(proxy) => proxy,
                None => {
                    let t = Instant::now();
                    let proxy = pre.instantiate_async(&mut store).await?;
                    app.metrics.instantiated(&ctx.id, t.elapsed());
                    proxy
                }
            };
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await?;
            // An instance is kept only if the guest let go of every resource. One that still
            // holds some (a response outparam it never set, a body it never finished) is dropped
            // here and now, which closes the response channel instead of leaving it open.
            let clean = store.data().table.is_empty();
            anyhow::Ok(clean.then_some((store, proxy)))
        };
        let response = async {
            let Ok(head) = receiver.await else { return Ok(None) };
            let resp = head.map_err(|code| anyhow!("guest returned error code {code:?}"))?;
            let (parts, body) = resp.into_parts();
            let bytes =
                Limited::new(body, body_max).collect().await.map_err(|e| anyhow!("response body: {e}"))?.to_bytes();
            anyhow::Ok(Some(hyper::Response::from_parts(parts, full(bytes))))
        };
        let both = async { tokio::join!(guest, response) };
        match tokio::time::timeout(timeout + Duration::from_secs(1), both).await {
            // A guest that failed after its response was complete still answered: the response
            // stands, but only a clean instance is kept.
            Ok((guest, Ok(Some(resp)))) => {
                if let (true, Ok(Some((store, proxy)))) = (reuse, guest) {
                    self.keep_idle(component, IdleP2 { store, proxy, served: served + 1 });
                }
                Ok(resp)
            }
            Ok((Err(e), _)) => Err(e),
            Ok((Ok(_), Ok(None))) => Err(anyhow!("the component returned without setting a response")),
            Ok((Ok(_), Err(e))) => Err(e),
            Err(_) => Err(anyhow::Error::new(crate::runtime::DeadlineExceeded(timeout))),
        }
    }

    /// Keep an instance that answered cleanly for the next request, unless it has served its
    /// share, its memory grew past what the pool resets in place, or enough are idle already.
    fn keep_idle(&self, component: &HttpComponent, idle: IdleP2) {
        if idle.served >= self.limits.instance_reuse_max
            || idle.store.data().limits.memory_bytes_max > KEEP_RESIDENT_BYTES
        {
            return;
        }
        let mut kept = component.idle.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= IDLE_PER_COMPONENT_MAX {
            return;
        }
        if self.idle_count.fetch_add(1, Ordering::Relaxed) >= self.idle_max {
            self.idle_count.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        kept.push(idle);
    }

    async fn call_p3(
        &self,
        component: &HttpComponent,
        pre: wasmtime_wasi_http::p3::bindings::ServicePre<HostState>,
        req: hyper::Request<Full<Bytes>>,
    ) -> anyhow::Result<hyper::Response<Body>> {
        let timeout = self.limits.request_timeout;
        let ctx = &component.ctx;
        let mut store = new_store(&component.engine, &self.app, ctx, self.limits.memory_max_bytes, timeout);
        let t = Instant::now();
        let service = pre.instantiate_async(&mut store).await?;
        self.app.metrics.instantiated(&ctx.id, t.elapsed());
        let (req, req_io) = wasmtime_wasi_http::p3::Request::from_http(
            store.data_mut().http().hooks,
            req.map(|b| b.map_err(wasmtime_wasi_http::Error::from)),
        );
        let call = store.run_concurrent(async move |acc| -> wasmtime::Result<hyper::Response<Body>> {
            let res = match service.handle(acc, req).await? {
                Ok(res) => res,
                Err(code) => wasmtime::bail!("guest returned error code {code:?}"),
            };
            let http_res = acc.with(|mut s| res.into_http(&mut s, req_io))?;
            // The guest writes the body through a p3 stream that only makes progress while the
            // store's event loop runs, so collect it here.
            let (parts, body) = http_res.into_parts();
            let bytes = body.collect().await.map_err(|e| wasmtime::format_err!("response body: {e:?}"))?.to_bytes();
            Ok(hyper::Response::from_parts(parts, full(bytes)))
        });
        match tokio::time::timeout(timeout + Duration::from_secs(1), call).await {
            Ok(r) => Ok(r??),
            Err(_) => Err(anyhow::Error::new(crate::runtime::DeadlineExceeded(timeout))),
        }
    }
}
