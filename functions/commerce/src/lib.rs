//! `bss-commerce`: what the quote, order and order-worker components share — the resource kinds
//! of quotes, orders and the inventory, the rules (hooks) their writes go through, loading the
//! catalog, customer and inventory documents a check needs, and placing an order (used by the
//! order API and by quote acceptance alike), and the key layout of usage data that usage and
//! billing share. Native tests: `cargo test -p bss-commerce`.

pub mod inventory;
pub mod order;
pub mod pricing;
pub mod subscribers;
pub mod usage_keys;
