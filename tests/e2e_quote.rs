//! End-to-end tests of the quote component (placeholder while it is written).
