//! Quotes: pricing a basket for a customer or prospect, taxes, lifecycle (placeholder while it is written).
