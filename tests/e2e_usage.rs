//! End-to-end tests of usage mediation, rating and charging (TMF635) over real HTTP against the
//! real `bss-host` with the real usage component, the sample catalog and products created
//! through the inventory API: single records and batches (JSON and CSV) with duplicates,
//! conflicts, bad and unguidable records; held records corrected and recycled; allowances and
//! tax on the rated record; prepaid balances under concurrent batches (never overdrawn); online
//! charging (reserve, commit, release); credit-limit threshold events; rerating corrections;
//! a batch going round a shard lease another holder has; exactly once across a `kill -9`
//! restart. Run with `cargo test -p bss-host --test e2e_usage`.

mod support;

use serde_json::{Value, json};
use support::*;

const US: &str = "/tmf-api/usageManagement/v4";
const PB: &str = "/tmf-api/prepayBalanceManagement/v4";

struct Line {
    account: String,
    product: String,
}

/// A tenant with the sample catalog and one customer.
fn setup(host: &Host) -> (Client, String) {
    let api = Client::new_tenant(host, "Operator", US);
    api.import_sample_catalog();
    let party = api.create("/tmf-api/party/v4/individual", json!({"givenName": "Ada", "familyName": "Lovelace"}));
    let customer = api.create(
        "/tmf-api/customerManagement/v4/customer",
        json!({"name": "Ada Lovelace", "engagedParty": {"id": party, "@referredType": "Individual"}}),
    );
    (api, customer)
}

/// A billing account (Paris, cycle day 1, EUR) with a Mobile M product carrying `msisdn`.
fn line(api: &Client, customer: &str, msisdn: &str, extra: Value) -> Line {
    let mut body = json!({"name": "Mobile", "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR",
        "billDelivery": "email", "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    let account = api.create("/tmf-api/accountManagement/v4/billingAccount", body);
    let product = api.create(
        "/tmf-api/productInventory/v4/product",
        json!({"name": "Mobile M", "status": "active", "productOffering": {"id": "mobile-m"},
               "relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
               "billingAccount": {"id": account}, "startDate": "2026-01-01T00:00:00Z",
               "productCharacteristic": [{"name": "MSISDN", "value": msisdn}]}),
    );
    Line { account, product }
}

fn call(id: &str, msisdn: &str, start: &str, secs: i64, called: &str) -> Value {
    json!({"recordId": id, "subscriber": msisdn, "service": "voice", "startTime": start, "duration": secs,
           "calledNumber": called})
}

fn amount(v: &Value, field: &str) -> String {
    v["ratedProductUsage"][0][field]["value"].to_string().trim_matches('"').to_string()
}

#[test]
fn a_record_is_rated_once_duplicates_acknowledged_conflicts_and_bad_records_reported() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let l = line(&api, &customer, "+33611000001", json!({}));
    // A weekday daytime call of 90 s to a French mobile: first minute then per second; inside
    // the 500 included minutes, so free, and the split is on the record.
    let rec = call("cdr-1", "0611000001", "2026-11-03T10:00:00+01:00", 90, "0622000000");
    let a = api.post(&format!("{US}/usage"), &rec);
    assert_eq!(a.status, 201, "{}", a.body);
    let u = a.json();
    assert_eq!(u["status"], "rated");
    assert_eq!(u["product"]["id"], l.product.as_str());
    assert_eq!(u["billingAccount"]["id"], l.account.as_str());
    assert_eq!(u["rating"]["tariff"]["id"], "tariff-mobile-m");
    assert_eq!(u["rating"]["allowanceBaseUnits"], 90);
    assert_eq!(amount(&u, "taxIncludedRatingAmount"), "0.00");
    // The same record again: acknowledged (200, the stored one), not rated again.
    let again = api.post(&format!("{US}/usage"), &rec);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["rating"], u["rating"]);
    // Same id, another payload: 409.
    let other =
        api.post(&format!("{US}/usage"), call("cdr-1", "0611000001", "2026-11-03T10:00:00+01:00", 91, "0622000000"));
    assert_eq!(other.status, 409, "{}", other.body);
    // The allowance was consumed once: a second distinct call shows 90 s used before it.
    let b = api
        .post(&format!("{US}/usage"), call("cdr-2", "+33611000001", "2026-11-03T11:00:00+01:00", 30, "+33622000000"));
    assert_eq!(b.status, 201, "{}", b.body);
    let steps = b.json()["rating"]["steps"].clone();
    let allowance = steps.as_array().unwrap().iter().find(|s| s["step"] == "allowance").unwrap().clone();
    assert_eq!(allowance["remainingBaseUnits"], 500 * 60 - 90 - 60, "{steps}");
    // A bad record: 422 naming the field; kept as rejected.
    let bad =
        api.post(&format!("{US}/usage"), call("cdr-bad", "0611000001", "2026-11-03T10:00:00+01:00", -5, "0622000000"));
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("duration"), "{}", bad.body);
    let held = api.get(&format!("{US}/usage?status=rejected"));
    assert_eq!(held.status, 200);
    assert!(held.body.contains("cdr-bad"), "{}", held.body);
    // Unknown subscriber: held for recycling.
    let unknown =
        api.post(&format!("{US}/usage"), call("cdr-u", "0699999999", "2026-11-03T10:00:00+01:00", 60, "0622000000"));
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    assert!(unknown.body.contains("no product"), "{}", unknown.body);
    // A batch: JSON with a duplicate, a conflict, a bad record, a repeat inside the batch, and a
    // rated id re-sent with a payload that cannot be guided (a conflict, not a recycled record).
    let batch = json!([
        call("cdr-1", "0611000001", "2026-11-03T10:00:00+01:00", 90, "0622000000"),
        call("cdr-2", "0699999999", "2026-11-03T11:00:00+01:00", 30, "+33622000000"),
        call("cdr-1", "0611000001", "2026-11-03T10:00:00+01:00", 95, "0622000000"),
        call("cdr-3", "0611000001", "2026-11-04T10:00:00+01:00", 60, "0622000000"),
        call("cdr-3", "0611000001", "2026-11-04T10:00:00+01:00", 60, "0622000000"),
        {"recordId": "cdr-4", "subscriber": "0611000001", "service": "fax", "startTime": "2026-11-04T10:00:00Z"},
    ]);
    let r = api.post(&format!("{US}/usageBatch"), &batch);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = r.json();
    assert_eq!(
        (r["received"].as_u64(), r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(6), Some(1), Some(2)),
        "{r}"
    );
    assert_eq!((r["conflicts"].as_u64(), r["rejected"].as_u64()), (Some(2), Some(1)), "{r}");
    assert_eq!(r["recycled"].as_u64(), Some(0), "{r}");
    assert_eq!(api.get(&format!("{US}/usage/cdr-2")).json()["status"], "rated");
    // CSV with the switch's column names.
    let csv = "CDR_ID,MSISDN,Record Type,Start Time,Duration,B_Number\n\
               cdr-5,0611000001,voice,2026-11-05T09:00:00+01:00,120,0033622000000\n\
               cdr-6,0611000001,sms,2026-11-05T09:05:00+01:00,,0622000000\n";
    let a = send(
        "POST",
        &api.url(&format!("{US}/usageBatch")),
        &[("Authorization", api.auth.as_str()), ("Content-Type", "text/csv")],
        Some(csv.as_bytes()),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["accepted"], 2, "{}", a.body);
    let listed = api.get(&format!("{US}/usage/cdr-6"));
    assert_eq!(listed.json()["usageType"], "sms");
}

#[test]
fn held_records_are_recycled_once_the_subscriber_exists() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let r = api.post(
        &format!("{US}/usageBatch"),
        json!([call("h-1", "0611000077", "2026-11-03T10:00:00+01:00", 60, "0622000000")]),
    );
    assert_eq!(r.json()["recycled"], 1, "{}", r.body);
    assert_eq!(api.get(&format!("{US}/usage/h-1")).json()["status"], "recycled");
    line(&api, &customer, "+33611000077", json!({}));
    let again = api.post(&format!("{US}/usageRecycle"), json!({}));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["accepted"], 1, "{}", again.body);
    assert_eq!(api.get(&format!("{US}/usage/h-1")).json()["status"], "rated");
    assert!(!api.get(&format!("{US}/usage?status=recycled")).body.contains("h-1"));
    // A rejected record is corrected with PATCH and rated at once.
    let bad =
        api.post(&format!("{US}/usage"), call("h-2", "0611000077", "2026-11-03T10:00:00+01:00", -1, "0622000000"));
    assert_eq!(bad.status, 422);
    let fixed = api.patch(&format!("{US}/usage/h-2"), json!({"duration": 61}));
    assert_eq!(fixed.status, 200, "{}", fixed.body);
    assert_eq!(fixed.json()["status"], "rated");
    let rated_again = api.patch(&format!("{US}/usage/h-2"), json!({"duration": 62}));
    assert_eq!(rated_again.status, 409, "{}", rated_again.body);
}

#[test]
fn concurrent_batches_never_overdraw_a_prepaid_balance() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let l = line(&api, &customer, "+33611000100", json!({"accountType": "prepaid"}));
    let top = api.post(
        &format!("{PB}/topupBalance"),
        json!({"billingAccount": {"id": l.account}, "amount": {"unit": "EUR", "value": 5}}),
    );
    assert_eq!(top.status, 201, "{}", top.body);
    // International calls to the US are outside the allowance: 0.45 €/min + 20% VAT = 0.54 € each
    // (one minute). 8 threads × 5 calls = 40 calls = 21.60 €, far above 5 €.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                let recs: Vec<Value> = (0..5)
                    .map(|i| {
                        call(&format!("pp-{t}-{i}"), "0611000100", "2026-11-03T10:00:00+01:00", 60, "+12125550100")
                    })
                    .collect();
                let a = api.post(&format!("{US}/usageBatch"), Value::Array(recs));
                assert_eq!(a.status, 200, "{}", a.body);
                a.json()["accepted"].as_u64().unwrap()
            })
        })
        .collect();
    let accepted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let bal = api.get(&format!("{PB}/accountBalance/{}", l.account)).json();
    let left: f64 =
        bal["balance"]["value"].as_str().map(|s| s.parse().unwrap()).or(bal["balance"]["value"].as_f64()).unwrap();
    // 9 calls fit in 5 € (9 × 0.54 = 4.86); the balance never goes below zero.
    assert_eq!(accepted, 9, "{bal}");
    assert!((left - 0.14).abs() < 1e-9, "{bal}");
}

/// The shard of an account's lease, with the usage component's default of 4 shards.
fn shard_of(account: &str) -> u32 {
    bss_domain::usage::mediation::shard_of(account, 4)
}

#[test]
fn a_batch_rates_the_shards_it_can_while_another_holder_has_one() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let tenant = api.get("/admin/v1/whoami").json()["tenantId"].as_str().unwrap().to_string();
    // Two lines whose accounts are in different shards, `first` in the lower one: a batch that
    // took its shards in order would wait for `first`'s before it got to `second`'s.
    let mut lines: Vec<(String, Line)> = Vec::new();
    let (first, second) = loop {
        let n = 200 + lines.len();
        let l = line(&api, &customer, &format!("+33611000{n}"), json!({}));
        lines.push((format!("0611000{n}"), l));
        let last = lines.len() - 1;
        if let Some(lower) = (0..last).find(|&i| shard_of(&lines[i].1.account) < shard_of(&lines[last].1.account)) {
            break (lower, last);
        }
        if let Some(higher) = (0..last).find(|&i| shard_of(&lines[i].1.account) > shard_of(&lines[last].1.account)) {
            break (last, higher);
        }
        assert!(lines.len() < 40, "no two accounts in different shards");
    };
    // Another holder (a batch on another host, say) has the lease of `first`'s shard for an hour.
    let lease = host.url(&format!("/kvtest/kv/t/{tenant}/usageLease/{}", shard_of(&lines[first].1.account)));
    let hold = |owner: &str, expires_at_ms: i64| {
        let doc = json!({"owner": owner, "expiresAtMs": expires_at_ms}).to_string();
        assert_eq!(send("PUT", &lease, &[], Some(doc.as_bytes())).status, 200);
    };
    hold("another-batch", chrono::Utc::now().timestamp_millis() + 3_600_000);
    let batch = json!([
        call("sh-1", &lines[first].0, "2026-11-03T10:00:00+01:00", 60, "+12125550100"),
        call("sh-2", &lines[second].0, "2026-11-03T10:00:00+01:00", 60, "+12125550100"),
    ]);
    // The batch rates and stores `second`'s record, then waits for the held lease and gives up
    // (after the lease wait limit, 20 s) with a 503 that asks for a retry.
    let busy = api.post(&format!("{US}/usageBatch"), &batch);
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(api.get(&format!("{US}/usage/sh-2")).json()["status"], "rated");
    assert_eq!(api.get(&format!("{US}/usage/sh-1")).status, 404);
    // Released, the same batch sent again rates `first`'s record; `second`'s is a duplicate.
    hold("", 0);
    let again = api.post(&format!("{US}/usageBatch"), &batch);
    assert_eq!(again.status, 200, "{}", again.body);
    let r = again.json();
    assert_eq!((r["accepted"].as_u64(), r["duplicates"].as_u64()), (Some(1), Some(1)), "{r}");
    assert_eq!(api.get(&format!("{US}/usage/sh-1")).json()["status"], "rated");
}

fn decimal(v: &Value) -> f64 {
    v.as_str().map(|s| s.parse().unwrap()).or(v.as_f64()).unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn online_charging_reserves_commits_once_and_releases() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let l = line(&api, &customer, "+33611000200", json!({"accountType": "prepaid"}));
    api.created(
        &format!("{PB}/topupBalance"),
        json!({"billingAccount": {"id": l.account}, "amount": {"unit": "EUR", "value": 2}}),
    );
    // 300 s to the US (0.45 €/min + 20%): the 2 € cover 222 of the 300 s requested.
    let req = json!({"id": "sess-1", "subscriber": "0611000200", "service": "voice", "requestedUnits": 300,
                     "calledNumber": "+12125550100", "validitySecs": 60});
    let g = api.created(&format!("{US}/reservation"), &req);
    let granted = g["grantedUnits"].as_u64().unwrap();
    assert!(granted > 0 && granted < 300, "{g}");
    assert!(decimal(&g["amount"]["value"]) <= 2.0, "{g}");
    let bal = api.get(&format!("{PB}/accountBalance/{}", l.account)).json();
    assert!(decimal(&bal["available"]["value"]) < 0.01 + 2.0 - decimal(&g["amount"]["value"]) + 1e-9, "{bal}");
    // The same reservation asked again: the same grant, no second hold.
    assert_eq!(api.post(&format!("{US}/reservation"), &req).json()["grantedUnits"], granted);
    // More than granted: refused.
    let over = api.post(&format!("{US}/reservation/sess-1/commit"), json!({"usedUnits": granted + 1}));
    assert_eq!(over.status, 422, "{}", over.body);
    // 100 s used: 60 + 40 s = 100/60 min × 0.45 = 0.75 net, 0.90 with tax; the rest released.
    let c = api.post(&format!("{US}/reservation/sess-1/commit"), json!({"usedUnits": 100}));
    assert_eq!(c.status, 200, "{}", c.body);
    let c = c.json();
    assert_eq!(c["usage"]["id"], "sess-1");
    assert_eq!(amount(&c["usage"], "taxIncludedRatingAmount"), "0.90");
    let bal = api.get(&format!("{PB}/accountBalance/{}", l.account)).json();
    assert_eq!(decimal(&bal["balance"]["value"]), 1.10, "{bal}");
    assert_eq!(decimal(&bal["available"]["value"]), 1.10, "{bal}");
    // A repeated commit (the network's retry) charges nothing more.
    assert_eq!(api.post(&format!("{US}/reservation/sess-1/commit"), json!({"usedUnits": 100})).status, 200);
    assert_eq!(decimal(&api.get(&format!("{PB}/accountBalance/{}", l.account)).json()["balance"]["value"]), 1.10);
    // A second session released unused gives everything back.
    let g2 = api.created(
        &format!("{US}/reservation"),
        json!({"subscriber": "0611000200", "service": "sms",
        "requestedUnits": 2, "calledNumber": "+12125550100"}),
    );
    let id2 = g2["id"].as_str().unwrap();
    assert!(decimal(&api.get(&format!("{PB}/accountBalance/{}", l.account)).json()["available"]["value"]) < 1.10);
    let r = api.post(&format!("{US}/reservation/{id2}/release"), json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(decimal(&api.get(&format!("{PB}/accountBalance/{}", l.account)).json()["available"]["value"]), 1.10);
    // A postpaid account cannot reserve; an unknown reservation is 404; a top-up in another
    // currency is refused.
    line(&api, &customer, "+33611000201", json!({}));
    let post = api.post(
        &format!("{US}/reservation"),
        json!({"subscriber": "0611000201", "service": "voice", "requestedUnits": 60, "calledNumber": "0622000000"}),
    );
    assert_eq!(post.status, 422, "{}", post.body);
    assert_eq!(api.post(&format!("{US}/reservation/nope/commit"), json!({"usedUnits": 1})).status, 404);
    let usd = api.post(
        &format!("{PB}/topupBalance"),
        json!({"billingAccount": {"id": l.account}, "amount": {"unit": "USD", "value": 2}}),
    );
    assert_eq!(usd.status, 422, "{}", usd.body);
}

#[test]
fn credit_limit_thresholds_are_reported_once_each() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let l = line(&api, &customer, "+33611000300", json!({"creditLimit": {"unit": "EUR", "value": 1}}));
    let before = published_by(&host, "usage");
    // 0.54 € a call: 54 %, then 108 % (80 and 100 crossed at once), then nothing new.
    for i in 0..3 {
        let a = api.post(
            &format!("{US}/usage"),
            call(&format!("cl-{i}"), "0611000300", "2026-11-03T10:00:00+01:00", 60, "+12125550100"),
        );
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let bal = api.get(&format!("{PB}/accountBalance/{}", l.account)).json();
    assert_eq!(bal["credit"]["thresholdsNotified"], json!([80, 100]), "{bal}");
    assert_eq!(decimal(&bal["credit"]["spent"]["value"]), 1.62, "{bal}");
    assert_eq!(published_by(&host, "usage") - before, 2, "one event per threshold");
}

#[test]
fn rerating_after_a_tariff_correction_produces_the_exact_correction() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let l = line(&api, &customer, "+33611000400", json!({}));
    for (i, secs) in [(0, 60), (1, 90)] {
        let a = api.post(
            &format!("{US}/usage"),
            call(&format!("rr-{i}"), "0611000400", "2026-11-03T10:00:00+01:00", secs, "+12125550100"),
        );
        assert_eq!(a.status, 201, "{}", a.body);
    }
    // Before: 0.45 €/min → 0.45 and 0.675 → 0.68 net. The tariff's international rate is
    // corrected to 0.50 €/min: 0.50 and 0.75 net, so +0.05 and +0.07 = +0.12 net. Tax is rounded
    // per record (0.675 → 0.68 net, 0.136 → 0.14 tax): +0.06 (0.60 − 0.54) and +0.08 (0.90 − 0.82)
    // = +0.14 tax-included.
    api.set_international_rate(0.5);
    let run = api.post(&format!("{US}/rerateRun"), json!({"product": {"id": l.product}, "period": "2026-11-01"}));
    assert_eq!(run.status, 201, "{}", run.body);
    let run = run.json();
    assert_eq!((run["records"].as_u64(), run["changed"].as_u64()), (Some(2), Some(2)), "{run}");
    assert_eq!(decimal(&run["difference"]["taxExcluded"]["value"]), 0.12, "{run}");
    assert_eq!(decimal(&run["difference"]["taxIncluded"]["value"]), 0.14, "{run}");
    let u = api.get(&format!("{US}/usage/rr-1")).json();
    assert_eq!(u["status"], "rerated");
    assert_eq!(amount(&u, "taxExcludedRatingAmount"), "0.75");
    assert_eq!(u["previousRating"]["taxExcludedRatingAmount"]["value"], "0.68");
    assert_eq!(api.get(&format!("{US}/rerateRun/{}", run["id"].as_str().unwrap())).status, 200);
    // A second run finds nothing to correct.
    let again =
        api.post(&format!("{US}/rerateRun"), json!({"product": {"id": l.product}, "period": "2026-11-01"})).json();
    assert_eq!(again["changed"], 0, "{again}");
    let bad = api.post(&format!("{US}/rerateRun"), json!({"product": {"id": l.product}, "period": "November"}));
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[test]
fn interconnect_records_are_rated_on_the_partners_tariff_in_its_currency() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, _customer) = setup(&host);
    let org = api.create("/tmf-api/party/v4/organization", json!({"name": "Carrier DE", "tradingName": "Carrier DE"}));
    let settlement = api.create(
        "/tmf-api/accountManagement/v4/settlementAccount",
        json!({"name": "Carrier DE settlement", "currency": "USD", "settlementPeriod": "month",
               "relatedParty": [{"id": org, "role": "partner", "@referredType": "Organization"}]}),
    );
    let partner = api.create(
        "/tmf-api/partyRoleManagement/v4/partyRole",
        json!({"role": "interconnectCarrier", "name": "Carrier DE", "engagedParty": {"id": org, "@referredType": "Organization"},
               "account": [{"id": settlement, "@referredType": "SettlementAccount"}],
               "revenueShare": {"basis": "wholesale", "percentage": 10, "settlementPeriod": "month", "currency": "USD"},
               "tariff": {"id": "tariff-interconnect"}}),
    );
    // 120 s terminating on a German mobile: 2 min × 0.012 USD = 0.024 → 0.02 USD, untaxed.
    let rec = json!({"recordId": "ic-1", "subscriber": "+4915112345678", "service": "voice",
                     "startTime": "2026-11-03T10:00:00Z", "duration": 120, "calledNumber": "+33611000001",
                     "direction": "incoming", "carrier": partner});
    let mut rec = rec;
    rec["calledNumber"] = json!("+4915112345678");
    rec["subscriber"] = json!("+33611000001");
    let a = api.post(&format!("{US}/usage"), &rec);
    assert_eq!(a.status, 201, "{}", a.body);
    let u = a.json();
    assert_eq!(u["ratedProductUsage"][0]["taxExcludedRatingAmount"]["unit"], "USD", "{u}");
    assert_eq!(amount(&u, "taxExcludedRatingAmount"), "0.02", "{u}");
    assert_eq!(amount(&u, "taxIncludedRatingAmount"), "0.02", "{u}");
    assert_eq!(u["ratedProductUsage"][0]["usageRatingTag"], "wholesale");
    assert_eq!(u["relatedParty"][0]["id"], partner.as_str());
    assert_eq!(u["billingAccount"]["id"], settlement.as_str());
    // An unknown carrier is held, naming it.
    let mut unknown = rec.clone();
    unknown["recordId"] = json!("ic-2");
    unknown["carrier"] = json!("nobody");
    let h = api.post(&format!("{US}/usage"), &unknown);
    assert_eq!(h.status, 422, "{}", h.body);
    assert!(h.body.contains("nobody"), "{}", h.body);
}

#[test]
fn exactly_once_survives_a_kill_9_restart() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_in(dir.path(), HostOptions::default());
    let (api, customer) = setup(&host);
    line(&api, &customer, "+33611000500", json!({}));
    let batch: Vec<Value> = (0..200)
        .map(|i| call(&format!("k-{i}"), "0611000500", "2026-11-03T10:00:00+01:00", 60, "0622000000"))
        .collect();
    let first = api.post(&format!("{US}/usageBatch"), Value::Array(batch.clone())).json();
    assert_eq!(first["accepted"], 200, "{first}");
    host.kill9();
    let host = Host::start_in(dir.path(), HostOptions::default());
    let api = api.on(&host);
    let again = api.post(&format!("{US}/usageBatch"), Value::Array(batch)).json();
    assert_eq!((again["accepted"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(200)), "{again}");
    // The allowance counted 200 minutes once: the next call sees 300 left before it.
    let next =
        api.post(&format!("{US}/usage"), call("k-next", "0611000500", "2026-11-03T11:00:00+01:00", 60, "0622000000"));
    let steps = next.json()["rating"]["steps"].clone();
    let allowance = steps.as_array().unwrap().iter().find(|s| s["step"] == "allowance").unwrap().clone();
    assert_eq!(allowance["remainingBaseUnits"], (500 - 201) * 60, "{steps}");
}

#[test]
fn an_offering_sharing_allowances_pools_them_across_the_account_hierarchy() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let top = line(&api, &customer, "+33611000600", json!({}));
    let child =
        |msisdn: &str| line(&api, &customer, msisdn, json!({"parentAccount": {"id": top.account}, "billRollUp": true}));
    let (a, b) = (child("+33611000601"), child("+33611000602"));
    let used = |rec: Value| -> u64 {
        let r = api.post(&format!("{US}/usage"), &rec);
        assert_eq!(r.status, 201, "{}", r.body);
        let steps = r.json()["rating"]["steps"].clone();
        let step = steps.as_array().unwrap().iter().find(|s| s["step"] == "allowance").cloned();
        step.unwrap_or_else(|| panic!("no allowance step: {steps}"))["remainingBaseUnits"].as_u64().unwrap()
    };
    // Without sharing (October) each product has its own 500 minutes.
    assert_eq!(used(call("sh-1", "0611000601", "2026-10-03T10:00:00+01:00", 90, "0622000000")), 500 * 60 - 90);
    assert_eq!(used(call("sh-2", "0611000602", "2026-10-03T10:05:00+01:00", 30, "0622000000")), 500 * 60 - 60);
    // The offering starts sharing: November's usage of both children (and the top) draws on one pool.
    let p = api.patch(
        "/tmf-api/productCatalogManagement/v4/productOffering/mobile-m",
        json!({"allowanceSharing": "accountHierarchy"}),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let bad = api
        .patch("/tmf-api/productCatalogManagement/v4/productOffering/mobile-m", json!({"allowanceSharing": "family"}));
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(used(call("sh-3", "0611000601", "2026-11-03T10:00:00+01:00", 90, "0622000000")), 500 * 60 - 90);
    assert_eq!(used(call("sh-4", "0611000602", "2026-11-03T10:05:00+01:00", 30, "0622000000")), 500 * 60 - 90 - 60);
    assert_eq!(
        used(call("sh-5", "0611000600", "2026-11-03T10:10:00+01:00", 60, "0622000000")),
        500 * 60 - 90 - 60 - 60
    );
    // Rerating one product of a pool is refused, naming why.
    let r = api.post(&format!("{US}/rerateRun"), json!({"product": {"id": a.product}, "period": "2026-11-01"}));
    assert_eq!(r.status, 409, "{}", r.body);
    let _ = b;
}
