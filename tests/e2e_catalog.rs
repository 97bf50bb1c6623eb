//! End-to-end tests of the catalog component (TMF620 v4 and its BSS extensions) over real HTTP
//! against the real bss-host: CRUD and TMF lists for every resource, bad input (each a 4xx TMF
//! error body with nothing stored), lifecycle and referential integrity, price versions, the
//! basket check (relationship rules, pricing rules, totals) and the one-document import/export
//! with the sample catalog. Run with `cargo test -p bss-host --test e2e_catalog`.

mod support;

use serde_json::{Value, json};
use support::*;

const BASE: &str = "/tmf-api/productCatalogManagement/v4";

/// A host and a tenant's client of the catalog API (relative paths are under [`BASE`]).
type Api = TenantHost;

fn start() -> Api {
    TenantHost::start("Catalog tests", BASE)
}

#[test]
fn every_resource_has_tmf_crud_and_lists() {
    let api = start();
    let minimal = [
        ("catalog", json!({"name": "Main"})),
        ("category", json!({"name": "Mobile"})),
        ("productSpecification", json!({"name": "Mobile line"})),
        ("productOffering", json!({"name": "Mobile S"})),
        ("productOfferingPrice", json!({"name": "Monthly fee", "priceType": "recurring"})),
        (
            "tariff",
            json!({"name": "Voice", "currency": "EUR", "ratingUnit": "minute", "rate": {"unit": "EUR", "value": 0.1}}),
        ),
        (
            "pricingRule",
            json!({"name": "5% off", "appliesTo": [], "priceType": "recurring", "discount": {"percentage": 5}}),
        ),
        ("taxRate", json!({"name": "Standard VAT", "taxCategory": "standard", "rate": 20})),
    ];
    // pricingRule needs at least one offering; create one first.
    let offering = api.create("productOffering", json!({"name": "Target"}));
    for (collection, body) in minimal {
        let mut body = body;
        if collection == "pricingRule" {
            body["appliesTo"] = json!([{"id": offering}]);
        }
        let a = api.post(collection, &body);
        assert_eq!(a.status, 201, "{collection}: {}", a.body);
        let doc = a.json();
        let id = doc["id"].as_str().unwrap().to_string();
        assert_eq!(doc["href"], format!("{BASE}/{collection}/{id}"));
        assert_eq!(a.header("location"), Some(format!("{BASE}/{collection}/{id}").as_str()));
        assert_eq!(doc["lifecycleStatus"], "inDesign", "default lifecycle of {collection}");
        assert!(doc["lastUpdate"].is_string());
        assert!(doc["@type"].is_string());

        let got = api.get(&format!("{collection}/{id}"));
        assert_eq!(got.status, 200);
        assert_eq!(got.json(), doc);

        let listed = api.get(&format!("{collection}?fields=name&id={id}"));
        assert_eq!(listed.status, 200);
        assert_eq!(listed.header("x-total-count"), Some("1"));
        assert_eq!(listed.header("x-result-count"), Some("1"));
        let item = &listed.json()[0];
        assert_eq!(item["name"], doc["name"]);
        assert!(item.get("lifecycleStatus").is_none(), "fields selects attributes");
        // The kit's quoted filter value.
        let quoted = api.get(&format!("{collection}?lastUpdate=%22{}%22", doc["lastUpdate"].as_str().unwrap()));
        assert_eq!(quoted.json().as_array().unwrap().len(), 1, "{collection}: {}", quoted.body);

        let patched = api.patch(
            &format!("{collection}/{id}"),
            json!({"description": "changed", "extraTmfAttribute": {"kept": true}}),
        );
        assert_eq!(patched.status, 200, "{collection}: {}", patched.body);
        assert_eq!(patched.json()["description"], "changed");
        assert_eq!(api.get(&format!("{collection}/{id}")).json()["extraTmfAttribute"]["kept"], true);
        assert_error(&api.patch(&format!("{collection}/{id}"), json!({"id": "other"})), 400, &["id"]);

        if collection != "productOffering" {
            assert_eq!(api.delete(&format!("{collection}/{id}")).status, 204);
            assert_error(&api.get(&format!("{collection}/{id}")), 404, &[&id]);
        }
    }
    // Paging: offset/limit and the count headers.
    for i in 0..3 {
        api.create("productSpecification", json!({"name": format!("Spec {i}")}));
    }
    let page = api.get("productSpecification?offset=1&limit=1");
    assert_eq!(page.header("x-total-count"), Some("3"));
    assert_eq!(page.header("x-result-count"), Some("1"));
    assert_error(&api.get("productOffering/does-not-exist"), 404, &["does-not-exist"]);
    // Unknown route, wrong method.
    assert_eq!(api.get("productThing").status, 404);
    assert_eq!(api.call("PUT", "productOffering", Some(&json!({}))).status, 405);
    // Idempotency-Key: the same create twice answers the first result and stores one document.
    let before = api.count("productSpecification");
    let idem = |body: &str| {
        send(
            "POST",
            &api.url("productSpecification"),
            &[
                ("Authorization", api.auth.as_str()),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "spec-42"),
            ],
            Some(body.as_bytes()),
        )
    };
    let first = idem(r#"{"name": "Idempotent"}"#);
    let again = idem(r#"{"name": "Idempotent"}"#);
    assert_eq!((first.status, again.status), (201, 201), "{}", again.body);
    assert_eq!(first.json()["id"], again.json()["id"]);
    assert_eq!(api.count("productSpecification"), before + 1);
    assert!(idem(r#"{"name": "Other"}"#).status >= 400);
    // Another tenant sees nothing of this catalog.
    let (_, other) = create_tenant(&api.host, "Other operator");
    let other = format!("Bearer {other}");
    let a = send("GET", &api.url(&format!("productOffering/{offering}")), &[("Authorization", other.as_str())], None);
    assert_eq!(a.status, 404);
    let a = send("GET", &api.url("productOffering"), &[("Authorization", other.as_str())], None);
    assert_eq!(a.header("x-total-count"), Some("0"));
    // No key, no catalog.
    assert_eq!(send("GET", &api.url("productOffering"), &[], None).status, 401);
}

#[test]
fn bad_input_is_refused_and_stores_nothing() {
    let api = start();
    let spec = api.create("productSpecification", json!({"name": "Mobile line"}));
    let before: Vec<usize> =
        ["productOffering", "productOfferingPrice", "tariff", "pricingRule"].iter().map(|c| api.count(c)).collect();
    let cases: Vec<(&str, Value, u16, Vec<&str>)> = vec![
        ("productOffering", json!({"description": "no name"}), 422, vec!["name: is mandatory"]),
        ("productOffering", json!({"name": 42}), 422, vec!["name"]),
        (
            "productOffering",
            json!({"name": "X", "productSpecification": {"id": "nope"}}),
            422,
            vec!["productSpecification", "nope", "does not exist"],
        ),
        (
            "productOffering",
            json!({"name": "X", "productOfferingPrice": [{"id": spec.as_str()}]}),
            422,
            vec!["productOfferingPrice"],
        ),
        ("productOffering", json!({"name": "X", "isBundle": "yes"}), 422, vec!["isBundle"]),
        ("productOffering", json!({"name": "X", "isBundle": true}), 422, vec!["bundledProductOffering"]),
        ("productOffering", json!({"name": "X", "lifecycleStatus": "launched"}), 422, vec!["lifecycleStatus"]),
        (
            "productOffering",
            json!({"name": "X", "productOfferingRelationship": [{"id": "x", "relationshipType": "likes"}]}),
            422,
            vec!["productOfferingRelationship"],
        ),
        ("productOffering", json!({"id": "mine", "name": "X"}), 400, vec!["id"]),
        ("productOfferingPrice", json!({"name": "P"}), 422, vec!["priceType: is mandatory"]),
        (
            "productOfferingPrice",
            json!({"name": "P", "priceType": "oneTime", "price": {"unit": "EUR", "value": "ten"}}),
            422,
            vec!["price"],
        ),
        (
            "productOfferingPrice",
            json!({"name": "P", "priceType": "oneTime", "price": {"unit": "EURO", "value": 1}}),
            422,
            vec!["price"],
        ),
        (
            "productOfferingPrice",
            json!({"name": "P", "priceType": "oneTime", "lifecycleStatus": "active"}),
            422,
            vec!["price"],
        ),
        (
            "productOfferingPrice",
            json!({"name": "P", "priceType": "usage", "tariff": {"id": "nope"}}),
            422,
            vec!["tariff", "does not exist"],
        ),
        (
            "productOfferingPrice",
            json!({"name": "P", "priceType": "recurring", "recurringChargePeriodType": "fortnight"}),
            422,
            vec!["recurringChargePeriodType"],
        ),
        (
            "tariff",
            json!({"name": "T", "currency": "EUR", "ratingUnit": "hour", "rate": {"unit": "EUR", "value": 1}}),
            422,
            vec!["ratingUnit"],
        ),
        (
            "tariff",
            json!({"name": "T", "currency": "EUR", "ratingUnit": "minute", "rate": {"unit": "USD", "value": 1}}),
            422,
            vec!["rate", "USD"],
        ),
        (
            "tariff",
            json!({"name": "T", "currency": "EUR", "ratingUnit": "minute", "rate": {"unit": "EUR", "value": 1},
            "destinationGroups": [{"name": "A", "prefixes": ["33"]}, {"name": "B", "prefixes": ["33"]}]}),
            422,
            vec!["prefix 33"],
        ),
        (
            "pricingRule",
            json!({"name": "R", "appliesTo": [{"id": "nope"}], "priceType": "recurring", "discount": {"percentage": 10}}),
            422,
            vec!["appliesTo", "nope"],
        ),
        (
            "pricingRule",
            json!({"name": "R", "appliesTo": [], "priceType": "recurring", "discount": {"percentage": 120}}),
            422,
            vec!["discount.percentage"],
        ),
    ];
    for (collection, body, status, needles) in cases {
        let a = api.post(collection, &body);
        assert_error(&a, status, &needles);
    }
    // Malformed JSON and a non-object body.
    let raw = send(
        "POST",
        &api.url("productOffering"),
        &[("Authorization", api.auth.as_str()), ("Content-Type", "application/json")],
        Some(b"{\"name\": "),
    );
    assert_error(&raw, 400, &["not valid JSON"]);
    assert_error(&api.post("productOffering", json!(["x"])), 400, &["JSON object"]);
    let after: Vec<usize> =
        ["productOffering", "productOfferingPrice", "tariff", "pricingRule"].iter().map(|c| api.count(c)).collect();
    assert_eq!(before, after, "refused requests store nothing");
}

#[test]
fn lifecycle_references_and_price_versions() {
    let api = start();
    let spec = api.create("productSpecification", json!({"name": "Mobile line", "lifecycleStatus": "active"}));
    // The kit's minimal price: fine while inDesign, not for an active offering.
    let draft =
        api.create("productOfferingPrice", json!({"name": "Draft", "isBundle": false, "priceType": "recurring"}));
    let offer = api.create(
        "productOffering",
        json!({"name": "Mobile M", "productSpecification": {"id": spec}, "productOfferingPrice": [{"id": draft}]}),
    );
    let a = api.patch(&format!("productOffering/{offer}"), json!({"lifecycleStatus": "active"}));
    assert_error(&a, 422, &["incomplete", "recurringChargePeriodType"]);
    assert_eq!(api.get(&format!("productOffering/{offer}")).json()["lifecycleStatus"], "inDesign");
    let a = api.patch(
        &format!("productOfferingPrice/{draft}"),
        json!({"price": {"unit": "EUR", "value": 20}, "recurringChargePeriodType": "month", "taxCategory": "standard",
                "validFor": {"startDateTime": "2026-01-01T00:00:00Z"}, "lifecycleStatus": "active",
                "grandfathering": {"policy": "keepPurchasedPrice", "durationMonths": 6}}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = api.patch(&format!("productOffering/{offer}"), json!({"lifecycleStatus": "active"}));
    assert_eq!(a.status, 200, "{}", a.body);

    // Referential integrity: the spec and the price are in use.
    assert_error(&api.delete(&format!("productSpecification/{spec}")), 409, &["Mobile M", &offer]);
    assert_error(&api.delete(&format!("productOfferingPrice/{draft}")), 409, &["Mobile M"]);
    // An active offering cannot point at a retired spec.
    let spec2 = api.create("productSpecification", json!({"name": "Old line", "lifecycleStatus": "retired"}));
    assert_error(
        &api.patch(&format!("productOffering/{offer}"), json!({"productSpecification": {"id": spec2}})),
        422,
        &["retired specification"],
    );

    // An active price changes only through priceChange, as a new version.
    assert_error(
        &api.patch(&format!("productOfferingPrice/{draft}"), json!({"price": {"unit": "EUR", "value": 25}})),
        422,
        &["priceChange"],
    );
    let change = api.post(
        &format!("productOfferingPrice/{draft}/priceChange"),
        json!({"price": {"unit": "EUR", "value": 24.5}, "effectiveFrom": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(change.status, 200, "{}", change.body);
    let p = change.json();
    assert_eq!(p["version"], "2");
    assert_eq!(p["price"], json!({"unit": "EUR", "value": 24.5}));
    assert_eq!(p["priceVersion"].as_array().unwrap().len(), 2);
    assert_error(
        &api.post(
            &format!("productOfferingPrice/{draft}/priceChange"),
            json!({"price": {"unit": "EUR", "value": 30}, "effectiveFrom": "2020-01-01T00:00:00Z"}),
        ),
        422,
        &["effectiveFrom"],
    );
    assert_error(
        &api.post(
            &format!("productOfferingPrice/{draft}/priceChange"),
            json!({"price": {"unit": "USD", "value": 30}, "effectiveFrom": "2099-06-01T00:00:00Z"}),
        ),
        422,
        &["another currency"],
    );
    assert_error(
        &api.post(&format!("productOfferingPrice/{draft}/priceChange"), json!({"price": {"unit": "EUR", "value": 30}})),
        400,
        &["effectiveFrom"],
    );
    assert_eq!(
        api.get(&format!("productOfferingPrice/{draft}")).json()["version"],
        "2",
        "refused changes store nothing"
    );
    // New sales pay the version in effect at the date.
    let price_at = |at: &str| {
        let a = api
            .post("basketCheck", json!({"items": [{"productOffering": {"id": offer}}], "currency": "EUR", "at": at}));
        assert_eq!(a.status, 200, "{}", a.body);
        let line = a.json()["lines"][0].clone();
        (line["priceVersion"].as_str().unwrap().to_string(), line["price"]["value"].clone())
    };
    assert_eq!(price_at("2098-12-31T00:00:00Z"), ("1".to_string(), json!(20)));
    assert_eq!(price_at("2099-01-02T00:00:00Z"), ("2".to_string(), json!(24.5)));

    // What the active offering uses cannot be retired under it.
    assert_error(
        &api.patch(&format!("productSpecification/{spec}"), json!({"lifecycleStatus": "retired"})),
        422,
        &["cannot retire", "Mobile M"],
    );
    // Retire: allowed; nothing leaves retired; still readable.
    let a = api.patch(&format!("productOffering/{offer}"), json!({"lifecycleStatus": "retired"}));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_error(
        &api.patch(&format!("productOffering/{offer}"), json!({"lifecycleStatus": "active"})),
        422,
        &["retired"],
    );
    assert_eq!(api.get(&format!("productOffering/{offer}")).status, 200);
    let a = api.post("basketCheck", json!({"items": [{"productOffering": {"id": offer}}], "currency": "EUR"}));
    assert_error(&a, 422, &["retired and can no longer be ordered"]);
    // A retired referrer no longer holds its references.
    assert_eq!(api.delete(&format!("productSpecification/{spec}")).status, 204);
}

#[test]
fn sample_catalog_imports_and_the_basket_rules_hold() {
    let api = start();
    let sample: Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join("infra/samples/catalog.json")).unwrap())
            .unwrap();
    let a = api.post("importCatalog", &sample);
    assert_eq!(a.status, 200, "{}", a.body);
    let offerings = sample["productOffering"].as_array().unwrap().len();
    assert_eq!(a.json()["imported"]["productOffering"]["created"], offerings);
    // Re-importing the same file changes nothing.
    let a = api.post("importCatalog", &sample);
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["imported"]["productOffering"], json!({"created": 0, "updated": 0, "unchanged": offerings}));
    assert_eq!(api.count("productOffering"), offerings);
    let tv = api.get("productOffering/tv-sport").json();
    assert_eq!(tv["href"], format!("{BASE}/productOffering/tv-sport"));
    // Export → import round trip.
    let exported = api.get("exportCatalog");
    assert_eq!(exported.status, 200);
    assert_eq!(exported.json()["tariff"].as_array().unwrap().len(), sample["tariff"].as_array().unwrap().len());
    let a = api.post("importCatalog", exported.json());
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["imported"]["tariff"]["unchanged"], 3);
    assert_eq!(a.json()["imported"]["taxRate"]["unchanged"], sample["taxRate"].as_array().unwrap().len());

    // Tax rates: exact percentages, and one active rate per category, jurisdiction and date.
    assert_eq!(api.get("taxRate/tax-reduced-de").json()["rate"], 7);
    let overlapping = api.post(
        "taxRate",
        json!({"name": "Standard again", "taxCategory": "standard", "rate": 21, "lifecycleStatus": "active"}),
    );
    assert_error(&overlapping, 422, &["validFor", "tax-standard"]);
    assert_error(&api.post("taxRate", json!({"name": "Too much", "taxCategory": "x", "rate": 100.5})), 422, &["rate"]);
    assert_eq!(api.count("taxRate"), sample["taxRate"].as_array().unwrap().len(), "refused rates store nothing");

    // A bad document names every problem and stores nothing.
    let bad = json!({"productOffering": [
        {"id": "new-offer", "name": "New", "productOfferingPrice": [{"id": "no-such-price"}]},
        {"id": "tv-sport", "name": "TV Sport", "lifecycleStatus": "inDesign"}],
        "tariff": [{"id": "bad tariff id", "name": "x"}]});
    let a = api.post("importCatalog", &bad);
    assert_error(&a, 422, &["bad tariff id"]);
    let bad = json!({"productOffering": [
        {"id": "new-offer", "name": "New", "productOfferingPrice": [{"id": "no-such-price"}]},
        {"id": "tv-sport", "name": "TV Sport", "lifecycleStatus": "inDesign"}]});
    let a = api.post("importCatalog", &bad);
    assert_error(
        &a,
        422,
        &[
            "productOffering[new-offer].productOfferingPrice",
            "no-such-price",
            "productOffering[tv-sport].lifecycleStatus",
        ],
    );
    assert_eq!(a.json()["problems"].as_array().unwrap().len(), 2);
    assert_eq!(api.count("productOffering"), offerings);
    assert_eq!(api.get("productOffering/new-offer").status, 404);

    // Referential integrity over the imported catalog.
    assert_error(&api.delete("tariff/tariff-mobile-m"), 409, &["Mobile M usage"]);

    let check = |body: Value| api.post("basketCheck", &body);
    // Mobile + broadband: the 10% rule fires on the mobile's recurring price only.
    let a = check(json!({"items": [{"productOffering": {"id": "mobile-m"}}, {"productOffering": {"id": "fibre-1g"}}],
                         "currency": "EUR", "at": "2026-06-01T00:00:00Z"}));
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    let monthly = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["productOfferingPrice"]["id"] == "pop-mobile-m-monthly")
        .unwrap();
    assert_eq!(monthly["discounts"][0]["pricingRule"]["name"], "Mobile + broadband: 10% off the mobile plan");
    assert_eq!(monthly["price"]["value"], json!(17.99));
    assert!(v["usage"].as_array().unwrap().iter().any(|u| u["tariff"]["id"] == "tariff-mobile-m"));
    let recurring = v["totals"].as_array().unwrap().iter().find(|t| t["priceType"] == "recurring").unwrap();
    assert_eq!(recurring["price"], json!({"unit": "EUR", "value": 57.98}));
    let one_time = v["totals"].as_array().unwrap().iter().find(|t| t["priceType"] == "oneTime").unwrap();
    assert_eq!(one_time["price"]["value"], json!(59));
    // The discount also holds when broadband is an existing product.
    let a = check(
        json!({"items": [{"productOffering": {"id": "mobile-m"}}], "existingProducts": [{"productOffering": {"id": "fibre-1g"}}],
                         "currency": "EUR", "at": "2026-06-01T00:00:00Z"}),
    );
    assert_eq!(a.json()["lines"][0]["discounts"].as_array().unwrap().len(), 1, "{}", a.body);
    // Several currencies: Mobile M also has a GBP price.
    let a = check(
        json!({"items": [{"productOffering": {"id": "mobile-m"}}], "currency": "GBP", "at": "2026-06-01T00:00:00Z"}),
    );
    assert_eq!(a.status, 422, "SIM activation has no GBP price: {}", a.body);
    assert!(a.json()["message"].as_str().unwrap().contains("\"Mobile M\" has no oneTime price in GBP"));
    // Add-on without its host; excluded combination; every violation listed.
    let a = check(json!({"items": [{"productOffering": {"id": "tv-sport"}}], "currency": "EUR"}));
    assert_error(
        &a,
        422,
        &[
            "offering \"TV Sport\" is an add-on of \"Fibre 1G\" or \"ADSL 20M\", which the basket and the customer's products do not contain",
        ],
    );
    let a = check(json!({"items": [{"productOffering": {"id": "adsl-20m"}}, {"productOffering": {"id": "tv-sport"}}],
                         "existingProducts": [{"productOffering": {"id": "fibre-1g"}}], "currency": "EUR"}));
    assert_error(&a, 422, &["excludes"]);
    let a = check(
        json!({"items": [{"productOffering": {"id": "tv-sport"}}, {"productOffering": {"id": "nope"}}], "currency": "EUR"}),
    );
    assert_eq!(a.json()["problems"].as_array().unwrap().len(), 2, "{}", a.body);
    // Upgrade along the declared path; not the other way round.
    let a = check(
        json!({"items": [{"productOffering": {"id": "mobile-l"}, "action": "upgrade", "replaces": {"id": "mobile-m"}}],
                         "existingProducts": [{"productOffering": {"id": "mobile-m"}}], "currency": "EUR"}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = check(
        json!({"items": [{"productOffering": {"id": "mobile-m"}, "action": "upgrade", "replaces": {"id": "mobile-l"}}],
                         "existingProducts": [{"productOffering": {"id": "mobile-l"}}], "currency": "EUR"}),
    );
    assert_error(&a, 422, &["\"Mobile L\" has no upgrade path to \"Mobile M\""]);
    // The enterprise bundle is priced by its own price and brings its members.
    let a = check(
        json!({"items": [{"productOffering": {"id": "enterprise-bundle"}}, {"productOffering": {"id": "tv-sport"}}],
                         "currency": "EUR", "marketSegment": ["business"]}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["lines"][0]["price"]["value"], json!(149));
    let a = check(
        json!({"items": [{"productOffering": {"id": "enterprise-bundle"}}], "currency": "EUR", "marketSegment": ["residential"]}),
    );
    assert_error(&a, 422, &["market segments"]);
    // The wholesale interconnect tariff is in the partner's currency.
    assert_eq!(api.get("tariff/tariff-interconnect").json()["currency"], "USD");
    // Bad basket requests.
    assert_error(&check(json!({"items": [], "currency": "EUR"})), 422, &["items"]);
    assert_error(
        &check(json!({"items": [{"productOffering": {"id": "mobile-m"}}], "currency": "euro"})),
        400,
        &["currency"],
    );
    assert_error(
        &check(json!({"items": [{"productOffering": "mobile-m"}], "currency": "EUR"})),
        400,
        &["productOffering"],
    );
}

fn published(api: &Api) -> u64 {
    published_by(&api.host, "catalog")
}

#[test]
fn writes_publish_catalog_events() {
    let api = start();
    let start = published(&api);
    let id = api.create("productSpecification", json!({"name": "Evented"}));
    assert_eq!(published(&api), start + 1, "create: ProductSpecificationCreateEvent");
    assert_eq!(api.patch(&format!("productSpecification/{id}"), json!({"description": "d"})).status, 200);
    assert_eq!(published(&api), start + 2, "patch: AttributeValueChangeEvent");
    assert_eq!(api.patch(&format!("productSpecification/{id}"), json!({"lifecycleStatus": "active"})).status, 200);
    assert_eq!(published(&api), start + 4, "state change: AttributeValueChange + StateChange");
    assert_eq!(api.delete(&format!("productSpecification/{id}")).status, 204);
    assert_eq!(published(&api), start + 5, "delete: DeleteEvent");
    // Refused writes publish nothing.
    assert_eq!(api.post("productSpecification", json!({"name": ""})).status, 422);
    assert_eq!(published(&api), start + 5);
}
