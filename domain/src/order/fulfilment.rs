//! Orchestration of a product order as a pure function of its TMF622 JSON document: decomposition
//! into fulfilment tasks, dependencies between items, applying OSS results, rollback of
//! dependants, cancellation and the aggregated order state. Every function takes the document,
//! changes it in place (states with their history) and answers the messages to send
//! ([`Dispatch`]); the caller stores the document with compare-and-swap and only then sends them.
//!
//! Document shape (extensions of TMF622 in `fulfilmentTask` and `productAction`):
//! - order `state`, `stateChange: [{state, changeDate, reason?}]`, `completionDate`;
//! - item `state`, `stateChange`, `productAction` (activate | modify | suspend | resume |
//!   deactivate | none, decided when the order is placed), `productOrderItemRelationship:
//!   [{id, relationshipType}]` — `reliesOn` and `bundles` both mean "this item waits for that
//!   one" — and `fulfilmentTask: [{id, taskType, specification?, state, stateChange,
//!   characteristic?, compensates?}]`.
//!
//! Rules:
//! - [`start`]: every item is decomposed ([`decompose`]); an item whose dependencies are all
//!   completed is sent (item and tasks → inProgress), the others wait (`pending`); a `none`
//!   action (noChange) completes at once. The order becomes inProgress.
//! - A held or pending order sends no new work; work already sent still reports back.
//! - [`apply_result`]: a task completes or fails; a duplicate result (the task is no longer
//!   inProgress) changes nothing. An item completes when all its tasks completed (the OSS
//!   characteristics are merged into `product.productCharacteristic`), fails with its first
//!   failed task (its other tasks are cancelled). A late `completed` for a task that was
//!   cancelled meanwhile gets a compensating task, so nothing stays half-provisioned.
//! - Rollback: an item whose dependency failed or was cancelled is cancelled (in-flight tasks are
//!   cancelled at the OSS); a completed dependant is compensated (pendingCancellation, one
//!   compensating task per completed task, then cancelled — or failed when compensation fails).
//! - [`cancel`]: order → assessingCancellation → pendingCancellation; unfinished items are
//!   cancelled, completed ones compensated; the order is cancelled once no item is left to
//!   compensate.
//! - Aggregation: once every item is final, the order is completed (all completed), partial (some
//!   completed) or failed (none), or cancelled when it was being cancelled.

use serde_json::{Value, json};

use super::state::{ItemState, OrderState, TaskState};

/// Most items in an order.
pub const MAX_ITEMS: usize = 100;
/// Most fulfilment tasks one item decomposes into.
pub const MAX_TASKS_PER_ITEM: usize = 16;
/// Longest item id (ids become part of message and product ids).
pub const MAX_ITEM_ID_LEN: usize = 32;
/// Relationship types that make an item wait for another.
pub const DEPENDENCY_TYPES: &[&str] = &["reliesOn", "bundles"];

/// Why an operation on an order was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderError {
    /// The order's state forbids it (HTTP 409).
    Conflict(String),
    /// The request is wrong (HTTP 422).
    Invalid(String),
    /// No such task (HTTP 404).
    NotFound(String),
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderError::Conflict(m) | OrderError::Invalid(m) | OrderError::NotFound(m) => f.write_str(m),
        }
    }
}

/// A message to send once the document is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    /// `oss.task.<taskType>` or `oss.task.cancel`.
    pub subject: String,
    /// Deterministic: `<orderId>.<itemId>.<taskId>` (`.cancel` appended for a cancellation).
    pub message_id: String,
    /// `{orderId, itemId, taskId, taskType, productAction, specification?, characteristic}`.
    pub body: Value,
}

/// A service or resource specification an item's product specification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRef {
    /// Specification id.
    pub id: String,
    /// Specification name.
    pub name: String,
    /// `ServiceSpecification` or `ResourceSpecification`.
    pub referred_type: &'static str,
}

/// What OSS reported for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// Completed (true) or failed.
    pub completed: bool,
    /// Why it failed.
    pub reason: Option<String>,
    /// What the network allocated (`[{name, value}]`).
    pub characteristic: Vec<Value>,
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// The order's state (a document without a known state is refused).
pub fn order_state(doc: &Value) -> Result<OrderState, OrderError> {
    OrderState::parse(s(doc, "state"))
        .ok_or_else(|| OrderError::Invalid(format!("unknown order state {:?}", doc.get("state"))))
}

fn item_state(item: &Value) -> ItemState {
    ItemState::parse(s(item, "state")).unwrap_or(ItemState::Acknowledged)
}

fn task_state(task: &Value) -> TaskState {
    TaskState::parse(s(task, "state")).unwrap_or(TaskState::Planned)
}

fn history_entry(state: &str, now: &str, reason: Option<&str>) -> Value {
    let mut e = json!({"state": state, "changeDate": now});
    if let Some(r) = reason {
        e["reason"] = json!(r);
    }
    e
}

fn push_history(doc: &mut Value, state: &str, now: &str, reason: Option<&str>) {
    doc["state"] = json!(state);
    match doc.get_mut("stateChange").and_then(Value::as_array_mut) {
        Some(h) => h.push(history_entry(state, now, reason)),
        None => doc["stateChange"] = json!([history_entry(state, now, reason)]),
    }
}

/// Moves the order to `next` (legal transitions only), recording the change.
pub fn set_order_state(doc: &mut Value, next: OrderState, now: &str, reason: Option<&str>) -> Result<(), OrderError> {
    let current = order_state(doc)?;
    if !current.can_become(next) {
        return Err(OrderError::Conflict(format!("product order state {current} cannot become {next}")));
    }
    push_history(doc, next.as_str(), now, reason);
    if next.is_final() {
        doc["completionDate"] = json!(now);
    }
    Ok(())
}

fn set_item_state(item: &mut Value, next: ItemState, now: &str, reason: Option<&str>) {
    let current = item_state(item);
    // The engine only asks for legal transitions; the property test checks it. A bug must not
    // corrupt the history, so an illegal request is ignored rather than recorded.
    if current != next && (current.can_become(next) || item.get("state").is_none()) {
        push_history(item, next.as_str(), now, reason);
        if next == ItemState::Completed {
            item["completionDate"] = json!(now);
        }
    }
}

fn set_task_state(task: &mut Value, next: TaskState, now: &str, reason: Option<&str>) {
    if task_state(task).can_become(next) || task.get("state").is_none() {
        push_history(task, next.as_str(), now, reason);
    }
}

fn items(doc: &Value) -> &[Value] {
    doc.get("productOrderItem").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn items_mut(doc: &mut Value) -> &mut Vec<Value> {
    if !doc.get("productOrderItem").is_some_and(Value::is_array) {
        doc["productOrderItem"] = json!([]);
    }
    doc["productOrderItem"].as_array_mut().expect("set above")
}

fn tasks_mut(item: &mut Value) -> &mut Vec<Value> {
    if !item.get("fulfilmentTask").is_some_and(Value::is_array) {
        item["fulfilmentTask"] = json!([]);
    }
    item["fulfilmentTask"].as_array_mut().expect("set above")
}

/// The ids of the items `item` waits for.
pub fn dependencies(item: &Value) -> Vec<String> {
    item.get("productOrderItemRelationship")
        .and_then(Value::as_array)
        .map(|rels| {
            rels.iter()
                .filter(|r| DEPENDENCY_TYPES.contains(&s(r, "relationshipType")))
                .map(|r| s(r, "id").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Problems of the items' ids and relationships: ids unique, 1 to 32 characters
/// `[A-Za-z0-9_-]`, relationships naming items of the order, no cycle.
pub fn check_relationships(items: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let ids: Vec<&str> = items.iter().map(|i| s(i, "id")).collect();
    for (n, id) in ids.iter().enumerate() {
        if id.is_empty()
            || id.len() > MAX_ITEM_ID_LEN
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push(format!("productOrderItem[{n}].id must be 1 to {MAX_ITEM_ID_LEN} characters [A-Za-z0-9_-]"));
        } else if ids[..n].contains(id) {
            problems.push(format!("productOrderItem[{n}].id {id:?} is used by two items"));
        }
    }
    for (n, item) in items.iter().enumerate() {
        for dep in dependencies(item) {
            if dep == ids[n] || !ids.contains(&dep.as_str()) {
                problems.push(format!(
                    "productOrderItem[{n}].productOrderItemRelationship names {dep:?}, which is not another item of this order"
                ));
            }
        }
    }
    if problems.is_empty() {
        // Kahn's algorithm: what cannot be ordered is on a cycle.
        let deps: Vec<Vec<String>> = items.iter().map(dependencies).collect();
        let mut done = vec![false; items.len()];
        loop {
            let mut progress = false;
            for i in 0..items.len() {
                if !done[i] && deps[i].iter().all(|d| ids.iter().position(|x| x == d).is_some_and(|j| done[j])) {
                    done[i] = true;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        let cyclic: Vec<&str> = ids.iter().zip(&done).filter(|(_, d)| !**d).map(|(i, _)| *i).collect();
        if !cyclic.is_empty() {
            problems.push(format!("productOrderItemRelationship forms a cycle between items {}", cyclic.join(", ")));
        }
    }
    problems
}

/// The task type of an item's product action (`activate`, `modify`, `suspend`, `resume`,
/// `deactivate`; `provision` for an added product without service or resource specifications).
fn task_type(action: &str, has_specs: bool) -> &str {
    match action {
        "activate" if !has_specs => "provision",
        other => other,
    }
}

/// The tasks of one item (state `planned`): one per service and resource specification, or one
/// generic task when there are none; nothing for `productAction: none`.
pub fn decompose(item: &Value, specs: &[SpecRef], now: &str) -> Vec<Value> {
    let action = s(item, "productAction");
    if action.is_empty() || action == "none" {
        return Vec::new();
    }
    let kind = task_type(action, !specs.is_empty());
    let mut tasks: Vec<Value> = specs
        .iter()
        .take(MAX_TASKS_PER_ITEM)
        .enumerate()
        .map(|(n, spec)| {
            json!({"id": format!("t{}", n + 1), "taskType": kind,
                   "specification": {"id": spec.id, "name": spec.name, "@referredType": spec.referred_type}})
        })
        .collect();
    if tasks.is_empty() {
        tasks.push(json!({"id": "t1", "taskType": kind}));
    }
    for t in &mut tasks {
        set_task_state(t, TaskState::Planned, now, None);
    }
    tasks
}

fn dispatch(order_id: &str, item: &Value, task: &Value) -> Dispatch {
    let (item_id, task_id, kind) = (s(item, "id"), s(task, "id"), s(task, "taskType"));
    let mut body = json!({
        "orderId": order_id, "itemId": item_id, "taskId": task_id, "taskType": kind,
        "productAction": s(item, "productAction"),
        "characteristic": item.pointer("/product/productCharacteristic").cloned().unwrap_or(json!([])),
    });
    if let Some(spec) = task.get("specification") {
        body["specification"] = spec.clone();
    }
    if let Some(c) = task.get("compensates") {
        body["compensates"] = c.clone();
    }
    Dispatch { subject: format!("oss.task.{kind}"), message_id: format!("{order_id}.{item_id}.{task_id}"), body }
}

fn cancel_dispatch(order_id: &str, item: &Value, task: &Value) -> Dispatch {
    let mut d = dispatch(order_id, item, task);
    d.subject = "oss.task.cancel".into();
    d.message_id.push_str(".cancel");
    d.body["taskType"] = json!("cancel");
    d.body["cancelledTaskType"] = json!(s(task, "taskType"));
    d
}

/// The messages of every task still in progress (to resend after a crash between storing and
/// sending: message ids are deterministic, so the queue keeps one of each).
pub fn in_flight(doc: &Value) -> Vec<Dispatch> {
    let order_id = s(doc, "id");
    items(doc)
        .iter()
        .flat_map(|item| {
            item.get("fulfilmentTask")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| task_state(t) == TaskState::InProgress)
                .map(move |t| dispatch(order_id, item, t))
        })
        .collect()
}

/// Whether some item has not been decomposed yet.
pub fn needs_decomposition(doc: &Value) -> bool {
    items(doc).iter().any(|i| i.get("fulfilmentTask").is_none() && item_state(i) == ItemState::Acknowledged)
}

/// Starts fulfilment (see the module doc): from acknowledged, or an inProgress order an agent
/// resumed before it was ever decomposed. Anything else changes nothing.
pub fn start(
    doc: &mut Value,
    specs_of: &dyn Fn(&Value) -> Vec<SpecRef>,
    now: &str,
) -> Result<Vec<Dispatch>, OrderError> {
    match order_state(doc)? {
        OrderState::Acknowledged => set_order_state(doc, OrderState::InProgress, now, None)?,
        OrderState::InProgress if needs_decomposition(doc) => {}
        _ => return Ok(Vec::new()),
    }
    for item in items_mut(doc) {
        if item.get("fulfilmentTask").is_none() {
            let tasks = decompose(item, &specs_of(item), now);
            item["fulfilmentTask"] = Value::Array(tasks);
        }
    }
    Ok(propagate(doc, now))
}

fn compensation_type(action: &str) -> &'static str {
    match action {
        "deactivate" => "activate",
        "suspend" => "resume",
        "resume" => "suspend",
        "modify" => "modify",
        _ => "deactivate",
    }
}

/// Puts a completed item under compensation: one compensating task per completed task.
fn compensate(order_id: &str, item: &mut Value, now: &str, reason: &str, out: &mut Vec<Dispatch>) {
    set_item_state(item, ItemState::PendingCancellation, now, Some(reason));
    let action = s(item, "productAction").to_string();
    let done: Vec<Value> = item
        .get("fulfilmentTask")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter(|t| task_state(t) == TaskState::Completed && t.get("compensates").is_none())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if done.is_empty() {
        set_item_state(item, ItemState::Cancelled, now, Some(reason));
        return;
    }
    for t in done {
        let mut c = json!({"id": format!("{}-undo", s(&t, "id")), "taskType": compensation_type(&action),
                           "compensates": s(&t, "id")});
        if let Some(spec) = t.get("specification") {
            c["specification"] = spec.clone();
        }
        set_task_state(&mut c, TaskState::InProgress, now, Some(reason));
        out.push(dispatch(order_id, item, &c));
        tasks_mut(item).push(c);
    }
}

/// Cancels an unfinished item: its planned and in-flight tasks are cancelled (in-flight ones
/// at the OSS too).
fn cancel_item(order_id: &str, item: &mut Value, now: &str, reason: &str, out: &mut Vec<Dispatch>) {
    let snapshot = item.clone();
    for t in tasks_mut(item) {
        match task_state(t) {
            TaskState::InProgress => {
                out.push(cancel_dispatch(order_id, &snapshot, t));
                set_task_state(t, TaskState::Cancelled, now, Some(reason));
            }
            TaskState::Planned => set_task_state(t, TaskState::Cancelled, now, Some(reason)),
            _ => {}
        }
    }
    set_item_state(item, ItemState::Cancelled, now, Some(reason));
}

/// Rollback of dependants, release of items whose dependencies completed, and aggregation, until
/// nothing changes.
fn propagate(doc: &mut Value, now: &str) -> Vec<Dispatch> {
    let mut out = Vec::new();
    let order_id = s(doc, "id").to_string();
    let sending = order_state(doc).is_ok_and(|st| st == OrderState::InProgress);
    loop {
        let states: Vec<(String, ItemState)> =
            items(doc).iter().map(|i| (s(i, "id").to_string(), item_state(i))).collect();
        let state_of = |id: &str| states.iter().find(|(i, _)| i == id).map(|(_, st)| *st);
        let mut changed = false;
        for item in items_mut(doc) {
            let deps = dependencies(item);
            let broken = deps.iter().find(|d| {
                matches!(state_of(d), Some(ItemState::Failed | ItemState::Cancelled | ItemState::PendingCancellation))
            });
            let current = item_state(item);
            if let Some(dep) = broken {
                let reason = format!("rolled back: item {dep} did not complete");
                match current {
                    ItemState::Acknowledged | ItemState::Pending | ItemState::InProgress => {
                        cancel_item(&order_id, item, now, &reason, &mut out);
                        changed = true;
                    }
                    ItemState::Completed => {
                        compensate(&order_id, item, now, &reason, &mut out);
                        changed = true;
                    }
                    _ => {}
                }
                continue;
            }
            let ready = deps.iter().all(|d| state_of(d) == Some(ItemState::Completed));
            match current {
                // An item not decomposed yet (held before it started) waits for `start`.
                ItemState::Acknowledged | ItemState::Pending
                    if ready && sending && item.get("fulfilmentTask").is_some() =>
                {
                    let has_tasks = item.get("fulfilmentTask").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
                    if has_tasks {
                        set_item_state(item, ItemState::InProgress, now, None);
                        let snapshot = item.clone();
                        for t in tasks_mut(item) {
                            if task_state(t) == TaskState::Planned {
                                set_task_state(t, TaskState::InProgress, now, None);
                                out.push(dispatch(&order_id, &snapshot, t));
                            }
                        }
                    } else {
                        set_item_state(item, ItemState::Completed, now, Some("nothing to fulfil"));
                    }
                    changed = true;
                }
                ItemState::Acknowledged if !ready => {
                    set_item_state(item, ItemState::Pending, now, Some("waiting for the items it relies on"));
                    changed = true;
                }
                _ => {}
            }
        }
        if !changed {
            break;
        }
    }
    aggregate(doc, now);
    out
}

/// Sets the order's final state once every item is final.
fn aggregate(doc: &mut Value, now: &str) {
    let states: Vec<ItemState> = items(doc).iter().map(item_state).collect();
    if states.iter().any(|st| !st.is_final()) {
        return;
    }
    let Ok(current) = order_state(doc) else { return };
    let completed = states.iter().filter(|st| **st == ItemState::Completed).count();
    let next = match current {
        OrderState::PendingCancellation => OrderState::Cancelled,
        OrderState::InProgress | OrderState::Held | OrderState::Pending => {
            if completed == states.len() {
                OrderState::Completed
            } else if completed > 0 {
                OrderState::Partial
            } else {
                OrderState::Failed
            }
        }
        _ => return,
    };
    let _ = set_order_state(doc, next, now, None);
}

/// Applies an OSS result to task `task_id` of item `item_id` (see the module doc). Idempotent.
pub fn apply_result(
    doc: &mut Value,
    item_id: &str,
    task_id: &str,
    result: &TaskResult,
    now: &str,
) -> Result<Vec<Dispatch>, OrderError> {
    let order_id = s(doc, "id").to_string();
    let item = items_mut(doc)
        .iter_mut()
        .find(|i| s(i, "id") == item_id)
        .ok_or_else(|| OrderError::NotFound(format!("product order {order_id} has no item {item_id}")))?;
    let Some(n) = item
        .get("fulfilmentTask")
        .and_then(Value::as_array)
        .and_then(|ts| ts.iter().position(|t| s(t, "id") == task_id))
    else {
        return Err(OrderError::NotFound(format!("item {item_id} of product order {order_id} has no task {task_id}")));
    };
    let mut out = Vec::new();
    let current = task_state(&item["fulfilmentTask"][n]);
    if current != TaskState::InProgress {
        // A duplicate, or a late answer. A late success of a cancelled task did provision
        // something: undo it (once).
        let undo_id = format!("{task_id}-undo");
        let is_compensation = item["fulfilmentTask"][n].get("compensates").is_some();
        let undone = tasks_mut(item).iter().any(|t| s(t, "id") == undo_id);
        if current == TaskState::Cancelled && result.completed && !is_compensation && !undone {
            let task = item["fulfilmentTask"][n].clone();
            let mut c = json!({"id": undo_id, "taskType": compensation_type(s(item, "productAction")),
                               "compensates": task_id});
            if let Some(spec) = task.get("specification") {
                c["specification"] = spec.clone();
            }
            set_task_state(&mut c, TaskState::InProgress, now, Some("completed after it was cancelled"));
            out.push(dispatch(&order_id, item, &c));
            tasks_mut(item).push(c);
        }
        return Ok(out);
    }
    {
        let task = &mut item["fulfilmentTask"][n];
        let next = if result.completed { TaskState::Completed } else { TaskState::Failed };
        set_task_state(task, next, now, result.reason.as_deref());
        if !result.characteristic.is_empty() {
            task["characteristic"] = Value::Array(result.characteristic.clone());
        }
    }
    let is_compensation = item["fulfilmentTask"][n].get("compensates").is_some();
    let tasks = item["fulfilmentTask"].as_array().cloned().unwrap_or_default();
    match item_state(item) {
        ItemState::InProgress if !is_compensation => {
            if !result.completed {
                let reason =
                    format!("task {task_id} failed: {}", result.reason.as_deref().unwrap_or("no reason given"));
                let snapshot = item.clone();
                for t in tasks_mut(item) {
                    match task_state(t) {
                        TaskState::InProgress => {
                            out.push(cancel_dispatch(&order_id, &snapshot, t));
                            set_task_state(t, TaskState::Cancelled, now, Some(&reason));
                        }
                        TaskState::Planned => set_task_state(t, TaskState::Cancelled, now, Some(&reason)),
                        _ => {}
                    }
                }
                set_item_state(item, ItemState::Failed, now, Some(&reason));
            } else if tasks.iter().all(|t| task_state(t) == TaskState::Completed) {
                let allocated: Vec<Value> = tasks
                    .iter()
                    .filter_map(|t| t.get("characteristic").and_then(Value::as_array))
                    .flatten()
                    .cloned()
                    .collect();
                merge_characteristics(item, &allocated);
                set_item_state(item, ItemState::Completed, now, None);
            }
        }
        ItemState::PendingCancellation => {
            let undo: Vec<&Value> = tasks.iter().filter(|t| t.get("compensates").is_some()).collect();
            if undo
                .iter()
                .all(|t| matches!(task_state(t), TaskState::Completed | TaskState::Failed | TaskState::Cancelled))
            {
                if undo.iter().any(|t| task_state(t) == TaskState::Failed) {
                    set_item_state(item, ItemState::Failed, now, Some("compensation failed"));
                } else {
                    set_item_state(item, ItemState::Cancelled, now, Some("compensated"));
                }
            }
        }
        _ => {}
    }
    out.extend(propagate(doc, now));
    Ok(out)
}

/// Merges `[{name, value}]` into the item's `product.productCharacteristic` (same name replaced).
fn merge_characteristics(item: &mut Value, allocated: &[Value]) {
    if allocated.is_empty() {
        return;
    }
    if !item.get("product").is_some_and(Value::is_object) {
        item["product"] = json!({});
    }
    if !item["product"].get("productCharacteristic").is_some_and(Value::is_array) {
        item["product"]["productCharacteristic"] = json!([]);
    }
    let chars = item["product"]["productCharacteristic"].as_array_mut().expect("set above");
    for c in allocated {
        chars.retain(|x| s(x, "name") != s(c, "name"));
        chars.push(c.clone());
    }
}

/// Cancels the order (see the module doc): 409 when it is final or already being cancelled.
pub fn cancel(doc: &mut Value, reason: &str, now: &str) -> Result<Vec<Dispatch>, OrderError> {
    let current = order_state(doc)?;
    if !current.can_become(OrderState::AssessingCancellation) {
        return Err(OrderError::Conflict(format!(
            "product order {} is {current}; it can no longer be cancelled",
            s(doc, "id")
        )));
    }
    set_order_state(doc, OrderState::AssessingCancellation, now, Some(reason))?;
    set_order_state(doc, OrderState::PendingCancellation, now, Some(reason))?;
    let order_id = s(doc, "id").to_string();
    let mut out = Vec::new();
    let why = format!("order cancelled: {reason}");
    for item in items_mut(doc) {
        match item_state(item) {
            ItemState::Acknowledged | ItemState::Pending | ItemState::InProgress => {
                cancel_item(&order_id, item, now, &why, &mut out)
            }
            ItemState::Completed => compensate(&order_id, item, now, &why, &mut out),
            _ => {}
        }
    }
    out.extend(propagate(doc, now));
    Ok(out)
}

/// An agent's state change (PATCH of `state`): only held, pending and inProgress, with a reason
/// for held and pending; resuming sends the work that waited.
pub fn set_state_by_agent(
    doc: &mut Value,
    next: OrderState,
    reason: Option<&str>,
    now: &str,
) -> Result<Vec<Dispatch>, OrderError> {
    let current = order_state(doc)?;
    if !next.settable_by_agent() {
        return Err(OrderError::Conflict(format!(
            "product order state {current} → {next} cannot be set with PATCH: it results from fulfilment or cancelProductOrder"
        )));
    }
    if next != OrderState::InProgress && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(OrderError::Invalid(format!("putting a product order {next} needs a reason (stateChangeReason)")));
    }
    set_order_state(doc, next, now, reason)?;
    Ok(if next == OrderState::InProgress { propagate(doc, now) } else { Vec::new() })
}

/// The order's item states by item id.
pub fn item_states(doc: &Value) -> Vec<(String, ItemState)> {
    items(doc).iter().map(|i| (s(i, "id").to_string(), item_state(i))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: &str = "2026-03-01T10:00:00.000Z";

    fn specs(n: usize) -> Vec<SpecRef> {
        (0..n)
            .map(|i| SpecRef { id: format!("s{i}"), name: format!("spec {i}"), referred_type: "ServiceSpecification" })
            .collect()
    }

    /// An order of `deps.len()` items; item i relies on item `deps[i]` (an earlier one) if any,
    /// and decomposes into `tasks[i]` tasks (0: a noChange item).
    fn order(deps: &[Option<usize>], tasks: &[usize]) -> Value {
        let items: Vec<Value> = deps
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut item = json!({"id": format!("i{i}"), "state": "acknowledged",
                    "productAction": if tasks[i] == 0 { "none" } else { "activate" }, "taskCount": tasks[i]});
                if let Some(d) = d {
                    item["productOrderItemRelationship"] =
                        json!([{"id": format!("i{d}"), "relationshipType": "reliesOn"}]);
                }
                item
            })
            .collect();
        json!({"id": "o1", "state": "acknowledged", "stateChange": [{"state": "acknowledged", "changeDate": NOW}],
               "productOrderItem": items})
    }

    fn specs_of(item: &Value) -> Vec<SpecRef> {
        specs(item["taskCount"].as_u64().unwrap_or(0) as usize)
    }

    fn start_order(doc: &mut Value) -> Vec<Dispatch> {
        start(doc, &specs_of, NOW).unwrap()
    }

    #[derive(Debug, Clone)]
    enum Event {
        Result { pick: usize, ok: bool },
        Duplicate { pick: usize },
        Cancel,
        Hold,
        Resume,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            6 => (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(pick, ok)| Event::Result { pick, ok }),
            1 => any::<usize>().prop_map(|pick| Event::Duplicate { pick }),
            1 => Just(Event::Cancel),
            1 => Just(Event::Hold),
            1 => Just(Event::Resume),
        ]
    }

    fn history(v: &Value) -> Vec<String> {
        v["stateChange"]
            .as_array()
            .map(|h| h.iter().map(|e| e["state"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// Every recorded transition is legal, and the order's state agrees with its items.
    fn check_invariants(doc: &Value) -> Result<(), TestCaseError> {
        let h = history(doc);
        for w in h.windows(2) {
            let (a, b) = (OrderState::parse(&w[0]).unwrap(), OrderState::parse(&w[1]).unwrap());
            prop_assert!(a.can_become(b), "order {a} → {b}");
        }
        let states: Vec<ItemState> = item_states(doc).into_iter().map(|(_, s)| s).collect();
        for item in items(doc) {
            let h = history(item);
            for w in h.windows(2) {
                let (a, b) = (ItemState::parse(&w[0]).unwrap(), ItemState::parse(&w[1]).unwrap());
                prop_assert!(a.can_become(b), "item {a} → {b}");
            }
            // No work runs for an item whose dependencies have not all completed.
            if item_state(item) == ItemState::InProgress {
                for d in dependencies(item) {
                    let dep = item_states(doc).into_iter().find(|(i, _)| *i == d).unwrap().1;
                    prop_assert_eq!(dep, ItemState::Completed);
                }
            }
            for t in item["fulfilmentTask"].as_array().into_iter().flatten() {
                let h = history(t);
                for w in h.windows(2) {
                    let (a, b) = (TaskState::parse(&w[0]).unwrap(), TaskState::parse(&w[1]).unwrap());
                    prop_assert!(a.can_become(b), "task {a} → {b}");
                }
            }
        }
        let completed = states.iter().filter(|s| **s == ItemState::Completed).count();
        match order_state(doc).unwrap() {
            OrderState::Completed => prop_assert_eq!(completed, states.len()),
            OrderState::Partial => prop_assert!(completed > 0 && completed < states.len()),
            OrderState::Failed => prop_assert_eq!(completed, 0),
            OrderState::Cancelled => prop_assert_eq!(completed, 0),
            _ => prop_assert!(states.iter().any(|s| !s.is_final()) || states.is_empty()),
        }
        Ok(())
    }

    fn in_flight_tasks(doc: &Value) -> Vec<(String, String)> {
        in_flight(doc)
            .into_iter()
            .map(|d| (d.body["itemId"].as_str().unwrap().into(), d.body["taskId"].as_str().unwrap().into()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn no_illegal_transition_is_reachable(
            shape in prop::collection::vec((any::<prop::sample::Index>(), prop::bool::weighted(0.4), 0usize..4), 1..6),
            events in prop::collection::vec(event(), 0..24),
        ) {
            let deps: Vec<Option<usize>> =
                shape.iter().enumerate().map(|(i, (ix, has, _))| (i > 0 && *has).then(|| ix.index(i))).collect();
            let tasks: Vec<usize> = shape.iter().map(|(_, _, t)| *t).collect();
            let mut doc = order(&deps, &tasks);
            start_order(&mut doc);
            check_invariants(&doc)?;
            let mut answered: Vec<(String, String, bool)> = Vec::new();
            for e in events {
                match e {
                    Event::Result { pick, ok } => {
                        let live = in_flight_tasks(&doc);
                        if live.is_empty() { continue }
                        let (i, t) = &live[pick % live.len()];
                        let r = TaskResult { completed: ok, reason: (!ok).then(|| "no".into()), characteristic: vec![] };
                        apply_result(&mut doc, i, t, &r, NOW).unwrap();
                        answered.push((i.clone(), t.clone(), ok));
                    }
                    Event::Duplicate { pick } => {
                        if answered.is_empty() { continue }
                        let (i, t, ok) = answered[pick % answered.len()].clone();
                        let before = doc.clone();
                        let r = TaskResult { completed: ok, reason: None, characteristic: vec![] };
                        let out = apply_result(&mut doc, &i, &t, &r, NOW).unwrap();
                        if out.is_empty() { prop_assert_eq!(&before, &doc, "a duplicate result changes nothing"); }
                    }
                    Event::Cancel => {
                        let before = doc.clone();
                        if cancel(&mut doc, "customer changed their mind", NOW).is_err() {
                            prop_assert_eq!(&before, &doc, "a refused cancel changes nothing");
                        }
                    }
                    Event::Hold => { let _ = set_state_by_agent(&mut doc, OrderState::Held, Some("agent"), NOW); }
                    Event::Resume => { let _ = set_state_by_agent(&mut doc, OrderState::InProgress, None, NOW); }
                }
                check_invariants(&doc)?;
            }
            // Resume and let the network answer everything: every order ends in a final state.
            let _ = set_state_by_agent(&mut doc, OrderState::InProgress, None, NOW);
            for _ in 0..200 {
                let live = in_flight_tasks(&doc);
                let Some((i, t)) = live.first() else { break };
                apply_result(&mut doc, i, t, &TaskResult { completed: true, reason: None, characteristic: vec![] }, NOW).unwrap();
                check_invariants(&doc)?;
            }
            prop_assert!(order_state(&doc).unwrap().is_final(), "ends final, not {}", order_state(&doc).unwrap());
        }
    }

    #[test]
    fn a_failed_base_item_rolls_back_its_add_on_and_the_order_is_partial() {
        let mut doc = order(&[None, None, Some(1)], &[2, 1, 1]);
        let sent = start_order(&mut doc);
        assert_eq!(sent.len(), 3, "items 0 and 1 are sent, item 2 waits: {sent:?}");
        assert_eq!(sent[0].message_id, "o1.i0.t1");
        assert_eq!(sent[0].subject, "oss.task.activate");
        assert_eq!(item_states(&doc)[2].1, ItemState::Pending);
        let ok = TaskResult {
            completed: true,
            reason: None,
            characteristic: vec![json!({"name": "MSISDN", "value": "+331"})],
        };
        apply_result(&mut doc, "i0", "t1", &ok, NOW).unwrap();
        apply_result(&mut doc, "i0", "t2", &ok, NOW).unwrap();
        assert_eq!(item_states(&doc)[0].1, ItemState::Completed);
        assert_eq!(doc["productOrderItem"][0]["product"]["productCharacteristic"][0]["value"], "+331");
        let fail = TaskResult { completed: false, reason: Some("no port".into()), characteristic: vec![] };
        apply_result(&mut doc, "i1", "t1", &fail, NOW).unwrap();
        assert_eq!(item_states(&doc)[1].1, ItemState::Failed);
        assert_eq!(item_states(&doc)[2].1, ItemState::Cancelled);
        assert_eq!(doc["state"], "partial");
        let before = doc.clone();
        assert!(apply_result(&mut doc, "i1", "t1", &fail, NOW).unwrap().is_empty());
        assert_eq!(doc, before, "duplicate result");
        assert!(matches!(cancel(&mut doc, "late", NOW), Err(OrderError::Conflict(_))));
    }

    #[test]
    fn cancelling_in_flight_cancels_work_and_compensates_what_completed() {
        let mut doc = order(&[None, None], &[1, 1]);
        start_order(&mut doc);
        let ok = TaskResult { completed: true, reason: None, characteristic: vec![] };
        apply_result(&mut doc, "i0", "t1", &ok, NOW).unwrap();
        let sent = cancel(&mut doc, "changed mind", NOW).unwrap();
        let subjects: Vec<&str> = sent.iter().map(|d| d.subject.as_str()).collect();
        assert_eq!(subjects, vec!["oss.task.deactivate", "oss.task.cancel"]);
        assert_eq!(doc["state"], "pendingCancellation");
        assert_eq!(history(&doc), vec!["acknowledged", "inProgress", "assessingCancellation", "pendingCancellation"]);
        apply_result(&mut doc, "i0", "t1-undo", &ok, NOW).unwrap();
        assert_eq!(doc["state"], "cancelled");
        // The OSS finished the cancelled task anyway: it is undone.
        let late = apply_result(&mut doc, "i1", "t1", &ok, NOW).unwrap();
        assert_eq!(late[0].message_id, "o1.i1.t1-undo");
        assert_eq!(doc["state"], "cancelled");
    }

    #[test]
    fn agents_may_hold_and_resume_but_not_complete() {
        let mut doc = order(&[None], &[1]);
        assert!(matches!(set_state_by_agent(&mut doc, OrderState::Held, None, NOW), Err(OrderError::Invalid(_))));
        set_state_by_agent(&mut doc, OrderState::Held, Some("credit check"), NOW).unwrap();
        assert!(start_order(&mut doc).is_empty(), "a held order is not started");
        let e = set_state_by_agent(&mut doc, OrderState::Completed, None, NOW).unwrap_err();
        assert!(matches!(&e, OrderError::Conflict(m) if m.contains("held → completed")), "{e:?}");
        set_state_by_agent(&mut doc, OrderState::InProgress, None, NOW).unwrap();
        assert!(needs_decomposition(&doc));
        assert_eq!(start_order(&mut doc).len(), 1);
    }

    #[test]
    fn relationships_are_checked() {
        let items = vec![
            json!({"id": "a", "productOrderItemRelationship": [{"id": "b", "relationshipType": "reliesOn"}]}),
            json!({"id": "b", "productOrderItemRelationship": [{"id": "a", "relationshipType": "reliesOn"}]}),
        ];
        assert!(check_relationships(&items)[0].contains("cycle"));
        let items =
            vec![json!({"id": "a", "productOrderItemRelationship": [{"id": "z", "relationshipType": "reliesOn"}]})];
        assert!(check_relationships(&items)[0].contains("\"z\""));
        assert!(!check_relationships(&[json!({"id": "a/b"})]).is_empty());
        assert!(check_relationships(&[json!({"id": "1"}), json!({"id": "2"})]).is_empty());
    }
}
