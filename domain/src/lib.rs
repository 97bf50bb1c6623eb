//! bss-domain: the pure business logic of the BSS — no I/O, no wasm, no SDK — so it is tested
//! natively and fast (`cargo test -p bss-domain`). Starts with money; catalog, pricing, orders,
//! rating and billing land here as their issues are done.

pub mod billing;
pub mod catalog;
pub mod customer;
pub mod json;
pub mod money;
pub mod order;
pub mod quote;
pub mod rating;
pub mod stored;
pub mod usage;
