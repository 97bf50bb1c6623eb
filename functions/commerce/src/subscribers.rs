//! The subscriber index: which product a subscriber number (MSISDN) belongs to, over time — the
//! lookup mediation uses to guide a usage record to its product, tariff and account. Kept by the
//! inventory writers (order completion and API writes of `product`), one document per number
//! (collection `subscriberLine`, id = the E.164 digits without `+`), listing every product that
//! has carried the number with its dates, so a record is guided by the product active at its
//! start time even after the number moved to another customer. Idempotent: re-indexing a
//! product rewrites its own entry only.
//!
//! Beside it, the account indexes a bill run reads instead of scanning: `accountProducts` (id =
//! the billing account: every product ever billed to it) and `accountChildren` (id = a billing
//! account: its direct children and whether their bills roll up into it; kept by the customer
//! component on every account write). And `customerProducts` (id = a customer: every product
//! ever held by it), which quotes and orders read to know what a customer holds; the customer
//! component opens it, empty, when it creates the customer, and only an open index is kept: a
//! customer created before the index existed has none, and its products are found by a scan.

use bss_kit::ApiError;
use bss_kit::kv::{KvBackend, StoreError};
use bss_kit::resource::Env;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The collection of the index.
pub const COLLECTION: &str = "subscriberLine";
/// Most products one number may have carried (older entries beyond it are dropped first).
pub const ENTRIES_MAX: usize = 64;

/// One product that carried the number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineEntry {
    /// The inventory product.
    pub product_id: String,
    /// Its billing account.
    pub billing_account_id: String,
    /// Its offering.
    pub offering_id: String,
    /// Its customer.
    pub customer_id: String,
    /// When it started (RFC 3339).
    pub start_date: String,
    /// When it ended (terminated), if it did.
    #[serde(default)]
    pub termination_date: Option<String>,
    /// Its status when last indexed.
    pub status: String,
}

/// Every product that carried one number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberLine {
    /// Oldest first.
    pub entries: Vec<LineEntry>,
}

impl SubscriberLine {
    /// The entry of the product active at `at` (RFC 3339 strings compare in time order when they
    /// share a format; both sides are parsed to be safe).
    pub fn at(&self, at: chrono::DateTime<chrono::Utc>) -> Option<&LineEntry> {
        let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok().map(|d| d.to_utc());
        self.entries.iter().rev().find(|e| {
            let started = parse(&e.start_date).is_none_or(|s| s <= at);
            let ended = e.termination_date.as_deref().and_then(parse).is_some_and(|t| t <= at);
            started && !ended
        })
    }
}

/// The index id of an E.164 number (`+33612345678` → `33612345678`); `None` if it is not one.
pub fn line_id(msisdn: &str) -> Option<String> {
    let digits = msisdn.strip_prefix('+').unwrap_or(msisdn);
    (!digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.into())
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The product's MSISDN characteristic, if it has one.
pub fn msisdn_of(product: &Value) -> Option<String> {
    product.get("productCharacteristic")?.as_array()?.iter().find_map(|c| {
        let name = c.get("name")?.as_str()?;
        name.eq_ignore_ascii_case("msisdn").then(|| c.get("value")?.as_str().map(str::to_string)).flatten()
    })
}

/// The collection of the account index.
pub const ACCOUNT_PRODUCTS: &str = "accountProducts";
/// Most products indexed under one account.
pub const ACCOUNT_PRODUCTS_MAX: usize = 10_000;

/// The products of one billing account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountProducts {
    /// Product ids, in indexing order.
    pub products: Vec<String>,
}

/// The collection of the customer index.
pub const CUSTOMER_PRODUCTS: &str = "customerProducts";
/// Most products indexed under one customer (an enterprise's lines included).
pub const CUSTOMER_PRODUCTS_MAX: usize = 10_000;

/// The products of one customer: every product ever held, whatever its status now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerProducts {
    /// Product ids, in indexing order.
    pub products: Vec<String>,
}

/// Opens the customer's product index, empty (a new customer holds nothing). Idempotent: an
/// index already there is kept.
pub fn open_customer_index<B: KvBackend>(env: &Env<'_, B>, customer_id: &str) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    match docs.create(CUSTOMER_PRODUCTS, customer_id, CustomerProducts::default()) {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The customer's product ids, or `None` when the customer has no index (created before it
/// existed, or stopped between its write and the index's): the caller scans instead.
pub fn customer_product_ids<B: KvBackend>(
    env: &Env<'_, B>,
    customer_id: &str,
) -> Result<Option<Vec<String>>, ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    Ok(docs.get::<CustomerProducts>(CUSTOMER_PRODUCTS, customer_id)?.map(|v| v.data.products))
}

/// The collection of the hierarchy index: an account's direct children (id = the parent).
pub const ACCOUNT_CHILDREN: &str = "accountChildren";
/// Most children indexed under one account.
pub const ACCOUNT_CHILDREN_MAX: usize = 10_000;

/// One child account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildAccount {
    /// The child.
    pub id: String,
    /// Its bills roll up into the parent's.
    pub bill_roll_up: bool,
}

/// The direct children of an account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChildren {
    /// Children, in indexing order.
    pub children: Vec<ChildAccount>,
}

/// Keeps the hierarchy index after a billing account was written (`before`/`after`, either
/// absent on a create or a delete): the child leaves its old parent's list and joins the new
/// one's with its `billRollUp`. Idempotent (a retried write rewrites the same entries).
pub fn index_account_parent<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    before: Option<(Option<String>, bool)>,
    after: Option<(Option<String>, bool)>,
) -> Result<(), ApiError> {
    let old_parent = before.and_then(|b| b.0);
    let new = after.and_then(|(p, roll_up)| p.map(|p| (p, roll_up)));
    if let Some(old) = old_parent.filter(|o| new.as_ref().is_none_or(|(n, _)| n != o)) {
        upsert::<B, AccountChildren>(env, ACCOUNT_CHILDREN, &old, |c| {
            let mut next = c.clone();
            next.children.retain(|x| x.id != id);
            next
        })?;
    }
    if let Some((parent, roll_up)) = new {
        upsert::<B, AccountChildren>(env, ACCOUNT_CHILDREN, &parent, |c| {
            let mut next = c.clone();
            next.children.retain(|x| x.id != id);
            if next.children.len() < ACCOUNT_CHILDREN_MAX {
                next.children.push(ChildAccount { id: id.to_string(), bill_roll_up: roll_up });
            }
            next
        })?;
    }
    Ok(())
}

/// Adds the product to the customer's index if the customer has one (never creates it: an index
/// opened by a product would hide the customer's older, unindexed products).
fn add_to_customer_index<B: KvBackend>(env: &Env<'_, B>, customer: &str, pid: &str) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let outcome = docs.update::<CustomerProducts, _>(CUSTOMER_PRODUCTS, customer, |v| {
        let mut next = v.data.clone();
        if !next.products.iter().any(|p| p == pid) && next.products.len() < CUSTOMER_PRODUCTS_MAX {
            next.products.push(pid.to_string());
        }
        Ok(next)
    });
    match outcome {
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Upserts a document with a CAS loop (create when absent).
fn upsert<B: KvBackend, T>(
    env: &Env<'_, B>,
    collection: &str,
    id: &str,
    merge: impl Fn(&T) -> T,
) -> Result<(), ApiError>
where
    T: Serialize + serde::de::DeserializeOwned + Default,
{
    let docs = env.store.tenant(&env.tenant.tenant_id);
    docs.upsert(collection, id, T::default, |t| {
        *t = merge(t);
        Ok(())
    })?;
    Ok(())
}

/// Writes (or rewrites) the product's entries: under its MSISDN (products without one are not
/// subscriber lines) and under its billing account.
pub fn index_product<B: KvBackend>(env: &Env<'_, B>, product: &Value) -> Result<(), ApiError> {
    let account = text(product, "/billingAccount/id");
    let pid = text(product, "/id");
    if !account.is_empty() && !pid.is_empty() {
        upsert::<B, AccountProducts>(env, ACCOUNT_PRODUCTS, &account, |a| {
            let mut next = a.clone();
            if !next.products.contains(&pid) && next.products.len() < ACCOUNT_PRODUCTS_MAX {
                next.products.push(pid.clone());
            }
            next
        })?;
    }
    let customer = crate::inventory::customer_of(product).unwrap_or_default();
    if !customer.is_empty() && !pid.is_empty() {
        add_to_customer_index(env, &customer, &pid)?;
    }
    let Some(id) = msisdn_of(product).as_deref().and_then(line_id) else { return Ok(()) };
    let entry = LineEntry {
        product_id: text(product, "/id"),
        billing_account_id: text(product, "/billingAccount/id"),
        offering_id: text(product, "/productOffering/id"),
        customer_id: crate::inventory::customer_of(product).unwrap_or_default(),
        start_date: text(product, "/startDate"),
        termination_date: product.get("terminationDate").and_then(Value::as_str).map(str::to_string),
        status: text(product, "/status"),
    };
    upsert::<B, SubscriberLine>(env, COLLECTION, &id, |line| {
        let mut next = line.clone();
        match next.entries.iter_mut().find(|e| e.product_id == entry.product_id) {
            Some(e) => *e = entry.clone(),
            None => next.entries.push(entry.clone()),
        }
        if next.entries.len() > ENTRIES_MAX {
            let extra = next.entries.len() - ENTRIES_MAX;
            next.entries.drain(..extra);
        }
        next
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_kit::Store;
    use bss_kit::auth::Tenant;
    use bss_kit::kv::MemKv;
    use serde_json::json;

    fn product(id: &str, msisdn: &str, start: &str, end: Option<&str>) -> Value {
        let mut p = json!({"id": id, "status": "active", "billingAccount": {"id": "ba1"},
            "productOffering": {"id": "mob"}, "startDate": start,
            "relatedParty": [{"id": "c1", "role": "customer"}],
            "productCharacteristic": [{"name": "MSISDN", "value": msisdn}]});
        if let Some(e) = end {
            p["terminationDate"] = json!(e);
            p["status"] = json!("terminated");
        }
        p
    }

    #[test]
    fn a_number_is_guided_to_the_product_active_at_the_time() {
        let store = Store::new(MemKv::new());
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        index_product(&env, &product("p1", "+33611111111", "2026-01-01T00:00:00Z", None)).unwrap();
        // Re-indexing (a redelivered completion) changes nothing; termination updates the entry.
        index_product(&env, &product("p1", "+33611111111", "2026-01-01T00:00:00Z", None)).unwrap();
        index_product(&env, &product("p1", "+33611111111", "2026-01-01T00:00:00Z", Some("2026-03-01T00:00:00Z")))
            .unwrap();
        index_product(&env, &product("p2", "+33611111111", "2026-04-01T00:00:00Z", None)).unwrap();
        let line: SubscriberLine = store.tenant("t1").get(COLLECTION, "33611111111").unwrap().unwrap().data;
        assert_eq!(line.entries.len(), 2);
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        assert_eq!(line.at(at("2026-02-01T00:00:00Z")).unwrap().product_id, "p1");
        assert!(line.at(at("2026-03-15T00:00:00Z")).is_none(), "between the two products nobody had it");
        assert_eq!(line.at(at("2026-05-01T00:00:00Z")).unwrap().product_id, "p2");
        assert!(line.at(at("2025-12-01T00:00:00Z")).is_none());
        let account: AccountProducts = store.tenant("t1").get(ACCOUNT_PRODUCTS, "ba1").unwrap().unwrap().data;
        assert_eq!(account.products, vec!["p1".to_string(), "p2".to_string()]);
        // The hierarchy index follows a child's moves.
        let attrs = |p: &str, r: bool| Some((Some(p.to_string()), r));
        index_account_parent(&env, "c1", None, attrs("top", true)).unwrap();
        index_account_parent(&env, "c2", None, attrs("top", false)).unwrap();
        index_account_parent(&env, "c1", attrs("top", true), attrs("other", true)).unwrap();
        let top: AccountChildren = store.tenant("t1").get(ACCOUNT_CHILDREN, "top").unwrap().unwrap().data;
        assert_eq!(top.children, vec![ChildAccount { id: "c2".into(), bill_roll_up: false }]);
        let other: AccountChildren = store.tenant("t1").get(ACCOUNT_CHILDREN, "other").unwrap().unwrap().data;
        assert_eq!(other.children, vec![ChildAccount { id: "c1".into(), bill_roll_up: true }]);
        index_account_parent(&env, "c1", attrs("other", true), None).unwrap();
        let other: AccountChildren = store.tenant("t1").get(ACCOUNT_CHILDREN, "other").unwrap().unwrap().data;
        assert!(other.children.is_empty());
        // Another tenant sees nothing.
        assert!(store.tenant("t2").get::<SubscriberLine>(COLLECTION, "33611111111").unwrap().is_none());
    }

    #[test]
    fn a_customer_s_products_are_read_from_its_index_and_a_customer_without_one_is_scanned() {
        use crate::pricing::{PRODUCT, existing_products};
        use bss_kit::resource::NoHooks;
        let store = Store::new(MemKv::new());
        let tenant = Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let stored = |id: &str, customer: &str, status: &str| {
            let mut p = product(id, "", "2026-01-01T00:00:00Z", None);
            p["relatedParty"] = json!([{"id": customer, "role": "customer"}]);
            p["status"] = json!(status);
            let mut body = p.clone();
            body.as_object_mut().unwrap().remove("id");
            env.resources(PRODUCT).create_with_id(&env, &NoHooks, id, body).unwrap();
            index_product(&env, &p).unwrap();
        };
        let held = |customer: &str| {
            let mut ids: Vec<String> = existing_products(&env, customer).unwrap().into_iter().map(|p| p.id).collect();
            ids.sort();
            ids
        };
        // c1 is a new customer (index opened at its creation); c0 predates the index.
        open_customer_index(&env, "c1").unwrap();
        stored("p1", "c1", "active");
        stored("p2", "c1", "terminated");
        stored("p3", "c0", "active");
        stored("p4", "c2", "active");
        let index = |c: &str| store.tenant("t1").get::<CustomerProducts>(CUSTOMER_PRODUCTS, c).unwrap();
        assert_eq!(index("c1").unwrap().data.products, vec!["p1".to_string(), "p2".to_string()]);
        assert!(index("c0").is_none(), "a product never opens an index: it would hide older products");
        // Held products only; the index's customer by it, the other by a scan.
        assert_eq!(held("c1"), vec!["p1".to_string()]);
        assert_eq!(held("c0"), vec!["p3".to_string()]);
        // Opening again keeps what the index holds; a re-indexed product is listed once.
        open_customer_index(&env, "c1").unwrap();
        stored_again(&env, "p1");
        assert_eq!(index("c1").unwrap().data.products, vec!["p1".to_string(), "p2".to_string()]);
        // An index entry is judged on the product as stored: one moved to another customer is not c1's.
        env.resources(PRODUCT)
            .modify(&env, &NoHooks, "p1", |p| {
                let mut p = p.clone();
                p["relatedParty"] = json!([{"id": "c2", "role": "customer"}]);
                Ok(p)
            })
            .unwrap();
        assert!(held("c1").is_empty());
    }

    fn stored_again(env: &Env<'_, MemKv>, id: &str) {
        let doc = env.resources(crate::pricing::PRODUCT).find(id).unwrap().unwrap().data;
        index_product(env, &doc).unwrap();
    }
}
