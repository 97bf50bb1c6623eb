//! The product catalog (placeholder while it is written).
