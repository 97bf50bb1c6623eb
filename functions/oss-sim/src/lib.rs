//! `oss-sim`: a simulated OSS, so the whole order flow runs locally and in the tests. A queue
//! consumer of `oss.task.>` (no HTTP). Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p oss-sim`; exercised by
//! `cargo test -p bss-host --test e2e_order`.
//!
//! For each task (`{tenantId, orderId, itemId, taskId, taskType, characteristic, ...}`) it waits
//! `oss_delay_ms` (variable, default 50, at most 30,000), then fails it with probability
//! `oss_failure_rate_percent` (0–100; the draw is a hash of the task's message id, so a run is
//! reproducible), and ALWAYS fails a task whose item carries the characteristic
//! `{"name": "ossSimulation", "value": "fail"}`; `"value": "slow"` adds 3 s to the delay (a
//! window to cancel an order in flight, deterministically). A completed `activate`/`provision`
//! task allocates what the network would — a SIM's ICCID and an MSISDN for a resource
//! specification named like SIM, a line id for anything else — derived from the message id.
//! It reports on `oss.result` with the message id `<task message id>.result` (the same for
//! every attempt, so a redelivered task reports once). `oss.task.cancel` is acknowledged: the
//! simulator keeps no state to undo.

use bss_kit::events::{Message, PublishFailure, publish};
use serde_json::{Value, json};

bss_kit::export_consumer!(handle);

/// Longest configurable delay.
const MAX_DELAY_MS: u64 = 30_000;
/// Extra delay of an item marked `ossSimulation: slow`.
const SLOW_MS: u64 = 3_000;

fn variable(name: &str, default: u64) -> u64 {
    spin_sdk::variables::get(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// FNV-1a: a stable hash for reproducible draws and allocations.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn marked(task: &Value, value: &str) -> bool {
    task.get("characteristic").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("name").and_then(Value::as_str) == Some("ossSimulation")
            && c.get("value").and_then(Value::as_str) == Some(value)
    })
}

fn allocate(task: &Value, id: &str) -> Vec<Value> {
    let kind = task.get("taskType").and_then(Value::as_str).unwrap_or_default();
    if !matches!(kind, "activate" | "provision") {
        return Vec::new();
    }
    let h = hash(id);
    let spec = task.pointer("/specification/name").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    if spec.contains("sim") {
        vec![
            json!({"name": "ICCID", "value": format!("8933{:015}", h % 1_000_000_000_000_000)}),
            json!({"name": "MSISDN", "value": format!("+336{:08}", h % 100_000_000)}),
        ]
    } else {
        vec![json!({"name": "lineId", "value": format!("LINE-{:010}", h % 10_000_000_000)})]
    }
}

fn handle(msg: Message) -> Result<(), String> {
    if msg.subject == "oss.task.cancel" {
        return Ok(());
    }
    let task: Value = match serde_json::from_slice(&msg.body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("oss-sim: dropping {}: not JSON ({e})", msg.id);
            return Ok(());
        }
    };
    let mut delay = variable("oss_delay_ms", 50).min(MAX_DELAY_MS);
    if marked(&task, "slow") {
        delay += SLOW_MS;
    }
    std::thread::sleep(std::time::Duration::from_millis(delay));
    let rate = variable("oss_failure_rate_percent", 0).min(100);
    let fails = marked(&task, "fail") || hash(&msg.id) % 100 < rate;
    let mut result = json!({
        "tenantId": task.get("tenantId"), "orderId": task.get("orderId"), "itemId": task.get("itemId"),
        "taskId": task.get("taskId"), "state": if fails { "failed" } else { "completed" },
    });
    if fails {
        result["reason"] = json!(format!("simulated failure of {}", msg.id));
    } else {
        result["characteristic"] = Value::Array(allocate(&task, &msg.id));
    }
    let body = serde_json::to_vec(&result).map_err(|e| e.to_string())?;
    publish(
        "oss.result",
        body,
        Some(format!("{}.result", msg.id)),
        task.get("orderId").and_then(Value::as_str).map(str::to_string),
    )
    .map_err(|e| match e {
        PublishFailure::Invalid(m) => format!("result refused: {m}"),
        PublishFailure::Unavailable(m) => format!("queue unavailable: {m}"),
    })?;
    Ok(())
}
