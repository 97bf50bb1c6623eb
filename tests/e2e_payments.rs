//! End-to-end tests of payments, refunds, credit notes and dunning (TMF676, TMF678 extensions)
//! over real HTTP against the real `bss-host` with the real billing, order, order-worker and
//! oss-sim components and the sample catalog: a Mobile M product ordered and fulfilled, a bill
//! on demand, then a partial payment, an over-payment kept as credit, a refund of that credit,
//! a credit note on a line, a payment in another currency refused and a replayed
//! `Idempotency-Key`, with the balance equation checked after each step against amounts worked
//! out here; and dunning of an unpaid bill: a reminder event, a suspension order fulfilled by
//! the simulated OSS, reruns that change nothing, and payment lifting the suspension. Run with
//! `cargo test -p bss-host --test e2e_payments`.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::*;

const BM: &str = "/tmf-api/customerBillManagement/v4";
const PM: &str = "/tmf-api/paymentManagement/v4";
const PO: &str = "/tmf-api/productOrderingManagement/v4";
const PI: &str = "/tmf-api/productInventory/v4";
const WAIT: Duration = Duration::from_secs(45);

/// An amount (`{unit, value}`, the value a number or a decimal string) in cents.
fn cents(m: &Value) -> i64 {
    let text = match &m["value"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not an amount: {m} ({other})"),
    };
    let (negative, text) = match text.strip_prefix('-') {
        Some(t) => (true, t.to_string()),
        None => (false, text),
    };
    let (units, fraction) = text.split_once('.').unwrap_or((&text, ""));
    assert!(fraction.len() <= 2 || fraction[2..].chars().all(|c| c == '0'), "finer than cents: {m}");
    let fraction = format!("{:0<2}", &fraction[..fraction.len().min(2)]);
    let v = units.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap();
    if negative { -v } else { v }
}

/// `{unit: EUR, value}` of an amount in cents.
fn eur(c: i64) -> Value {
    json!({"unit": "EUR", "value": format!("{}.{:02}", c / 100, c % 100)})
}

/// A local date `YYYY-MM-DD` plus `days`, at noon UTC (the same date in Paris), RFC 3339.
fn noon_after(date: &str, days: i64) -> String {
    // Days from the civil date (H. Hinnant's algorithms), so no date library is needed.
    let p: Vec<i64> = date.split('-').map(|s| s.parse().unwrap()).collect();
    let (y, m, d) = (if p[1] <= 2 { p[0] - 1 } else { p[0] }, p[1], p[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let n = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy + days;
    let era = n.div_euclid(146_097);
    let doe = n - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T12:00:00Z")
}

struct Fixture {
    api: Client,
    customer: String,
    account: String,
    product: String,
}

/// A tenant with the sample catalog, a customer, a postpaid EUR account (Paris, cycle day 1)
/// and a Mobile M product ordered and fulfilled (so it has its charges: the monthly fee and the
/// SIM activation).
fn setup(host: &Host) -> Fixture {
    let api = Client::new_tenant(host, "Operator", PM);
    api.import_sample_catalog();
    let party = api.create("/tmf-api/party/v4/individual", json!({"givenName": "Ada", "familyName": "Lovelace"}));
    let customer = api.create(
        "/tmf-api/customerManagement/v4/customer",
        json!({"name": "Ada Lovelace", "engagedParty": {"id": party, "@referredType": "Individual"}}),
    );
    let account = api.create(
        "/tmf-api/accountManagement/v4/billingAccount",
        json!({"name": "Home", "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR", "billDelivery": "email",
               "accountType": "postpaid",
               "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}]}),
    );
    let order = api.create(
        &format!("{PO}/productOrder"),
        json!({"relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
               "billingAccount": {"id": account},
               "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "mobile-m"}}]}),
    );
    wait_order(&api, &order);
    let product = format!("{order}-1");
    wait_product(&api, &product, "active");
    Fixture { api, customer, account, product }
}

fn wait_order(api: &Client, id: &str) -> Value {
    let done = eventually(WAIT, &format!("order {id} to end"), || {
        let doc = api.get(&format!("{PO}/productOrder/{id}")).json();
        matches!(doc["state"].as_str(), Some("completed" | "failed" | "partial")).then_some(doc)
    });
    assert_eq!(done["state"], "completed", "{done:#}");
    done
}

fn wait_product(api: &Client, id: &str, status: &str) -> Value {
    eventually(WAIT, &format!("product {id} to be {status}"), || {
        let a = api.get(&format!("{PI}/product/{id}"));
        (a.status == 200 && a.json()["status"] == status).then(|| a.json())
    })
}

/// The bill of the current period to now, validated (numbered and posted).
fn bill_on_demand(f: &Fixture) -> Value {
    let bill = f.api.created(&format!("{BM}/customerBillOnDemand"), json!({"billingAccount": {"id": f.account}}));
    assert_eq!(bill["state"], "validated", "{bill:#}");
    bill
}

fn bill(api: &Client, id: &str) -> Value {
    let a = api.get(&format!("{BM}/customerBill/{id}"));
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

/// What the ledger should say, worked out by the test.
#[derive(Debug, Default, Clone, Copy)]
struct Expected {
    bills: i64,
    credit_notes: i64,
    payments: i64,
    refunds: i64,
    open_debt: i64,
    credit: i64,
}

/// Checks the account balance against `e`, and the equation
/// `balance = bills − credit notes − payments + refunds = open debt − available credit`.
#[track_caller]
fn check_balance(api: &Client, account: &str, e: Expected) {
    let a = api.get(&format!("{BM}/billingAccountBalance/{account}"));
    assert_eq!(a.status, 200, "{}", a.body);
    let b = a.json();
    let t = &b["totals"];
    let got = (cents(&t["bills"]), cents(&t["creditNotes"]), cents(&t["payments"]), cents(&t["refunds"]));
    assert_eq!(got, (e.bills, e.credit_notes, e.payments, e.refunds), "{b:#}");
    let balance = e.bills - e.credit_notes - e.payments + e.refunds;
    assert_eq!(cents(&b["balance"]), balance, "{b:#}");
    assert_eq!((cents(&b["openDebt"]), cents(&b["availableCredit"])), (e.open_debt, e.credit), "{b:#}");
    assert_eq!(e.open_debt - e.credit, balance, "the test's own figures must add up");
}

#[test]
fn payments_refunds_and_credit_notes_keep_the_balance_equation() {
    let (host, _dir) = Host::start(HostOptions::default());
    let f = setup(&host);
    let api = &f.api;
    let b = bill_on_demand(&f);
    let bill_id = b["id"].as_str().unwrap().to_string();
    let total = cents(&b["taxIncludedAmount"]);
    // The SIM activation (10.00 + 20% VAT) and the monthly fee from today to the period's end.
    let lines = api.get(&format!("{BM}/appliedCustomerBillingRate?bill.id={bill_id}")).json();
    let lines = lines.as_array().unwrap().clone();
    let sim = lines.iter().find(|l| l["type"] == "oneTime").unwrap_or_else(|| panic!("no SIM line: {lines:#?}"));
    assert_eq!(cents(&sim["taxIncludedAmount"]), 1200, "{sim:#}");
    assert!(lines.iter().any(|l| l["type"] == "recurring" && cents(&l["taxIncludedAmount"]) > 0), "{lines:#?}");
    assert_eq!(total, lines.iter().map(|l| cents(&l["taxIncludedAmount"])).sum::<i64>());
    let mut e = Expected { bills: total, open_debt: total, ..Expected::default() };
    check_balance(api, &f.account, e);

    // A partial payment of 5.00: the bill is partially paid.
    let p1 = api.created(
        "payment",
        json!({"account": {"id": f.account}, "totalAmount": eur(500),
                                           "paymentMethod": {"@type": "BankCard"}, "correlatorId": "gw-1"}),
    );
    assert_eq!(p1["status"], "succeeded", "{p1:#}");
    assert_eq!(p1["@type"], "Payment");
    assert_eq!(p1["href"], format!("{PM}/payment/{}", p1["id"].as_str().unwrap()));
    assert_eq!(p1["paymentItem"][0]["item"]["id"], bill_id.as_str(), "{p1:#}");
    assert_eq!(cents(&p1["paymentItem"][0]["amount"]), 500);
    assert_eq!(cents(&p1["unallocatedAmount"]), 0);
    let after = bill(api, &bill_id);
    assert_eq!(after["state"], "partiallyPaid", "{after:#}");
    assert_eq!(cents(&after["remainingAmount"]), total - 500);
    e.payments += 500;
    e.open_debt -= 500;
    check_balance(api, &f.account, e);
    // The same correlatorId again is the same payment (200), not a second one.
    let again = api.post(
        "payment",
        json!({"account": {"id": f.account}, "totalAmount": eur(500),
                                           "paymentMethod": {"@type": "BankCard"}, "correlatorId": "gw-1"}),
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], p1["id"]);
    check_balance(api, &f.account, e);

    // An over-payment naming the bill: it is settled and 3.00 is kept as credit.
    let p2 = api.created(
        "payment",
        json!({"account": {"id": f.account}, "totalAmount": eur(total - 500 + 300),
                                           "bill": {"id": bill_id}, "paymentDate": "2026-11-20T10:00:00+01:00"}),
    );
    assert_eq!(cents(&p2["paymentItem"][0]["amount"]), total - 500, "{p2:#}");
    assert_eq!(cents(&p2["unallocatedAmount"]), 300, "{p2:#}");
    let after = bill(api, &bill_id);
    assert_eq!((after["state"].as_str(), cents(&after["remainingAmount"])), (Some("settled"), 0), "{after:#}");
    e.payments += total - 500 + 300;
    e.open_debt = 0;
    e.credit = 300;
    check_balance(api, &f.account, e);

    // Refunds come out of that credit only.
    let too_much = api.post("refund", json!({"account": {"id": f.account}, "totalAmount": eur(500)}));
    assert_error(&too_much, 422, &["exceeds the available credit"]);
    let r = api
        .created("refund", json!({"account": {"id": f.account}, "totalAmount": eur(300), "payment": {"id": p2["id"]}}));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert_eq!(r["refundItem"][0]["item"]["id"], p2["id"], "{r:#}");
    assert_eq!(cents(&r["refundItem"][0]["amount"]), 300);
    e.refunds += 300;
    e.credit = 0;
    check_balance(api, &f.account, e);
    assert_eq!(api.get(&format!("refund/{}", r["id"].as_str().unwrap())).json(), r);

    // A credit note for the SIM line (the bill is settled: it becomes credit).
    let cn = api.created(
        &format!("{BM}/creditNote"),
        json!({"bill": {"id": bill_id}, "lines": [sim["id"]], "reason": "activation fee waived"}),
    );
    assert_eq!(cents(&cn["taxIncludedAmount"]), 1200, "{cn:#}");
    assert_eq!((cents(&cn["taxExcludedAmount"]), cents(&cn["taxAmount"])), (1000, 200), "{cn:#}");
    assert_eq!(cents(&cn["unallocatedAmount"]), 1200);
    assert_eq!(cn["bill"]["billNo"], b["billNo"]);
    e.credit_notes += 1200;
    e.credit += 1200;
    check_balance(api, &f.account, e);
    let twice = api.post(
        &format!("{BM}/creditNote"),
        json!({"bill": {"id": bill_id}, "lines": [sim["lineId"]], "reason": "again"}),
    );
    assert_error(&twice, 409, &["already credited"]);
    assert_error(
        &api.post(&format!("{BM}/creditNote"), json!({"bill": {"id": bill_id}, "amount": eur(100)})),
        400,
        &["reason"],
    );

    // Another currency is refused, never converted; so are nothing and another account's bill.
    let usd = api.post("payment", json!({"account": {"id": f.account}, "totalAmount": {"unit": "USD", "value": 10}}));
    assert_error(&usd, 422, &["USD", "EUR"]);
    assert_eq!(usd.json()["code"], "CURRENCY_MISMATCH");
    assert_error(
        &api.post("payment", json!({"account": {"id": f.account}, "totalAmount": eur(0)})),
        422,
        &["above zero"],
    );
    assert_error(&api.post("payment", json!({"account": {"id": "nobody"}, "totalAmount": eur(100)})), 422, &["nobody"]);
    check_balance(api, &f.account, e);

    // A replayed Idempotency-Key answers the same payment and credits once.
    let body = json!({"account": {"id": f.account}, "totalAmount": eur(200)});
    let headers = [("Authorization", api.auth.as_str()), ("Idempotency-Key", "pay-2026-11-26-001")];
    let first = post_json(&api.url("payment"), &headers, &body);
    assert_eq!(first.status, 201, "{}", first.body);
    let replay = post_json(&api.url("payment"), &headers, &body);
    assert_eq!(replay.status, 201, "{}", replay.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json()["id"], first.json()["id"]);
    e.payments += 200;
    e.credit += 200;
    check_balance(api, &f.account, e);
    let other =
        post_json(&api.url("payment"), &headers, &json!({"account": {"id": f.account}, "totalAmount": eur(900)}));
    assert_eq!(other.status, 422, "{}", other.body);
    check_balance(api, &f.account, e);

    // The TMF lists.
    assert_eq!(api.count("payment"), 3);
    assert_eq!(api.count("refund"), 1);
    assert_eq!(api.count(&format!("{BM}/creditNote")), 1);
    assert_eq!(api.get(&format!("payment/{}", p1["id"].as_str().unwrap())).json()["id"], p1["id"]);
    assert_eq!(api.get("payment/nope").status, 404);
    assert_eq!(api.get(&format!("{BM}/billingAccountBalance/nope")).status, 404);
}

/// A dunning run over every account, queued: started, then followed until it is through.
fn dunning_run(api: &Client, now: &str) -> Value {
    let started = api.post(&format!("{BM}/dunningRun"), json!({"now": now}));
    assert_eq!(started.status, 201, "{}", started.body);
    let run = started.json();
    assert_eq!((&run["@type"], &run["state"]), (&json!("DunningRun"), &json!("inProgress")), "{run:#}");
    let id = run["id"].as_str().unwrap().to_string();
    eventually(WAIT, "the dunning run through", || {
        let s = api.get(&format!("{BM}/dunningRun/{id}"));
        assert_eq!(s.status, 200, "{}", s.body);
        let s = s.json();
        (s["state"] != "inProgress").then_some(s)
    })
}

/// The actions of a run (`kind`, the action) for the one account.
fn actions(run: &Value) -> Vec<Value> {
    run["accounts"].as_array().unwrap().iter().flat_map(|a| a["actions"].as_array().unwrap().clone()).collect()
}

#[test]
fn dunning_reminds_suspends_by_order_and_payment_resumes() {
    let (host, dir) = Host::start(HostOptions::default());
    let f = setup(&host);
    let api = &f.api;
    let b = bill_on_demand(&f);
    let total = cents(&b["taxIncludedAmount"]);
    let due = b["paymentDueDate"].as_str().unwrap().to_string();

    // Not yet: a week after the due date is the first step.
    let run = dunning_run(api, &noon_after(&due, 6));
    assert_eq!((run["accountsChecked"].as_u64(), run["actionsTaken"].as_u64()), (Some(1), Some(0)), "{run:#}");

    // Due + 8: one reminder, as an event. A queued run's worker publishes its batch (one account)
    // and the events of its actions: every publish is counted, even one the queue drops as a
    // repeated message id.
    let published = published_by(&host, "billing-worker");
    let run = dunning_run(api, &noon_after(&due, 8));
    let a = actions(&run);
    assert_eq!(a.len(), 1, "{run:#}");
    assert_eq!((a[0]["kind"].as_str(), a[0]["afterDays"].as_u64()), (Some("reminder"), Some(7)), "{run:#}");
    assert_eq!(cents(&a[0]["overdue"]), total);
    assert_eq!(a[0]["event"]["eventType"], "DunningReminderEvent");
    // The run's accounts a page at a time; a bad page size is refused.
    let id = run["id"].as_str().unwrap();
    let first = api.get(&format!("{BM}/dunningRun/{id}?limit=1")).json();
    assert_eq!((first["accounts"].as_array().map(Vec::len), &first["accountsNext"]), (Some(1), &json!(f.account)));
    let rest = api.get(&format!("{BM}/dunningRun/{id}?limit=1&accountsAfter={}", f.account)).json();
    assert_eq!((rest["accounts"].as_array().map(Vec::len), rest.get("accountsNext")), (Some(0), None), "{rest}");
    assert_error(&api.get(&format!("{BM}/dunningRun/{id}?limit=0")), 400, &["limit"]);
    assert_eq!(published_by(&host, "billing-worker"), published + 2, "the batch and the reminder");
    // The next day, by the operator's command (the cron job's): nothing more, and it says so.
    let err = run_command(&host, api, "dunning-run", &["--now", &noon_after(&due, 9)]);
    // A policy the API refuses: the command fails and says why.
    let policy = dir.path().join("bad-policy.json");
    std::fs::write(&policy, r#"{"steps": [{"afterDays": 5, "action": "resume"}]}"#).unwrap();
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_bss-host"))
        .args(["dunning-run", "--url", &host.url(""), "--api-key", api.auth.trim_start_matches("Bearer ")])
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && why.contains("answered 422") && why.contains("policy"), "{why}");
    assert!(err.contains(&format!("[{}] 1/1 accounts, 0 actions, 0 failed", "#".repeat(40))), "{err}");
    assert!(err.trim_end().ends_with("completed"), "{err}");
    assert_eq!(
        published_by(&host, "billing-worker"),
        published + 3,
        "the next run's batch alone: a reminder is sent once"
    );

    // Due + 22: a suspension order, fulfilled by the (simulated) OSS.
    let orders = api.count(&format!("{PO}/productOrder"));
    let run = dunning_run(api, &noon_after(&due, 22));
    let a = actions(&run);
    assert_eq!(a.len(), 1, "{run:#}");
    assert_eq!(a[0]["kind"], "suspend", "{run:#}");
    assert_eq!(a[0]["products"], json!([f.product]));
    let order_id = a[0]["productOrder"][0]["id"].as_str().unwrap().to_string();
    let order = wait_order(api, &order_id);
    assert_eq!(order["productOrderItem"][0]["productAction"], "suspend", "{order:#}");
    assert_eq!(order["relatedParty"][0]["id"], f.customer.as_str());
    wait_product(api, &f.product, "suspended");
    assert_eq!(api.count(&format!("{PO}/productOrder")), orders + 1);

    // A rerun, the same day or later, changes nothing: no second order, no second event.
    let published = (published_by(&host, "billing"), published_by(&host, "billing-worker"));
    for day in [22, 30] {
        let run = dunning_run(api, &noon_after(&due, day));
        assert_eq!(run["actionsTaken"], 0, "{run:#}");
    }
    // Named accounts are dunned in the call, with the same rules: nothing due either.
    let named = api.post(&format!("{BM}/dunningRun"), json!({"now": noon_after(&due, 30), "accounts": [f.account]}));
    assert_eq!(named.status, 200, "{}", named.body);
    assert_eq!((named.json()["accountsChecked"].as_u64(), named.json()["actionsTaken"].as_u64()), (Some(1), Some(0)));
    assert_eq!(api.count(&format!("{PO}/productOrder")), orders + 1);
    // Each queued run published its first step (billing) and its one batch (the worker); nothing else.
    assert_eq!(
        (published_by(&host, "billing"), published_by(&host, "billing-worker")),
        (published.0 + 2, published.1 + 2)
    );
    assert_eq!(api.get(&format!("{PI}/product/{}", f.product)).json()["status"], "suspended");

    // Paying the debt stops dunning and resumes the product, by order.
    let paid = api.created("payment", json!({"account": {"id": f.account}, "totalAmount": eur(total)}));
    assert_eq!(cents(&paid["unallocatedAmount"]), 0);
    assert_eq!(bill(api, b["id"].as_str().unwrap())["state"], "settled");
    let run = dunning_run(api, &noon_after(&due, 31));
    let a = actions(&run);
    assert_eq!(a.len(), 1, "{run:#}");
    assert_eq!(a[0]["kind"], "resume", "{run:#}");
    assert_eq!(a[0]["event"]["eventType"], "DunningResumeEvent");
    let resume = a[0]["productOrder"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(resume, order_id);
    let order = wait_order(api, &resume);
    assert_eq!(order["productOrderItem"][0]["productAction"], "resume", "{order:#}");
    wait_product(api, &f.product, "active");
    // Nothing more, not even the termination step once its day comes.
    assert_eq!(dunning_run(api, &noon_after(&due, 31))["actionsTaken"], 0);
    assert_eq!(dunning_run(api, &noon_after(&due, 61))["actionsTaken"], 0);
    assert_eq!(api.count(&format!("{PO}/productOrder")), orders + 2);
    check_balance(api, &f.account, Expected { bills: total, payments: total, ..Expected::default() });
}

#[test]
fn dates_are_added_in_the_civil_calendar() {
    assert_eq!(noon_after("2026-11-26", 8), "2026-12-04T12:00:00Z");
    assert_eq!(noon_after("2026-12-10", 22), "2027-01-01T12:00:00Z");
    assert_eq!(noon_after("2028-02-20", 10), "2028-03-01T12:00:00Z");
    assert_eq!(noon_after("2026-01-31", 0), "2026-01-31T12:00:00Z");
    assert_eq!(
        (cents(&json!({"value": "12.5"})), cents(&json!({"value": -3.07})), cents(&eur(1205))),
        (1250, -307, 1205)
    );
}
