//! The KV keys `tc-queueconsumer` writes and `tc-queuetest` reads (shared by `#[path]`).

/// Decimal counter of deliveries of a message (wasi atomics increment).
pub fn attempts_key(message_id: &str) -> String {
    format!("q/attempts/{message_id}")
}

/// Present once a delivery of the message succeeded (value: the attempt that did).
pub fn ok_key(message_id: &str) -> String {
    format!("q/ok/{message_id}")
}

/// The last delivery's metadata as JSON `{subject, hostAttempt, orderingKey, publishedAtMs}`.
pub fn meta_key(message_id: &str) -> String {
    format!("q/meta/{message_id}")
}

/// Ids handled successfully for an ordering key, in order (a versioned JSON array).
pub fn order_key(ordering_key: &str) -> String {
    format!("q/order/{ordering_key}")
}
