//! The durable message queue behind `bss:messaging`.
//!
//! Publishing stores the message once and schedules one delivery per subscribed consumer
//! (fan-out at publish time, so a consumer added later does not see old messages). A delivery is
//! `pending` until a dispatcher leases it (`leased_until`), then acknowledged (removed), retried
//! later (`attempts` + backoff) or moved to the dead-letter list after the consumer's
//! `max_attempts`. A host that dies while holding a lease loses nothing: the lease expires and
//! the delivery is handed out again, which is why delivery is at-least-once and consumers dedupe.

pub mod dispatcher;
pub mod redis;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

/// Longest subject.
pub const SUBJECT_LEN_MAX: usize = 255;
/// Longest message id and ordering key.
pub const ID_LEN_MAX: usize = 128;
/// Largest body.
pub const BODY_LEN_MAX: usize = 1 << 20;
/// Deliveries listed by one admin call.
pub const LIST_MAX: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("queue backend error: {0}")]
    Backend(String),
}

pub type QueueResult<T> = Result<T, QueueError>;

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub subject: String,
    pub body: Vec<u8>,
    pub ordering_key: Option<String>,
}

/// One delivery of one message to one consumer, as leased by a dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub consumer: String,
    pub message_id: String,
    pub subject: String,
    pub body: Vec<u8>,
    pub ordering_key: Option<String>,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub published_at_ms: u64,
}

/// Where a delivery stands, for the admin view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Dead,
}

/// A delivery as the admin view lists it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryInfo {
    pub consumer: String,
    pub message_id: String,
    pub subject: String,
    pub ordering_key: Option<String>,
    pub state: DeliveryState,
    /// Deliveries handed out so far (claims, including one whose lease is still running on
    /// SQLite); reset to 0 by a replay.
    pub attempts: u32,
    pub published_at_ms: u64,
    pub next_attempt_at_ms: u64,
    pub last_error: Option<String>,
    /// The body as UTF-8 where it is, else omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Counts for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    pub pending: u64,
    pub dead: u64,
}

/// Retry policy of one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before a message is dead-lettered (the first one included).
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `failed_attempts + 1`: initial * 2^(failed-1), capped.
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(30);
        self.backoff_initial.saturating_mul(1u32 << exp).min(self.backoff_max)
    }
}

/// What the dispatcher reports after a handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    /// Retry at `retry_at_ms`, or dead-letter when `retry_at_ms` is `None`.
    Failed {
        error: String,
        retry_at_ms: Option<u64>,
    },
}

/// A subject pattern: exact, `a.*` (one more token) or `a.>` (one or more tokens).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Validate a message before it is stored.
pub fn check_message(m: &NewMessage) -> QueueResult<()> {
    let subject_ok = !m.subject.is_empty()
        && m.subject.len() <= SUBJECT_LEN_MAX
        && m.subject.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !m.subject.split('.').any(str::is_empty);
    if !subject_ok {
        return Err(QueueError::Invalid(format!(
            "subject {:?} must be 1..={SUBJECT_LEN_MAX} characters of [A-Za-z0-9_.-] with no empty token",
            m.subject
        )));
    }
    if m.id.is_empty() || m.id.len() > ID_LEN_MAX {
        return Err(QueueError::Invalid(format!("id must be 1..={ID_LEN_MAX} characters")));
    }
    if m.ordering_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > ID_LEN_MAX) {
        return Err(QueueError::Invalid(format!("ordering key must be 1..={ID_LEN_MAX} characters")));
    }
    if m.body.len() > BODY_LEN_MAX {
        return Err(QueueError::Invalid(format!("body of {} bytes exceeds {BODY_LEN_MAX}", m.body.len())));
    }
    Ok(())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The queue on one backend. Cheap to clone.
#[derive(Clone)]
pub enum Queue {
    Sqlite(Arc<sqlite::SqliteQueue>),
    Redis(Arc<redis::RedisQueue>),
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queue::Sqlite(_) => f.write_str("Queue::Sqlite"),
            Queue::Redis(_) => f.write_str("Queue::Redis"),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Queue::Sqlite($b) => $e,
            Queue::Redis($b) => $e,
        }
    };
}

impl Queue {
    /// Store `msg` and schedule a delivery for each of `consumers`. Publishing an id that is
    /// already stored changes nothing and is not an error (idempotent publish).
    /// Returns whether the message was new.
    ///
    /// A message no consumer subscribes to is checked and dropped without a write: there is
    /// nobody to deliver it to (a consumer added later receives what is published after it).
    /// Most domain events have no consumer in a default deployment, and their write was a third
    /// of a bill's commits.
    pub async fn publish(&self, msg: &NewMessage, consumers: &[String]) -> QueueResult<bool> {
        check_message(msg)?;
        if consumers.is_empty() {
            return Ok(true);
        }
        dispatch!(self, b => b.publish(msg, consumers).await)
    }

    /// Lease up to `limit` due deliveries of `consumer` for `lease`. Per ordering key, only the
    /// oldest undelivered message is handed out, and only when no earlier one is leased.
    pub async fn claim(&self, consumer: &str, limit: usize, lease: Duration) -> QueueResult<Vec<Delivery>> {
        dispatch!(self, b => b.claim(consumer, limit, lease).await)
    }

    /// Record what happened to a leased delivery. `delivery` must be the one `claim` returned:
    /// its `attempt` fences the report, so a late report for a lease that expired and was
    /// handed to another claimer, or a repeated report, changes nothing.
    pub async fn complete(&self, delivery: &Delivery, outcome: &Outcome) -> QueueResult<()> {
        dispatch!(self, b => b.complete(delivery, outcome).await)
    }

    /// Deliveries in `state`, oldest first, for the admin view.
    pub async fn list(&self, state: DeliveryState, limit: usize) -> QueueResult<Vec<DeliveryInfo>> {
        dispatch!(self, b => b.list(state, limit.clamp(1, LIST_MAX)).await)
    }

    /// Put a dead letter back in the pending list with its attempts reset, due now. With an
    /// ordering key it goes to the back of its key: later messages already went past it.
    pub async fn replay(&self, consumer: &str, message_id: &str) -> QueueResult<()> {
        dispatch!(self, b => b.replay(consumer, message_id).await)
    }

    pub async fn depth(&self) -> QueueResult<Depth> {
        dispatch!(self, b => b.depth().await)
    }

    /// When the next delivery of `consumer` falls due (ms since the epoch), if any is scheduled.
    pub async fn next_due_ms(&self, consumer: &str) -> QueueResult<Option<u64>> {
        dispatch!(self, b => b.next_due_ms(consumer).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("order.created", "order.created"));
        assert!(!subject_matches("order.created", "order.completed"));
        assert!(subject_matches("order.*", "order.created"));
        assert!(!subject_matches("order.*", "order.item.created"));
        assert!(subject_matches("order.>", "order.item.created"));
        assert!(!subject_matches("order.>", "order"));
        assert!(!subject_matches("order", "order.created"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(5), Duration::from_secs(1));
        assert_eq!(p.backoff(99), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_message_no_consumer_subscribes_to_is_checked_then_dropped_without_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(
            crate::db::SqliteDb::open(&dir.path().join("bss.sqlite"), crate::db::SyncMode::Normal).unwrap(),
        );
        let q = Queue::Sqlite(std::sync::Arc::new(sqlite::SqliteQueue::new(db.clone())));
        let msg =
            NewMessage { id: "m1".into(), subject: "billing.created".into(), body: b"{}".to_vec(), ordering_key: None };
        assert!(q.publish(&msg, &[]).await.unwrap());
        let rows = |table: &str| {
            db.read(|c| c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0))).unwrap()
        };
        assert_eq!((rows("q_seen"), rows("q_message"), rows("q_delivery")), (0, 0, 0));
        let bad = NewMessage { subject: "a b".into(), ..msg.clone() };
        assert!(matches!(q.publish(&bad, &[]).await, Err(QueueError::Invalid(_))));
        // With a consumer it is stored and delivered.
        assert!(q.publish(&msg, &["c".to_string()]).await.unwrap());
        assert_eq!((rows("q_seen"), rows("q_message"), rows("q_delivery")), (1, 1, 1));
    }

    #[test]
    fn bad_messages_are_refused() {
        let ok = NewMessage { id: "1".into(), subject: "a.b".into(), body: vec![], ordering_key: None };
        assert!(check_message(&ok).is_ok());
        for subject in ["", "a..b", "a b", "a.*", ".a"] {
            let m = NewMessage { subject: subject.into(), ..ok.clone() };
            assert!(check_message(&m).is_err(), "{subject:?} accepted");
        }
        assert!(check_message(&NewMessage { id: String::new(), ..ok.clone() }).is_err());
        assert!(check_message(&NewMessage { body: vec![0; BODY_LEN_MAX + 1], ..ok }).is_err());
    }
}
