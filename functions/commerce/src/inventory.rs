//! The product inventory (TMF637, collection `product`) and the charges that start billing
//! (collection `billingCharge`, a BSS extension read at `GET .../product/{id}/charge`).
//!
//! Products change through orders only: [`complete_order`] runs when an order reaches completed
//! or partial and writes, for every completed item, what it did — an added product (id
//! `<orderId>-<itemId>`, so a redelivered completion writes it once) with the offering, the
//! prices it was bought at (price version included, for grandfathering), the characteristics
//! (what the OSS allocated: MSISDN, ICCID, line id…), the customer, the billing account, the
//! start date and its relationships (`reliesOn`/`bundles` of the order items) — or the new
//! status of an existing product (suspended, active, terminated with `terminationDate`). Each
//! product lists the order items that touched it (`productOrderItem`), which makes re-applying a
//! completion a no-op. Charges: see `bss_domain::order::inventory`; ids `<productId>.<n>`.
//!
//! Over the API ([`InventoryHooks`]): `POST product` is allowed for migrations and operations
//! (the offering, customer and billing account must exist; status defaults to `created`; its
//! `productPrice` lines start billing like an order's — the same charges); a
//! PATCH may change descriptive attributes (`name`, `description`, `productCharacteristic`,
//! `place`, `note`) but not `status` (409: suspend, resume and terminate are orders) nor what
//! the order fixed (offering, prices, parties, account, dates, order items); DELETE is 409
//! (terminate with a delete order).

use bss_domain::money::RoundingRule;
use bss_domain::order::inventory::{Account, ProductStatus, charges, status_after};
use bss_kit::ApiError;
use bss_kit::kv::KvBackend;
use bss_kit::resource::{Change, Env, Hooks, Kind, NoHooks};
use serde_json::{Value, json};

pub use crate::pricing::{BILLING_ACCOUNT, CUSTOMER, PRODUCT};

/// Charges that start billing (BSS extension).
pub const CHARGE: Kind = Kind {
    collection: "billingCharge",
    type_name: "BillingCharge",
    base_path: "/tmf-api/productInventory/v4",
    domain: "order",
};

/// Attributes of a product an API PATCH may not change.
pub const ORDER_OWNED: &[&str] = &[
    "productOffering",
    "productPrice",
    "relatedParty",
    "billingAccount",
    "startDate",
    "terminationDate",
    "productOrderItem",
    "productRelationship",
];

fn s<'a>(v: &'a Value, f: &str) -> &'a str {
    v.get(f).and_then(Value::as_str).unwrap_or_default()
}

/// The customer id of a document's `relatedParty` (role customer, or the first Customer).
pub fn customer_of(doc: &Value) -> Option<String> {
    let parties = doc.get("relatedParty")?.as_array()?;
    parties
        .iter()
        .find(|p| s(p, "role").eq_ignore_ascii_case("customer") || s(p, "@referredType") == "Customer")
        .and_then(|p| p.get("id")?.as_str().map(str::to_string))
}

/// The rules of API writes to `product` (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct InventoryHooks;

impl<B: KvBackend> Hooks<B> for InventoryHooks {
    fn validate(&self, env: &Env<'_, B>, _: &Kind, before: Option<&Value>, mut next: Value) -> Result<Value, ApiError> {
        if let Some(before) = before {
            if before.get("status") != next.get("status") {
                return Err(ApiError::conflict(format!(
                    "product status {} cannot be changed with PATCH: suspend, resume and terminate are product orders",
                    s(before, "status")
                ))
                .with_code("STATUS_CHANGE_IS_AN_ORDER"));
            }
            for f in ORDER_OWNED {
                if before.get(*f) != next.get(*f) {
                    return Err(ApiError::conflict(format!(
                        "product {f} is set by product orders; it cannot be patched"
                    ))
                    .with_code("ORDER_OWNED_ATTRIBUTE"));
                }
            }
            return Ok(next);
        }
        let offering = next.pointer("/productOffering/id").and_then(Value::as_str).unwrap_or_default().to_string();
        let snap = crate::pricing::catalog(env)?;
        if snap.get(bss_domain::catalog::Kind::ProductOffering, &offering).is_none() {
            return Err(ApiError::unprocessable(format!("productOffering: offering {offering:?} does not exist"))
                .with_code("UNKNOWN_OFFERING"));
        }
        let customer = customer_of(&next)
            .ok_or_else(|| ApiError::unprocessable("relatedParty: a product needs its customer (role customer)"))?;
        crate::pricing::existing_customer(env, &customer)?;
        let account = next.pointer("/billingAccount/id").and_then(Value::as_str).unwrap_or_default().to_string();
        crate::pricing::billing_account_currency(env, &account, None)?;
        let status = next.get("status").and_then(Value::as_str).unwrap_or("created");
        if ProductStatus::parse(status).is_none() {
            return Err(ApiError::unprocessable(format!(
                "status {status:?} is not one of created, active, suspended, terminated"
            )));
        }
        next["status"] = json!(status);
        for array in ["productCharacteristic", "productPrice", "relatedParty", "productRelationship"] {
            if next.get(array).is_none() {
                next[array] = json!([]);
            }
        }
        Ok(next)
    }

    fn after_write(&self, env: &Env<'_, B>, change: &Change) -> Result<(), ApiError> {
        let Some(product) = &change.after else { return Ok(()) };
        if change.before.is_none() {
            // A migrated product is billed like an ordered one: its charges from its prices.
            let account_id = product.pointer("/billingAccount/id").and_then(Value::as_str).unwrap_or_default();
            let account_doc = env.resources(BILLING_ACCOUNT).find(account_id)?.map(|d| d.data).unwrap_or(Value::Null);
            let account = Account::from_billing_account(&account_doc);
            let started = product.get("startDate").and_then(Value::as_str).and_then(|s| s.parse().ok());
            for charge in charges(product, account, started.unwrap_or_else(chrono::Utc::now), RoundingRule::HalfEven) {
                create_once(env, CHARGE, charge)?;
            }
        }
        crate::subscribers::index_product(env, product)
    }

    fn before_delete(&self, _: &Env<'_, B>, _: &Kind, doc: &Value) -> Result<(), ApiError> {
        Err(ApiError::conflict(format!(
            "product {} cannot be deleted; terminate it with a delete product order",
            s(doc, "id")
        ))
        .with_code("TERMINATE_WITH_AN_ORDER"))
    }
}

fn create_once<B: KvBackend>(env: &Env<'_, B>, kind: Kind, doc: Value) -> Result<Option<Change>, ApiError> {
    let id = s(&doc, "id").to_string();
    let mut body = doc;
    body.as_object_mut().map(|m| m.remove("id"));
    match env.resources(kind).create_with_id(env, &NoHooks, &id, body) {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.code == "ALREADY_EXISTS" => Ok(None),
        Err(e) => Err(e),
    }
}

/// The inventory id of the product an order item refers to or creates.
pub fn product_id(order_id: &str, item: &Value) -> String {
    match item.pointer("/product/id").and_then(Value::as_str) {
        Some(id) if s(item, "action") != "add" => id.to_string(),
        _ => format!("{order_id}-{}", s(item, "id")),
    }
}

/// Writes what a completed or partial order did to the inventory and starts billing (see the
/// module doc). Idempotent; answers the changes made (to publish their events).
pub fn complete_order<B: KvBackend>(env: &Env<'_, B>, order: &Value) -> Result<Vec<Change>, ApiError> {
    if !matches!(s(order, "state"), "completed" | "partial") {
        return Ok(Vec::new());
    }
    let order_id = s(order, "id");
    let items = order.get("productOrderItem").and_then(Value::as_array).cloned().unwrap_or_default();
    let account_id = order.pointer("/billingAccount/id").and_then(Value::as_str).unwrap_or_default();
    let account_doc = env.resources(BILLING_ACCOUNT).find(account_id)?.map(|d| d.data).unwrap_or(Value::Null);
    let account = Account::from_billing_account(&account_doc);
    let customer = customer_of(order).unwrap_or_default();
    let mut changes = Vec::new();
    for item in items.iter().filter(|i| s(i, "state") == "completed") {
        let pid = product_id(order_id, item);
        let origin = json!({"productOrderId": order_id, "orderItemId": s(item, "id")});
        let when = item.get("completionDate").and_then(Value::as_str).unwrap_or_default().to_string();
        let relationships: Vec<Value> = item
            .get("productOrderItemRelationship")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let dep = items.iter().find(|i| s(i, "id") == s(r, "id"))?;
                Some(
                    json!({"relationshipType": s(r, "relationshipType"), "product": {"id": product_id(order_id, dep)}}),
                )
            })
            .collect();
        match s(item, "productAction") {
            "activate" => {
                let product = json!({
                    "id": pid,
                    "name": item.pointer("/productOffering/name").cloned().unwrap_or(json!(item.pointer("/productOffering/id"))),
                    "status": "active",
                    "isBundle": item.get("isBundle").cloned().unwrap_or(json!(false)),
                    "quantity": item.get("quantity").cloned().unwrap_or(json!(1)),
                    "productOffering": item.get("productOffering").cloned().unwrap_or(Value::Null),
                    "productPrice": item.get("itemPrice").cloned().unwrap_or(json!([])),
                    "productCharacteristic": item.pointer("/product/productCharacteristic").cloned().unwrap_or(json!([])),
                    "relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
                    "billingAccount": order.get("billingAccount").cloned().unwrap_or(Value::Null),
                    "startDate": when,
                    "productRelationship": relationships,
                    "productOrderItem": [origin],
                });
                let activated = when.parse().unwrap_or_else(|_| chrono::Utc::now());
                for charge in charges(&product, account, activated, RoundingRule::HalfEven) {
                    changes.extend(create_once(env, CHARGE, charge)?);
                }
                changes.extend(create_once(env, PRODUCT, product)?);
                index_stored(env, &pid)?;
            }
            "none" => {}
            action => {
                let Some(existing) = env.resources(PRODUCT).find(&pid)? else { continue };
                let done = existing
                    .data
                    .get("productOrderItem")
                    .and_then(Value::as_array)
                    .is_some_and(|o| o.contains(&origin));
                if done {
                    // Applied before a crash or a redelivery: the index may still lack it.
                    index_stored(env, &pid)?;
                    continue;
                }
                let change = env.resources(PRODUCT).modify(env, &NoHooks, &pid, |current| {
                    let mut next = current.clone();
                    // Checked again inside the compare-and-swap: a concurrent completion (queue and
                    // HTTP callback) may have applied this order item meanwhile.
                    let applied =
                        current.get("productOrderItem").and_then(Value::as_array).is_some_and(|o| o.contains(&origin));
                    if applied {
                        return Ok(next);
                    }
                    if let Some(status) = status_after(action) {
                        let from = ProductStatus::parse(s(current, "status")).unwrap_or(ProductStatus::Active);
                        if from.can_become(status) {
                            next["status"] = json!(status.as_str());
                            if status == ProductStatus::Terminated {
                                next["terminationDate"] = json!(when);
                            }
                        }
                    }
                    if let Some(chars) = item.pointer("/product/productCharacteristic").and_then(Value::as_array) {
                        let list = next["productCharacteristic"].as_array().cloned().unwrap_or_default();
                        let mut list: Vec<Value> =
                            list.into_iter().filter(|c| !chars.iter().any(|n| s(n, "name") == s(c, "name"))).collect();
                        list.extend(chars.iter().cloned());
                        next["productCharacteristic"] = Value::Array(list);
                    }
                    match next.get_mut("productOrderItem").and_then(Value::as_array_mut) {
                        Some(o) => o.push(origin.clone()),
                        None => next["productOrderItem"] = json!([origin]),
                    }
                    Ok(next)
                })?;
                if let Some(after) = &change.after {
                    crate::subscribers::index_product(env, after)?;
                }
                changes.push(change);
            }
        }
    }
    Ok(changes)
}

/// Indexes the stored product `id` under its MSISDN (see [`crate::subscribers`]).
fn index_stored<B: KvBackend>(env: &Env<'_, B>, id: &str) -> Result<(), ApiError> {
    match env.resources(PRODUCT).find(id)? {
        Some(doc) => crate::subscribers::index_product(env, &doc.data),
        None => Ok(()),
    }
}

/// The charges of a product, oldest first. Read by their ids (`<product>.<n>`), not by listing
/// every charge of the tenant: that was linear in the tenant's size and, past
/// [`MAX_LISTED`](bss_kit::resource::MAX_LISTED) charges, missed some.
pub fn product_charges<B: KvBackend>(env: &Env<'_, B>, product_id: &str) -> Result<Vec<Value>, ApiError> {
    env.resources(PRODUCT).get(product_id)?;
    let prefix = env
        .store
        .tenant(&env.tenant.tenant_id)
        .prefix(CHARGE.collection)
        .map(|p| format!("{p}{product_id}."))
        .ok_or_else(|| ApiError::internal("invalid tenant"))?;
    let mut found: Vec<(u64, Value)> = env
        .store
        .list::<Value>(&prefix, bss_kit::resource::MAX_LISTED)?
        .into_iter()
        .map(|(key, doc)| (key[prefix.len()..].parse().unwrap_or(u64::MAX), doc.data))
        // A product whose id extends this one's (`p.1` beside `p`) has keys under the prefix too.
        .filter(|(_, c)| c.pointer("/product/id").and_then(Value::as_str) == Some(product_id))
        .collect();
    found.sort_by_key(|(n, _)| *n);
    Ok(found.into_iter().map(|(_, c)| c).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_kit::auth::Tenant;
    use bss_kit::kv::{MemKv, Store};

    #[test]
    fn a_products_charges_are_its_own_oldest_first_among_many() {
        let store = Store::new(MemKv::default());
        let t = Tenant { tenant_id: "t1".into(), key_id: "k1".into() };
        let env = Env::new(&store, &t);
        for id in ["p", "p.1", "q"] {
            env.resources(PRODUCT).create_with_id(&env, &NoHooks, id, json!({"name": id})).unwrap();
        }
        // p has 12 charges (so `p.10` sorts before `p.2` by key); `p.1` is another product whose
        // charges `p.1.<n>` share the prefix `p.`.
        for (product, n) in [("p", 12), ("p.1", 2), ("q", 3)] {
            for i in 1..=n {
                let id = format!("{product}.{i}");
                env.resources(CHARGE)
                    .create_with_id(&env, &NoHooks, &id, json!({"name": id, "product": {"id": product}}))
                    .unwrap();
            }
        }
        let names = |p: &str| -> Vec<String> {
            product_charges(&env, p).unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(names("p"), (1..=12).map(|i| format!("p.{i}")).collect::<Vec<_>>());
        assert_eq!(names("p.1"), ["p.1.1", "p.1.2"]);
        assert_eq!(names("q"), ["q.1", "q.2", "q.3"]);
        assert_eq!(product_charges(&env, "missing").unwrap_err().status, 404);
    }
}
