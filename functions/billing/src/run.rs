//! Bill runs: one call starts a run for a bill cycle day (and period), which fans out over the
//! queue — one message per batch of [`ACCOUNTS_PER_MESSAGE`] accounts, with deterministic message
//! ids (`<runId>.<n>`), so a re-published batch is delivered once — to `billing-worker`
//! instances, as many as the platform runs. Each account is billed by
//! [`crate::bills::bill_account`] (exactly once, whatever redeliveries and reruns).
//!
//! A run over every account does not list them in the call: it queues a [`Plan`], and the
//! worker goes through the accounts [`PLAN_PAGE`] at a time — each step queues its page's batches
//! and then the next step (`<runId>.plan.<k>`), so a run of millions of accounts takes constant
//! memory, answers at once, and a crash in the middle of queueing redelivers the step, which
//! publishes the same message ids again. The run's `accountsTotal` appears when the last step
//! is through (until then `accountsQueued` counts); a run naming its accounts knows it at once.
//! The first step also queues a [`Count`] of the accounts there are then, which goes through the
//! keys [`COUNT_PAGE`] a delivery (listing only, nothing read, beside the plan) and records
//! `accountsEstimated`, so that the status estimates the time left from the start instead of
//! from the last page on.
//!
//! Progress is counted per batch, once: when a worker has been through every account of a batch
//! it adds the batch's counts (done, skipped, failed) to one of the run's [`TALLY_SHARDS`] tally
//! documents (`billRunTally/<run>.<shard>`) in the same compare-and-swap that records the batch
//! as counted there — so a redelivered batch, or a crash between the last bill and the count,
//! never counts twice or not at all. A failed account also gets a mark with the reason
//! (`billRunFailure/<run>.<account>`), which a redelivery skips; the run's status answers accounts
//! done / total, failures, elapsed time and an estimate of the remaining time;
//! `POST billRun/{id}/retry` re-bills the failed accounts alone.
//!
//! A dunning run over every account ([`crate::dunning`]) goes the same way: its template batch
//! carries a [`DunningSpec`](crate::dunning::DunningSpec), its plan lists the accounts with a
//! ledger, and its batches are dunned instead of billed, counted in the same tallies.

use bss_domain::billing::period::BillPeriod;
use bss_kit::ApiError;
use bss_kit::kv::{KvBackend, ReadAhead, Store, StoreError};
use bss_kit::resource::{Env, Kind};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bills::{AccountFacts, BASE, Unnumbered, finish, issue_draft, number_bills, store_draft};
use bss_domain::billing::number::BillState;

/// Bill runs (BSS extension).
pub const RUN: Kind = Kind { collection: "billRun", type_name: "BillRun", base_path: BASE, domain: "billing" };
/// Accounts per queue message of a new run. 100 rather than 50 (until 2026-11-28): what a
/// batch costs once — its catalog tables, its reservation of bill numbers, its queue delivery and
/// its tally — is shared by twice the accounts: bill runs of 100,000 accounts +4–11% accounts per
/// CPU-second in alternating rounds (README, Benchmarks); a redelivered batch re-reads 100.
pub const ACCOUNTS_PER_MESSAGE: usize = 100;
/// Accounts per message of a run planned before plans carried their size (see
/// [`Plan::accounts_per_message`]).
const ACCOUNTS_PER_MESSAGE_BEFORE: usize = 50;
/// Most accounts one run bills.
pub const RUN_ACCOUNTS_MAX: usize = 2_000_000;
/// Accounts one step of a [`Plan`] lists and queues.
pub const PLAN_PAGE: usize = 10_000;
const _: () = assert!(PLAN_PAGE.is_multiple_of(ACCOUNTS_PER_MESSAGE), "every page but the last fills whole batches");
const _: () = assert!(PLAN_PAGE.is_multiple_of(ACCOUNTS_PER_MESSAGE_BEFORE));
const _: () = assert!(RUN_ACCOUNTS_MAX.is_multiple_of(PLAN_PAGE));
/// The queue subject of run batches.
pub const SUBJECT: &str = "billing.run";

const FAILED: &str = "billRunFailure";
const TALLY: &str = "billRunTally";
/// Tally documents per run: batches finishing at once rarely meet on one, and each holds the
/// keys of about 1/16 of the run's batches (a million accounts: 1,250 keys each).
pub const TALLY_SHARDS: u32 = 16;

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
    /// Set on a dunning run's batches: what they act on (a bill run's batches have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dunning: Option<crate::dunning::DunningSpec>,
}

impl Batch {
    /// The resource the batch's run is: a bill run or a dunning run.
    fn run_kind(&self) -> Kind {
        if self.dunning.is_some() { crate::dunning::RUN } else { RUN }
    }

    /// The collection whose ids are the accounts a run over every account goes through: every
    /// billing account for a bill run; for a dunning run, those with a ledger (only they can
    /// owe anything).
    fn accounts_collection(&self) -> &'static str {
        if self.dunning.is_some() { crate::payments::LEDGER } else { "billingAccount" }
    }

    /// The store prefix of [`Batch::accounts_collection`] for the batch's tenant (the kit's key
    /// layout): a run's plan and count list the account keys under it.
    fn accounts_prefix<B: KvBackend>(&self, env: &Env<'_, B>) -> Result<String, ApiError> {
        env.store
            .tenant(&self.tenant_id)
            .prefix(self.accounts_collection())
            .ok_or_else(|| ApiError::bad_request(format!("invalid tenant {:?}", self.tenant_id)))
    }
}

/// One step of queueing a run over every account: the next [`PLAN_PAGE`] accounts after
/// `after`, whose batches are numbered on from `accounts_before / accounts_per_message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The step's number (its message id is `<runId>.plan.<step>`).
    pub plan_step: u64,
    /// The last account key queued by the steps before (none: from the first account).
    #[serde(default)]
    pub after: Option<String>,
    /// Accounts queued by the steps before (a multiple of `accounts_per_message`).
    pub accounts_before: u64,
    /// Accounts per batch of this run: the size it was planned with, kept by every step, since
    /// its batches' message ids are numbered by it — a step numbering them by another size than
    /// the steps before would reuse their ids, which the queue drops as already published, and
    /// leave those accounts unbilled. Absent in a plan queued before plans carried it: 50.
    #[serde(default = "accounts_per_message_before")]
    pub accounts_per_message: usize,
    /// What each batch of the run carries, without accounts.
    pub template: Batch,
}

fn accounts_per_message_before() -> usize {
    ACCOUNTS_PER_MESSAGE_BEFORE
}

/// Account keys one delivery of a [`Count`] lists (a page of [`PLAN_PAGE`] at a time): a
/// delivery stays far inside the queue's time limit however many accounts there are.
pub const COUNT_PAGE: usize = 10 * PLAN_PAGE;

/// One step of counting a run's accounts for its estimate: the next [`COUNT_PAGE`] keys after
/// `after`, added to `counted`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Count {
    /// The step's number (its message id is `<runId>.count.<step>`).
    pub count_step: u64,
    /// The last key counted before.
    pub after: Option<String>,
    /// Keys counted before.
    pub counted: u64,
    /// The run's batch template (its tenant, run and kind).
    pub template: Batch,
}

/// A message of the run's subject: a step of queueing, a step of counting, or a batch to bill.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Work {
    /// Queue the next page of accounts (only a plan has `planStep`).
    Plan(Plan),
    /// Count the next keys for the estimate (only a count has `countStep`).
    Count(Count),
    /// Bill these accounts.
    Batch(Batch),
}

impl Work {
    /// The tenant whose run this is.
    pub fn tenant_id(&self) -> &str {
        match self {
            Work::Plan(plan) => &plan.template.tenant_id,
            Work::Count(count) => &count.template.tenant_id,
            Work::Batch(batch) => &batch.tenant_id,
        }
    }
}

/// Does a message of the run's subject (the worker's job); `message_id` is its queue id.
pub fn work<B: KvBackend>(env: &Env<'_, B>, work: &Work, message_id: &str) -> Result<(), ApiError> {
    match work {
        Work::Plan(plan) => plan_step(env, plan),
        Work::Count(count) => count_step(env, count),
        Work::Batch(batch) => match &batch.dunning {
            Some(spec) => crate::dunning::dun_batch(env, batch, spec, message_id),
            None => bill_batch(env, batch, message_id),
        },
    }
}

/// Per-account counters of runs started before the tallies (still read by [`status`], so such a
/// run completes when the new worker counts its remaining batches).
fn legacy_counter_key(env_tenant: &str, run: &str, what: &str) -> String {
    format!("t/{env_tenant}/billRunCount/{run}.{what}")
}

/// One tally document of a run: the counts of the batches it names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tally {
    done: u64,
    skipped: u64,
    /// Signed: a retry takes its accounts off the failures before their batches count them again.
    failed: i64,
    /// Dunning runs: the actions their accounts took.
    #[serde(default)]
    actions: u64,
    /// The batches (queue message ids, shortened by the run id) counted here.
    batches: std::collections::BTreeSet<String>,
}

/// A batch's counts, or a run's (the sum of its batches').
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Accounts billed (dunned, for a dunning run).
    pub done: u64,
    /// Accounts the run does not bill (another cycle day, rolled up).
    pub skipped: u64,
    /// Accounts that failed.
    pub failed: i64,
    /// Dunning actions taken.
    pub actions: u64,
}

/// Starts a run: stores it and queues its batches. Answers the run document.
pub fn start<B: KvBackend>(env: &Env<'_, B>, req: RunRequest, now: DateTime<Utc>) -> Result<Value, ApiError> {
    if let Some(d) = req.bill_cycle_day
        && !(1..=28).contains(&d)
    {
        return Err(ApiError::unprocessable("billCycleDay: must be 1 to 28"));
    }
    let run_id = bss_kit::ids::new_id();
    let validate = req.validate.unwrap_or(true);
    let template = Batch {
        tenant_id: env.tenant.tenant_id.clone(),
        run_id: run_id.clone(),
        at: now,
        period_start: req.period_start,
        bill_cycle_day: req.bill_cycle_day,
        validate,
        accounts: Vec::new(),
        dunning: None,
    };
    let mut body = json!({
        "state": "inProgress",
        "billCycleDay": req.bill_cycle_day,
        "periodStart": req.period_start,
        "validate": validate,
        "startedAt": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let Some(named) = req.accounts else {
        return start_plan(env, body, template);
    };
    if named.len() > RUN_ACCOUNTS_MAX {
        return Err(ApiError::payload_too_large(format!("at most {RUN_ACCOUNTS_MAX} accounts per run")));
    }
    // An account named twice is billed and counted once.
    let mut seen = std::collections::HashSet::with_capacity(named.len());
    let accounts: Vec<String> = named.into_iter().filter(|a| seen.insert(a.clone())).collect();
    body["accountsTotal"] = json!(accounts.len());
    let change = env.resources(RUN).create_with_id(env, &bss_kit::resource::NoHooks, &run_id, body)?;
    for (n, chunk) in accounts.chunks(ACCOUNTS_PER_MESSAGE).enumerate() {
        let batch = Batch { accounts: chunk.to_vec(), ..template.clone() };
        publish(&batch, &format!("{run_id}.{n}"))?;
    }
    Ok(change.after.unwrap_or_default())
}

/// Stores the run `body` (a bill run's or a dunning run's, as `template` says) and queues the
/// first step of going through every account; the worker lists them a page at a time. Answers
/// the run document.
pub(crate) fn start_plan<B: KvBackend>(env: &Env<'_, B>, mut body: Value, template: Batch) -> Result<Value, ApiError> {
    body["accountsQueued"] = json!(0);
    let run_id = template.run_id.clone();
    let change = env.resources(template.run_kind()).create_with_id(env, &bss_kit::resource::NoHooks, &run_id, body)?;
    let plan =
        Plan { plan_step: 0, after: None, accounts_before: 0, accounts_per_message: ACCOUNTS_PER_MESSAGE, template };
    publish(&plan, &format!("{run_id}.plan.0"))?;
    Ok(change.after.unwrap_or_default())
}

/// One step of a run over every account (see the module doc): queues the batches of the next
/// page of accounts, records how many are queued on the run, then queues the next step — or,
/// when the accounts are through, records the run's total. Run again for the same step (a
/// redelivery), it publishes the same message ids and records the same counts.
pub fn plan_step<B: KvBackend>(env: &Env<'_, B>, plan: &Plan) -> Result<(), ApiError> {
    let per_message = plan.accounts_per_message;
    if per_message == 0
        || !PLAN_PAGE.is_multiple_of(per_message)
        || !plan.accounts_before.is_multiple_of(per_message as u64)
    {
        // Only a message this code did not write: refused, not guessed at.
        return Err(ApiError::unprocessable(format!(
            "plan step {}: {per_message} accounts a message does not divide a page of {PLAN_PAGE} or the {} accounts before",
            plan.plan_step, plan.accounts_before
        )));
    }
    let run_id = &plan.template.run_id;
    let prefix = plan.template.accounts_prefix(env)?;
    let room = RUN_ACCOUNTS_MAX.saturating_sub(plan.accounts_before as usize);
    let keys = env.store.list_keys_after(&prefix, plan.after.as_deref(), PLAN_PAGE.min(room))?;
    let first = plan.accounts_before / per_message as u64;
    for (n, chunk) in keys.chunks(per_message).enumerate() {
        let accounts = chunk.iter().map(|k| k[prefix.len()..].to_string()).collect();
        publish(&Batch { accounts, ..plan.template.clone() }, &format!("{run_id}.{}", first + n as u64))?;
    }
    let queued = plan.accounts_before + keys.len() as u64;
    let through = keys.len() < PLAN_PAGE || queued as usize >= RUN_ACCOUNTS_MAX;
    if through && queued as usize >= RUN_ACCOUNTS_MAX {
        eprintln!("billing: run {run_id} stops at {RUN_ACCOUNTS_MAX} accounts; run the rest by cycle day or by name");
    }
    env.resources(plan.template.run_kind()).modify(env, &bss_kit::resource::NoHooks, run_id, |doc| {
        let mut doc = doc.clone();
        let before = doc.get("accountsQueued").and_then(Value::as_u64).unwrap_or(0);
        doc["accountsQueued"] = json!(before.max(queued));
        if through {
            doc["accountsTotal"] = json!(queued);
        }
        Ok(doc)
    })?;
    // The next step after the page's batches, not ahead of them: ahead, the steps queue the
    // whole run within seconds (its total known early), but the queue then holds every batch at
    // once and a run of 100,000 accounts billed 4–5% fewer accounts a second (four runs each,
    // alternating, 2026-11-28: 2,273–2,381 against 2,439–2,703).
    if !through && let Some(last) = keys.last() {
        let next = Plan {
            plan_step: plan.plan_step + 1,
            after: Some(last.clone()),
            accounts_before: queued,
            accounts_per_message: per_message,
            template: plan.template.clone(),
        };
        publish(&next, &format!("{run_id}.plan.{}", next.plan_step))?;
        if plan.plan_step == 0 {
            // The total is known only at the last step: a count beside the plan estimates it.
            let count =
                Count { count_step: 0, after: Some(last.clone()), counted: queued, template: plan.template.clone() };
            publish(&count, &format!("{run_id}.count.0"))?;
        }
    }
    Ok(())
}

/// One step of counting a run's accounts (see the module doc): lists up to [`COUNT_PAGE`] keys
/// after the last one counted, then queues the next step, or records the estimate when the keys
/// (or the run's limit) are through. A redelivery lists the same keys and publishes the same id.
pub fn count_step<B: KvBackend>(env: &Env<'_, B>, count: &Count) -> Result<(), ApiError> {
    let prefix = count.template.accounts_prefix(env)?;
    let (mut counted, mut after, mut through) = (count.counted, count.after.clone(), false);
    for _ in 0..COUNT_PAGE / PLAN_PAGE {
        let keys = env.store.list_keys_after(&prefix, after.as_deref(), PLAN_PAGE)?;
        counted += keys.len() as u64;
        through = keys.len() < PLAN_PAGE || counted as usize >= RUN_ACCOUNTS_MAX;
        after = keys.into_iter().last();
        if through {
            break;
        }
    }
    let run_id = &count.template.run_id;
    if !through {
        let next = Count { count_step: count.count_step + 1, after, counted, template: count.template.clone() };
        return publish(&next, &format!("{run_id}.count.{}", next.count_step));
    }
    let estimated = counted.min(RUN_ACCOUNTS_MAX as u64);
    env.resources(count.template.run_kind()).modify(env, &bss_kit::resource::NoHooks, run_id, |doc| {
        let mut doc = doc.clone();
        doc["accountsEstimated"] = json!(estimated);
        Ok(doc)
    })?;
    Ok(())
}

/// Publishes a message of the run's subject under its deterministic id.
fn publish<T: Serialize>(message: &T, id: &str) -> Result<(), ApiError> {
    let body = serde_json::to_vec(message).map_err(|e| ApiError::internal(e.to_string()))?;
    bss_kit::events::publish(SUBJECT, body, Some(id.to_string()), None)
        .map_err(|e| ApiError::service_unavailable("the queue is unavailable; retry", e.to_string()))?;
    Ok(())
}

/// Bills a batch (the worker's job): each account once; failures recorded, never thrown, so
/// one bad account does not hold the others back. In three passes: every account's bill built
/// (not stored; what the batch reads account by account is read ahead in a few batch calls, see
/// [`crate::bills::read_ahead`]), then one reservation of numbers for the batch's bills, each bill
/// written once with its number, then each bill posted; then the batch's counts go to the run's
/// tally, once. A run that does not validate stores its bills unnumbered instead. `batch_id`:
/// the batch's queue message id.
///
/// A redelivered batch (its worker crashed, or the store failed) bills its accounts again: a
/// bill already written is found and only posted (once); one its worker had numbers reserved
/// for but did not write takes the same numbers. Accounts marked failed are not retried
/// (`POST billRun/{id}/retry` does that), and a batch already counted stops at once.
pub fn bill_batch<B: KvBackend>(env: &Env<'_, B>, batch: &Batch, batch_id: &str) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let Some(tally) = uncounted(env, batch, batch_id)? else { return Ok(()) };
    let mut counts = Counts::default();
    // Failed on an earlier delivery: counted with this batch, not billed again.
    let marked: Vec<String> = batch.accounts.iter().map(|a| format!("{}.{a}", batch.run_id)).collect();
    let failed_before: std::collections::HashSet<String> =
        docs.get_docs::<Value>(FAILED, &marked)?.into_iter().filter_map(|d| failed_account(&d.data)).collect();
    counts.failed += failed_before.len() as i64;
    // What the batch reads account by account, read ahead in a few batch calls: a host call a
    // key was a large part of a bill's cost.
    let ahead = ReadAhead::new(env.store.backend());
    let store = Store::new(&ahead);
    let env = &Env::new(&store, env.tenant);
    let to_bill: Vec<&String> = batch.accounts.iter().filter(|a| !failed_before.contains(*a)).collect();
    ahead.fetch(&to_bill.iter().filter_map(|a| docs.key("billingAccount", a)).collect::<Vec<_>>())?;
    let mut billed = Vec::with_capacity(to_bill.len());
    for account in to_bill {
        match bill_period(env, batch, account) {
            Ok(Some(b)) => billed.push(b),
            // Another bill cycle day, or rolled up into its payer.
            Ok(None) => counts.skipped += 1,
            // The store itself failing: let the queue retry the batch.
            Err(e) if e.status >= 500 => return Err(e),
            Err(e) => fail(env, batch, account, e, &mut counts)?,
        }
    }
    crate::bills::read_ahead(env, &ahead, &billed)?;
    // The catalog once per batch.
    let catalog = if billed.is_empty() { None } else { Some(crate::bills::BillingCatalog::load(env)?) };
    let mut drafted = Vec::with_capacity(billed.len());
    for (acct, period) in billed {
        match crate::bills::prepare(env, &acct, Some(period), batch.at, Some(&batch.run_id), catalog.as_ref()) {
            Ok(d) => drafted.push((acct, d)),
            Err(e) if e.status >= 500 => return Err(e),
            Err(e) => fail(env, batch, &acct.id, e, &mut counts)?,
        }
    }
    // Each unnumbered draft moves into the numbering (a fresh bill is written there once,
    // numbered), which answers its bill as stored.
    let mut numbered = std::collections::HashMap::new();
    if batch.validate {
        let unnumbered: Vec<Unnumbered> = drafted
            .iter_mut()
            .filter(|(_, d)| d.bill.bill_no.is_none() && d.bill.state != BillState::OnHold)
            .map(|(_, d)| d.unnumbered())
            .collect();
        match number_bills(env, unnumbered) {
            Ok(bills) => numbered.extend(bills.into_iter().map(|n| (n.id.clone(), n))),
            Err(e) if e.status >= 500 => return Err(e),
            // A bill the series refuses: each is numbered on its own below, so the failure is
            // that account's alone. A stored draft is read again (its document went into the
            // numbering); a fresh one that is still not stored stays fresh.
            Err(e) => {
                eprintln!("billing-worker: numbering the batch at once failed ({}); one by one", e.message);
                for (_, d) in drafted.iter_mut().filter(|(_, d)| d.stored.is_none()) {
                    d.stored =
                        docs.get::<Value>(crate::bills::BILL.collection, &d.id)?.map(crate::bills::BillDoc::stored);
                }
            }
        }
    }
    for (acct, mut d) in drafted {
        let outcome = (|| -> Result<(), ApiError> {
            if batch.validate {
                if let Some(n) = numbered.remove(&d.id) {
                    d.numbered(n)?;
                }
                issue_draft(env, &acct, &mut d, batch.at)?;
            } else {
                store_draft(env, &mut d)?;
            }
            finish(env, &d.bill, &d.one_time, &d.corrections)
        })();
        match outcome {
            Ok(()) => counts.done += 1,
            Err(e) if e.status >= 500 => return Err(e),
            Err(e) => fail(env, batch, &acct.id, e, &mut counts)?,
        }
    }
    debug_assert_eq!(
        counts.done + counts.skipped + counts.failed as u64,
        batch.accounts.len() as u64,
        "every account of the batch counted once"
    );
    tally.add(env, counts)
}

/// Where a batch is counted: its tally document and its key there.
pub(crate) struct BatchTally {
    tally_id: String,
    batch_key: String,
}

impl BatchTally {
    /// Adds the batch's counts to its tally, once (see [`add_to_tally`]).
    pub(crate) fn add<B: KvBackend>(&self, env: &Env<'_, B>, counts: Counts) -> Result<(), ApiError> {
        add_to_tally(env, &self.tally_id, &self.batch_key, counts)
    }
}

/// The batch `batch_id` (its queue message id) of `batch`'s run, where it is to be counted; `None`
/// when it is counted already (a redelivery of a batch done before: nothing is left to do).
pub(crate) fn uncounted<B: KvBackend>(
    env: &Env<'_, B>,
    batch: &Batch,
    batch_id: &str,
) -> Result<Option<BatchTally>, ApiError> {
    let batch_key = batch_id.strip_prefix(&format!("{}.", batch.run_id)).unwrap_or(batch_id);
    let shard = bss_domain::usage::mediation::shard_of(batch_key, TALLY_SHARDS);
    let tally_id = format!("{}.{shard}", batch.run_id);
    let docs = env.store.tenant(&env.tenant.tenant_id);
    if docs.get::<Tally>(TALLY, &tally_id)?.is_some_and(|t| t.data.batches.contains(batch_key)) {
        return Ok(None);
    }
    Ok(Some(BatchTally { tally_id, batch_key: batch_key.to_string() }))
}

/// The account a failure mark names.
fn failed_account(mark: &Value) -> Option<String> {
    mark.pointer("/billingAccount/id").and_then(Value::as_str).map(str::to_string)
}

/// Records why `account` failed (the run's status lists it; a retry re-bills it) and counts it.
fn fail<B: KvBackend>(
    env: &Env<'_, B>,
    batch: &Batch,
    account: &str,
    e: ApiError,
    counts: &mut Counts,
) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let doc = json!({"billingAccount": {"id": account}, "reason": e.message, "code": e.code});
    match docs.create(FAILED, &format!("{}.{account}", batch.run_id), doc) {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {
            counts.failed += 1;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Adds `counts` to the run's tally document `tally_id` under the key `counted_as`, unless that
/// key is counted there already: exactly once, in one compare-and-swap.
fn add_to_tally<B: KvBackend>(
    env: &Env<'_, B>,
    tally_id: &str,
    counted_as: &str,
    counts: Counts,
) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let counted = docs.upsert(TALLY, tally_id, Tally::default, |t| {
        if t.batches.insert(counted_as.to_string()) {
            t.done += counts.done;
            t.skipped += counts.skipped;
            t.failed += counts.failed;
            t.actions += counts.actions;
        }
        Ok(())
    });
    match counted {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(_)) => Err(ApiError::service_unavailable(
            "the bill run's tally is busy; retry",
            format!("billRunTally {tally_id}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Step 1 for one account of the batch: its facts and the period the run bills, or `None` when
/// the run does not bill it (another cycle day, or billed on its payer's consolidated bill).
fn bill_period<B: KvBackend>(
    env: &Env<'_, B>,
    batch: &Batch,
    account: &str,
) -> Result<Option<(AccountFacts, BillPeriod)>, ApiError> {
    let acct = crate::bills::account(env, account)?;
    if batch.bill_cycle_day.is_some_and(|d| d != acct.bill_cycle_day) || crate::bills::rolls_up_into(&acct).is_some() {
        return Ok(None);
    }
    let period = match batch.period_start {
        Some(start) => BillPeriod::containing(start, acct.bill_cycle_day),
        None => crate::bills::last_closed(&acct, batch.at),
    };
    Ok(Some((acct, period)))
}

/// A legacy per-account counter (see [`legacy_counter_key`]).
fn legacy_count<B: KvBackend>(env: &Env<'_, B>, run: &str, what: &str) -> Result<i64, ApiError> {
    let key = legacy_counter_key(&env.tenant.tenant_id, run, what);
    Ok(env
        .store
        .backend()
        .get(&key)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0))
}

/// The run's counts: its tallies, plus what a worker of before them counted.
pub(crate) fn counts<B: KvBackend>(env: &Env<'_, B>, run: &str) -> Result<Counts, ApiError> {
    let ids: Vec<String> = (0..TALLY_SHARDS).map(|n| format!("{run}.{n}")).collect();
    let mut c = Counts {
        done: legacy_count(env, run, "done")?.max(0) as u64,
        skipped: legacy_count(env, run, "skipped")?.max(0) as u64,
        failed: legacy_count(env, run, "failed")?,
        actions: 0,
    };
    for t in env.store.tenant(&env.tenant.tenant_id).get_docs::<Tally>(TALLY, &ids)? {
        c.done += t.data.done;
        c.skipped += t.data.skipped;
        c.failed += t.data.failed;
        c.actions += t.data.actions;
    }
    Ok(c)
}

/// The run's status: counts, failures with reasons, elapsed and estimated remaining time.
pub fn status<B: KvBackend>(env: &Env<'_, B>, id: &str, now: DateTime<Utc>) -> Result<Value, ApiError> {
    let mut doc = env.resources(RUN).get(id)?.data;
    let Counts { done, skipped, failed, .. } = progress(env, id, &mut doc, now)?;
    let failed = failed.max(0) as u64;
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
    Ok(doc)
}

/// The counts of the run `id` (a bill run or a dunning run; `doc`: its stored document), with
/// its progress set on `doc`: `state` (`inProgress` until every account is counted, then
/// `completed` or `completedWithErrors`), `elapsedMs` and `estimatedRemainingMs`.
pub(crate) fn progress<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    doc: &mut Value,
    now: DateTime<Utc>,
) -> Result<Counts, ApiError> {
    // Absent while a run over every account is still queueing them; the estimate stands in for
    // the time left (never below what is queued already).
    let total = doc.get("accountsTotal").and_then(Value::as_u64);
    let n = |f: &str| doc.get(f).and_then(Value::as_u64);
    let expected = total.or_else(|| Some(n("accountsEstimated")?.max(n("accountsQueued").unwrap_or(0))));
    let c = counts(env, id)?;
    let failed = c.failed.max(0) as u64;
    let finished = c.done + c.skipped + failed;
    let started = doc.get("startedAt").and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let elapsed_ms = started.map(|s| (now - s.to_utc()).num_milliseconds().max(0) as u64).unwrap_or(0);
    let remaining_ms = expected
        .filter(|&total| finished > 0 && finished < total)
        .map(|total| elapsed_ms * (total - finished) / finished);
    doc["elapsedMs"] = json!(elapsed_ms);
    doc["estimatedRemainingMs"] = json!(remaining_ms);
    doc["state"] = json!(if total.is_some_and(|total| finished >= total) {
        if failed > 0 { "completedWithErrors" } else { "completed" }
    } else {
        "inProgress"
    });
    Ok(c)
}

/// Re-queues the failed accounts of a run: their failure marks are cleared and they are taken
/// off the run's failures (their batches count them again). A crash between clearing the marks
/// and counting leaves them counted as failed with nothing left to retry; the accounts' bills
/// can then be made with `customerBillOnDemand` or a new run.
pub fn retry<B: KvBackend>(env: &Env<'_, B>, id: &str) -> Result<Value, ApiError> {
    let run = env.resources(RUN).get(id)?.data;
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let prefix = docs.prefix(FAILED).ok_or_else(|| ApiError::bad_request("invalid tenant"))?;
    let marks = format!("{prefix}{id}.");
    let at = run
        .get("startedAt")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.to_utc());
    let template = Batch {
        tenant_id: env.tenant.tenant_id.clone(),
        run_id: id.to_string(),
        at: at.unwrap_or_else(Utc::now),
        period_start: run.get("periodStart").and_then(|v| serde_json::from_value(v.clone()).ok()),
        bill_cycle_day: run.get("billCycleDay").and_then(Value::as_u64).map(|d| d as u32),
        validate: run.get("validate").and_then(Value::as_bool).unwrap_or(true),
        accounts: Vec::new(),
        dunning: None,
    };
    let retry_no = bss_kit::ids::new_id();
    let (mut retried, mut after) = (0, None);
    // A page of marks at a time, so that memory stays bounded however many accounts failed; each
    // page after the last key of the one before, so that an account failing again at once (its
    // mark made anew) is not retried twice by this call.
    for page_no in 0..(RUN_ACCOUNTS_MAX / PLAN_PAGE) {
        let keys = env.store.list_keys_after(&marks, after.as_deref(), PLAN_PAGE)?;
        let Some(last) = keys.last() else { break };
        after = Some(last.clone());
        let accounts: Vec<String> = keys.iter().map(|k| k[marks.len()..].to_string()).collect();
        env.store.backend().delete_many(&keys)?;
        let retried_as = format!("retry.{retry_no}.{page_no}");
        let shard = bss_domain::usage::mediation::shard_of(&retried_as, TALLY_SHARDS);
        add_to_tally(
            env,
            &format!("{id}.{shard}"),
            &retried_as,
            Counts { failed: -(accounts.len() as i64), ..Counts::default() },
        )?;
        for (n, chunk) in accounts.chunks(ACCOUNTS_PER_MESSAGE).enumerate() {
            let batch = Batch { accounts: chunk.to_vec(), ..template.clone() };
            publish(&batch, &format!("{id}.{retried_as}.{n}"))?;
        }
        retried += accounts.len();
    }
    Ok(json!({"retried": retried}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_kit::auth::Tenant;
    use bss_kit::kv::{MemKv, Store};

    fn tenant_t1() -> Tenant {
        Tenant { tenant_id: "t1".into(), key_id: "k".into() }
    }

    /// A store with `n` billing accounts of tenant t1 (`a000000`, … in key order) and its run r1.
    fn accounts_and_run_r1(n: usize) -> MemKv {
        let kv = MemKv::default();
        for i in 0..n {
            kv.set(&format!("t/t1/billingAccount/a{i:06}"), b"{}").unwrap();
        }
        let store = Store::new(&kv);
        let tenant = tenant_t1();
        let env = Env::new(&store, &tenant);
        env.resources(RUN).create_with_id(&env, &bss_kit::resource::NoHooks, "r1", json!({})).unwrap();
        kv
    }

    #[test]
    fn the_count_for_the_estimate_goes_a_bounded_page_a_delivery_and_records_every_key() {
        const N: usize = 2 * COUNT_PAGE + 5;
        let kv = accounts_and_run_r1(N);
        let store = Store::new(&kv);
        let tenant = tenant_t1();
        let env = Env::new(&store, &tenant);
        let template = Batch {
            tenant_id: "t1".into(),
            run_id: "r1".into(),
            at: Utc::now(),
            period_start: None,
            bill_cycle_day: None,
            validate: true,
            accounts: Vec::new(),
            dunning: None,
        };
        bss_kit::events::native::take_published();
        let mut next = Some(Count { count_step: 0, after: None, counted: 0, template });
        let mut deliveries = 0;
        while let Some(count) = next.take() {
            deliveries += 1;
            assert_eq!(env.resources(RUN).get("r1").unwrap().data.get("accountsEstimated"), None);
            count_step(&env, &count).unwrap();
            let published = bss_kit::events::native::take_published();
            assert!(published.len() <= 1);
            if let Some((id, _, body)) = published.into_iter().next() {
                assert_eq!(id, format!("r1.count.{deliveries}"));
                next = Some(serde_json::from_slice(&body).unwrap());
            }
        }
        assert_eq!(deliveries, 3, "{COUNT_PAGE} keys a delivery");
        assert_eq!(env.resources(RUN).get("r1").unwrap().data["accountsEstimated"], json!(N));
    }

    #[test]
    fn a_plan_keeps_the_batch_size_it_was_queued_with_and_an_older_plan_numbers_by_fifty() {
        const N: usize = PLAN_PAGE + 70;
        let kv = accounts_and_run_r1(N);
        let store = Store::new(&kv);
        let tenant = tenant_t1();
        let env = Env::new(&store, &tenant);
        let template = json!({"tenantId": "t1", "runId": "r1", "at": Utc::now(), "validate": true, "accounts": []});
        // The second step of a run whose first step an older worker queued: no size in it.
        let older = json!({"planStep": 1, "after": format!("t/t1/billingAccount/a{:06}", PLAN_PAGE - 1),
            "accountsBefore": PLAN_PAGE, "template": template});
        let Work::Plan(plan) = serde_json::from_value::<Work>(older).unwrap() else { panic!("a plan") };
        assert_eq!(plan.accounts_per_message, 50);
        bss_kit::events::native::take_published();
        plan_step(&env, &plan).unwrap();
        let ids: Vec<String> = bss_kit::events::native::take_published().into_iter().map(|(id, ..)| id).collect();
        // Numbered on from the first step's 200 batches of 50, as that worker numbered them.
        assert_eq!(ids, ["r1.200", "r1.201"], "70 accounts: a batch of 50 and one of 20");
        // A step of a new run carries its size to the next step, which numbers by it too.
        let mut plan = plan;
        plan.plan_step = 0;
        plan.after = None;
        plan.accounts_before = 0;
        plan.accounts_per_message = ACCOUNTS_PER_MESSAGE;
        plan_step(&env, &plan).unwrap();
        let published = bss_kit::events::native::take_published();
        let next = published.iter().find(|(id, ..)| id == "r1.plan.1").expect("the next step");
        let Work::Plan(next) = serde_json::from_slice::<Work>(&next.2).unwrap() else { panic!("a plan") };
        assert_eq!((next.accounts_per_message, next.accounts_before), (ACCOUNTS_PER_MESSAGE, PLAN_PAGE as u64));
        let batches = published.iter().filter(|(id, ..)| !id.contains("plan") && !id.contains("count")).count();
        assert_eq!(batches, PLAN_PAGE / ACCOUNTS_PER_MESSAGE);
        // A size that does not divide the page: refused, nothing queued.
        plan.accounts_per_message = 3;
        assert_eq!(plan_step(&env, &plan).unwrap_err().status, 422);
        assert!(bss_kit::events::native::take_published().is_empty());
    }

    #[test]
    fn a_run_over_every_account_queues_each_once_a_page_at_a_time_and_knows_its_total_at_the_end() {
        const N: usize = 2 * PLAN_PAGE + 75;
        let kv = MemKv::default();
        kv.set_page_size(997);
        let store = Store::new(&kv);
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        for i in 0..N {
            kv.set(&format!("t/t1/billingAccount/a{i:06}"), b"{}").unwrap();
        }
        // Another tenant's accounts and a key past the prefix are not this run's.
        kv.set("t/t0/billingAccount/x", b"{}").unwrap();
        kv.set("t/t1/billingAccountX/y", b"{}").unwrap();
        bss_kit::events::native::take_published();
        let now = Utc::now();
        let req = RunRequest { bill_cycle_day: Some(1), period_start: None, accounts: None, validate: None };
        let run = start(&env, req, now).unwrap();
        let id = run["id"].as_str().unwrap().to_string();
        assert_eq!((run.get("accountsTotal"), &run["accountsQueued"]), (None, &json!(0)), "{run}");
        let (mut batches, mut steps) = (Vec::new(), Vec::new());
        let mut pending = bss_kit::events::native::take_published();
        while let Some((msg_id, subject, body)) = pending.pop() {
            assert_eq!(subject, SUBJECT);
            match serde_json::from_slice::<Work>(&body).unwrap() {
                Work::Plan(plan) => {
                    // Before the last step, the run is in progress with no total; after the
                    // first, it has the estimate, and the time left is estimated from it.
                    let s = status(&env, &id, now).unwrap();
                    assert_eq!((s.get("accountsTotal"), &s["state"]), (None, &json!("inProgress")), "{s}");
                    if plan.plan_step == 1 {
                        assert_eq!(s["accountsEstimated"], json!(N), "{s}");
                        add_to_tally(&env, &format!("{id}.0"), "test", Counts { done: 75, ..Counts::default() })
                            .unwrap();
                        let later = status(&env, &id, now + chrono::Duration::seconds(10)).unwrap();
                        assert_eq!(later["estimatedRemainingMs"], json!(10_000 * (N as u64 - 75) / 75), "{later}");
                    }
                    plan_step(&env, &plan).unwrap();
                    // Redelivered: the same messages again, and the same counts.
                    let first = bss_kit::events::native::take_published();
                    plan_step(&env, &plan).unwrap();
                    let again = bss_kit::events::native::take_published();
                    assert_eq!(first, again);
                    steps.push(msg_id);
                    pending.extend(first);
                }
                Work::Count(count) => {
                    count_step(&env, &count).unwrap();
                    let first = bss_kit::events::native::take_published();
                    count_step(&env, &count).unwrap();
                    assert_eq!(first, bss_kit::events::native::take_published());
                    pending.extend(first);
                }
                Work::Batch(b) => {
                    assert!(b.accounts.len() <= ACCOUNTS_PER_MESSAGE);
                    assert_eq!((b.run_id.as_str(), b.bill_cycle_day, b.at), (id.as_str(), Some(1), now));
                    batches.push((msg_id, b.accounts));
                }
            }
        }
        let want_steps: Vec<String> = (0..3).map(|k| format!("{id}.plan.{k}")).collect();
        assert_eq!(steps, want_steps);
        batches.sort_by_key(|(m, _)| m[id.len() + 1..].parse::<usize>().unwrap());
        let numbers: Vec<String> = batches.iter().map(|(m, _)| m.clone()).collect();
        let want: Vec<String> = (0..N.div_ceil(ACCOUNTS_PER_MESSAGE)).map(|n| format!("{id}.{n}")).collect();
        assert_eq!(numbers, want, "batches numbered without a gap or a repeat");
        let accounts: Vec<String> = batches.into_iter().flat_map(|(_, a)| a).collect();
        let want: Vec<String> = (0..N).map(|i| format!("a{i:06}")).collect();
        assert_eq!(accounts, want, "every account once, in order");
        let s = status(&env, &id, now).unwrap();
        assert_eq!(
            (&s["accountsTotal"], &s["accountsQueued"], &s["state"]),
            (&json!(N), &json!(N), &json!("inProgress"))
        );
    }

    #[test]
    fn a_batch_is_counted_once_on_its_tally_and_the_run_sums_its_tallies_and_older_counters() {
        let store = Store::new(MemKv::default());
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let c = |done, skipped, failed| Counts { done, skipped, failed, actions: 0 };
        add_to_tally(&env, "r.3", "0", c(40, 8, 2)).unwrap();
        // Redelivered after it was counted, or counted again after a crash: no change.
        add_to_tally(&env, "r.3", "0", c(40, 8, 2)).unwrap();
        add_to_tally(&env, "r.3", "1", c(50, 0, 0)).unwrap();
        add_to_tally(&env, "r.7", "2", c(1, 0, 1)).unwrap();
        // A retry takes its accounts off the failures.
        add_to_tally(&env, "r.9", "retry.x", c(0, 0, -3)).unwrap();
        // What a worker of before the tallies counted.
        store.backend().increment(&legacy_counter_key("t1", "r", "done"), 5).unwrap();
        assert_eq!(counts(&env, "r").unwrap(), c(96, 8, 0));
        assert_eq!(counts(&env, "other").unwrap(), c(0, 0, 0));
        let tally = store.tenant("t1").get::<Tally>(TALLY, "r.3").unwrap().unwrap().data;
        assert_eq!(tally.batches.iter().map(String::as_str).collect::<Vec<_>>(), ["0", "1"]);
    }
}
