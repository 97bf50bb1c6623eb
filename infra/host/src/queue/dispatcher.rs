//! Runs queue consumers: for each `[[trigger.queue]]`, a loop that leases due deliveries, hands
//! each to a fresh instance of the consumer component, and records the outcome (ack, retry with
//! backoff, or dead letter after `max_attempts`).
//!
//! The lease is the handler's time limit plus a margin: a delivery whose host died is handed out
//! again once its lease runs out, by this host after a restart or by another one sharing Redis.

use super::{Delivery, Outcome, Queue, now_ms};
use crate::bindings::PlatformPre;
use crate::manifest::Consumer;
use crate::runtime::{is_deadline, new_store};
use crate::state::{AppCtx, ComponentCtx, HostState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use wasmtime::Engine;

/// Longest a dispatcher sleeps before looking again, even without a wake-up: other hosts may
/// have published (Redis), and retries fall due.
const POLL_MAX: Duration = Duration::from_millis(500);
/// Wait after a backend error before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

pub struct ConsumerRuntime {
    pub engine: Engine,
    pub spec: Consumer,
    pub ctx: Arc<ComponentCtx>,
    pub pre: PlatformPre<HostState>,
    pub wake: Arc<Notify>,
}

#[derive(Clone)]
pub struct DispatchEnv {
    pub app: Arc<AppCtx>,
    pub handler_timeout: Duration,
    pub memory_max_bytes: usize,
}

/// Run one consumer until `shutdown` turns true, then wait for the deliveries in progress.
pub async fn run(env: DispatchEnv, consumer: Arc<ConsumerRuntime>, mut shutdown: watch::Receiver<bool>) {
    let id = consumer.spec.component.clone();
    let slots = Arc::new(Semaphore::new(consumer.spec.concurrency));
    let lease = env.handler_timeout + Duration::from_secs(5);
    let queue: Queue = env.app.queue.clone();
    tracing::info!(consumer = %id, subjects = ?consumer.spec.subjects, "queue consumer started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let free = slots.available_permits();
        let claimed = if free == 0 { Ok(Vec::new()) } else { queue.claim(&id, free, lease).await };
        let batch = match claimed {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(consumer = %id, "claiming deliveries failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(ERROR_PAUSE) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        let got = batch.len();
        for delivery in batch {
            let Ok(permit) = slots.clone().acquire_owned().await else { break };
            let env = env.clone();
            let consumer = consumer.clone();
            tokio::spawn(async move {
                deliver(&env, &consumer, delivery).await;
                drop(permit);
                consumer.wake.notify_one();
            });
        }
        if got > 0 && got == free {
            continue; // there may be more ready right now
        }
        let wait = match queue.next_due_ms(&id).await {
            Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms())).min(POLL_MAX),
            _ => POLL_MAX,
        };
        tokio::select! {
            _ = consumer.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    // Drain: wait until every slot is free again (deliveries in progress finished).
    let _all = slots.acquire_many(consumer.spec.concurrency as u32).await;
    tracing::info!(consumer = %id, "queue consumer stopped");
}

async fn deliver(env: &DispatchEnv, consumer: &ConsumerRuntime, d: Delivery) {
    let id = &consumer.spec.component;
    let started = Instant::now();
    let result = call_handler(env, consumer, &d).await;
    let policy = consumer.spec.retry;
    let outcome = match result {
        Ok(()) => Outcome::Ack,
        Err(error) => {
            let retry_at_ms =
                (d.attempt < policy.max_attempts).then(|| now_ms() + policy.backoff(d.attempt).as_millis() as u64);
            Outcome::Failed { error, retry_at_ms }
        }
    };
    let label = match &outcome {
        Outcome::Ack => "ack",
        Outcome::Failed { retry_at_ms: Some(_), .. } => "retry",
        Outcome::Failed { retry_at_ms: None, .. } => "dead",
    };
    env.app.metrics.delivered(id, label);
    match &outcome {
        Outcome::Failed { error, .. } => tracing::warn!(
            consumer = %id, message = %d.message_id, subject = %d.subject, attempt = d.attempt, outcome = label,
            latency_us = started.elapsed().as_micros() as u64, "delivery failed: {error}"
        ),
        Outcome::Ack => tracing::debug!(consumer = %id, message = %d.message_id, attempt = d.attempt, "delivered"),
    }
    if let Err(e) = env.app.queue.complete(&d, &outcome).await {
        // The lease will run out and the message will be delivered again: at-least-once.
        tracing::error!(consumer = %id, message = %d.message_id, "recording the outcome failed: {e}");
    }
}

/// Run the handler; `Err` carries the reason kept with a retry or a dead letter.
async fn call_handler(env: &DispatchEnv, consumer: &ConsumerRuntime, d: &Delivery) -> Result<(), String> {
    let mut store = new_store(&consumer.engine, &env.app, &consumer.ctx, env.memory_max_bytes, env.handler_timeout);
    let msg = crate::bindings::bss::messaging::types::Message {
        id: d.message_id.clone(),
        subject: d.subject.clone(),
        body: d.body.clone(),
        ordering_key: d.ordering_key.clone(),
        attempt: d.attempt,
        published_at_ms: d.published_at_ms,
    };
    let call = async {
        let t = Instant::now();
        let instance = consumer.pre.instantiate_async(&mut store).await?;
        env.app.metrics.instantiated(&consumer.spec.component, t.elapsed());
        instance.bss_messaging_handler().call_handle_message(&mut store, &msg).await
    };
    match tokio::time::timeout(env.handler_timeout + Duration::from_secs(1), call).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(reason))) => Err(reason),
        Ok(Err(e)) => {
            let e = anyhow::Error::from(e);
            if is_deadline(&e) {
                Err(format!("handler did not finish within {} ms", env.handler_timeout.as_millis()))
            } else {
                tracing::debug!(consumer = %consumer.spec.component, "handler trapped: {e:?}");
                Err(format!("handler trapped: {}", e.root_cause()))
            }
        }
        Err(_) => Err(format!("handler did not finish within {} ms", env.handler_timeout.as_millis())),
    }
}
