//! Pricing glue shared by quotes and orders: load what a price needs — the tenant's catalog
//! (with its tax rates), the customer (market segment), the customer's active products from the
//! inventory, the billing account's currency — and price a basket with
//! [`bss_domain::quote::pricing::price_quote`]. Basket in, priced lines out: the order side can
//! call [`price`] for its items too.
//!
//! Reads only; nothing here writes. Limits: the kit's [`bss_kit::resource::MAX_LISTED`]
//! documents per collection read.

use bss_domain::catalog::Snapshot;
use bss_domain::money::Currency;
use bss_domain::quote::pricing::{
    CustomerView, ExistingProduct, ItemProblem, PricedQuote, PricingRequest, describe, price_quote,
};
use bss_kit::ApiError;
use bss_kit::kv::KvBackend;
use bss_kit::resource::{Env, Kind};
use serde_json::{Value, json};

/// TMF629 customers (written by the customer component).
pub const CUSTOMER: Kind = Kind {
    collection: "customer",
    type_name: "Customer",
    base_path: "/tmf-api/customerManagement/v4",
    domain: "customer",
};

/// TMF666 billing accounts (written by the customer component).
pub const BILLING_ACCOUNT: Kind = Kind {
    collection: "billingAccount",
    type_name: "BillingAccount",
    base_path: "/tmf-api/accountManagement/v4",
    domain: "customer",
};

/// TMF637 products (the inventory, written by the order side).
pub const PRODUCT: Kind =
    Kind { collection: "product", type_name: "Product", base_path: "/tmf-api/productInventory/v4", domain: "order" };

/// Product statuses that count as the customer having the product (relationships, rules).
pub const HELD_STATUSES: &[&str] = &["active", "suspended", "pendingActive", "created"];

/// The tenant's catalog, tax rates included.
pub fn catalog<B: KvBackend>(env: &Env<'_, B>) -> Result<Snapshot, ApiError> {
    bss_kit::catalog::snapshot(env)
}

/// Whether `product` belongs to `customer_id` (a `relatedParty` with role customer).
fn owned_by(product: &Value, customer_id: &str) -> bool {
    product.get("relatedParty").and_then(Value::as_array).is_some_and(|parties| {
        parties.iter().any(|p| {
            p.get("id").and_then(Value::as_str) == Some(customer_id)
                && p.get("role").and_then(Value::as_str).is_none_or(|r| r.eq_ignore_ascii_case("customer"))
        })
    })
}

/// The inventory products of a customer, as stored: the ones its product index names (read by
/// id), or — for a customer without an index, created before it existed — a scan of the
/// inventory (at most [`bss_kit::resource::MAX_LISTED`] products). Every product the customer
/// ever held, whatever its status; callers judge status and ownership on the documents.
pub fn customer_products<B: KvBackend>(env: &Env<'_, B>, customer_id: &str) -> Result<Vec<Value>, ApiError> {
    let Some(ids) = crate::subscribers::customer_product_ids(env, customer_id)? else {
        return env.resources(PRODUCT).all();
    };
    let docs = env.store.tenant(&env.tenant.tenant_id);
    Ok(docs.get_docs::<Value>(PRODUCT.collection, &ids)?.into_iter().map(|d| d.data).collect())
}

/// The products the customer holds (status in [`HELD_STATUSES`]), from the inventory.
pub fn existing_products<B: KvBackend>(env: &Env<'_, B>, customer_id: &str) -> Result<Vec<ExistingProduct>, ApiError> {
    Ok(customer_products(env, customer_id)?
        .into_iter()
        .filter(|p| owned_by(p, customer_id))
        .filter(|p| p.get("status").and_then(Value::as_str).is_none_or(|s| HELD_STATUSES.contains(&s)))
        .filter_map(|p| {
            let id = p.get("id")?.as_str()?.to_string();
            let offering_id = p.get("productOffering")?.get("id")?.as_str()?.to_string();
            Some(ExistingProduct { id, offering_id })
        })
        .collect())
}

/// The customer, which must exist: 422 `UNKNOWN_CUSTOMER` naming it otherwise.
pub fn existing_customer<B: KvBackend>(env: &Env<'_, B>, customer_id: &str) -> Result<Value, ApiError> {
    env.resources(CUSTOMER).find(customer_id)?.map(|d| d.data).ok_or_else(|| {
        ApiError::unprocessable(format!("relatedParty: customer {customer_id} does not exist"))
            .with_code("UNKNOWN_CUSTOMER")
    })
}

/// A customer as pricing sees it: segment and held products; 422 naming it if unknown.
pub fn customer_view<B: KvBackend>(env: &Env<'_, B>, customer_id: &str) -> Result<CustomerView, ApiError> {
    let customer = existing_customer(env, customer_id)?;
    let segments = customer.get("marketSegment").and_then(Value::as_str).map(|s| vec![s.to_string()]);
    Ok(CustomerView { segments, products: existing_products(env, customer_id)? })
}

/// A prospect as pricing sees it: its segment, no products.
pub fn prospect_view(segment: Option<&str>) -> CustomerView {
    CustomerView { segments: segment.map(|s| vec![s.to_string()]), products: Vec::new() }
}

/// The currency of a billing account, which must exist (and, if `customer_id` is given, be
/// owned by that customer): 422 naming the problem otherwise.
pub fn billing_account_currency<B: KvBackend>(
    env: &Env<'_, B>,
    account_id: &str,
    customer_id: Option<&str>,
) -> Result<Option<Currency>, ApiError> {
    let account = env.resources(BILLING_ACCOUNT).find(account_id)?.ok_or_else(|| {
        ApiError::unprocessable(format!("billingAccount: billing account {account_id} does not exist"))
            .with_code("UNKNOWN_ACCOUNT")
    })?;
    let names = |c: &str| {
        account
            .data
            .get("relatedParty")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| p.get("id").and_then(Value::as_str) == Some(c)))
    };
    // Accounts name their customer as `owner` (TMF666), so any role counts here.
    if let Some(c) = customer_id
        && !names(c)
    {
        return Err(ApiError::unprocessable(format!(
            "billingAccount: billing account {account_id} does not belong to customer {c}"
        ))
        .with_code("ACCOUNT_NOT_OWNED"));
    }
    Ok(account.data.get("currency").and_then(Value::as_str).and_then(|c| Currency::new(c).ok()))
}

/// 422 listing every problem (`problems: [{item?, field, message}]`).
pub fn rejected(code: &str, problems: &[ItemProblem]) -> ApiError {
    ApiError::unprocessable(describe(problems))
        .with_code(code)
        .with_problems(serde_json::to_value(problems).unwrap_or_else(|_| json!([])))
}

/// Prices a basket for a customer (or a prospect's view) against the tenant's catalog: the
/// priced quote, or 422 (`QUOTE_NOT_ALLOWED`) with one problem per item.
pub fn price<B: KvBackend>(
    env: &Env<'_, B>,
    req: &PricingRequest,
    customer: &CustomerView,
) -> Result<PricedQuote, ApiError> {
    price_quote(req, customer, &catalog(env)?).map_err(|p| rejected("QUOTE_NOT_ALLOWED", &p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_by_customer_role() {
        let p = json!({"relatedParty": [{"id": "c1", "role": "Customer"}]});
        assert!(owned_by(&p, "c1"));
        assert!(!owned_by(&p, "c2"));
        assert!(!owned_by(&json!({"relatedParty": [{"id": "c1", "role": "payer"}]}), "c1"));
        assert!(!owned_by(&json!({}), "c1"));
    }
}
