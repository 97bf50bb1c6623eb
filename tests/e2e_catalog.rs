//! End-to-end tests of the catalog component (placeholder while it is written).
