//! End-to-end tests of billing (TMF678) over real HTTP against the real `bss-host` with the real
//! order, usage, billing and billing-worker components and the sample catalog: a month billed
//! line by line against amounts computed by hand (prorated plan, one-time fee, rated usage with
//! its tax), presented as HTML and PDF; a bill run that finds the bill already made bills nothing
//! twice; a bill run killed with `kill -9` midway, restarted and rerun: one bill per account,
//! numbers gap-free, totals equal to the rated usage; an enterprise hierarchy whose children roll
//! up into one consolidated bill with a per-child breakdown; a realistic closed month for a small
//! operator (a consumer with a mid-month upgrade, a termination and roaming usage, an enterprise
//! hierarchy, a prepaid account) billed by a run, every line checked against amounts computed by
//! hand. Run with
//! `cargo test -p bss-host --test e2e_billing`.

mod support;

use chrono::{Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;
use support::*;

const CB: &str = "/tmf-api/customerBillManagement/v4";
const US: &str = "/tmf-api/usageManagement/v4";
const PO: &str = "/tmf-api/productOrderingManagement/v4";
const WAIT: Duration = Duration::from_secs(90);

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => Decimal::from_str(s).unwrap(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).unwrap(),
        other => panic!("not a number: {other}"),
    }
}

fn round(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
}

fn setup(host: &Host) -> (Client, String) {
    let api = Client::new_tenant(host, "Lumen Telecom", CB);
    api.import_sample_catalog();
    let party = api.create("/tmf-api/party/v4/individual", json!({"givenName": "Ada", "familyName": "Lovelace"}));
    let customer = api.create(
        "/tmf-api/customerManagement/v4/customer",
        json!({"name": "Ada Lovelace", "engagedParty": {"id": party, "@referredType": "Individual"}}),
    );
    (api, customer)
}

fn account(api: &Client, customer: &str, name: &str) -> String {
    api.create(
        "/tmf-api/accountManagement/v4/billingAccount",
        json!({"name": name, "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR", "billDelivery": "email",
               "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}]}),
    )
}

/// A Mobile M line of `acct`, active since 2026-01-01, for MSISDN `msisdn`: its product id.
fn mobile_m_since_january(api: &Client, customer: &str, acct: &str, msisdn: &str) -> String {
    api.create(
        "/tmf-api/productInventory/v4/product",
        json!({"name": "Mobile M", "status": "active", "productOffering": {"id": "mobile-m"},
               "relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
               "billingAccount": {"id": acct}, "startDate": "2026-01-01T00:00:00Z",
               "productCharacteristic": [{"name": "MSISDN", "value": msisdn}]}),
    )
}

/// The status of bill run `rid` once it is no longer in progress.
fn finished(api: &Client, rid: &str) -> Value {
    eventually(WAIT, &format!("bill run {rid} to finish"), || {
        let s = api.get(&format!("{CB}/billRun/{rid}")).json();
        (s["state"] != "inProgress").then_some(s)
    })
}

/// Today's bill period in Paris (cycle day 1): its start and its number of days; days left
/// from today.
fn current_period() -> (NaiveDate, i64, i64) {
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Paris).date_naive();
    let start = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap();
    let end = start.checked_add_months(chrono::Months::new(1)).unwrap();
    (start, (end - start).num_days(), (end - today).num_days())
}

#[test]
fn a_month_is_billed_line_by_line_and_presented() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let acct = account(&api, &customer, "Ada's mobile");
    // A Mobile M ordered today: 19.99/month from today, SIM activation 10.00 once.
    let order = api.created(
        &format!("{PO}/productOrder"),
        json!({"relatedParty": [{"id": customer, "role": "customer"}], "billingAccount": {"id": acct},
               "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "mobile-m"}}]}),
    );
    let oid = order["id"].as_str().unwrap().to_string();
    eventually(WAIT, "the order to complete", || {
        (api.get(&format!("{PO}/productOrder/{oid}")).json()["state"] == "completed").then_some(())
    });
    // The order is stored completed a moment before the inventory is written: wait for the product
    // and the number the network allocated.
    let (product, msisdn) = eventually(WAIT, "the product with its MSISDN", || {
        let r = api.get(&format!("/tmf-api/productInventory/v4/product/{oid}-1"));
        if r.status != 200 {
            return None;
        }
        let product = r.json();
        let msisdn = product["productCharacteristic"].as_array()?.iter().find(|c| c["name"] == "MSISDN")?["value"]
            .as_str()?
            .to_string();
        Some((product, msisdn))
    });
    // Usage now: 90 s to the US (outside allowances: 1.5 min × 0.45 = 0.675 → 0.68 net, 0.14 VAT)
    // and an SMS at home (inside the allowance: 0).
    // Usage just after the product started (a record before it would have no product).
    let started: chrono::DateTime<Utc> = product["startDate"].as_str().unwrap().parse().unwrap();
    let now = (started + chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let usage = json!([
        {"recordId": "m-1", "subscriber": msisdn, "service": "voice", "startTime": now, "duration": 90, "calledNumber": "+12125550100"},
        {"recordId": "m-2", "subscriber": msisdn, "service": "sms", "startTime": now, "calledNumber": "0622000000"},
    ]);
    let r = api.post(&format!("{US}/usageBatch"), &usage).json();
    assert_eq!(r["accepted"], 2, "{r}");
    // The bill of the current period, now (as on a termination).
    let bill = api.created(&format!("{CB}/customerBillOnDemand"), json!({"billingAccount": {"id": acct}}));
    let id = bill["id"].as_str().unwrap().to_string();
    let (start, days, left) = current_period();
    assert_eq!(id, format!("bill:{acct}:{start}"));
    assert_eq!(bill["state"], "validated", "{bill}");
    assert_eq!(bill["billNo"], format!("INV-{}-000001", start.year()));
    let lines = api.get(&format!("{CB}/appliedCustomerBillingRate?bill.id={id}")).json();
    let lines = lines.as_array().unwrap();
    let by_type = |t: &str| lines.iter().filter(|l| l["type"] == t).cloned().collect::<Vec<_>>();
    // Recurring: 19.99 × days-left / days, rounded once; VAT 20% on the rounded net.
    let recurring = by_type("recurring");
    assert_eq!(recurring.len(), 1, "{lines:?}");
    let net = round(Decimal::from_str("19.99").unwrap() * Decimal::from(left) / Decimal::from(days));
    assert_eq!(dec(&recurring[0]["taxExcludedAmount"]["value"]), net, "{}", recurring[0]);
    let vat = |n: Decimal| round(n * Decimal::from(20) / Decimal::from(100));
    assert_eq!(dec(&recurring[0]["taxIncludedAmount"]["value"]), net + vat(net));
    let one_time = by_type("oneTime");
    assert_eq!(one_time.len(), 1, "{lines:?}");
    assert_eq!(dec(&one_time[0]["taxIncludedAmount"]["value"]), Decimal::from(12));
    let usage_lines = by_type("usage");
    let voice = usage_lines.iter().find(|l| l["usage"]["service"] == "voice").unwrap();
    assert_eq!(dec(&voice["taxExcludedAmount"]["value"]), Decimal::from_str("0.68").unwrap());
    assert_eq!(dec(&voice["taxIncludedAmount"]["value"]), Decimal::from_str("0.82").unwrap());
    let sms = usage_lines.iter().find(|l| l["usage"]["service"] == "sms").unwrap();
    assert_eq!(dec(&sms["taxIncludedAmount"]["value"]), Decimal::ZERO);
    assert_eq!(sms["usage"]["allowanceBaseUnits"], 1);
    // The bill adds up: total = Σ lines; nothing owed before, so amount due = total.
    let total: Decimal = lines.iter().map(|l| dec(&l["taxIncludedAmount"]["value"])).sum();
    let expected = net + vat(net) + Decimal::from(12) + Decimal::from_str("0.82").unwrap();
    assert_eq!(total, expected);
    assert_eq!(dec(&bill["taxIncludedAmount"]["value"]), expected);
    assert_eq!(dec(&bill["amountDue"]["value"]), expected);
    // Presentment.
    let html = send(
        "GET",
        &api.url(&format!("{CB}/customerBill/{id}/document")),
        &[("Authorization", api.auth.as_str())],
        None,
    );
    assert_eq!(html.status, 200, "{}", html.body);
    for needle in ["Lumen Telecom", "Ada&#x27;s mobile", &format!("INV-{}-000001", start.year()), "voice"] {
        assert!(
            html.body.contains(needle) || html.body.contains(&needle.replace("&#x27;", "&#39;")),
            "{needle} missing"
        );
    }
    let pdf = send(
        "GET",
        &api.url(&format!("{CB}/customerBill/{id}/document?format=pdf")),
        &[("Authorization", api.auth.as_str())],
        None,
    );
    assert_eq!(pdf.status, 200);
    assert!(pdf.body.starts_with("%PDF"), "not a PDF");
    // An issued bill is immutable; a bill run for the same period finds it and bills nothing twice.
    let edit = api.patch(&format!("{CB}/customerBill/{id}"), json!({"amountDue": {"unit": "EUR", "value": 0}}));
    assert_eq!(edit.status, 409, "{}", edit.body);
    let run = api.created(&format!("{CB}/billRun"), json!({"accounts": [acct], "periodStart": start}));
    let rid = run["id"].as_str().unwrap().to_string();
    let status = finished(&api, &rid);
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["accountsDone"], 1);
    let bills = api.get(&format!("{CB}/customerBill?billingAccount.id={acct}")).json();
    assert_eq!(bills.as_array().unwrap().len(), 1, "{bills}");
    assert_eq!(api.get(&format!("{CB}/customerBill/{}", id)).json()["billNo"], format!("INV-{}-000001", start.year()));
    // A run naming an account that does not exist, and the billed one twice: the billed one is
    // counted once, the unknown one fails with its reason; a retry bills it again, and it is
    // counted once more as failed (taken off the failures first).
    let run = api
        .created(&format!("{CB}/billRun"), json!({"accounts": [acct, "no-such-account", acct], "periodStart": start}));
    let rid = run["id"].as_str().unwrap().to_string();
    let counts = |s: &Value| {
        (s["accountsTotal"].clone(), s["accountsDone"].clone(), s["accountsFailed"].clone(), s["state"].clone())
    };
    let status = finished(&api, &rid);
    assert_eq!(counts(&status), (json!(2), json!(1), json!(1), json!("completedWithErrors")), "{status}");
    assert_eq!(status["failure"][0]["billingAccount"]["id"], "no-such-account", "{status}");
    assert!(status["failure"][0]["reason"].as_str().unwrap().contains("does not exist"), "{status}");
    let retried = api.post(&format!("{CB}/billRun/{rid}/retry"), json!({})).json();
    assert_eq!(retried["retried"], 1, "{retried}");
    let status = eventually(WAIT, "the retried account to fail again", || {
        let s = api.get(&format!("{CB}/billRun/{rid}")).json();
        (s["state"] != "inProgress" && s["failure"].as_array().is_some_and(|f| f.len() == 1)).then_some(s)
    });
    assert_eq!(counts(&status), (json!(2), json!(1), json!(1), json!("completedWithErrors")), "{status}");
    // The operator's command: starts a run and shows its progress bar to the end.
    let err = run_command(&host, &api, "bill-run", &["--period-start", &start.to_string()]);
    assert!(err.contains(&format!("[{}] 1/1 accounts, 0 failed", "#".repeat(40))), "{err}");
    assert!(err.trim_end().ends_with("completed"), "{err}");
    assert_eq!(api.get(&format!("{CB}/customerBill")).json().as_array().unwrap().len(), 1);
}

#[test]
fn a_bill_run_killed_midway_and_rerun_bills_each_account_once_with_gap_free_numbers() {
    const ACCOUNTS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_in(dir.path(), HostOptions::default());
    let (api, customer) = setup(&host);
    let (start, _, _) = current_period();
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut expected: Vec<(String, Decimal)> = Vec::new();
    for i in 0..ACCOUNTS {
        let acct = account(&api, &customer, &format!("Line {i}"));
        let msisdn = format!("+336120{i:05}");
        mobile_m_since_january(&api, &customer, &acct, &msisdn);
        // i + 1 calls of 60 s to the US: 0.45 + 0.09 VAT each.
        let calls: Vec<Value> = (0..=i)
            .map(|n| {
                json!({"recordId": format!("k-{i}-{n}"), "subscriber": msisdn, "service": "voice",
                            "startTime": now, "duration": 60, "calledNumber": "+12125550100"})
            })
            .collect();
        let r = api.post(&format!("{US}/usageBatch"), Value::Array(calls)).json();
        assert_eq!(r["accepted"], i + 1, "{r}");
        expected.push((acct, Decimal::from_str("0.54").unwrap() * Decimal::from(i + 1)));
    }
    let run = api.created(&format!("{CB}/billRun"), json!({"periodStart": start}));
    let rid = run["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    host.kill9();
    let host = Host::start_in(dir.path(), HostOptions::default());
    let api = api.on(&host);
    let done = |rid: &str| finished(&api, rid);
    let status = done(&rid);
    assert_eq!(status["accountsDone"], ACCOUNTS, "{status}");
    // A rerun by mistake: every bill exists already.
    let again = api.created(&format!("{CB}/billRun"), json!({"periodStart": start}));
    let status = done(again["id"].as_str().unwrap());
    assert_eq!(status["accountsDone"], ACCOUNTS, "{status}");
    let bills = api.get(&format!("{CB}/customerBill?limit=1000")).json();
    let bills = bills.as_array().unwrap();
    assert_eq!(bills.len(), ACCOUNTS, "one bill per account");
    let mut numbers: Vec<u64> =
        bills.iter().map(|b| b["billNo"].as_str().unwrap().rsplit('-').next().unwrap().parse().unwrap()).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=ACCOUNTS as u64).collect::<Vec<_>>(), "gap-free, each once");
    for (acct, total) in expected {
        let bill = bills.iter().find(|b| b["billingAccount"]["id"] == acct.as_str()).unwrap();
        assert_eq!(dec(&bill["taxIncludedAmount"]["value"]), total, "{bill}");
        let lines = bill["bill"]["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 1, "one usage line, no duplicate: {bill}");
    }
}

#[test]
fn an_enterprise_hierarchy_rolls_up_into_one_consolidated_bill() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let top = account(&api, &customer, "Acme HQ");
    let child = |name: &str| {
        api.create(
            "/tmf-api/accountManagement/v4/billingAccount",
            json!({"name": name, "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR", "billDelivery": "email",
                   "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}],
                   "parentAccount": {"id": top}, "billRollUp": true}),
        )
    };
    let (sales, ops) = (child("Acme Sales"), child("Acme Ops"));
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // One line each; calls to the US: 0.54 € a minute with VAT. HQ 1 min, Sales 2, Ops 3.
    for (i, acct) in [&top, &sales, &ops].into_iter().enumerate() {
        let msisdn = format!("+3361300000{i}");
        mobile_m_since_january(&api, &customer, acct, &msisdn);
        let r = api.post(
            &format!("{US}/usage"),
            json!({"recordId": format!("h-{i}"), "subscriber": msisdn, "service": "voice",
            "startTime": now, "duration": 60 * (i + 1), "calledNumber": "+12125550100"}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // A child is not billed on its own.
    let own = api.post(&format!("{CB}/customerBillOnDemand"), json!({"billingAccount": {"id": sales}}));
    assert_eq!(own.status, 409, "{}", own.body);
    let (start, _, _) = current_period();
    let run = api.created(&format!("{CB}/billRun"), json!({"accounts": [top, sales, ops], "periodStart": start}));
    let rid = run["id"].as_str().unwrap().to_string();
    let status = finished(&api, &rid);
    assert_eq!((status["accountsDone"].as_u64(), status["accountsSkipped"].as_u64()), (Some(1), Some(2)), "{status}");
    let bills = api.get(&format!("{CB}/customerBill")).json();
    assert_eq!(bills.as_array().unwrap().len(), 1, "one consolidated bill: {bills}");
    let bill = &bills[0];
    assert_eq!(bill["billingAccount"]["id"], top.as_str());
    assert_eq!(dec(&bill["taxIncludedAmount"]["value"]), Decimal::from_str("3.24").unwrap(), "{bill}");
    let parts = bill["rollUp"].as_array().unwrap();
    let part =
        |a: &str| parts.iter().find(|p| p["billingAccount"]["id"] == a).map(|p| dec(&p["taxIncludedAmount"]["value"]));
    assert_eq!(part(&top), Some(Decimal::from_str("0.54").unwrap()));
    assert_eq!(part(&sales), Some(Decimal::from_str("1.08").unwrap()));
    assert_eq!(part(&ops), Some(Decimal::from_str("1.62").unwrap()));
    let html = send(
        "GET",
        &api.url(&format!("{CB}/customerBill/{}/document", bill["id"].as_str().unwrap())),
        &[("Authorization", api.auth.as_str())],
        None,
    );
    assert!(html.body.contains(&format!("Account {sales}")), "a section per rolled-up account");
}

/// A product created for a migration, with its monthly fee (and a one-time fee) like an order's.
fn migrated(
    api: &Client,
    customer: &str,
    acct: &str,
    offering: &str,
    msisdn: &str,
    prices: &[(&str, &str, &str)],
    (start, end): (NaiveDate, Option<NaiveDate>),
) -> String {
    let lines: Vec<Value> = prices
        .iter()
        .map(|(kind, name, value)| {
            let mut l =
                json!({"priceType": kind, "name": name, "price": {"dutyFreeAmount": {"unit": "EUR", "value": value}}});
            if *kind == "recurring" {
                l["recurringChargePeriod"] = json!("month");
            }
            l
        })
        .collect();
    let at = |d: NaiveDate| format!("{d}T00:00:00+01:00");
    let mut body = json!({"name": offering, "status": "active", "productOffering": {"id": offering},
        "relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
        "billingAccount": {"id": acct}, "startDate": at(start), "productPrice": lines,
        "productCharacteristic": [{"name": "MSISDN", "value": msisdn}]});
    if let Some(e) = end {
        body["terminationDate"] = json!(at(e));
        body["status"] = json!("terminated");
    }
    api.create("/tmf-api/productInventory/v4/product", body)
}

fn money(v: &str) -> Decimal {
    Decimal::from_str(v).unwrap()
}

#[test]
fn a_realistic_month_for_a_small_operator_is_billed_line_by_line() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    // Last month, closed: the run bills it. D days; the upgrade on day 16, the termination on day 21.
    let (this_start, _, _) = current_period();
    let start = this_start.checked_sub_months(chrono::Months::new(1)).unwrap();
    let days = (this_start - start).num_days();
    let day = |n: i64| start + chrono::Duration::days(n - 1);
    let d = Decimal::from(days);
    let vat = |n: Decimal| round(n * Decimal::from(20) / Decimal::from(100));
    let gross = |n: Decimal| n + vat(n);

    // Consumer: Mobile M until the upgrade to Mobile L (same number), fibre terminated on day 21.
    let ada = account(&api, &customer, "Ada");
    let m = migrated(
        &api,
        &customer,
        &ada,
        "mobile-m",
        "+33614000001",
        &[("recurring", "Mobile M monthly fee", "19.99")],
        (start - chrono::Duration::days(15), Some(day(16))),
    );
    let l = migrated(
        &api,
        &customer,
        &ada,
        "mobile-l",
        "+33614000001",
        &[("recurring", "Mobile L monthly fee", "29.99"), ("oneTime", "SIM activation", "10")],
        (day(16), None),
    );
    let f = migrated(
        &api,
        &customer,
        &ada,
        "fibre-1g",
        "+33114000001",
        &[("recurring", "Fibre monthly fee", "39.99")],
        (start - chrono::Duration::days(40), Some(day(21))),
    );
    // Usage: 60 s roaming in World zone 1 on day 5 (1.50 €/min), 60 s to the US on day 20 on
    // Mobile L (0.30 €/min); both with 20% VAT as rated.
    let t = |n: i64, h: u32| format!("{}T{h:02}:00:00+01:00", day(n));
    for rec in [
        json!({"recordId": "r-roam", "subscriber": "0614000001", "service": "voice", "startTime": t(5, 10), "duration": 60,
               "calledNumber": "+33622000000", "visitedNetwork": "310260"}),
        json!({"recordId": "r-intl", "subscriber": "0614000001", "service": "voice", "startTime": t(20, 10), "duration": 60,
               "calledNumber": "+12125550100"}),
    ] {
        let a = api.post(&format!("{US}/usage"), &rec);
        assert_eq!(a.status, 201, "{}", a.body);
    }
    // Enterprise: HQ and Sales (rolling up), a Mobile M each for the whole month.
    let hq = account(&api, &customer, "Acme HQ");
    let sales = api.create(
        "/tmf-api/accountManagement/v4/billingAccount",
        json!({"name": "Acme Sales", "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR", "billDelivery": "email",
               "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}],
               "parentAccount": {"id": hq}, "billRollUp": true}),
    );
    migrated(
        &api,
        &customer,
        &hq,
        "mobile-m",
        "+33614000002",
        &[("recurring", "Mobile M monthly fee", "19.99")],
        (start - chrono::Duration::days(60), None),
    );
    migrated(
        &api,
        &customer,
        &sales,
        "mobile-m",
        "+33614000003",
        &[("recurring", "Mobile M monthly fee", "19.99")],
        (start - chrono::Duration::days(60), None),
    );
    // Prepaid: a Mobile M all month; its call is paid from the balance, never billed.
    let pre = api.create(
        "/tmf-api/accountManagement/v4/billingAccount",
        json!({"name": "Pre", "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR", "billDelivery": "email",
               "accountType": "prepaid", "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}]}),
    );
    migrated(
        &api,
        &customer,
        &pre,
        "mobile-m",
        "+33614000004",
        &[("recurring", "Mobile M monthly fee", "19.99")],
        (start - chrono::Duration::days(60), None),
    );
    api.created(
        "/tmf-api/prepayBalanceManagement/v4/topupBalance",
        json!({"billingAccount": {"id": pre}, "amount": {"unit": "EUR", "value": 5}}),
    );
    let a = api.post(
        &format!("{US}/usage"),
        json!({"recordId": "r-pre", "subscriber": "0614000004", "service": "voice",
        "startTime": t(10, 10), "duration": 60, "calledNumber": "+12125550100"}),
    );
    assert_eq!(a.status, 201, "{}", a.body);

    let run = api.created(&format!("{CB}/billRun"), json!({"periodStart": start}));
    let rid = run["id"].as_str().unwrap().to_string();
    let status = finished(&api, &rid);
    assert_eq!(status["state"], "completed", "{status}");
    let bill_of = |acct: &str| api.get(&format!("{CB}/customerBill/bill:{acct}:{start}")).json();
    let line = |bill: &Value, id: &str| -> (Decimal, Decimal) {
        let l = bill["bill"]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("no line {id}: {bill}"));
        (dec(&l["net"]["amount"]), dec(&l["gross"]["amount"]))
    };

    // Ada, by hand: Mobile M 15 days, Mobile L D−15 days, SIM 10, fibre 20 days, usage.
    let ada_bill = bill_of(&ada);
    let m_net = round(money("19.99") * Decimal::from(15) / d);
    let l_net = round(money("29.99") * Decimal::from(days - 15) / d);
    let f_net = round(money("39.99") * Decimal::from(20) / d);
    assert_eq!(line(&ada_bill, &format!("charge:{m}.1:{start}")), (m_net, gross(m_net)));
    assert_eq!(line(&ada_bill, &format!("charge:{l}.1:{start}")), (l_net, gross(l_net)));
    assert_eq!(line(&ada_bill, &format!("oneTime:{l}.2")), (money("10"), money("12")));
    assert_eq!(line(&ada_bill, &format!("charge:{f}.1:{start}")), (f_net, gross(f_net)));
    assert_eq!(line(&ada_bill, &format!("usage:{m}:voice:{start}")), (money("1.50"), money("1.80")));
    assert_eq!(line(&ada_bill, &format!("usage:{l}:voice:{start}")), (money("0.30"), money("0.36")));
    let ada_total = gross(m_net) + gross(l_net) + money("12") + gross(f_net) + money("1.80") + money("0.36");
    assert_eq!(ada_bill["bill"]["lines"].as_array().unwrap().len(), 6, "{ada_bill}");
    assert_eq!(dec(&ada_bill["taxIncludedAmount"]["value"]), ada_total);
    assert_eq!(dec(&ada_bill["amountDue"]["value"]), ada_total);
    // Acme: one consolidated bill, two full months of Mobile M, a breakdown per account.
    let acme = bill_of(&hq);
    assert_eq!(dec(&acme["taxIncludedAmount"]["value"]), gross(money("19.99")) * Decimal::from(2), "{acme}");
    assert_eq!(acme["rollUp"].as_array().unwrap().len(), 2);
    assert_eq!(api.get(&format!("{CB}/customerBill/bill:{sales}:{start}")).status, 404);
    // Prepaid: the fee only; the call was debited from the balance (5 − 0.54).
    let pre_bill = bill_of(&pre);
    assert_eq!(pre_bill["bill"]["lines"].as_array().unwrap().len(), 1, "{pre_bill}");
    assert_eq!(dec(&pre_bill["taxIncludedAmount"]["value"]), gross(money("19.99")));
    let bal = api.get(&format!("/tmf-api/prepayBalanceManagement/v4/accountBalance/{pre}")).json();
    assert_eq!(dec(&bal["balance"]["value"]), money("4.46"), "{bal}");
    // Presentment of the consumer's bill; the PDF is kept for a look (target/tmp/e2e-billing/).
    let pdf = ureq::get(&api.url(&format!("{CB}/customerBill/bill:{ada}:{start}/document?format=pdf")))
        .set("Authorization", &api.auth)
        .call()
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut pdf.into_reader(), &mut bytes).unwrap();
    assert!(bytes.starts_with(b"%PDF") && bytes.len() > 1000);
    let out = workspace_root().join("target/tmp/e2e-billing");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("consumer-month.pdf"), &bytes).unwrap();
    // Numbers: three bills, gap-free.
    let mut numbers: Vec<String> =
        [&ada_bill, &acme, &pre_bill].iter().map(|b| b["billNo"].as_str().unwrap().to_string()).collect();
    numbers.sort();
    assert_eq!(
        numbers.iter().map(|n| n.rsplit('-').next().unwrap().to_string()).collect::<Vec<_>>(),
        ["000001", "000002", "000003"]
    );
}

#[test]
fn a_rerated_period_is_billed_once_at_the_new_rate_and_an_already_billed_one_by_a_correction() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let acct = account(&api, &customer, "Rerated line");
    let product = mobile_m_since_january(&api, &customer, &acct, "+33612099001");
    // A call to the US in the previous period (60 s: 0.45 net) and one in this period (90 s:
    // 0.675 → 0.68 net), at 0.45 €/min.
    let (start, _, _) = current_period();
    let previous = start.checked_sub_months(chrono::Months::new(1)).unwrap();
    let at = |d: NaiveDate, hms: &str| {
        let local = d.and_time(chrono::NaiveTime::parse_from_str(hms, "%H:%M:%S").unwrap());
        local.and_local_timezone(chrono_tz::Europe::Paris).unwrap().to_rfc3339()
    };
    let calls = json!([
        {"recordId": "rb-1", "subscriber": "+33612099001", "service": "voice", "startTime": at(previous + chrono::Days::new(19), "10:00:00"),
         "duration": 60, "calledNumber": "+12125550100"},
        {"recordId": "rb-2", "subscriber": "+33612099001", "service": "voice", "startTime": at(start, "00:00:01"),
         "duration": 90, "calledNumber": "+12125550100"},
    ]);
    let r = api.post(&format!("{US}/usageBatch"), &calls).json();
    assert_eq!(r["accepted"], 2, "{r}");
    // The previous period is billed by its run.
    let run = api.created(&format!("{CB}/billRun"), json!({"periodStart": previous, "accounts": [acct]}));
    assert_eq!(finished(&api, run["id"].as_str().unwrap())["accountsDone"], 1);
    let voice = |bill: &str| -> Vec<Decimal> {
        let lines = api.get(&format!("{CB}/appliedCustomerBillingRate?bill.id={bill}")).json();
        let lines = lines.as_array().unwrap().clone();
        lines.iter().filter(|l| l["type"] == "usage").map(|l| dec(&l["taxExcludedAmount"]["value"])).collect()
    };
    let d = |s: &str| Decimal::from_str(s).unwrap();
    assert_eq!(voice(&format!("bill:{acct}:{previous}")), [d("0.45")]);
    // The international rate is corrected to 0.50 €/min and both periods are rerated.
    api.set_international_rate(0.5);
    for (period, delta) in [(previous, "0.05"), (start, "0.07")] {
        let r = api.created(&format!("{US}/rerateRun"), json!({"product": {"id": product}, "period": period}));
        assert_eq!(dec(&r["difference"]["taxExcluded"]["value"]), d(delta), "{r}");
    }
    // This period's bill: its own call at the new rate (0.75), once, and the previous period's
    // call corrected (+0.05 net, +0.06 with VAT) — never this period's correction on top.
    let bill = api.created(&format!("{CB}/customerBillOnDemand"), json!({"billingAccount": {"id": acct}}));
    let id = bill["id"].as_str().unwrap();
    assert_eq!(voice(id), [d("0.75")]);
    let lines = api.get(&format!("{CB}/appliedCustomerBillingRate?bill.id={id}")).json();
    let corrections: Vec<&Value> = lines.as_array().unwrap().iter().filter(|l| l["type"] == "correction").collect();
    assert_eq!(corrections.len(), 1, "{lines}");
    assert_eq!(dec(&corrections[0]["taxExcludedAmount"]["value"]), d("0.05"), "{}", corrections[0]);
    assert_eq!(dec(&corrections[0]["taxIncludedAmount"]["value"]), d("0.06"), "{}", corrections[0]);
}

/// Totals started with a period's first record are complete, and a bill reads them without
/// listing the period's index. Totals started when the index already held a record rated before
/// totals were kept (simulated by deleting them) are not: the bill still counts that record.
#[test]
fn usage_rated_before_totals_were_kept_is_billed_with_what_is_rated_after() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (api, customer) = setup(&host);
    let tenant = api.get("/admin/v1/whoami").json()["tenantId"].as_str().unwrap().to_string();
    let acct = account(&api, &customer, "Old usage");
    let product = mobile_m_since_january(&api, &customer, &acct, "+33612099002");
    let (start, _, _) = current_period();
    let previous = start.checked_sub_months(chrono::Months::new(1)).unwrap();
    // Two 60 s calls to the US (0.45 net each) in the previous period, one at a time.
    let call = |id: &str, day: u64| {
        let at = (previous + chrono::Days::new(day)).and_hms_opt(10, 0, 0).unwrap();
        let at = at.and_local_timezone(chrono_tz::Europe::Paris).unwrap().to_rfc3339();
        let r = api.post(
            &format!("{US}/usageBatch"),
            json!([{"recordId": id, "subscriber": "+33612099002",
            "service": "voice", "startTime": at, "duration": 60, "calledNumber": "+12125550100"}]),
        );
        assert_eq!(r.json()["accepted"], 1, "{}", r.body);
    };
    let totals = host.url(&format!("/kvtest/kv/t/{tenant}/usageProduct/{product}/totals/{previous}"));
    // Stored in the compact form of `bss_domain::stored`, read as the billing component reads it.
    let stored_totals = || {
        let (status, body) = get_bytes(&totals);
        assert_eq!(status, 200);
        bss_domain::stored::decode::<bss_domain::usage::UsageTotals>(&body).unwrap()
    };
    call("ob-1", 3);
    assert!(stored_totals().complete, "started with the first record: {:?}", stored_totals());
    // As if `ob-1` was rated before totals were kept.
    assert_eq!(send("DELETE", &totals, &[], None).status, 200);
    call("ob-2", 4);
    let t = stored_totals();
    assert!(!t.complete, "started over a record it does not count: {t:?}");
    assert_eq!(t.services[0].records, 1, "{t:?}");
    let run = api.created(&format!("{CB}/billRun"), json!({"periodStart": previous, "accounts": [acct]}));
    assert_eq!(finished(&api, run["id"].as_str().unwrap())["accountsDone"], 1);
    let lines = api.get(&format!("{CB}/appliedCustomerBillingRate?bill.id=bill:{acct}:{previous}")).json();
    let usage: Vec<Decimal> = lines
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["type"] == "usage")
        .map(|l| dec(&l["taxExcludedAmount"]["value"]))
        .collect();
    assert_eq!(usage, [Decimal::from_str("0.90").unwrap()], "both calls billed: {lines}");
}
