//! Customers, accounts and hierarchies (placeholder while it is written).
