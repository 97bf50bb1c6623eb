//! End-to-end tests of the customer component (placeholder while it is written).
