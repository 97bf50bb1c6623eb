//! Dunning runs: what to do about bills left unpaid after their due date, executed. The rules
//! are `bss_domain::billing::dunning` (steps by days past due; default a reminder at due + 7
//! days, suspension at + 21, termination at + 60; paying the debt lifts a suspension). Unit
//! tests: `cargo test -p billing --no-default-features --lib`; end to end: `cargo test -p
//! bss-host --test e2e_payments`.
//!
//! Route (tenant API key required; honours `Idempotency-Key`):
//! `POST /tmf-api/customerBillManagement/v4/dunningRun` `{now?, accounts?, policy?}` → 200 a
//! summary: `accountsChecked`, `actionsTaken`, `failures` and, per account with an action or a
//! failure, the actions taken (kind, bill, event, product orders, products).
//! - `now` (RFC 3339; default the clock): the time the run acts at (tests, replays of a missed
//!   day). `accounts`: only these billing accounts (default: every account with a ledger, a
//!   prefix scan of the `ledger` collection). `policy`: a `DunningPolicy`
//!   (`{steps: [{afterDays, action: reminder|suspend|terminate}], minimumAmount}`, checked;
//!   default the domain's default policy).
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
//! and retried by the next run; a store or queue failure (5xx) ends the run with that error (a
//! rerun continues where it stopped).

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

/// The per-account record of the actions done.
pub const STATE: &str = "dunningState";
/// Most accounts one run scans.
pub const RUN_ACCOUNTS_MAX: usize = 1_000_000;

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

/// Runs dunning (see the module doc) at `clock` unless the request names its `now`.
pub fn run<B: KvBackend>(
    env: &Env<'_, B>,
    outbox: &dyn Outbox,
    req: RunRequest,
    clock: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let now = req.now.unwrap_or(clock);
    let policy = req.policy.unwrap_or_default();
    policy.check().map_err(|e| ApiError::unprocessable(format!("policy: {e}")))?;
    let accounts: Vec<String> = match req.accounts {
        Some(a) => a,
        None => {
            let prefix = format!("t/{}/{LEDGER}/", env.tenant.tenant_id);
            env.store.list_keys(&prefix, RUN_ACCOUNTS_MAX)?.into_iter().map(|k| k[prefix.len()..].to_string()).collect()
        }
    };
    let mut listed = Vec::new();
    let (mut actions, mut failures) = (0, 0);
    for account in &accounts {
        let mut done = Vec::new();
        match dun_account(env, outbox, &policy, account, now, &mut done) {
            Ok(()) if done.is_empty() => {}
            Ok(()) => {
                actions += done.len();
                listed.push(json!({"billingAccount": {"id": account}, "actions": done}));
            }
            Err(e) if e.status < 500 => {
                actions += done.len();
                failures += 1;
                listed.push(json!({"billingAccount": {"id": account}, "actions": done,
                                   "failure": {"code": e.code, "message": e.message}}));
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
#[cfg(feature = "component")]
struct Queue<'a> {
    tenant: &'a bss_kit::Tenant,
}

#[cfg(feature = "component")]
impl Outbox for Queue<'_> {
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

/// Registers `POST dunningRun`.
#[cfg(feature = "component")]
pub fn register(r: &mut bss_kit::http::Router) {
    use bss_kit::http::{Reply, handler};
    use bss_kit::idempotency::{idempotent, tenant_scope};
    use bss_kit::resource::with_env;
    r.post(
        &format!("{}/dunningRun", bills::BASE),
        handler(|ctx, _| {
            with_env(ctx, |env| {
                idempotent(env.store.backend(), &tenant_scope(&env.tenant.tenant_id), ctx, || {
                    let req: RunRequest =
                        if ctx.body.iter().all(u8::is_ascii_whitespace) { RunRequest::default() } else { ctx.json()? };
                    let summary = run(env, &Queue { tenant: env.tenant }, req, Utc::now())?;
                    Reply::json(200, &summary)
                })
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
        let req = |now: &str| RunRequest { now: Some(at(now)), ..RunRequest::default() };
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

    #[test]
    fn a_bad_policy_is_refused() {
        let store = Store::new(MemKv::new());
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let policy: DunningPolicy =
            serde_json::from_value(json!({"steps": [{"afterDays": 5, "action": "resume"}]})).unwrap();
        let req = RunRequest { policy: Some(policy), ..RunRequest::default() };
        assert_eq!(run(&env, &Recorder::default(), req, Utc::now()).unwrap_err().status, 422);
    }

    #[test]
    fn order_ids_are_stable_per_action() {
        assert_eq!(order_id("dunning:b1:suspend:21", 0), order_id("dunning:b1:suspend:21", 0));
        assert_ne!(order_id("dunning:b1:suspend:21", 0), order_id("dunning:b1:suspend:21", 1));
        assert!(bss_kit::kv::valid_segment(&order_id("dunning:b1:resume", 0)));
    }
}
