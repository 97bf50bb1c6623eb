//! End-to-end tests of the quote component (TMF648 v4) over real HTTP against the real bss-host,
//! on the sample catalog: a quote for a customer priced with its discount and its taxes by
//! category, the lifecycle (approve, illegal transitions, closed quotes), a prospect named later,
//! bad input (unknown offering, excluded combination, quantity 0 or negative, an expired or
//! unapproved quote, accepting twice) answering 4xx with nothing changed, and acceptance into a
//! product order at the quoted prices. Run with `cargo test -p bss-host --test e2e_quote`.

mod support;

use serde_json::{Value, json};
use support::*;

const QUOTES: &str = "/tmf-api/quoteManagement/v4/quote";

/// A host and a tenant's client, with the sample catalog imported.
type Api = TenantHost;

fn start() -> Api {
    let api = TenantHost::start("Quote tests", "");
    api.import_sample_catalog();
    api
}

/// A residential customer with a EUR billing account: (customer id, account id).
fn customer(api: &Api) -> (String, String) {
    let party = api.created("/tmf-api/party/v4/individual", json!({"givenName": "Ada", "familyName": "Lovelace"}));
    let customer = api.created(
        "/tmf-api/customerManagement/v4/customer",
        json!({"name": "Ada Lovelace", "engagedParty": {"id": party["id"], "@referredType": "Individual"},
                   "marketSegment": "residential"}),
    );
    let c = customer["id"].as_str().unwrap().to_string();
    let account = api.created(
        "/tmf-api/accountManagement/v4/billingAccount",
        json!({"name": "Home", "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR",
                   "relatedParty": [{"id": c, "role": "owner", "@referredType": "Customer"}]}),
    );
    (c, account["id"].as_str().unwrap().to_string())
}

/// Events the quote component published.
fn published(api: &Api) -> u64 {
    published_by(&api.host, "quote")
}

fn item(id: &str, offering: &str, quantity: i64) -> Value {
    json!({"id": id, "action": "add", "quantity": quantity, "productOffering": {"id": offering}})
}

fn customer_quote(customer: &str, account: &str, items: Vec<Value>) -> Value {
    json!({"relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
           "billingAccount": {"id": account}, "quoteItem": items})
}

fn total<'a>(quote: &'a Value, price_type: &str) -> &'a Value {
    quote["quoteTotalPrice"].as_array().unwrap().iter().find(|t| t["priceType"] == price_type).unwrap()
}

fn line<'a>(quote: &'a Value, item: &str, price: &str) -> &'a Value {
    let it = quote["quoteItem"].as_array().unwrap().iter().find(|i| i["id"] == item).unwrap();
    it["quoteItemPrice"].as_array().unwrap().iter().find(|p| p["productOfferingPrice"]["id"] == price).unwrap()
}

#[test]
fn a_quote_shows_discounts_and_taxes_and_follows_its_lifecycle() {
    let api = start();
    let (c, acct) = customer(&api);
    let q = api.created(
        QUOTES,
        customer_quote(&c, &acct, vec![item("1", "mobile-m", 1), item("2", "fibre-1g", 1), item("3", "tv-sport", 1)]),
    );
    let id = q["id"].as_str().unwrap().to_string();
    assert_eq!(q["state"], "inProgress");
    assert_eq!(q["currency"], "EUR", "the billing account's currency");
    assert!(q["validFor"]["endDateTime"].is_string());
    // The 10% mobile + broadband rule fired on the Mobile M monthly fee, named; standard tax.
    let monthly = line(&q, "1", "pop-mobile-m-monthly");
    assert_eq!(monthly["priceType"], "recurring");
    assert_eq!(monthly["recurringChargePeriod"], "month");
    assert_eq!(monthly["price"]["dutyFreeAmount"], json!({"unit": "EUR", "value": 17.99}));
    assert_eq!(monthly["price"]["taxRate"], 20);
    assert_eq!(monthly["priceAlteration"][0]["name"], "Mobile + broadband: 10% off the mobile plan");
    assert_eq!(monthly["priceAlteration"][0]["price"]["dutyFreeAmount"]["value"], -1.999);
    // TV Sport is taxed at the reduced rate.
    let tv = line(&q, "3", "pop-tv-sport-monthly");
    assert_eq!((tv["price"]["taxCategory"].as_str(), tv["price"]["taxRate"].as_i64()), (Some("reduced"), Some(10)));
    // Recurring: 17.99 + 39.99 + 9.99 = 67.97 net; standard 57.98 × 20% = 11.60, reduced 9.99 ×
    // 10% = 1.00; gross 80.57. One-time: SIM activation 10 + installation 49 = 59, tax 11.80.
    let rec = total(&q, "recurring");
    assert_eq!(rec["price"]["dutyFreeAmount"]["value"], 67.97);
    assert_eq!(rec["price"]["taxAmount"]["value"], 12.6);
    assert_eq!(rec["price"]["taxIncludedAmount"]["value"], 80.57);
    let taxes: Vec<(String, f64)> = rec["taxLine"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["taxCategory"].as_str().unwrap().to_string(), t["taxAmount"]["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(taxes, [("reduced".to_string(), 1.0), ("standard".to_string(), 11.6)]);
    let once = total(&q, "oneTime");
    assert_eq!(
        (&once["price"]["dutyFreeAmount"]["value"], &once["price"]["taxIncludedAmount"]["value"]),
        (&json!(59), &json!(70.8))
    );
    // In Germany the German rates apply.
    let de = api.created(
        QUOTES,
        json!({"relatedParty": [{"id": c, "role": "customer"}], "billingAccount": {"id": acct},
               "jurisdiction": "DE", "quoteItem": [item("1", "tv-sport", 1), item("2", "fibre-1g", 1)]}),
    );
    assert_eq!(line(&de, "1", "pop-tv-sport-monthly")["price"]["taxRate"], 7);

    // Re-priced while inProgress: two TV Sport subscriptions.
    let mut items = q["quoteItem"].clone();
    items[2]["quantity"] = json!(2);
    let a = api.patch(&format!("{QUOTES}/{id}"), json!({"quoteItem": items}));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(total(&a.json(), "recurring")["price"]["dutyFreeAmount"]["value"], 77.96);
    assert_eq!(a.json()["quoteDate"], q["quoteDate"], "prices stay those of the quote date");

    let a = api.patch(&format!("{QUOTES}/{id}"), json!({"state": "approved"}));
    assert_eq!(a.status, 200, "{}", a.body);
    let approved = a.json();
    assert_error(&api.patch(&format!("{QUOTES}/{id}"), json!({"state": "inProgress"})), 409, &["approved"]);
    assert_error(&api.patch(&format!("{QUOTES}/{id}"), json!({"quoteItem": q["quoteItem"]})), 409, &["inProgress"]);
    assert_error(&api.patch(&format!("{QUOTES}/{id}"), json!({"state": "accepted"})), 422, &["accept"]);
    assert_eq!(api.get(&format!("{QUOTES}/{id}")).json(), approved, "refused changes change nothing");
    // Two creates, a re-pricing, an approval (value + state change); refusals publish nothing.
    assert_eq!(published(&api), 5);

    // Cancelled is final.
    let a = api.patch(&format!("{QUOTES}/{}", de["id"].as_str().unwrap()), json!({"state": "cancelled"}));
    assert_eq!(a.status, 200, "{}", a.body);
    let a = api.patch(&format!("{QUOTES}/{}", de["id"].as_str().unwrap()), json!({"state": "approved"}));
    assert_error(&a, 409, &["cancelled"]);
    let listed = api.get(&format!("{QUOTES}?state=approved&fields=state"));
    assert_eq!(listed.header("x-total-count"), Some("1"));
}

#[test]
fn bad_input_is_refused_and_stores_nothing() {
    let api = start();
    let (c, acct) = customer(&api);
    let cases = [
        (vec![item("1", "no-such-offering", 1)], vec!["quoteItem 1", "no-such-offering does not exist"]),
        (vec![item("a", "fibre-1g", 1), item("b", "adsl-20m", 1)], vec!["quoteItem b: excludes", "incompatible"]),
        (vec![item("1", "mobile-m", 0)], vec!["quoteItem 1: quantity", "not 0"]),
        (vec![item("1", "mobile-m", -3)], vec!["quoteItem 1: quantity", "not -3"]),
        (vec![item("1", "tv-sport", 1)], vec!["quoteItem 1: addOnOf", "TV Sport"]),
        (vec![item("1", "enterprise-bundle", 1)], vec!["quoteItem 1: marketSegment", "Business"]),
    ];
    for (items, needles) in cases {
        let a = api.post(QUOTES, customer_quote(&c, &acct, items));
        assert_error(&a, 422, &needles);
        assert!(!a.json()["problems"].as_array().unwrap().is_empty(), "{}", a.body);
    }
    let a = api.post(QUOTES, customer_quote(&c, &acct, vec![item("a", "fibre-1g", 1), item("b", "adsl-20m", 1)]));
    assert_eq!(a.json()["problems"][0]["item"], "b", "ADSL, added next to fibre, breaks the rule");
    assert_error(&api.post(QUOTES, customer_quote("nobody", &acct, vec![item("1", "mobile-m", 1)])), 422, &["nobody"]);
    let prospect =
        json!({"relatedParty": [{"role": "prospect", "name": "Grace"}], "quoteItem": [item("1", "mobile-m", 1)]});
    assert_error(&api.post(QUOTES, &prospect), 422, &["currency"]);
    assert_error(&api.post(QUOTES, json!({"quoteItem": "x"})), 422, &["relatedParty", "quoteItem"]);
    assert_eq!(api.count(QUOTES), 0, "refused quotes store nothing");
    assert_eq!(published(&api), 0, "and publish nothing");

    // Accepting: not approved yet, expired, a prospect, twice.
    let q = api.created(QUOTES, customer_quote(&c, &acct, vec![item("1", "mobile-m", 1)]));
    let id = q["id"].as_str().unwrap();
    assert_error(&api.post(&format!("{QUOTES}/{id}/accept"), json!({})), 409, &["approved first"]);
    let mut old = customer_quote(&c, &acct, vec![item("1", "mobile-m", 1)]);
    old["quoteDate"] = json!("2026-02-01T00:00:00Z");
    old["validFor"] = json!({"endDateTime": "2026-02-15T00:00:00Z"});
    let old = api.created(QUOTES, old);
    let old_id = old["id"].as_str().unwrap();
    assert_eq!(api.patch(&format!("{QUOTES}/{old_id}"), json!({"state": "approved"})).status, 200);
    let before = api.get(&format!("{QUOTES}/{old_id}")).json();
    assert_error(&api.post(&format!("{QUOTES}/{old_id}/accept"), json!({})), 422, &["expired", "2026-02-15T00:00:00Z"]);
    assert_eq!(api.get(&format!("{QUOTES}/{old_id}")).json(), before, "a refused acceptance changes nothing");
    assert_eq!(published(&api), 4, "two creates and an approval; no event for refused acceptances");
    assert_eq!(api.get(&format!("/tmf-api/productOrderingManagement/v4/productOrder/quote-{old_id}")).status, 404);
}

#[test]
fn a_prospect_is_named_before_acceptance() {
    let api = start();
    let (c, _) = customer(&api);
    let q = api.created(
        QUOTES,
        json!({"relatedParty": [{"role": "prospect", "name": "Ada", "marketSegment": "residential"}],
               "currency": "EUR", "quoteItem": [item("1", "mobile-m", 1)]}),
    );
    let id = q["id"].as_str().unwrap();
    assert_eq!(api.patch(&format!("{QUOTES}/{id}"), json!({"state": "approved"})).status, 200);
    assert_error(&api.post(&format!("{QUOTES}/{id}/accept"), json!({})), 422, &["prospect"]);
    let a = api.patch(&format!("{QUOTES}/{id}"), json!({"relatedParty": [{"id": "nobody", "role": "customer"}]}));
    assert_error(&a, 422, &["nobody"]);
    // Named: checked and priced again for the customer; same prices, so it stays approved.
    let a = api.patch(&format!("{QUOTES}/{id}"), json!({"relatedParty": [{"id": c, "role": "customer"}]}));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["state"], "approved");
    assert_eq!(a.json()["quoteTotalPrice"], q["quoteTotalPrice"]);
    // Once a customer's, the party no longer changes after approval.
    let a = api.patch(&format!("{QUOTES}/{id}"), json!({"relatedParty": [{"role": "prospect", "name": "X"}]}));
    assert_error(&a, 409, &["inProgress"]);
}

/// Acceptance places the order through the order side's `place_order`; it is then fulfilled.
#[test]
fn accepting_places_one_order_at_the_quoted_prices() {
    let api = start();
    let (c, acct) = customer(&api);
    let q = api.created(QUOTES, customer_quote(&c, &acct, vec![item("1", "mobile-m", 1), item("2", "fibre-1g", 1)]));
    let id = q["id"].as_str().unwrap();
    assert_eq!(api.patch(&format!("{QUOTES}/{id}"), json!({"state": "approved"})).status, 200);
    let a = api.post(&format!("{QUOTES}/{id}/accept"), json!({}));
    assert_eq!(a.status, 200, "{}", a.body);
    let accepted = a.json();
    assert_eq!(accepted["state"], "accepted");
    let order_id = format!("quote-{id}");
    assert_eq!(accepted["productOrder"]["id"], order_id);
    let order = api.get(&format!("/tmf-api/productOrderingManagement/v4/productOrder/{order_id}"));
    assert_eq!(order.status, 200, "{}", order.body);
    let order = order.json();
    assert_eq!(order["quote"][0]["id"], id);
    let item = order["productOrderItem"].as_array().unwrap().iter().find(|i| i["id"] == "1").unwrap();
    assert_eq!(item["itemPrice"], q["quoteItem"][0]["quoteItemPrice"], "the order keeps the quoted prices");
    // Accepting twice: 409, still one order, the quote unchanged.
    assert_error(&api.post(&format!("{QUOTES}/{id}/accept"), json!({})), 409, &["already accepted", &order_id]);
    assert_eq!(api.get(&format!("{QUOTES}/{id}")).json(), accepted);
    // The order goes through the simulated OSS to completion, and the products reach the
    // inventory at the quoted price.
    let order_url = format!("/tmf-api/productOrderingManagement/v4/productOrder/{order_id}");
    eventually(std::time::Duration::from_secs(30), "the accepted quote's order completes", || {
        (api.get(&order_url).json()["state"] == "completed").then_some(())
    });
    // The order is stored completed a moment before the inventory is written.
    let products = eventually(std::time::Duration::from_secs(30), "the order's two products", || {
        let products = api.get(&format!("/tmf-api/productInventory/v4/product?relatedParty.id={c}")).json();
        (products.as_array().map(Vec::len) == Some(2)).then_some(products)
    });
    let products = products.as_array().unwrap();
    let mobile = products.iter().find(|p| p["productOffering"]["id"] == "mobile-m").unwrap();
    assert_eq!(mobile["status"], "active");
    let quoted = &q["quoteItem"][0]["quoteItemPrice"][0]["price"]["dutyFreeAmount"];
    assert!(mobile["productPrice"].to_string().contains(&quoted["value"].to_string()), "{mobile}");
}
