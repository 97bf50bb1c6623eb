//! What one guest instance sees: the per-instance store data (WASI, wasi:http, resources) and
//! the shared application context it reaches through it (key-value stores, the queue, variables).

use crate::kv::KvStore;
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::outbound::{AllowedHost, OutboundHooks};
use crate::queue::Queue;
use crate::variables::Variables;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Shared by every instance of every component.
pub struct AppCtx {
    pub manifest: Manifest,
    /// Store label → store.
    pub kv: HashMap<String, KvStore>,
    pub queue: Queue,
    pub variables: Variables,
    pub metrics: Metrics,
    /// Consumer component id → wakes its dispatcher when a message for it is published.
    pub wake: HashMap<String, Arc<Notify>>,
}

impl std::fmt::Debug for AppCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCtx").field("app", &self.manifest.name).finish_non_exhaustive()
    }
}

/// What the host knows about one component, fixed at start-up.
#[derive(Debug)]
pub struct ComponentCtx {
    pub id: Arc<str>,
    /// Store labels the component may open.
    pub kv_labels: Vec<String>,
    pub allowed_hosts: Arc<Vec<AllowedHost>>,
    pub environment: Vec<(String, String)>,
}

/// The data of one `Store`: one guest instance handling one request or one delivery.
pub struct HostState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: OutboundHooks,
    pub limits: InstanceLimits,
    /// When the call in progress must stop (see `runtime::new_store`); set again for every call
    /// of a reused instance.
    pub deadline: Instant,
    /// The time limit `deadline` was set from.
    pub timeout: std::time::Duration,
    pub app: Arc<AppCtx>,
    pub component: Arc<ComponentCtx>,
}

impl HostState {
    pub fn new(app: Arc<AppCtx>, component: Arc<ComponentCtx>, memory_max_bytes: usize) -> HostState {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr().inherit_stdout().envs(&component.environment);
        HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks { allowed: component.allowed_hosts.clone(), component: component.id.clone() },
            limits: InstanceLimits {
                limits: wasmtime::StoreLimitsBuilder::new().memory_size(memory_max_bytes).instances(64).build(),
                memory_bytes_max: 0,
            },
            deadline: Instant::now(),
            timeout: std::time::Duration::ZERO,
            app,
            component,
        }
    }
}

/// The store's limits, and the largest linear memory its instance has grown to: an instance
/// whose memory grew past what the pool resets in place is not reused.
pub struct InstanceLimits {
    limits: StoreLimits,
    /// The largest size any memory of the store was allowed to grow to, in bytes.
    pub memory_bytes_max: usize,
}

impl ResourceLimiter for InstanceLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes_max = self.memory_bytes_max.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}
