//! The queue on the embedded SQLite database (tables `q_message`, `q_delivery`, `q_seen`).
//! Every step is one transaction on the single writer connection, so publish (message plus all
//! its deliveries) and claim (select plus lease) are atomic.

use super::{Delivery, DeliveryInfo, DeliveryState, Depth, NewMessage, Outcome, QueueError, QueueResult, now_ms};
use crate::db::SqliteDb;
use rusqlite::{OptionalExtension as _, params};
use std::sync::Arc;
use std::time::Duration;

/// How long a published id is remembered after its deliveries are done, for idempotent publish.
pub const DEDUP_WINDOW_MS: u64 = 24 * 3600 * 1000;

pub struct SqliteQueue {
    db: Arc<SqliteDb>,
}

fn backend(e: rusqlite::Error) -> QueueError {
    QueueError::Backend(e.to_string())
}

impl SqliteQueue {
    pub fn new(db: Arc<SqliteDb>) -> SqliteQueue {
        SqliteQueue { db }
    }

    /// Runs the queue step `f` on tokio's blocking pool. A step writes on the writer connection,
    /// which the key-value flush holds for its whole transaction (tens of milliseconds a flush
    /// under a bill run): run on a runtime worker, that wait idled the worker and the deliveries
    /// it could have run — an off-CPU profile of a bill run found the two workers asleep in the
    /// dispatcher's claims for 12% of their time.
    async fn off_runtime<R: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteDb) -> rusqlite::Result<R> + Send + 'static,
    ) -> QueueResult<R> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(r) => r.map_err(backend),
            Err(e) => Err(QueueError::Backend(format!("the queue step did not finish: {e}"))),
        }
    }

    pub async fn publish(&self, msg: &NewMessage, consumers: &[String]) -> QueueResult<bool> {
        let now = now_ms();
        let (msg, consumers) = (msg.clone(), consumers.to_vec());
        self.off_runtime(move |db| {
            db.write(|tx| {
                let fresh = tx
                    .prepare_cached("INSERT INTO q_seen (id, published_at_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                    .execute(params![msg.id, now as i64])?
                    == 1;
                if !fresh || consumers.is_empty() {
                    return Ok(fresh);
                }
                // An id forgotten by q_seen (past the window) may still be queued, e.g. as a dead
                // letter: then this publish is a duplicate too.
                let stored = tx
                    .prepare_cached(
                        "INSERT INTO q_message (id, subject, body, ordering_key, published_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (id) DO NOTHING",
                    )?
                    .execute(params![msg.id, msg.subject, msg.body, msg.ordering_key, now as i64])?;
                if stored == 0 {
                    return Ok(false);
                }
                let seq = tx.last_insert_rowid();
                // A consumer named twice gets one delivery (as on Redis), not a constraint error.
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO q_delivery (consumer, message_id, seq, ordering_key, due_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (consumer, message_id) DO NOTHING",
                )?;
                for consumer in consumers {
                    stmt.execute(params![consumer, msg.id, seq, msg.ordering_key, now as i64])?;
                }
                // Forget ids older than the window, a few at a time so a publish stays cheap.
                tx.prepare_cached(
                    "DELETE FROM q_seen WHERE id IN (SELECT id FROM q_seen WHERE published_at_ms < ?1 LIMIT 16)",
                )?
                .execute(params![now.saturating_sub(DEDUP_WINDOW_MS) as i64])?;
                Ok(true)
            })
        })
        .await
    }

    pub async fn claim(&self, consumer: &str, limit: usize, lease: Duration) -> QueueResult<Vec<Delivery>> {
        let now = now_ms() as i64;
        let lease_end = now + lease.as_millis() as i64;
        let consumer = consumer.to_string();
        self.off_runtime(move |db| {
            db.write(|tx| {
                // Due, and either unordered or the head (lowest seq) of its ordering key among the
                // pending ones. A leased head is pending but not due, so it blocks its key.
                let due: Vec<Delivery> = tx
                    .prepare_cached(
                        "SELECT d.message_id, m.subject, m.body, d.ordering_key, d.attempts, m.published_at_ms
                           FROM q_delivery d JOIN q_message m ON m.id = d.message_id
                          WHERE d.consumer = ?1 AND d.state = 0 AND d.due_at_ms <= ?2
                            AND (d.ordering_key IS NULL OR d.seq = (
                                 SELECT MIN(h.seq) FROM q_delivery h
                                  WHERE h.consumer = d.consumer AND h.ordering_key = d.ordering_key AND h.state = 0))
                          ORDER BY d.due_at_ms, d.seq
                          LIMIT ?3",
                    )?
                    .query_map(params![consumer, now, limit as i64], |r| {
                        Ok(Delivery {
                            consumer: consumer.clone(),
                            message_id: r.get(0)?,
                            subject: r.get(1)?,
                            body: r.get(2)?,
                            ordering_key: r.get(3)?,
                            attempt: r.get::<_, i64>(4)? as u32 + 1,
                            published_at_ms: r.get::<_, i64>(5)? as u64,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let mut lease_stmt = tx.prepare_cached(
                    "UPDATE q_delivery SET due_at_ms = ?3, attempts = attempts + 1 WHERE consumer = ?1 AND message_id = ?2",
                )?;
                for d in &due {
                    lease_stmt.execute(params![consumer, d.message_id, lease_end])?;
                }
                Ok(due)
            })
        })
        .await
    }

    pub async fn complete(&self, d: &Delivery, outcome: &Outcome) -> QueueResult<()> {
        let now = now_ms() as i64;
        // What the step needs of the delivery (not its body).
        let (consumer, message_id, attempt) = (d.consumer.clone(), d.message_id.clone(), d.attempt);
        let outcome = outcome.clone();
        self.off_runtime(move |db| {
            db.write(|tx| {
                // `attempts = ?` makes a late report for a lease that expired and was handed to
                // someone else a no-op: the newer holder reports for itself.
                match &outcome {
                    Outcome::Ack => {
                        let done = tx
                            .prepare_cached(
                                "DELETE FROM q_delivery WHERE consumer = ?1 AND message_id = ?2 AND attempts = ?3 AND state = 0",
                            )?
                            .execute(params![consumer, message_id, attempt])?;
                        if done == 1 {
                            tx.prepare_cached(
                                "DELETE FROM q_message WHERE id = ?1
                                   AND NOT EXISTS (SELECT 1 FROM q_delivery WHERE message_id = ?1)",
                            )?
                            .execute(params![message_id])?;
                        }
                    }
                    Outcome::Failed { error, retry_at_ms: Some(at) } => {
                        tx.prepare_cached(
                            "UPDATE q_delivery SET due_at_ms = ?4, last_error = ?5
                              WHERE consumer = ?1 AND message_id = ?2 AND attempts = ?3 AND state = 0",
                        )?
                        .execute(params![consumer, message_id, attempt, *at as i64, error])?;
                    }
                    Outcome::Failed { error, retry_at_ms: None } => {
                        tx.prepare_cached(
                            "UPDATE q_delivery SET state = 1, due_at_ms = ?4, last_error = ?5
                              WHERE consumer = ?1 AND message_id = ?2 AND attempts = ?3 AND state = 0",
                        )?
                        .execute(params![consumer, message_id, attempt, now, error])?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn list(&self, state: DeliveryState, limit: usize) -> QueueResult<Vec<DeliveryInfo>> {
        let code = if state == DeliveryState::Dead { 1 } else { 0 };
        self.db
            .read(|c| {
                c.prepare_cached(
                    "SELECT d.consumer, d.message_id, m.subject, d.ordering_key, d.attempts, m.published_at_ms,
                            d.due_at_ms, d.last_error, m.body
                       FROM q_delivery d JOIN q_message m ON m.id = d.message_id
                      WHERE d.state = ?1 ORDER BY d.seq LIMIT ?2",
                )?
                .query_map(params![code, limit as i64], |r| {
                    let body: Vec<u8> = r.get(8)?;
                    Ok(DeliveryInfo {
                        consumer: r.get(0)?,
                        message_id: r.get(1)?,
                        subject: r.get(2)?,
                        ordering_key: r.get(3)?,
                        state,
                        attempts: r.get::<_, i64>(4)? as u32,
                        published_at_ms: r.get::<_, i64>(5)? as u64,
                        next_attempt_at_ms: r.get::<_, i64>(6)? as u64,
                        last_error: r.get(7)?,
                        body: String::from_utf8(body).ok(),
                    })
                })?
                .collect()
            })
            .map_err(backend)
    }

    pub async fn replay(&self, consumer: &str, message_id: &str) -> QueueResult<()> {
        let now = now_ms() as i64;
        let changed = self
            .db
            .write(|tx| {
                // A fresh sequence number puts it behind everything already published on its
                // ordering key (the same as the Redis backend), and ahead of what comes next.
                tx.execute("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'q_message'", [])?;
                let seq: i64 =
                    tx.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'q_message'", [], |r| r.get(0))?;
                tx.prepare_cached(
                    "UPDATE q_delivery SET state = 0, attempts = 0, due_at_ms = ?3, seq = ?4
                      WHERE consumer = ?1 AND message_id = ?2 AND state = 1",
                )?
                .execute(params![consumer, message_id, now, seq])
            })
            .map_err(backend)?;
        if changed == 0 {
            return Err(QueueError::NotFound(format!("no dead letter {message_id} for consumer {consumer}")));
        }
        Ok(())
    }

    pub async fn depth(&self) -> QueueResult<Depth> {
        self.db
            .read(|c| {
                let mut depth = Depth::default();
                let mut stmt = c.prepare_cached("SELECT state, COUNT(*) FROM q_delivery GROUP BY state")?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let (state, n): (i64, i64) = (r.get(0)?, r.get(1)?);
                    if state == 1 {
                        depth.dead = n as u64;
                    } else {
                        depth.pending = n as u64;
                    }
                }
                Ok(depth)
            })
            .map_err(backend)
    }

    pub async fn next_due_ms(&self, consumer: &str) -> QueueResult<Option<u64>> {
        let consumer = consumer.to_string();
        self.off_runtime(move |db| {
            db.read(|c| {
                c.prepare_cached("SELECT MIN(due_at_ms) FROM q_delivery WHERE consumer = ?1 AND state = 0")?
                    .query_row(params![consumer], |r| r.get::<_, Option<i64>>(0))
                    .optional()
            })
        })
        .await
        .map(|v| v.flatten().map(|ms| ms as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::SyncMode;

    #[tokio::test]
    async fn an_id_forgotten_by_the_dedup_window_but_still_queued_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(SqliteDb::open(&dir.path().join("bss.sqlite"), SyncMode::Normal).unwrap());
        let q = SqliteQueue::new(db.clone());
        let msg = NewMessage { id: "m1".into(), subject: "a.b".into(), body: b"{}".to_vec(), ordering_key: None };
        assert!(q.publish(&msg, &["c".to_string()]).await.unwrap());
        // As if the window had passed while the message sat in the queue (a dead letter, say).
        db.write(|tx| tx.execute("DELETE FROM q_seen", [])).unwrap();
        assert!(!q.publish(&msg, &["c".to_string()]).await.unwrap());
        let claimed = q.claim("c", 10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(claimed.len(), 1, "one delivery, not two");
    }
}
