//! `tc-queueconsumer`: test queue consumer (world `bss:messaging/consumer`, no HTTP). Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p tc-queueconsumer`; the end-to-end queue tests
//! publish through `tc-queuetest` and read back what this component recorded.
//!
//! For every delivery of message `id` it increments `q/attempts/<id>` (wasi:keyvalue atomics) —
//! call the result `attempt` — and stores the delivery's metadata at `q/meta/<id>`. Then, per the
//! message's JSON body (a non-JSON body is just handled):
//! - `"sleepMs": n` sleeps n ms; `"busyMs": n` spins the CPU for n ms (time-limit tests);
//! - `"trap": true` panics (a trap);
//! - `"alwaysFail": true` returns `err("planned failure <attempt>")`;
//! - `"failTimes": n` returns `err("planned failure <attempt>")` while `attempt <= n`;
//! - `"publish": {"subject": s, "body": any}` publishes a follow-up message (id `<id>.fwd`);
//! - otherwise (and after all that) it appends `id` to `q/order/<orderingKey>` if the message has an
//!   ordering key (CAS loop; an id already there is not added twice), marks `q/ok/<id>` and
//!   returns ok.

use bss_kit::kv::{KvBackend, Store, StoreError};
use bss_kit::wasi_kv::{DEFAULT_STORE, WasiKv};
use serde_json::{Value, json};

mod keys;

use bss_kit::events::{Message, PublishFailure, publish};

bss_kit::export_consumer!(handle);

fn handle(msg: Message) -> Result<(), String> {
    let kv = WasiKv::open(DEFAULT_STORE).map_err(|e| e.to_string())?;
    let attempt = kv.increment(&keys::attempts_key(&msg.id), 1).map_err(|e| e.to_string())?;
    let meta = json!({
        "subject": msg.subject, "hostAttempt": msg.attempt, "orderingKey": msg.ordering_key,
        "publishedAtMs": msg.published_at_ms, "attempt": attempt,
    });
    kv.set(&keys::meta_key(&msg.id), meta.to_string().as_bytes()).map_err(|e| e.to_string())?;

    let body: Value = serde_json::from_slice(&msg.body).unwrap_or(Value::Null);
    let num = |name: &str| body.get(name).and_then(Value::as_u64);
    let flag = |name: &str| body.get(name).and_then(Value::as_bool).unwrap_or(false);

    if let Some(ms) = num("sleepMs") {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if let Some(ms) = num("busyMs") {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        let mut spins = 0u64;
        while std::time::Instant::now() < until {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
    if flag("trap") {
        panic!("planned trap (attempt {attempt})");
    }
    if flag("alwaysFail") || num("failTimes").is_some_and(|n| i64::try_from(n).unwrap_or(i64::MAX) >= attempt) {
        return Err(format!("planned failure {attempt}"));
    }
    if let Some(fwd) = body.get("publish") {
        let subject = fwd.get("subject").and_then(Value::as_str).ok_or("publish.subject must be a string")?;
        let body = serde_json::to_vec(fwd.get("body").unwrap_or(&Value::Null)).map_err(|e| e.to_string())?;
        publish(subject, body, Some(format!("{}.fwd", msg.id)), None).map_err(|e| match e {
            PublishFailure::Invalid(m) => format!("follow-up refused: {m}"),
            PublishFailure::Unavailable(m) => format!("queue unavailable: {m}"),
        })?;
    }
    if let Some(key) = &msg.ordering_key {
        append_once(&Store::new(&kv), &keys::order_key(key), &msg.id)?;
    }
    kv.set(&keys::ok_key(&msg.id), attempt.to_string().as_bytes()).map_err(|e| e.to_string())?;
    Ok(())
}

/// Appends `id` to the JSON list at `key` unless it is already there (CAS create or update).
fn append_once<B: KvBackend>(store: &Store<B>, key: &str, id: &str) -> Result<(), String> {
    for _ in 0..8 {
        let appended = store.update(key, |cur: &bss_kit::Versioned<Vec<String>>| {
            let mut ids = cur.data.clone();
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_string());
            }
            Ok(ids)
        });
        match appended {
            Ok(_) => return Ok(()),
            Err(StoreError::NotFound(_)) => match store.create(key, vec![id.to_string()]) {
                Ok(_) => return Ok(()),
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("could not append to {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_kit::kv::MemKv;

    #[test]
    fn append_once_creates_appends_and_dedupes() {
        let store = Store::new(MemKv::new());
        append_once(&store, "q/order/k", "a").unwrap();
        append_once(&store, "q/order/k", "b").unwrap();
        append_once(&store, "q/order/k", "a").unwrap();
        assert_eq!(store.get::<Vec<String>>("q/order/k").unwrap().unwrap().data, ["a", "b"]);
    }
}
