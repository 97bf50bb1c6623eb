//! `bss-kit`: what every BSS function shares, written once — TMF630 errors, JSON bodies, TMF list
//! handling, tenant and admin authentication, tenant-scoped typed KV with compare-and-swap,
//! `Idempotency-Key` handling, domain events and random ids. Test with `cargo test -p bss-kit`.
//!
//! The pure logic ([`error`], [`json`], [`list`], [`auth`], [`kv`], [`idempotency`], [`events`],
//! [`tenancy`], [`ids`]) runs natively and is unit-tested there, against [`kv::MemKv`]; the thin
//! platform layer ([`wasi_kv`], [`events::publish_event`], [`auth::authenticate_admin`],
//! [`http::handler`]) calls spin-sdk / WASI imports, which only work inside a component.

pub mod auth;
pub mod error;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod json;
pub mod kv;
pub mod list;
pub mod tenancy;
pub mod wasi_kv;

pub use auth::Tenant;
pub use error::ApiError;
pub use http::{Ctx, Reply};
pub use kv::{Store, StoreError, Versioned};
