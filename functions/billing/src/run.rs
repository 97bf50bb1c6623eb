//! Bill runs: one call starts a run for a bill cycle day (and period), which fans out over the
//! queue — one message per batch of [`ACCOUNTS_PER_MESSAGE`] accounts, with deterministic message
//! ids (`<runId>.<n>`), so a re-published batch is delivered once — to `billing-worker`
//! instances, as many as the platform runs. Each account is billed by
//! [`crate::bills::bill_account`] (exactly once, whatever redeliveries and reruns).
//!
//! Progress: a worker marks each account done (`billRunAccount/<run>.<account>`, created with
//! compare-and-swap, and only the creator bumps the run's `done` counter, so a redelivery never
//! counts twice) or failed (`billRunFailure`, with the reason; counted once the same way). The
//! run's status answers accounts done / total, failures, elapsed time and an estimate of the
//! remaining time; `POST billRun/{id}/retry` re-bills the failed accounts alone.

use bss_domain::billing::period::BillPeriod;
use bss_kit::ApiError;
use bss_kit::kv::{KvBackend, StoreError, Versioned};
use bss_kit::resource::{Env, Kind};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bills::{AccountFacts, BASE, Draft, Unnumbered, finish, issue_doc, number_bills};
use bss_domain::billing::number::BillState;

/// Bill runs (BSS extension).
pub const RUN: Kind = Kind { collection: "billRun", type_name: "BillRun", base_path: BASE, domain: "billing" };
/// Accounts per queue message.
pub const ACCOUNTS_PER_MESSAGE: usize = 50;
/// Most accounts one run bills.
pub const RUN_ACCOUNTS_MAX: usize = 2_000_000;
/// The queue subject of run batches.
pub const SUBJECT: &str = "billing.run";

const DONE: &str = "billRunAccount";
const FAILED: &str = "billRunFailure";

/// `POST billRun` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    /// Accounts of this bill cycle day (default: every account, each on its own cycle).
    #[serde(default)]
    pub bill_cycle_day: Option<u32>,
    /// Start of the period to bill (default: each account's last closed period).
    #[serde(default)]
    pub period_start: Option<NaiveDate>,
    /// Only these accounts.
    #[serde(default)]
    pub accounts: Option<Vec<String>>,
    /// Number and post the bills (default true); false leaves them `new` for review.
    #[serde(default)]
    pub validate: Option<bool>,
}

/// One batch of a run, as queued.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// The tenant.
    pub tenant_id: String,
    /// The run.
    pub run_id: String,
    /// The run's time (the bills' issue time).
    pub at: DateTime<Utc>,
    /// Period start, if the run names one.
    #[serde(default)]
    pub period_start: Option<NaiveDate>,
    /// The cycle day filter.
    #[serde(default)]
    pub bill_cycle_day: Option<u32>,
    /// Whether to validate.
    pub validate: bool,
    /// The accounts.
    pub accounts: Vec<String>,
}

fn counter_key(env_tenant: &str, run: &str, what: &str) -> String {
    format!("t/{env_tenant}/billRunCount/{run}.{what}")
}

/// Starts a run: stores it and queues its batches. Answers the run document.
pub fn start<B: KvBackend>(env: &Env<'_, B>, req: RunRequest, now: DateTime<Utc>) -> Result<Value, ApiError> {
    if let Some(d) = req.bill_cycle_day
        && !(1..=28).contains(&d)
    {
        return Err(ApiError::unprocessable("billCycleDay: must be 1 to 28"));
    }
    let accounts: Vec<String> = match req.accounts {
        Some(a) => a,
        None => {
            let prefix = format!("t/{}/billingAccount/", env.tenant.tenant_id);
            env.store.list_keys(&prefix, RUN_ACCOUNTS_MAX)?.into_iter().map(|k| k[prefix.len()..].to_string()).collect()
        }
    };
    if accounts.len() > RUN_ACCOUNTS_MAX {
        return Err(ApiError::payload_too_large(format!("at most {RUN_ACCOUNTS_MAX} accounts per run")));
    }
    let run_id = bss_kit::ids::new_id();
    let validate = req.validate.unwrap_or(true);
    let body = json!({
        "state": "inProgress",
        "billCycleDay": req.bill_cycle_day,
        "periodStart": req.period_start,
        "validate": validate,
        "accountsTotal": accounts.len(),
        "startedAt": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let change = env.resources(RUN).create_with_id(env, &bss_kit::resource::NoHooks, &run_id, body)?;
    for (n, chunk) in accounts.chunks(ACCOUNTS_PER_MESSAGE).enumerate() {
        let batch = Batch {
            tenant_id: env.tenant.tenant_id.clone(),
            run_id: run_id.clone(),
            at: now,
            period_start: req.period_start,
            bill_cycle_day: req.bill_cycle_day,
            validate,
            accounts: chunk.to_vec(),
        };
        queue(&batch, &format!("{run_id}.{n}"))?;
    }
    Ok(change.after.unwrap_or_default())
}

fn queue(batch: &Batch, id: &str) -> Result<(), ApiError> {
    let body = serde_json::to_vec(batch).map_err(|e| ApiError::internal(e.to_string()))?;
    bss_kit::events::publish(SUBJECT, body, Some(id.to_string()), None)
        .map_err(|e| ApiError::service_unavailable("the queue is unavailable; retry", e.to_string()))?;
    Ok(())
}

/// Bills a batch (the worker's job): each account once; failures recorded, never thrown, so
/// one bad account does not hold the others back. In three passes: every account's draft bill,
/// then one reservation of numbers for the batch's drafts, then each bill posted and the account
/// marked done.
pub fn bill_batch<B: KvBackend>(env: &Env<'_, B>, batch: &Batch) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    // The catalog once per batch, on the first account that needs billing.
    let mut snap = None;
    let mut drafted = Vec::new();
    for account in &batch.accounts {
        let marker = format!("{}.{account}", batch.run_id);
        if docs.get::<Value>(DONE, &marker)?.is_some() {
            continue;
        }
        if snap.is_none() {
            snap = Some(bss_kit::catalog::snapshot(env)?);
        }
        match draft_one(env, batch, account, snap.as_ref()) {
            Ok(Some(d)) => drafted.push(d),
            Ok(None) => mark(
                env,
                batch,
                account,
                Ok(json!({"skipped": "another bill cycle day, or rolled up into its payer"})),
            )?,
            // The store itself failing: let the queue retry the batch.
            Err(e) if e.status >= 500 => return Err(e),
            Err(e) => mark(env, batch, account, Err(e))?,
        }
    }
    if batch.validate {
        // Each draft's document moves into the numbering, which answers it numbered.
        let unnumbered: Vec<Unnumbered> = drafted
            .iter_mut()
            .filter(|(_, d)| d.bill.bill_no.is_none() && d.bill.state != BillState::OnHold)
            .map(|(_, d)| Unnumbered {
                id: d.id.clone(),
                bill: d.bill.clone(),
                known: Some(Versioned { version: d.version, data: std::mem::take(&mut d.doc) }),
            })
            .collect();
        match number_bills(env, unnumbered) {
            Ok(numbered) => {
                for (id, doc) in numbered {
                    if let Some((_, d)) = drafted.iter_mut().find(|(_, d)| d.id == id) {
                        d.doc = doc;
                    }
                }
            }
            Err(e) if e.status >= 500 => return Err(e),
            // A bill the series refuses: each is numbered on its own below, so the failure is
            // that account's alone.
            Err(e) => {
                eprintln!("billing-worker: numbering the batch at once failed ({}); one by one", e.message);
                let docs = env.store.tenant(&env.tenant.tenant_id);
                for (_, d) in drafted.iter_mut().filter(|(_, d)| d.doc.is_null()) {
                    d.doc =
                        docs.get::<Value>(crate::bills::BILL.collection, &d.id)?.map(|v| v.data).unwrap_or_default();
                }
            }
        }
    }
    for (acct, d) in drafted {
        let outcome = (|| -> Result<Value, ApiError> {
            let doc = if batch.validate { issue_doc(env, &acct, d.doc, batch.at)? } else { d.doc };
            finish(env, &d.bill, &d.one_time, &d.corrections)?;
            Ok(json!({"bill": doc.get("id").and_then(Value::as_str).unwrap_or(&d.id)}))
        })();
        match outcome {
            Err(e) if e.status >= 500 => return Err(e),
            outcome => mark(env, batch, &acct.id, outcome)?,
        }
    }
    Ok(())
}

/// Records an account's outcome in the run, once: done (`Ok`: the bill, or why it was skipped)
/// or failed (`Err`: the reason).
fn mark<B: KvBackend>(
    env: &Env<'_, B>,
    batch: &Batch,
    account: &str,
    outcome: Result<Value, ApiError>,
) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let marker = format!("{}.{account}", batch.run_id);
    let (collection, doc, counter) = match outcome {
        Ok(doc) => {
            let counter = if doc.get("skipped").is_some() { "skipped" } else { "done" };
            (DONE, doc, counter)
        }
        Err(e) => (FAILED, json!({"billingAccount": {"id": account}, "reason": e.message, "code": e.code}), "failed"),
    };
    if created(docs.create(collection, &marker, doc))? {
        env.store.backend().increment(&counter_key(&env.tenant.tenant_id, &batch.run_id, counter), 1)?;
    }
    Ok(())
}

fn created<T>(r: Result<T, StoreError>) -> Result<bool, ApiError> {
    match r {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Step 1 for one account of the batch: its draft bill, or `None` when the run does not bill it.
fn draft_one<B: KvBackend>(
    env: &Env<'_, B>,
    batch: &Batch,
    account: &str,
    catalog: Option<&bss_domain::catalog::Snapshot>,
) -> Result<Option<(AccountFacts, Draft)>, ApiError> {
    let acct = crate::bills::account(env, account)?;
    // Another cycle day, or an account billed on its payer's consolidated bill.
    if batch.bill_cycle_day.is_some_and(|d| d != acct.bill_cycle_day) || crate::bills::rolls_up_into(&acct).is_some() {
        return Ok(None);
    }
    let period = batch.period_start.map(|start| BillPeriod::containing(start, acct.bill_cycle_day));
    let draft = crate::bills::draft(env, &acct, period, batch.at, Some(&batch.run_id), catalog)?;
    Ok(Some((acct, draft)))
}

fn count<B: KvBackend>(env: &Env<'_, B>, run: &str, what: &str) -> Result<u64, ApiError> {
    let key = counter_key(&env.tenant.tenant_id, run, what);
    Ok(env
        .store
        .backend()
        .get(&key)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0)
        .max(0) as u64)
}

/// The run's status: counts, failures with reasons, elapsed and estimated remaining time.
pub fn status<B: KvBackend>(env: &Env<'_, B>, id: &str, now: DateTime<Utc>) -> Result<Value, ApiError> {
    let mut doc = env.resources(RUN).get(id)?.data;
    let total = doc.get("accountsTotal").and_then(Value::as_u64).unwrap_or(0);
    let (done, skipped, failed) = (count(env, id, "done")?, count(env, id, "skipped")?, count(env, id, "failed")?);
    let finished = done + skipped + failed;
    let started = doc.get("startedAt").and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let elapsed_ms = started.map(|s| (now - s.to_utc()).num_milliseconds().max(0) as u64).unwrap_or(0);
    let remaining_ms = (finished > 0 && finished < total).then(|| elapsed_ms * (total - finished) / finished);
    let failures: Vec<Value> = env
        .store
        .tenant(&env.tenant.tenant_id)
        .prefix(FAILED)
        .map(|p| -> Result<Vec<Value>, ApiError> {
            let keys = env.store.list_keys(&format!("{p}{id}."), 1_000)?;
            let mut out = Vec::new();
            for (_, v) in env.store.backend().get_many(&keys)? {
                if let Some(d) = v.and_then(|b| serde_json::from_slice::<bss_kit::Versioned<Value>>(&b).ok()) {
                    out.push(d.data);
                }
            }
            Ok(out)
        })
        .transpose()?
        .unwrap_or_default();
    doc["accountsDone"] = json!(done);
    doc["accountsSkipped"] = json!(skipped);
    doc["accountsFailed"] = json!(failed);
    doc["failure"] = Value::Array(failures);
    doc["elapsedMs"] = json!(elapsed_ms);
    doc["estimatedRemainingMs"] = json!(remaining_ms);
    doc["state"] = json!(if finished >= total {
        if failed > 0 { "completedWithErrors" } else { "completed" }
    } else {
        "inProgress"
    });
    Ok(doc)
}

/// Re-queues the failed accounts of a run (their failure marks are cleared first).
pub fn retry<B: KvBackend>(env: &Env<'_, B>, id: &str) -> Result<Value, ApiError> {
    let run = env.resources(RUN).get(id)?.data;
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let prefix = docs.prefix(FAILED).ok_or_else(|| ApiError::bad_request("invalid tenant"))?;
    let keys = env.store.list_keys(&format!("{prefix}{id}."), RUN_ACCOUNTS_MAX)?;
    let accounts: Vec<String> = keys.iter().map(|k| k[prefix.len() + id.len() + 1..].to_string()).collect();
    if accounts.is_empty() {
        return Ok(json!({"retried": 0}));
    }
    env.store.backend().delete_many(&keys)?;
    env.store.backend().increment(&counter_key(&env.tenant.tenant_id, id, "failed"), -(accounts.len() as i64))?;
    let at = run
        .get("startedAt")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.to_utc());
    let batch_no = bss_kit::ids::new_id();
    for (n, chunk) in accounts.chunks(ACCOUNTS_PER_MESSAGE).enumerate() {
        let batch = Batch {
            tenant_id: env.tenant.tenant_id.clone(),
            run_id: id.to_string(),
            at: at.unwrap_or_else(Utc::now),
            period_start: run.get("periodStart").and_then(|v| serde_json::from_value(v.clone()).ok()),
            bill_cycle_day: run.get("billCycleDay").and_then(Value::as_u64).map(|d| d as u32),
            validate: run.get("validate").and_then(Value::as_bool).unwrap_or(true),
            accounts: chunk.to_vec(),
        };
        queue(&batch, &format!("{id}.retry.{batch_no}.{n}"))?;
    }
    Ok(json!({"retried": accounts.len()}))
}
