//! Dunning runs: what to do about bills left unpaid after their due date, executed. The rules
//! are `bss_domain::billing::dunning` (steps by days past due; default a reminder at due + 7
//! days, suspension at + 21, termination at + 60; paying the debt lifts a suspension). Unit
//! tests: `cargo test -p billing --no-default-features --lib`; end to end: `cargo test -p
//! bss-host --test e2e_payments`.
//!
//! Routes under `/tmf-api/customerBillManagement/v4` (tenant API key required; the POST honours
//! `Idempotency-Key`): `POST dunningRun` `{now?, accounts?, policy?}`.
//! - `now` (RFC 3339; default the clock): the time the run acts at (tests, replays of a missed
//!   day). `policy`: a `DunningPolicy` (`{steps: [{afterDays, action:
//!   reminder|suspend|terminate}], minimumAmount}`, checked; default the domain's default policy).
//! - **Every account** (no `accounts`): → 201 a `DunningRun` resource, at once. The run goes
//!   through every account with a ledger on the queue, as a bill run does ([`crate::run`]): a
//!   plan step lists [`crate::run::PLAN_PAGE`] ledgers at a time and queues batches of
//!   [`crate::run::ACCOUNTS_PER_MESSAGE`] accounts, which `billing-worker` duns ([`dun_batch`]);
//!   each batch is counted once on the run's tallies. `GET dunningRun/{id}`: `state`
//!   (`inProgress`, `completed`, `completedWithErrors`), `accountsQueued` / `accountsTotal`,
//!   `accountsChecked`, `actionsTaken`, `failures`, elapsed and estimated remaining time, and
//!   `accounts`: each account with an action or a failure, by id, a page at a time — `limit`
//!   (default and most [`LISTED_MAX`]) after `accountsAfter` (an account id; the answer's
//!   `accountsNext` when there may be more). `GET dunningRun`: the runs.
//! - **Named accounts** (`accounts`, at most [`NAMED_ACCOUNTS_MAX`]): done in the call → 200 a
//!   summary: `accountsChecked`, `actionsTaken`, `failures` and, per account with an action or a
//!   failure, the actions taken (kind, bill, event, product orders, products) — what support
//!   staff use for one customer.
//! - **The operator calls it once a day** (a cron job or a scheduled `curl -X POST` with the
//!   tenant's key). Running it more often or again is harmless: it only does what is due and
//!   not done yet; a day missed is caught up by the next run (one reminder, not a burst).
//!
//! Per account: `actions_due(policy, ledger, now, the account's time zone, done)`, where the
//! actions done are kept in the account's `dunningState` document (compare-and-swap). Each new
//! action is executed, then recorded there:
//! - every action publishes an event on `billing.<type>` — `DunningReminderEvent`,
//!   `DunningSuspensionEvent`, `DunningTerminationEvent`, `DunningResumeEvent` — whose message
//!   id derives from the action id, so the queue stores it once however often it is retried;
//! - Suspend: a product order (`bss_commerce::order::place_order`, then its create event, on
//!   which the order-worker fulfils it) modifying every active product of the account to
//!   `suspended`; Terminate: one deleting every active or suspended product; Resume: one
//!   modifying back to `active` the products the suspension suspended and that still are.
//!   Order ids derive from the action id (`bss_kit::ids::derived_id`), and the orders an earlier
//!   attempt placed are found and re-announced, never placed twice; a customer's products go in
//!   orders of at most 100 items.
//!
//! A refusal for one account (4xx: e.g. its order cannot be placed) is reported in the summary
//! and retried by the next run. A store or queue failure (5xx) ends a named run with that error
//! (a rerun continues where it stopped); in a queued run it makes the queue redeliver the batch,
//! which goes on where it stopped — the actions already recorded are not due any more, and the
//! account's entry keeps the ones the failed delivery took (written before the error is
//! returned, when the store takes it; the account's `dunningState` has them all in any case).

use std::collections::{BTreeMap, BTreeSet};

use bss_commerce::inventory::{PRODUCT, customer_of};
use bss_commerce::order::{ORDER, place_order, placed_earlier};
use bss_commerce::subscribers::{ACCOUNT_PRODUCTS, AccountProducts};
use bss_domain::billing::dunning::{DunningAction, DunningActionKind, DunningPolicy, actions_due};
use bss_domain::billing::ledger::Ledger;
use bss_domain::catalog::money_to_json;
use bss_domain::order::fulfilment::MAX_ITEMS;
use bss_kit::ApiError;
use bss_kit::ids::derived_id;
use bss_kit::kv::{KvBackend, StoreError};
use bss_kit::resource::{Change, Env};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bills::{self, BILL};
use crate::payments::LEDGER;
use crate::run::{Batch, Counts};

/// The per-account record of the actions done.
pub const STATE: &str = "dunningState";
/// Dunning runs over every account (BSS extension).
pub const RUN: bss_kit::resource::Kind = bss_kit::resource::Kind {
    collection: "dunningRun",
    type_name: "DunningRun",
    base_path: bills::BASE,
    domain: "billing",
};
/// A queued run's outcome for one account with an action or a failure (`<runId>.<accountId>`).
pub const RUN_ACCOUNT: &str = "dunningRunAccount";
/// Most accounts a run done in the call names (a run over more goes on the queue).
pub const NAMED_ACCOUNTS_MAX: usize = 1_000;
/// Most accounts a queued run's status lists.
pub const LISTED_MAX: usize = 1_000;

/// What a queued dunning run's batches act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DunningSpec {
    /// The time the run acts at.
    pub now: DateTime<Utc>,
    /// The policy (checked when the run started).
    pub policy: DunningPolicy,
}

/// `POST dunningRun` body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    /// The time to act at (default: now).
    #[serde(default)]
    pub now: Option<DateTime<Utc>>,
    /// Only these accounts.
    #[serde(default)]
    pub accounts: Option<Vec<String>>,
    /// The policy (default: [`DunningPolicy::default`]).
    #[serde(default)]
    pub policy: Option<DunningPolicy>,
}

/// What was done for one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// The action.
    pub action_id: String,
    /// Its kind.
    pub kind: DunningActionKind,
    /// The bill behind it.
    pub bill_id: String,
    /// When the run did it (its `now`).
    pub at: DateTime<Utc>,
    /// The event's id.
    pub event_id: String,
    /// The product orders placed.
    #[serde(default)]
    pub product_orders: Vec<String>,
    /// The products those orders change.
    #[serde(default)]
    pub products: Vec<String>,
}

/// An account's dunning so far (`dunningState/<accountId>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DunningState {
    /// The account.
    pub account_id: String,
    /// The actions done (what `actions_due` is given).
    pub done: Vec<DunningAction>,
    /// What each did.
    pub records: Vec<ActionRecord>,
}

/// Where a run's messages go: the queue in the component, a recorder in tests.
pub trait Outbox {
    /// Publishes the event `event_type` of the billing domain with the message id `event_id`.
    fn event(&self, event_type: &str, event_id: &str, key: &str, payload: &Value) -> Result<(), ApiError>;
    /// Announces a placed order (its create event, on which fulfilment starts).
    fn order_placed(&self, change: &Change) -> Result<(), ApiError>;
}

/// The event type of an action.
pub fn event_type(kind: DunningActionKind) -> &'static str {
    match kind {
        DunningActionKind::Reminder => "DunningReminderEvent",
        DunningActionKind::Suspend => "DunningSuspensionEvent",
        DunningActionKind::Terminate => "DunningTerminationEvent",
        DunningActionKind::Resume => "DunningResumeEvent",
    }
}

fn kind_name(kind: DunningActionKind) -> Value {
    serde_json::to_value(kind).unwrap_or(Value::Null)
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The request's time (`clock` unless it names one) and its policy, checked.
fn time_and_policy(req: &RunRequest, clock: DateTime<Utc>) -> Result<(DateTime<Utc>, DunningPolicy), ApiError> {
    let policy = req.policy.clone().unwrap_or_default();
    policy.check().map_err(|e| ApiError::unprocessable(format!("policy: {e}")))?;
    Ok((req.now.unwrap_or(clock), policy))
}

/// An account's entry in a run's answer: the actions it took, and why it failed if it did.
fn outcome(account: &str, actions: &[Value], failure: Option<&ApiError>) -> Value {
    let mut v = json!({"billingAccount": {"id": account}, "actions": actions});
    if let Some(e) = failure {
        v["failure"] = json!({"code": e.code, "message": e.message});
    }
    v
}

/// Runs dunning over the accounts the request names (see the module doc), at `clock` unless the
/// request names its `now`; answers the summary.
pub fn run<B: KvBackend>(
    env: &Env<'_, B>,
    outbox: &dyn Outbox,
    req: RunRequest,
    clock: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let (now, policy) = time_and_policy(&req, clock)?;
    let accounts = req.accounts.ok_or_else(|| {
        ApiError::unprocessable("accounts: a run done in the call names its accounts (a run over all is queued)")
    })?;
    if accounts.len() > NAMED_ACCOUNTS_MAX {
        return Err(ApiError::payload_too_large(format!(
            "accounts: at most {NAMED_ACCOUNTS_MAX} named; leave them out to run over every account on the queue"
        )));
    }
    let mut listed = Vec::new();
    let (mut actions, mut failures) = (0, 0);
    for account in &accounts {
        let mut done = Vec::new();
        match dun_account(env, outbox, &policy, account, now, &mut done) {
            Ok(()) if done.is_empty() => {}
            Ok(()) => {
                actions += done.len();
                listed.push(outcome(account, &done, None));
            }
            Err(e) if e.status < 500 => {
                actions += done.len();
                failures += 1;
                listed.push(outcome(account, &done, Some(&e)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(json!({
        "@type": "DunningRun",
        "now": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "policy": policy,
        "accountsChecked": accounts.len(),
        "actionsTaken": actions,
        "failures": failures,
        "accounts": listed,
    }))
}

/// Starts a run over every account with a ledger on the queue (see the module doc), at `clock`
/// unless the request names its `now`; answers the run.
pub fn start<B: KvBackend>(env: &Env<'_, B>, req: RunRequest, clock: DateTime<Utc>) -> Result<Value, ApiError> {
    let (now, policy) = time_and_policy(&req, clock)?;
    let run_id = bss_kit::ids::new_id();
    let body = json!({
        "state": "inProgress",
        "now": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "policy": policy,
        "startedAt": clock.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    let template = Batch {
        tenant_id: env.tenant.tenant_id.clone(),
        run_id,
        at: now,
        period_start: None,
        bill_cycle_day: None,
        validate: false,
        accounts: Vec::new(),
        dunning: Some(DunningSpec { now, policy }),
    };
    crate::run::start_plan(env, body, template)
}

/// Duns the accounts of a queued run's batch (the worker's job; `batch_id`: its queue message
/// id): each account's outcome goes to its `dunningRunAccount` entry when it took an action or
/// failed, then the batch's counts to the run's tally, once. A redelivery adds what it does to
/// the entries the delivery before left, and counts from them.
pub fn dun_batch<B: KvBackend>(
    env: &Env<'_, B>,
    batch: &Batch,
    spec: &DunningSpec,
    batch_id: &str,
) -> Result<(), ApiError> {
    let Some(tally) = crate::run::uncounted(env, batch, batch_id)? else { return Ok(()) };
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let entry_id = |account: &str| format!("{}.{account}", batch.run_id);
    let ids: Vec<String> = batch.accounts.iter().map(|a| entry_id(a)).collect();
    // Per account: the actions an earlier delivery took, and whether it failed.
    let mut earlier: BTreeMap<String, (Vec<Value>, bool)> = docs
        .get_docs::<Value>(RUN_ACCOUNT, &ids)?
        .into_iter()
        .map(|d| {
            let account = text(&d.data, "/billingAccount/id").to_string();
            let actions = d.data.get("actions").and_then(Value::as_array).cloned().unwrap_or_default();
            (account, (actions, d.data.get("failure").is_some()))
        })
        .collect();
    let outbox = QueueOutbox { tenant: env.tenant };
    let mut counts = Counts::default();
    for account in &batch.accounts {
        let (mut done, failed_before) = earlier.remove(account).unwrap_or_default();
        let had = done.len();
        let result = dun_account(env, &outbox, &spec.policy, account, spec.now, &mut done);
        let failure = result.as_ref().err();
        if done.len() > had || failure.is_some() || failed_before {
            // Also when the account failed at the store: the redelivery starts from this entry.
            docs.put(RUN_ACCOUNT, &entry_id(account), outcome(account, &done, failure))?;
        }
        counts.actions += done.len() as u64;
        match result {
            Ok(()) => counts.done += 1,
            Err(e) if e.status >= 500 => return Err(e),
            Err(_) => counts.failed += 1,
        }
    }
    debug_assert_eq!(counts.done + counts.failed as u64, batch.accounts.len() as u64, "every account counted once");
    tally.add(env, counts)
}

/// A page of a queued run's account entries: at most `limit` (capped at [`LISTED_MAX`]), after
/// the account `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The last account of the page before (none: from the first).
    pub after: Option<String>,
    /// How many (none: [`LISTED_MAX`]).
    pub limit: Option<usize>,
}

impl Page {
    /// From the query parameters `accountsAfter` and `limit` (a positive number).
    pub fn from_query(after: Option<String>, limit: Option<String>) -> Result<Page, ApiError> {
        let limit = match limit {
            None => None,
            Some(l) => Some(
                l.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ApiError::bad_request(format!("limit: {l:?} is not a positive number")))?,
            ),
        };
        Ok(Page { after, limit })
    }
}

/// A queued run's status (see the module doc), with the page `page` of its account entries.
pub fn status<B: KvBackend>(env: &Env<'_, B>, id: &str, now: DateTime<Utc>, page: &Page) -> Result<Value, ApiError> {
    let mut doc = env.resources(RUN).get(id)?.data;
    let c = crate::run::progress(env, id, &mut doc, now)?;
    let prefix = env
        .store
        .tenant(&env.tenant.tenant_id)
        .prefix(RUN_ACCOUNT)
        .ok_or_else(|| ApiError::bad_request("invalid tenant"))?;
    let prefix = format!("{prefix}{id}.");
    let limit = page.limit.unwrap_or(LISTED_MAX).min(LISTED_MAX);
    let after = page.after.as_ref().map(|a| format!("{prefix}{a}"));
    let keys = env.store.list_keys_after(&prefix, after.as_deref(), limit)?;
    if keys.len() == limit
        && let Some(last) = keys.last()
    {
        doc["accountsNext"] = json!(&last[prefix.len()..]);
    }
    let listed: Vec<Value> = env.store.get_docs::<Value>(&keys)?.into_iter().map(|(_, d)| d.data).collect();
    let failed = c.failed.max(0) as u64;
    doc["accountsChecked"] = json!(c.done + failed);
    doc["actionsTaken"] = json!(c.actions);
    doc["failures"] = json!(failed);
    doc["accounts"] = Value::Array(listed);
    Ok(doc)
}

/// Dunning of one account: the actions taken are added to `taken` (none without a ledger or
/// anything due), each once it is recorded — also when a later one fails.
pub fn dun_account<B: KvBackend>(
    env: &Env<'_, B>,
    outbox: &dyn Outbox,
    policy: &DunningPolicy,
    account_id: &str,
    now: DateTime<Utc>,
    taken: &mut Vec<Value>,
) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let Some(ledger) = docs.get::<Ledger>(LEDGER, account_id)?.map(|v| v.data) else { return Ok(()) };
    let acct = bills::account(env, account_id)?;
    let state = docs.get::<DunningState>(STATE, account_id)?.map(|v| v.data).unwrap_or_default();
    let due =
        actions_due(policy, &ledger, now, acct.tz, &state.done).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    for action in due {
        let record = execute(env, outbox, &state, &action, now)?;
        record_done(env, account_id, &action, &record)?;
        taken.push(json!({
            "id": action.id,
            "kind": kind_name(action.kind),
            "bill": {"id": action.bill_id, "href": BILL.href(&action.bill_id)},
            "afterDays": action.after_days,
            "dueOn": action.due_on.to_string(),
            "overdue": money_to_json(&action.overdue),
            "event": {"id": record.event_id, "eventType": event_type(action.kind)},
            "productOrder": record.product_orders.iter().map(|o| json!({"id": o, "href": ORDER.href(o)})).collect::<Vec<_>>(),
            "products": record.products,
        }));
    }
    Ok(())
}

/// The products of an account (its `accountProducts` index), by id.
fn account_products<B: KvBackend>(env: &Env<'_, B>, account_id: &str) -> Result<Vec<Value>, ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let mut ids =
        docs.get::<AccountProducts>(ACCOUNT_PRODUCTS, account_id)?.map(|v| v.data.products).unwrap_or_default();
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        if let Some(p) = env.resources(PRODUCT).find(&id)?
            && text(&p.data, "/billingAccount/id") == account_id
        {
            out.push(p.data);
        }
    }
    Ok(out)
}

/// What an action's orders do to one product: the order item (without its id).
fn order_item(kind: DunningActionKind, product: &str) -> Option<Value> {
    match kind {
        DunningActionKind::Suspend => {
            Some(json!({"action": "modify", "product": {"id": product, "status": "suspended"}}))
        }
        DunningActionKind::Resume => Some(json!({"action": "modify", "product": {"id": product, "status": "active"}})),
        DunningActionKind::Terminate => Some(json!({"action": "delete", "product": {"id": product}})),
        DunningActionKind::Reminder => None,
    }
}

/// The products an action changes, as they are now.
fn targets<B: KvBackend>(
    env: &Env<'_, B>,
    state: &DunningState,
    action: &DunningAction,
) -> Result<Vec<Value>, ApiError> {
    let products = account_products(env, &action.account_id)?;
    let status = |p: &Value| text(p, "/status").to_string();
    Ok(match action.kind {
        DunningActionKind::Reminder => Vec::new(),
        DunningActionKind::Suspend => products.into_iter().filter(|p| status(p) == "active").collect(),
        DunningActionKind::Terminate => {
            products.into_iter().filter(|p| matches!(status(p).as_str(), "active" | "suspended")).collect()
        }
        DunningActionKind::Resume => {
            // Only what the suspension of this bill suspended (a product suspended for another
            // reason stays suspended).
            let suspended: BTreeSet<&str> = state
                .records
                .iter()
                .filter(|r| r.kind == DunningActionKind::Suspend && r.bill_id == action.bill_id)
                .flat_map(|r| r.products.iter().map(String::as_str))
                .collect();
            products.into_iter().filter(|p| status(p) == "suspended" && suspended.contains(text(p, "/id"))).collect()
        }
    })
}

fn order_products(order: &Value) -> Vec<String> {
    order
        .get("productOrderItem")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|i| text(i, "/product/id").to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The id of an action's `n`-th order.
pub fn order_id(action_id: &str, n: usize) -> String {
    derived_id("dunning-", &format!("{action_id}#{n}"))
}

/// Places the orders of an action (see the module doc): the orders and the products they change.
fn place_orders<B: KvBackend>(
    env: &Env<'_, B>,
    outbox: &dyn Outbox,
    state: &DunningState,
    action: &DunningAction,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let (mut orders, mut products) = (Vec::new(), Vec::new());
    // Orders an earlier attempt placed (it stopped before recording the action).
    let mut n = 0;
    while let Some((change, announce)) = placed_earlier(env, &order_id(&action.id, n))? {
        if announce {
            outbox.order_placed(&change)?;
        }
        products.extend(change.after.as_ref().map(order_products).unwrap_or_default());
        orders.push(order_id(&action.id, n));
        n += 1;
    }
    let covered: BTreeSet<String> = products.iter().cloned().collect();
    let mut by_customer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in targets(env, state, action)? {
        let id = text(&p, "/id").to_string();
        if covered.contains(&id) {
            continue;
        }
        let customer = customer_of(&p)
            .ok_or_else(|| ApiError::unprocessable(format!("product {id} names no customer: it cannot be ordered")))?;
        by_customer.entry(customer).or_default().push(id);
    }
    let what = match action.kind {
        DunningActionKind::Suspend => "suspension",
        DunningActionKind::Terminate => "termination",
        _ => "resumption",
    };
    for (customer, ids) in by_customer {
        for chunk in ids.chunks(MAX_ITEMS) {
            let id = order_id(&action.id, n);
            n += 1;
            let items: Vec<Value> = chunk
                .iter()
                .enumerate()
                .filter_map(|(k, p)| {
                    let mut item = order_item(action.kind, p)?;
                    item["id"] = json!((k + 1).to_string());
                    Some(item)
                })
                .collect();
            let body = json!({
                "description": format!("Dunning {what} for bill {}", action.bill_id),
                "category": "dunning",
                "externalId": action.id,
                "relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
                "billingAccount": {"id": action.account_id, "@referredType": "BillingAccount"},
                "productOrderItem": items,
            });
            let change = match place_order(env, body, Some(&id)) {
                Ok(change) => Some(change),
                // A concurrent run placed it first: its announcement may still be missing.
                Err(e) if e.code == "ALREADY_EXISTS" => {
                    placed_earlier(env, &id)?.and_then(|(c, announce)| announce.then_some(c))
                }
                Err(e) => return Err(e),
            };
            if let Some(c) = &change {
                outbox.order_placed(c)?;
            }
            orders.push(id);
            products.extend(chunk.iter().cloned());
        }
    }
    Ok((orders, products))
}

/// Executes an action (orders, then its event); what was done.
fn execute<B: KvBackend>(
    env: &Env<'_, B>,
    outbox: &dyn Outbox,
    state: &DunningState,
    action: &DunningAction,
    now: DateTime<Utc>,
) -> Result<ActionRecord, ApiError> {
    let (orders, products) = match action.kind {
        DunningActionKind::Reminder => (Vec::new(), Vec::new()),
        _ => place_orders(env, outbox, state, action)?,
    };
    let event_id = derived_id("dunning-event-", &action.id);
    let payload = json!({
        "dunningAction": {
            "id": action.id,
            "kind": kind_name(action.kind),
            "afterDays": action.after_days,
            "dueOn": action.due_on.to_string(),
            "overdue": money_to_json(&action.overdue),
        },
        "billingAccount": {"id": action.account_id},
        "bill": {"id": action.bill_id, "href": BILL.href(&action.bill_id), "@referredType": "CustomerBill"},
        "productOrder": orders.iter().map(|o| json!({"id": o, "href": ORDER.href(o)})).collect::<Vec<_>>(),
        "product": products.iter().map(|p| json!({"id": p})).collect::<Vec<_>>(),
    });
    outbox.event(event_type(action.kind), &event_id, &action.account_id, &payload)?;
    Ok(ActionRecord {
        action_id: action.id.clone(),
        kind: action.kind,
        bill_id: action.bill_id.clone(),
        at: now,
        event_id,
        product_orders: orders,
        products,
    })
}

/// Adds the action to the account's `dunningState` (compare-and-swap; created when absent).
fn record_done<B: KvBackend>(
    env: &Env<'_, B>,
    account_id: &str,
    action: &DunningAction,
    record: &ActionRecord,
) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    for _ in 0..8 {
        let result = docs.update::<DunningState, _>(STATE, account_id, |v| {
            let mut s = v.data.clone();
            if !s.done.iter().any(|a| a.id == action.id) {
                s.done.push(action.clone());
                s.records.push(record.clone());
            }
            Ok(s)
        });
        match result {
            Ok(_) => return Ok(()),
            Err(StoreError::NotFound(_)) => {
                let empty = DunningState { account_id: account_id.to_string(), ..DunningState::default() };
                match docs.create(STATE, account_id, empty) {
                    Ok(_) | Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::service_unavailable("the dunning state is busy; retry", format!("{STATE} {account_id}")))
}

/// The queue: events through `bss_kit::events` (deterministic message ids).
pub struct QueueOutbox<'a> {
    /// The tenant whose events they are.
    pub tenant: &'a bss_kit::Tenant,
}

impl Outbox for QueueOutbox<'_> {
    fn event(&self, event_type: &str, event_id: &str, key: &str, payload: &Value) -> Result<(), ApiError> {
        use bss_kit::events::{envelope, event_subject, publish};
        let env = envelope(
            event_id.to_string(),
            bss_kit::ids::now_rfc3339(),
            "billing",
            event_type,
            &self.tenant.tenant_id,
            payload,
        );
        let body = serde_json::to_vec(&env).map_err(|e| ApiError::internal(format!("serialising event: {e}")))?;
        publish(&event_subject("billing", event_type), body, Some(event_id.to_string()), Some(key.to_string()))
            .map_err(|e| ApiError::service_unavailable("the event queue is unavailable; retry later", e.to_string()))?;
        Ok(())
    }

    fn order_placed(&self, change: &Change) -> Result<(), ApiError> {
        // As `bss_kit::resource::emit`, but a failure is an error: the action is then not
        // recorded, and the next run announces the order again.
        let doc = change.after.as_ref().ok_or_else(|| ApiError::internal("announcing a deleted order"))?;
        let payload = json!({ change.kind.collection: doc });
        for t in change.event_types() {
            bss_kit::events::publish_event_keyed(
                change.kind.domain,
                &t,
                &self.tenant.tenant_id,
                &payload,
                Some(change.id()),
            )?;
        }
        Ok(())
    }
}

/// Registers `POST dunningRun`, `GET dunningRun` and `GET dunningRun/{id}`.
#[cfg(feature = "component")]
pub fn register(r: &mut bss_kit::http::Router) {
    use bss_kit::http::{Reply, handler, param};
    use bss_kit::idempotency::{idempotent, tenant_scope};
    use bss_kit::resource::{routes, with_env};
    r.post(
        &format!("{}/dunningRun", bills::BASE),
        handler(|ctx, _| {
            with_env(ctx, |env| {
                idempotent(env.store.backend(), &tenant_scope(&env.tenant.tenant_id), ctx, || {
                    let req: RunRequest =
                        if ctx.body.iter().all(u8::is_ascii_whitespace) { RunRequest::default() } else { ctx.json()? };
                    if req.accounts.is_none() {
                        return Reply::json(201, &start(env, req, Utc::now())?);
                    }
                    let summary = run(env, &QueueOutbox { tenant: env.tenant }, req, Utc::now())?;
                    Reply::json(200, &summary)
                })
            })
        }),
    );
    r.get(&format!("{}/dunningRun", bills::BASE), handler(|ctx, _| with_env(ctx, |env| routes::list(env, RUN, ctx))));
    r.get(
        &format!("{}/dunningRun/:id", bills::BASE),
        handler(|ctx, p| {
            with_env(ctx, |env| {
                let page = Page::from_query(ctx.query_param("accountsAfter"), ctx.query_param("limit"))?;
                Reply::json(200, &status(env, &param(p, "id")?, Utc::now(), &page)?)
            })
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_domain::money::{Currency, Money};
    use bss_kit::Store;
    use bss_kit::auth::Tenant;
    use bss_kit::kv::MemKv;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder {
        events: RefCell<Vec<(String, String)>>,
    }

    impl Outbox for Recorder {
        fn event(&self, event_type: &str, event_id: &str, _: &str, _: &Value) -> Result<(), ApiError> {
            self.events.borrow_mut().push((event_type.to_string(), event_id.to_string()));
            Ok(())
        }
        fn order_placed(&self, _: &Change) -> Result<(), ApiError> {
            Ok(())
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// An account (UTC) with one bill of 30.00 due on 15 March 2026.
    fn setup(store: &Store<MemKv>) {
        let docs = store.tenant("t1");
        docs.create(
            "billingAccount",
            "a1",
            json!({"id": "a1", "currency": "EUR", "timeZone": "UTC", "billCycleDay": 1}),
        )
        .unwrap();
        let eur = Currency::new("EUR").unwrap();
        let mut l = Ledger::new("a1", eur);
        l.post_bill(
            "b1",
            Money::new("30.00".parse().unwrap(), eur),
            at("2026-03-01T06:00:00Z"),
            "2026-03-15".parse().unwrap(),
        )
        .unwrap();
        docs.create(LEDGER, "a1", l).unwrap();
    }

    #[test]
    fn a_reminder_is_sent_once_and_recorded() {
        let store = Store::new(MemKv::new());
        setup(&store);
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let out = Recorder::default();
        let req = |now: &str| RunRequest { now: Some(at(now)), accounts: Some(vec!["a1".into()]), policy: None };
        let s = run(&env, &out, req("2026-03-21T12:00:00Z"), Utc::now()).unwrap();
        assert_eq!((s["accountsChecked"].as_u64(), s["actionsTaken"].as_u64()), (Some(1), Some(0)), "{s}");
        let s = run(&env, &out, req("2026-03-23T12:00:00Z"), Utc::now()).unwrap();
        assert_eq!(s["actionsTaken"], 1, "{s}");
        assert_eq!(s["accounts"][0]["actions"][0]["kind"], "reminder", "{s}");
        let again = run(&env, &out, req("2026-03-24T12:00:00Z"), Utc::now()).unwrap();
        assert_eq!(again["actionsTaken"], 0, "{again}");
        let events = out.events.borrow();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0],
            ("DunningReminderEvent".to_string(), derived_id("dunning-event-", "dunning:b1:reminder:7"))
        );
        let state: DunningState = store.tenant("t1").get(STATE, "a1").unwrap().unwrap().data;
        assert_eq!(state.done.len(), 1);
        assert_eq!(state.records[0].kind, DunningActionKind::Reminder);
    }

    /// Runs the queued run's messages to the end, each plan step delivered twice, and the first
    /// batch again after its count is lost (a crash between its work and its count); answers the
    /// domain events published.
    fn drain(env: &Env<'_, &MemKv>, kv: &MemKv) -> Vec<(String, String)> {
        let mut events = Vec::new();
        let mut pending: std::collections::VecDeque<_> = bss_kit::events::native::take_published().into();
        let mut first_batch = true;
        while let Some((msg_id, subject, body)) = pending.pop_front() {
            if subject != crate::run::SUBJECT {
                events.push((subject, msg_id));
                continue;
            }
            let work: crate::run::Work = serde_json::from_slice(&body).unwrap();
            crate::run::work(env, &work, &msg_id).unwrap();
            let is_batch = matches!(work, crate::run::Work::Batch(_));
            if !is_batch || first_batch {
                if is_batch {
                    first_batch = false;
                    for k in kv.keys().into_iter().filter(|k| k.starts_with("t/t1/billRunTally/")) {
                        kv.delete(&k).unwrap();
                    }
                }
                pending.extend(bss_kit::events::native::take_published());
                crate::run::work(env, &work, &msg_id).unwrap();
            }
            pending.extend(bss_kit::events::native::take_published());
        }
        events
    }

    #[test]
    fn a_queued_run_duns_every_account_with_a_ledger_once_and_counts_each_once() {
        const N: usize = crate::run::PLAN_PAGE + 60;
        let kv = MemKv::new();
        let store = Store::new(&kv);
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let docs = store.tenant("t1");
        let eur = Currency::new("EUR").unwrap();
        let ledger = |id: &str, owes: bool| {
            let mut l = Ledger::new(id, eur);
            if owes {
                let due = "2026-03-15".parse().unwrap();
                l.post_bill(
                    &format!("b-{id}"),
                    Money::new("30.00".parse().unwrap(), eur),
                    at("2026-03-01T06:00:00Z"),
                    due,
                )
                .unwrap();
            }
            l
        };
        // Every 13th account owes a bill due on 15 March; a ledger whose account is gone fails;
        // an account without a ledger owes nothing and is not checked.
        let owing = (0..N).filter(|i| i % 13 == 0).count();
        for i in 0..N {
            let id = format!("a{i:05}");
            docs.create(
                "billingAccount",
                &id,
                json!({"id": id, "currency": "EUR", "timeZone": "UTC", "billCycleDay": 1}),
            )
            .unwrap();
            docs.create(LEDGER, &id, ledger(&id, i % 13 == 0)).unwrap();
        }
        docs.create(LEDGER, "gone", ledger("gone", true)).unwrap();
        docs.create("billingAccount", "new", json!({"id": "new", "currency": "EUR", "timeZone": "UTC"})).unwrap();
        bss_kit::events::native::take_published();

        let req = RunRequest { now: Some(at("2026-03-23T12:00:00Z")), accounts: None, policy: None };
        let run = start(&env, req, Utc::now()).unwrap();
        let id = run["id"].as_str().unwrap().to_string();
        assert_eq!(
            (&run["state"], &run["accountsQueued"], run.get("accountsTotal")),
            (&json!("inProgress"), &json!(0), None)
        );
        let events = drain(&env, &kv);

        let s = status(&env, &id, Utc::now(), &Page::default()).unwrap();
        assert_eq!(
            (&s["state"], &s["accountsTotal"], &s["accountsChecked"], &s["actionsTaken"], &s["failures"]),
            (&json!("completedWithErrors"), &json!(N + 1), &json!(N + 1), &json!(owing), &json!(1))
        );
        let listed = s["accounts"].as_array().unwrap();
        assert_eq!(listed.len(), owing + 1);
        for entry in listed {
            if entry["billingAccount"]["id"] == "gone" {
                assert_eq!(entry["failure"]["code"], "UNPROCESSABLE_ENTITY", "{entry}");
            } else {
                assert_eq!(entry["actions"].as_array().unwrap().len(), 1, "{entry}");
                assert_eq!(entry["actions"][0]["kind"], "reminder", "{entry}");
                assert!(entry.get("failure").is_none(), "{entry}");
            }
        }
        // The entries a page at a time: the same, in order, each once.
        let (mut paged, mut after) = (Vec::new(), None);
        loop {
            let page = Page { after: after.take(), limit: Some(100) };
            let s = status(&env, &id, Utc::now(), &page).unwrap();
            paged.extend(s["accounts"].as_array().unwrap().iter().cloned());
            match s.get("accountsNext").and_then(Value::as_str) {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        assert_eq!(&paged, listed);
        assert_eq!(Page::from_query(None, Some("0".into())).unwrap_err().status, 400);
        assert_eq!(Page::from_query(None, Some("x".into())).unwrap_err().status, 400);

        // One reminder event per owing account, published once.
        assert_eq!(events.len(), owing);
        assert!(events.iter().all(|(subject, _)| subject == "billing.DunningReminderEvent"));
        assert_eq!(events.iter().map(|(_, id)| id).collect::<BTreeSet<_>>().len(), owing);

        // The next day's run finds nothing due but the failing ledger.
        let req = RunRequest { now: Some(at("2026-03-24T12:00:00Z")), accounts: None, policy: None };
        let again = start(&env, req, Utc::now()).unwrap();
        assert!(drain(&env, &kv).is_empty());
        let s = status(&env, again["id"].as_str().unwrap(), Utc::now(), &Page::default()).unwrap();
        assert_eq!((&s["actionsTaken"], &s["failures"], &s["accountsChecked"]), (&json!(0), &json!(1), &json!(N + 1)));
    }

    #[test]
    fn a_named_run_is_bounded() {
        let store = Store::new(MemKv::new());
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let accounts = Some((0..=NAMED_ACCOUNTS_MAX).map(|i| format!("a{i}")).collect());
        let req = RunRequest { accounts, ..RunRequest::default() };
        assert_eq!(run(&env, &Recorder::default(), req, Utc::now()).unwrap_err().status, 413);
    }

    #[test]
    fn a_bad_policy_is_refused() {
        let store = Store::new(MemKv::new());
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let policy: DunningPolicy =
            serde_json::from_value(json!({"steps": [{"afterDays": 5, "action": "resume"}]})).unwrap();
        let req = RunRequest { policy: Some(policy.clone()), accounts: Some(Vec::new()), now: None };
        assert_eq!(run(&env, &Recorder::default(), req, Utc::now()).unwrap_err().status, 422);
        let req = RunRequest { policy: Some(policy), ..RunRequest::default() };
        assert_eq!(start(&env, req, Utc::now()).unwrap_err().status, 422);
    }

    #[test]
    fn order_ids_are_stable_per_action() {
        assert_eq!(order_id("dunning:b1:suspend:21", 0), order_id("dunning:b1:suspend:21", 0));
        assert_ne!(order_id("dunning:b1:suspend:21", 0), order_id("dunning:b1:suspend:21", 1));
        assert!(bss_kit::kv::valid_segment(&order_id("dunning:b1:resume", 0)));
    }
}
