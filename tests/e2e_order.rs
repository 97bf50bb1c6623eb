//! End-to-end tests of the order component (placeholder while it is written).
