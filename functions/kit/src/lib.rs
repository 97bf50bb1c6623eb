//! `bss-kit`: what every BSS function shares, written once — TMF630 errors, JSON bodies, TMF list
//! handling, tenant and admin authentication, tenant-scoped typed KV with compare-and-swap,
//! `Idempotency-Key` handling, domain events and random ids. Test with `cargo test -p bss-kit`.
//!
//! The pure logic ([`error`], [`json`], [`list`], [`auth`], [`kv`], [`idempotency`], [`events`],
//! [`tenancy`], [`ids`], [`resource`]) runs natively and is unit-tested there, against [`kv::MemKv`]; the thin
//! platform layer ([`wasi_kv`], [`events::publish_event`], [`auth::authenticate_admin`],
//! [`http::handler`]) calls spin-sdk / WASI imports, which only work inside a component.

pub mod auth;
pub mod catalog;
pub mod error;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod json;
pub mod kv;
pub mod lease;
pub mod list;
pub mod resource;
pub mod tenancy;
pub mod wasi_kv;

pub use auth::Tenant;
pub use error::ApiError;
pub use http::{Ctx, Reply};
pub use kv::{Store, StoreError, Versioned};

/// Export `$route` (a `fn(spin_sdk::http::Request) -> spin_sdk::http::Response`) as the
/// component's `wasi:http/incoming-handler`. The export glue spin-sdk generates is `unsafe`,
/// which the workspace denies, so the allow is scoped to the glue and written once, here.
#[macro_export]
macro_rules! export_http {
    ($route:ident) => {
        // The export exists in the wasm component only: natively (a crate that is also an rlib,
        // linked into benches) a symbol named `wasi:http/...` breaks the linker's version script.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn(spin_sdk::http::Request) -> spin_sdk::http::Response = $route;
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        mod __bss_http_export {
            #[spin_sdk::http_component]
            fn handle(req: spin_sdk::http::Request) -> spin_sdk::http::Response {
                super::$route(req)
            }
        }
    };
}

/// Export `$handle` (a `fn(bss_kit::events::Message) -> Result<(), String>`) as the component's
/// `bss:messaging/handler`: the component becomes a queue consumer (`[[trigger.queue]]` in
/// spin.toml). An `Err` asks the host for a retry (with backoff, then the dead-letter list).
#[macro_export]
macro_rules! export_consumer {
    ($handle:ident) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn($crate::events::Message) -> ::core::result::Result<(), ::std::string::String> = $handle;
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        mod __bss_consumer_export {
            struct Consumer;
            impl $crate::events::bindings::exports::bss::messaging::handler::Guest for Consumer {
                fn handle_message(msg: $crate::events::Message) -> ::core::result::Result<(), ::std::string::String> {
                    super::$handle(msg)
                }
            }
            $crate::events::bindings::__export_messaging_handler!(Consumer with_types_in $crate::events::bindings);
        }
    };
}
