//! The resource layer's hooks for customer management: validation through `bss_domain::customer`,
//! references that must resolve, hierarchy checks, delete guards and the audit record of every write.

use bss_domain::customer::account::{AccountType, hierarchy_attributes, ref_ids, related_party_ids, validate_account};
use bss_domain::customer::audit::{
    Actor, AuditRecord, PENDING, RECORDED, diff, fingerprint, record_key, scrub_attributes, scrub_personal,
};
use bss_domain::customer::customer_record::{validate_customer, with_defaults};
use bss_domain::customer::hierarchy::{Forest, HierarchyError, MAX_DEPTH, Node};
use bss_domain::customer::partner::validate_party_role;
use bss_domain::customer::party::{validate_individual, validate_organization};
use bss_domain::customer::{Problem, Ref, RefKind};
use bss_kit::ApiError;
use bss_kit::ids::{now_ms, now_rfc3339};
use bss_kit::kv::KvBackend;
use bss_kit::resource::{Change, Env, Hooks, Kind, MAX_LISTED};
use serde_json::Value;

use crate::{
    ACCOUNT_KINDS, BILLING_ACCOUNT, CUSTOMER_KIND, INDIVIDUAL, ORGANIZATION, PARTY_ACCOUNT, PARTY_ROLE,
    SETTLEMENT_ACCOUNT,
};

/// Collection of the audit records.
pub const AUDIT: &str = "auditRecord";
/// Most audit records read for one resource.
pub const MAX_AUDIT_READ: usize = 10_000;

/// The hooks. `erasing` marks the writes of an erasure (validation of the erased form is the
/// domain's own, and the audit record is scrubbed before it is written).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// The write is (part of) an erasure.
    pub erasing: bool,
}

/// The answer of a domain refusal.
pub fn problem(p: Problem) -> ApiError {
    match p.status() {
        400 => ApiError::bad_request(p.to_string()).with_code("INVALID_ATTRIBUTE"),
        409 => ApiError::conflict(p.to_string()),
        _ => ApiError::unprocessable(p.to_string()),
    }
}

/// The kind of a reference.
pub fn kind_of(r: RefKind) -> Kind {
    match r {
        RefKind::Individual => INDIVIDUAL,
        RefKind::Organization => ORGANIZATION,
        RefKind::Customer => CUSTOMER_KIND,
        RefKind::BillingAccount => BILLING_ACCOUNT,
        RefKind::PartyAccount => PARTY_ACCOUNT,
        RefKind::SettlementAccount => SETTLEMENT_ACCOUNT,
    }
}

fn account_type(kind: &Kind) -> Option<AccountType> {
    match kind.collection {
        "billingAccount" => Some(AccountType::Billing),
        "partyAccount" => Some(AccountType::Party),
        "settlementAccount" => Some(AccountType::Settlement),
        _ => None,
    }
}

/// Every reference must resolve (422 naming the attribute otherwise).
pub fn resolve<B: KvBackend>(env: &Env<'_, B>, refs: &[Ref]) -> Result<(), ApiError> {
    for r in refs {
        if env.resources(kind_of(r.kind)).find(&r.id)?.is_none() {
            return Err(problem(r.unresolved()));
        }
    }
    Ok(())
}

/// The forest of the tenant's accounts of `kind`; 409 when there are more than the layer lists.
pub fn forest<B: KvBackend>(env: &Env<'_, B>, kind: Kind) -> Result<(Forest, Vec<Value>), ApiError> {
    let docs = env.resources(kind).all()?;
    if docs.len() >= MAX_LISTED {
        return Err(ApiError::conflict(format!(
            "hierarchy operations support at most {} {} accounts per tenant for now",
            MAX_LISTED - 1,
            kind.collection
        )));
    }
    let mut f = Forest::new();
    for d in &docs {
        if let Some(id) = d.get("id").and_then(Value::as_str) {
            let (parent, bill_roll_up) = hierarchy_attributes(d);
            f.insert(id, Node { parent, bill_roll_up });
        }
    }
    Ok((f, docs))
}

/// The answer of a refused hierarchy operation.
pub fn hierarchy_error(e: HierarchyError) -> ApiError {
    match e {
        HierarchyError::Broken(_) => ApiError::conflict(e.to_string()),
        other => ApiError::unprocessable(format!("parentAccount: {other}")),
    }
}

fn check_hierarchy<B: KvBackend>(
    env: &Env<'_, B>,
    kind: &Kind,
    before: Option<&Value>,
    next: &Value,
    parent: Option<&str>,
) -> Result<(), ApiError> {
    let old_parent = before.and_then(|b| hierarchy_attributes(b).0);
    if before.is_some() && old_parent.as_deref() == parent {
        return Ok(());
    }
    let id = next.get("id").and_then(Value::as_str).unwrap_or_default();
    if before.is_none() {
        // A new account has no subtree: only its parent's depth matters, read up its chain of
        // ancestors (the whole forest is not needed, and creating an account must not cost
        // more as the tenant's accounts grow).
        if let Some(p) = parent {
            let depth = ancestors(env, *kind, p)?.path_to_root(p).map_err(hierarchy_error)?.len() + 1;
            if depth > MAX_DEPTH {
                return Err(hierarchy_error(HierarchyError::TooDeep { depth }));
            }
        }
        return Ok(());
    }
    let (mut f, _) = forest(env, *kind)?;
    f.move_to(id, parent).map_err(hierarchy_error)
}

/// The accounts of `kind` from `id` up to its root, as a forest: one read per ancestor, at most
/// [`MAX_DEPTH`] + 2 (enough for [`Forest::path_to_root`] to see a chain too deep or a loop). A
/// missing account ends the chain: the forest then has no node for it, as the full one would not.
fn ancestors<B: KvBackend>(env: &Env<'_, B>, kind: Kind, id: &str) -> Result<Forest, ApiError> {
    let accounts = env.resources(kind);
    let mut f = Forest::new();
    let mut cur = Some(id.to_string());
    while let Some(a) = cur.take() {
        if f.get(&a).is_some() || f.len() > MAX_DEPTH + 1 {
            break;
        }
        let Some(doc) = accounts.find(&a)? else { break };
        let (parent, bill_roll_up) = hierarchy_attributes(&doc.data);
        cur = parent.clone();
        f.insert(a, Node { parent, bill_roll_up });
    }
    Ok(f)
}

impl<B: KvBackend> Hooks<B> for Rules {
    fn validate(&self, env: &Env<'_, B>, kind: &Kind, before: Option<&Value>, next: Value) -> Result<Value, ApiError> {
        let next = self.check(env, kind, before, next)?;
        // Written ahead: a function stopped between this and the write leaves a pending record,
        // never a change without one.
        self.write_audit(env, kind, before, Some(&next), 0, PENDING)?;
        Ok(next)
    }

    fn before_delete(&self, env: &Env<'_, B>, kind: &Kind, doc: &Value) -> Result<(), ApiError> {
        self.guard_delete(env, kind, doc)?;
        self.write_audit(env, kind, Some(doc), None, 0, PENDING)?;
        Ok(())
    }

    fn after_write(&self, env: &Env<'_, B>, change: &Change) -> Result<(), ApiError> {
        self.write_audit(env, &change.kind, change.before.as_ref(), change.after.as_ref(), change.version, RECORDED)?;
        self.recheck_move(env, change)?;
        if change.kind.collection == bss_commerce::pricing::CUSTOMER.collection && change.before.is_none() {
            bss_commerce::subscribers::open_customer_index(env, change.id())?;
        }
        if change.kind.collection == "billingAccount" {
            // Re-read: a move undone by the recheck is indexed as it stands.
            let stored = env.resources(change.kind).find(change.id())?.map(|d| d.data);
            bss_commerce::subscribers::index_account_parent(
                env,
                change.id(),
                change.before.as_ref().map(hierarchy_attributes),
                stored.as_ref().map(hierarchy_attributes),
            )?;
        }
        Ok(())
    }
}

impl Rules {
    /// After a move is stored, walks its new ancestors with fresh reads: a concurrent move may have
    /// closed a loop that neither check could see. Such a move is undone (back under its old
    /// parent, or detached if that is refused) and answered 409.
    fn recheck_move<B: KvBackend>(&self, env: &Env<'_, B>, change: &Change) -> Result<(), ApiError> {
        let (Some(before), Some(after)) = (&change.before, &change.after) else { return Ok(()) };
        let (old_parent, new_parent) = (hierarchy_attributes(before).0, hierarchy_attributes(after).0);
        if account_type(&change.kind).is_none() || old_parent == new_parent || new_parent.is_none() {
            return Ok(());
        }
        let id = change.id().to_string();
        let accounts = env.resources(change.kind);
        let mut chain = Vec::new();
        let mut cur = new_parent.clone();
        while let Some(p) = cur {
            chain.push(p.clone());
            if p == id {
                let set_parent = |parent: Option<String>| {
                    move |doc: &Value| {
                        let mut next = doc.clone();
                        if let Value::Object(m) = &mut next {
                            match &parent {
                                Some(op) => m.insert("parentAccount".into(), serde_json::json!({"id": op})),
                                None => m.remove("parentAccount"),
                            };
                        }
                        Ok(next)
                    }
                };
                if let Err(e) = accounts.modify(env, self, &id, set_parent(old_parent.clone())) {
                    eprintln!("customer: undoing the move of {id} under its old parent failed ({e}); detaching it");
                    accounts.modify(env, self, &id, set_parent(None))?;
                }
                return Err(ApiError::conflict(format!(
                    "moving {id} under {} made a cycle with a concurrent move: {}; the move was undone",
                    new_parent.unwrap_or_default(),
                    chain.join(" → ")
                )));
            }
            if chain.len() > MAX_DEPTH {
                break;
            }
            cur = accounts.find(&p)?.and_then(|d| hierarchy_attributes(&d.data).0);
        }
        Ok(())
    }

    fn check<B: KvBackend>(
        &self,
        env: &Env<'_, B>,
        kind: &Kind,
        before: Option<&Value>,
        next: Value,
    ) -> Result<Value, ApiError> {
        match kind.collection {
            "individual" => {
                if !self.erasing {
                    validate_individual(&next, before, chrono::Utc::now().date_naive()).map_err(problem)?;
                }
                Ok(next)
            }
            "organization" => {
                validate_organization(&next).map_err(problem)?;
                Ok(next)
            }
            "customer" => {
                let next = if before.is_none() { with_defaults(next) } else { next };
                let refs = validate_customer(&next, before).map_err(problem)?;
                resolve(env, &refs)?;
                Ok(next)
            }
            "partyRole" => {
                let refs = validate_party_role(&next).map_err(problem)?;
                resolve(env, &refs)?;
                Ok(next)
            }
            _ => {
                let t = account_type(kind)
                    .ok_or_else(|| ApiError::internal(format!("no rules for {}", kind.collection)))?;
                let info = validate_account(t, &next).map_err(problem)?;
                resolve(env, &info.refs)?;
                check_hierarchy(env, kind, before, &next, info.parent.as_deref())?;
                Ok(next)
            }
        }
    }

    fn guard_delete<B: KvBackend>(&self, env: &Env<'_, B>, kind: &Kind, doc: &Value) -> Result<(), ApiError> {
        let id = doc.get("id").and_then(Value::as_str).unwrap_or_default();
        let refused = |what: &str, by: &Kind, other: &Value| {
            let other_id = other.get("id").and_then(Value::as_str).unwrap_or_default();
            Err(ApiError::conflict(format!(
                "{} {id} cannot be deleted: {} {other_id} {what}",
                kind.collection, by.collection
            )))
        };
        match kind.collection {
            "individual" | "organization" => {
                for c in env.resources(CUSTOMER_KIND).all()? {
                    if ref_ids(&c, "engagedParty").iter().any(|r| r == id) {
                        return refused("is engaged with it", &CUSTOMER_KIND, &c);
                    }
                }
                for r in env.resources(PARTY_ROLE).all()? {
                    if ref_ids(&r, "engagedParty").iter().any(|x| x == id) {
                        return refused("is engaged with it", &PARTY_ROLE, &r);
                    }
                }
                for k in ACCOUNT_KINDS {
                    for a in env.resources(k).all()? {
                        if related_party_ids(&a).iter().any(|x| x == id) {
                            return refused("names it as a related party", &k, &a);
                        }
                    }
                }
            }
            "customer" => {
                for k in ACCOUNT_KINDS {
                    for a in env.resources(k).all()? {
                        if related_party_ids(&a).iter().any(|x| x == id) {
                            return refused("names it as a related party", &k, &a);
                        }
                    }
                }
            }
            "partyRole" => {}
            _ => {
                for a in env.resources(*kind).all()? {
                    if hierarchy_attributes(&a).0.as_deref() == Some(id) {
                        return refused("is its child (move or delete the children first)", kind, &a);
                    }
                }
                for by in [CUSTOMER_KIND, PARTY_ROLE] {
                    for c in env.resources(by).all()? {
                        if ref_ids(&c, "account").iter().any(|x| x == id) {
                            return refused("refers to it in account", &by, &c);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn action(&self, kind: &Kind, before: Option<&Value>, after: Option<&Value>) -> &'static str {
        match (before, after) {
            (None, _) => "create",
            (_, None) => "delete",
            _ if self.erasing => "erase",
            (Some(b), Some(a)) => {
                if account_type(kind).is_some() && hierarchy_attributes(b).0 != hierarchy_attributes(a).0 {
                    "move"
                } else {
                    "patch"
                }
            }
        }
    }

    /// Writes the audit record of a write: `PENDING` ahead of it, `RECORDED` after it, under the
    /// same key (`<id>:<lastUpdate ms>-<fingerprint of the new document>`; a delete's pending
    /// record is found by listing). Confirming a change also removes the pending records of
    /// attempts that started from the same document and lost the compare-and-swap.
    fn write_audit<B: KvBackend>(
        &self,
        env: &Env<'_, B>,
        kind: &Kind,
        before: Option<&Value>,
        after: Option<&Value>,
        version: u64,
        state: &str,
    ) -> Result<(), ApiError> {
        let doc_id = |d: Option<&Value>| d.and_then(|d| d.get("id")).and_then(Value::as_str).map(str::to_string);
        let resource_id = doc_id(after).or_else(|| doc_id(before)).unwrap_or_default();
        let last_update =
            |d: Option<&Value>| d.and_then(|d| d.get("lastUpdate")).and_then(Value::as_str).map(str::to_string);
        let based_on = before.map(version_tag);
        let docs = env.store.tenant(&env.tenant.tenant_id);
        let trail_prefix = format!("t/{}/{AUDIT}/{resource_id}:", env.tenant.tenant_id);
        let (id, at) = match after {
            Some(a) => (format!("{resource_id}:{}", version_tag(a)), last_update(after).unwrap_or_else(now_rfc3339)),
            None => {
                let pending = if state == RECORDED {
                    env.store
                        .list::<Value>(&trail_prefix, MAX_AUDIT_READ)?
                        .into_iter()
                        .rev()
                        .find(|(_, d)| d.data["action"] == "delete" && d.data["state"] == PENDING)
                } else {
                    None
                };
                match pending {
                    Some((_, d)) => (
                        d.data["id"].as_str().unwrap_or_default().to_string(),
                        d.data["at"].as_str().unwrap_or_default().to_string(),
                    ),
                    None => {
                        // After the record of the last stored version, even within its millisecond.
                        let last_ms = before.map(version_tag).and_then(|t| t.get(..15)?.parse::<u64>().ok());
                        let at_ms = now_ms().max(last_ms.map_or(0, |ms| ms + 1));
                        (record_key(&resource_id, at_ms, "delete"), now_rfc3339())
                    }
                }
            }
        };
        let (changes, truncated) = diff(before, after);
        let mut record = AuditRecord {
            id: id.clone(),
            type_name: "AuditRecord".into(),
            resource_type: kind.type_name.into(),
            resource_id: resource_id.clone(),
            action: self.action(kind, before, after).into(),
            actor: Actor { tenant_id: env.tenant.tenant_id.clone(), key_id: env.tenant.key_id.clone() },
            at,
            resource_version: version,
            changes,
            truncated,
            state: state.into(),
            based_on: based_on.clone(),
        };
        if self.erasing {
            if kind.collection == "individual" {
                scrub_personal(&mut record);
            } else {
                scrub_attributes(&mut record, &["name", "engagedParty", "relatedParty"]);
            }
        }
        let mut doc = serde_json::to_value(&record).map_err(|e| ApiError::internal(e.to_string()))?;
        doc["href"] = Value::String(format!("{}/{AUDIT}/{id}", crate::CUSTOMER));
        docs.put(AUDIT, &id, doc)?;
        if state == RECORDED && based_on.is_some() {
            for (key, d) in env.store.list::<Value>(&trail_prefix, MAX_AUDIT_READ)? {
                let lost = d.data["state"] == PENDING
                    && d.data["id"].as_str() != Some(id.as_str())
                    && d.data.get("basedOn").and_then(Value::as_str) == based_on.as_deref();
                if lost {
                    env.store.delete(&key)?;
                }
            }
        }
        Ok(())
    }
}

/// The tag of one stored version of a document: `<lastUpdate in ms, 15 digits>-<fingerprint>`.
/// The audit record of the write that produced the version is keyed `<id>:<tag>`, and the record
/// of the next write names it in `basedOn`: only one write can succeed from a given version.
pub fn version_tag(doc: &Value) -> String {
    let ms = doc
        .get("lastUpdate")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| u64::try_from(t.timestamp_millis()).unwrap_or(0));
    let key = record_key("", ms, &fingerprint(&doc.to_string()));
    key.trim_start_matches(':').to_string()
}

/// The records a reader sees: a pending record is hidden when a recorded one starts from the same
/// version (`basedOn`) — it was an attempt that lost the compare-and-swap; a pending record
/// without such a sibling is shown (the function stopped; the change may or may not be stored).
pub fn visible_records(records: Vec<Value>) -> Vec<Value> {
    let won: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| r["state"] == RECORDED)
        .filter_map(|r| r.get("basedOn").and_then(Value::as_str).map(str::to_string))
        .collect();
    records
        .into_iter()
        .filter(|r| r["state"] != PENDING || !r.get("basedOn").and_then(Value::as_str).is_some_and(|b| won.contains(b)))
        .collect()
}

/// Scrubs the audit records of one resource: all personal values (`attributes: None`) or only
/// those under the given attributes; how many records changed.
pub fn scrub_trail<B: KvBackend>(
    env: &Env<'_, B>,
    resource_id: &str,
    attributes: Option<&[&str]>,
) -> Result<usize, ApiError> {
    let prefix = format!("t/{}/{AUDIT}/{resource_id}:", env.tenant.tenant_id);
    let mut scrubbed = 0;
    for (key, doc) in env.store.list::<Value>(&prefix, MAX_AUDIT_READ)? {
        let mut record: AuditRecord = match serde_json::from_value(doc.data.clone()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("customer: unreadable audit record {key}: {e}");
                continue;
            }
        };
        let changed = match attributes {
            None => scrub_personal(&mut record),
            Some(a) => scrub_attributes(&mut record, a),
        };
        if changed {
            let mut next = serde_json::to_value(&record).map_err(|e| ApiError::internal(e.to_string()))?;
            next["href"] = doc.data.get("href").cloned().unwrap_or(Value::Null);
            env.store.put(&key, next)?;
            scrubbed += 1;
        }
    }
    Ok(scrubbed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_kit::Tenant;
    use bss_kit::kv::{MemKv, Store};
    use serde_json::json;

    fn trail(store: &Store<MemKv>, id: &str) -> Vec<Value> {
        store.list::<Value>(&format!("t/t1/{AUDIT}/{id}:"), 100).unwrap().into_iter().map(|(_, d)| d.data).collect()
    }

    fn setup() -> (Store<MemKv>, Tenant) {
        (Store::new(MemKv::new()), Tenant { tenant_id: "t1".into(), key_id: "k1".into() })
    }

    #[test]
    fn a_new_account_reads_its_ancestors_only_whatever_the_number_of_accounts() {
        let (store, tenant) = setup();
        let env = Env::new(&store, &tenant);
        let docs = store.tenant("t1");
        let account = |id: &str, parent: Option<&str>| match parent {
            Some(p) => json!({"id": id, "parentAccount": {"id": p}}),
            None => json!({"id": id}),
        };
        // More accounts than a full read of the collection allows (it answered 409 from here on).
        for n in 0..MAX_LISTED {
            docs.create(BILLING_ACCOUNT.collection, &format!("a{n}"), account(&format!("a{n}"), None)).unwrap();
        }
        let next = account("new", Some("a7"));
        check_hierarchy(&env, &BILLING_ACCOUNT, None, &next, Some("a7")).unwrap();
        check_hierarchy(&env, &BILLING_ACCOUNT, None, &account("new", None), None).unwrap();
        // A chain MAX_DEPTH deep: a child of its deepest account would be one too deep.
        for d in 1..MAX_DEPTH {
            let parent = format!("d{}", d - 1);
            let parent = if d == 1 { "a0".to_string() } else { parent };
            docs.create(BILLING_ACCOUNT.collection, &format!("d{d}"), account(&format!("d{d}"), Some(&parent)))
                .unwrap();
        }
        let deepest = format!("d{}", MAX_DEPTH - 1);
        let refused = check_hierarchy(&env, &BILLING_ACCOUNT, None, &account("new", Some(&deepest)), Some(&deepest));
        assert!(refused.unwrap_err().to_string().contains("deep"));
        check_hierarchy(&env, &BILLING_ACCOUNT, None, &next, Some(&format!("d{}", MAX_DEPTH - 2))).unwrap();
        // A parent whose own parent is gone: the stored hierarchy is broken, as before.
        docs.create(BILLING_ACCOUNT.collection, "orphan", account("orphan", Some("gone"))).unwrap();
        let broken = check_hierarchy(&env, &BILLING_ACCOUNT, None, &next, Some("orphan")).unwrap_err();
        assert_eq!(broken.status, 409, "{broken:?}");
    }

    #[test]
    fn a_function_stopped_before_the_write_leaves_a_pending_record() {
        let (store, tenant) = setup();
        let env = Env::new(&store, &tenant);
        let orgs = env.resources(ORGANIZATION);
        let created = orgs.create(&env, &Rules::default(), json!({"name": "Acme"})).unwrap();
        let id = created.id().to_string();
        // The validation hook runs (and writes ahead), then the function stops: no store.
        let before = created.after.clone().unwrap();
        let mut next = before.clone();
        next["name"] = json!("Acme Two");
        next["lastUpdate"] = json!("2099-01-01T00:00:00.000Z");
        Hooks::validate(&Rules::default(), &env, &ORGANIZATION, Some(&before), next).unwrap();
        let records = trail(&store, &id);
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!((records[0]["action"].as_str(), records[0]["state"].as_str()), (Some("create"), Some(RECORDED)));
        assert_eq!((records[1]["action"].as_str(), records[1]["state"].as_str()), (Some("patch"), Some(PENDING)));
        assert_eq!(records[1]["changes"][0], json!({"path": "/name", "old": "Acme", "new": "Acme Two"}));
        assert_eq!(orgs.get(&id).unwrap().data["name"], "Acme", "the change itself was not stored");
    }

    #[test]
    fn attempts_that_lose_a_compare_and_swap_leave_no_pending_record() {
        let (store, tenant) = setup();
        let env = Env::new(&store, &tenant);
        let orgs = env.resources(ORGANIZATION);
        let created = orgs.create(&env, &Rules::default(), json!({"name": "Acme"})).unwrap();
        let id = created.id().to_string();
        // An attempt validated (and written ahead) from the same document, whose write then lost
        // the compare-and-swap to the patch below.
        let before = created.after.clone().unwrap();
        let mut lost = before.clone();
        lost["name"] = json!("Acme Lost");
        lost["lastUpdate"] = json!("2000-01-01T00:00:00.000Z");
        Hooks::validate(&Rules::default(), &env, &ORGANIZATION, Some(&before), lost).unwrap();
        assert_eq!(trail(&store, &id).len(), 2);
        store.backend().lose_next_cas(3);
        let changed = orgs.patch(&env, &Rules::default(), &id, &json!({"name": "Acme Two"}), None).unwrap();
        let records = trail(&store, &id);
        assert_eq!(records.len(), 2, "one record per stored change: {records:?}");
        assert!(records.iter().all(|r| r["state"] == RECORDED), "{records:?}");
        assert_eq!(records[1]["resourceVersion"], changed.version);
        // A losing attempt whose write-ahead lands after the winner's cleanup stays stored, but
        // readers do not see it: a recorded change already started from the same version.
        let mut late = before.clone();
        late["name"] = json!("Acme Late");
        late["lastUpdate"] = json!("2100-01-01T00:00:00.000Z");
        Hooks::validate(&Rules::default(), &env, &ORGANIZATION, Some(&before), late).unwrap();
        let records = trail(&store, &id);
        assert_eq!(records.len(), 3);
        let visible = visible_records(records);
        assert_eq!(visible.len(), 2, "{visible:?}");
        assert!(visible.iter().all(|r| r["state"] == RECORDED));
        // A pending record from the latest version (a function that stopped) stays visible.
        let latest = changed.after.clone().unwrap();
        let mut stopped = latest.clone();
        stopped["name"] = json!("Acme Three");
        stopped["lastUpdate"] = json!("2100-01-02T00:00:00.000Z");
        Hooks::validate(&Rules::default(), &env, &ORGANIZATION, Some(&latest), stopped).unwrap();
        let visible = visible_records(trail(&store, &id));
        assert_eq!(
            visible.iter().map(|r| r["state"].as_str().unwrap()).collect::<Vec<_>>(),
            [RECORDED, RECORDED, PENDING]
        );
    }

    #[test]
    fn refused_documents_write_nothing() {
        let (store, tenant) = setup();
        let env = Env::new(&store, &tenant);
        let e = env
            .resources(CUSTOMER_KIND)
            .create(
                &env,
                &Rules::default(),
                json!({"name": "X", "engagedParty": {"id": "nobody", "@referredType": "Individual"}}),
            )
            .unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.contains("engagedParty.id: individual nobody does not exist"), "{}", e.message);
        assert!(store.backend().keys().is_empty(), "{:?}", store.backend().keys());
    }
}
