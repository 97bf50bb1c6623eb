//! Quotes (TMF648): pricing a basket for a customer or a prospect with taxes, and the quote
//! lifecycle. Tested natively: `cargo test -p bss-domain quote`.

pub mod pricing;
pub mod state;
