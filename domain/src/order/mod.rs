//! Quotes, product orders, fulfilment and the product inventory (placeholder while it is written).
