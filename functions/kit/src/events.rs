//! Domain events on the queue (`bss:messaging/producer`, see `wit/messaging/messaging.wit`).
//!
//! [`publish_event`] sends the envelope
//! `{"eventId", "eventTime" (RFC 3339 UTC), "eventType", "domain", "tenantId", "event": <payload>}`
//! on the subject `<domain>.<eventType>` (characters outside `[A-Za-z0-9_.-]` become `_`), with the
//! message id set to `eventId`, so republishing the same envelope is stored once.
//! [`publish`] is the raw producer call.

use serde::Serialize;

use crate::error::ApiError;
use crate::ids::{new_id, now_rfc3339};

/// The `bss:messaging` bindings (world `consumer`: it imports the producer and declares the
/// handler export, which only a component invoking [`crate::export_consumer!`] exports).
#[allow(unsafe_code, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/messaging",
        world: "consumer",
        pub_export_macro: true,
        export_macro_name: "__export_messaging_handler",
        default_bindings_module: "bss_kit::events::bindings",
    });
}

// Off wasm the producer import is not called (see [`native`]).
#[cfg_attr(not(target_arch = "wasm32"), allow(unused_imports))]
use bindings::bss::messaging::producer;
pub use bindings::bss::messaging::types::Message;
#[cfg_attr(not(target_arch = "wasm32"), allow(unused_imports))]
use bindings::bss::messaging::types::{OutgoingMessage, PublishError};

/// Longest subject the queue accepts.
pub const MAX_SUBJECT_LEN: usize = 255;

/// The event envelope.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope<T> {
    /// Unique id; also the message id.
    pub event_id: String,
    /// RFC 3339 UTC.
    pub event_time: String,
    /// e.g. `noteCreated`.
    pub event_type: String,
    /// e.g. `notes`.
    pub domain: String,
    /// Tenant the event belongs to.
    pub tenant_id: String,
    /// The payload.
    pub event: T,
}

/// Why the queue refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishFailure {
    /// The message breaks a rule (subject syntax, size, id length).
    Invalid(String),
    /// The queue backend failed; retry.
    Unavailable(String),
}

impl std::fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishFailure::Invalid(m) => write!(f, "invalid message: {m}"),
            PublishFailure::Unavailable(m) => write!(f, "queue unavailable: {m}"),
        }
    }
}

impl std::error::Error for PublishFailure {}

/// `<domain>.<eventType>` limited to the subject charset `[A-Za-z0-9_.-]` and 255 characters.
pub fn event_subject(domain: &str, event_type: &str) -> String {
    sanitize_subject(&format!("{domain}.{event_type}"))
}

/// Replaces characters outside `[A-Za-z0-9_.-]` with `_` and cuts to [`MAX_SUBJECT_LEN`].
pub fn sanitize_subject(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
        .take(MAX_SUBJECT_LEN)
        .collect();
    if out.is_empty() { "_".into() } else { out }
}

/// Builds the envelope (pure: id and time are given).
pub fn envelope<T: Serialize>(
    event_id: String,
    event_time: String,
    domain: &str,
    event_type: &str,
    tenant_id: &str,
    payload: T,
) -> EventEnvelope<T> {
    EventEnvelope {
        event_id,
        event_time,
        event_type: event_type.into(),
        domain: domain.into(),
        tenant_id: tenant_id.into(),
        event: payload,
    }
}

/// Publishes one message; the message id the queue stored.
pub fn publish(
    subject: &str,
    body: Vec<u8>,
    id: Option<String>,
    ordering_key: Option<String>,
) -> Result<String, PublishFailure> {
    let msg = OutgoingMessage { subject: subject.into(), body, id, ordering_key };
    #[cfg(target_arch = "wasm32")]
    return producer::publish(&msg).map_err(|e| match e {
        PublishError::Invalid(m) => PublishFailure::Invalid(m),
        PublishError::Unavailable(m) => PublishFailure::Unavailable(m),
    });
    #[cfg(not(target_arch = "wasm32"))]
    {
        Ok(native::record(msg))
    }
}

/// Off wasm there is no host queue: native tests and benchmarks run the same code, and what it
/// publishes is kept per thread (the last [`native::KEPT_MAX`]) for them to read.
#[cfg(not(target_arch = "wasm32"))]
pub mod native {
    use super::OutgoingMessage;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Messages kept per thread; older ones are dropped.
    pub const KEPT_MAX: usize = 10_000;

    thread_local! {
        static PUBLISHED: RefCell<VecDeque<(String, String, Vec<u8>)>> = const { RefCell::new(VecDeque::new()) };
    }

    pub(super) fn record(msg: OutgoingMessage) -> String {
        let id = msg.id.unwrap_or_else(crate::ids::new_id);
        PUBLISHED.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() == KEPT_MAX {
                p.pop_front();
            }
            p.push_back((id.clone(), msg.subject, msg.body));
        });
        id
    }

    /// The (id, subject, body) of the messages this thread published since the last call,
    /// oldest first.
    pub fn take_published() -> Vec<(String, String, Vec<u8>)> {
        PUBLISHED.with(|p| p.borrow_mut().drain(..).collect())
    }
}

/// Publishes a domain event; its `eventId`. A refusal is a 500 (the function or its manifest is
/// wrong) and an unavailable queue a 503.
pub fn publish_event(
    domain: &str,
    event_type: &str,
    tenant_id: &str,
    payload: impl Serialize,
) -> Result<String, ApiError> {
    publish_event_keyed(domain, event_type, tenant_id, payload, None)
}

/// [`publish_event`] with an ordering key (events of one entity in order).
pub fn publish_event_keyed(
    domain: &str,
    event_type: &str,
    tenant_id: &str,
    payload: impl Serialize,
    ordering_key: Option<&str>,
) -> Result<String, ApiError> {
    let env = envelope(new_id(), now_rfc3339(), domain, event_type, tenant_id, payload);
    let body = serde_json::to_vec(&env).map_err(|e| ApiError::internal(format!("serialising event: {e}")))?;
    let subject = event_subject(domain, event_type);
    publish(&subject, body, Some(env.event_id.clone()), ordering_key.map(str::to_string)).map_err(|e| match e {
        PublishFailure::Unavailable(_) => {
            ApiError::service_unavailable("the event queue is unavailable; retry later", e.to_string())
        }
        other => ApiError::internal(format!("publishing {subject}: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subjects_are_sanitised() {
        assert_eq!(event_subject("notes", "noteCreated"), "notes.noteCreated");
        assert_eq!(event_subject("my domain", "a/b*c>"), "my_domain.a_b_c_");
        assert_eq!(sanitize_subject(""), "_");
        assert_eq!(sanitize_subject("é"), "_");
        assert_eq!(sanitize_subject(&"a".repeat(300)).len(), MAX_SUBJECT_LEN);
    }

    #[test]
    fn envelope_shape() {
        let e =
            envelope("id1".into(), "2024-01-01T00:00:00.000Z".into(), "notes", "noteCreated", "t1", json!({"id": "n"}));
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"eventId": "id1", "eventTime": "2024-01-01T00:00:00.000Z", "eventType": "noteCreated",
                   "domain": "notes", "tenantId": "t1", "event": {"id": "n"}})
        );
    }
}
