//! Bill tests, amounts worked out by hand in each test: `cargo test -p bss-domain billing`.

use super::*;
use crate::billing::testing::*;
use crate::rating::Name;
use proptest::prelude::*;

fn rates() -> Vec<BillTaxRate> {
    vec![
        BillTaxRate { id: "tax-std".into(), tax_category: "standard".into(), jurisdiction: None, rate: d("20") },
        BillTaxRate {
            id: "tax-std-de".into(),
            tax_category: "standard".into(),
            jurisdiction: Some("DE".into()),
            rate: d("19"),
        },
        BillTaxRate { id: "tax-red".into(), tax_category: "reduced".into(), jurisdiction: None, rate: d("5.5") },
    ]
}

fn jan() -> BillPeriod {
    BillPeriod::new(date("2026-01-01"), date("2026-02-01")).unwrap()
}

fn input() -> BillInput {
    BillInput {
        account_id: "acct-1".into(),
        currency: Currency::new("EUR").unwrap(),
        period: jan(),
        time_zone: "Europe/Paris".parse().unwrap(),
        jurisdiction: Some("FR".into()),
        issued_at: at("2026-01-31T23:30:00Z"), // 1 Feb in Paris
        payment_terms_days: 14,
        rounding: RoundingRule::HalfEven,
        recurring: vec![],
        plan_changes: vec![],
        one_time: vec![],
        usage: vec![],
        corrections: vec![],
        discounts: vec![],
        tax_rates: rates(),
        previous_balance: eur("0"),
        activity: vec![],
        already_billed: BTreeSet::new(),
    }
}

fn recurring(charge: &str, price: Money, active: &[(&str, &str)]) -> RecurringItem {
    RecurringItem {
        charge_id: charge.into(),
        product_id: format!("prod-{charge}"),
        description: format!("Plan {charge}"),
        price,
        tax_category: "standard".into(),
        period: None,
        active: active.iter().map(|(f, t)| Interval { from: date(f), to: date(t) }).collect(),
    }
}

fn charge_ref(charge: &str, price: Money) -> ChargeRef {
    ChargeRef {
        charge_id: charge.into(),
        description: format!("Plan {charge}"),
        price,
        tax_category: "standard".into(),
    }
}

fn one_time(charge: &str, price: Money, category: &str) -> OneTimeCharge {
    OneTimeCharge {
        charge_id: charge.into(),
        product_id: format!("prod-{charge}"),
        description: format!("Fee {charge}"),
        unit_price: price,
        quantity: 1,
        tax_category: category.into(),
    }
}

fn line<'a>(b: &'a Bill, id: &str) -> &'a BillLine {
    b.lines
        .iter()
        .find(|l| l.id == id)
        .unwrap_or_else(|| panic!("no line {id} in {:?}", b.line_ids().collect::<Vec<_>>()))
}

fn amounts(l: &BillLine) -> (Money, Money, Money) {
    (l.net, l.tax, l.gross)
}

#[test]
fn a_full_period_and_the_dates_of_the_bill() {
    let mut i = input();
    i.recurring.push(recurring("c1", eur("25.00"), &[("2026-01-01", "2026-02-01")]));
    let b = build_bill(&i).unwrap();
    assert_eq!(b.id, "bill:acct-1:2026-01-01");
    assert_eq!((b.bill_date, b.due_date), (date("2026-02-01"), date("2026-02-15")));
    assert_eq!(b.state, BillState::New);
    let l = line(&b, "charge:c1:2026-01-01");
    assert_eq!((l.kind, l.proration, l.description.as_str()), (LineKind::Recurring, None, "Plan c1"));
    // 25.00 + 20 % = 5.00.
    assert_eq!(amounts(l), (eur("25.00"), eur("5.00"), eur("30.00")));
    assert_eq!((l.tax_rate_id.as_str(), l.tax_rate), ("tax-std", d("20")));
    assert_eq!(
        (b.subtotal, b.tax_total, b.total, b.amount_due),
        (eur("25.00"), eur("5.00"), eur("30.00"), eur("30.00"))
    );
    assert!(b.adds_up());
}

#[test]
fn a_mid_month_upgrade_credits_the_old_plan_and_charges_the_new_one() {
    // Billed in advance: the January bill charged plan S (20.00) for January. On 21 January the
    // customer moves to plan L (31.00); the February bill charges L for February and prorates
    // January: 11 of 31 days remain.
    let mut i = input();
    i.period = BillPeriod::new(date("2026-02-01"), date("2026-03-01")).unwrap();
    i.issued_at = at("2026-02-01T06:00:00Z");
    let mut l = recurring("L", eur("31.00"), &[("2026-02-01", "2026-03-01")]);
    l.period = Some(i.period);
    i.recurring.push(l);
    i.plan_changes.push(PlanChange {
        product_id: "prod-1".into(),
        period: Some(jan()),
        change_date: date("2026-01-21"),
        old: charge_ref("S", eur("20.00")),
        new: Some(charge_ref("L", eur("31.00"))),
    });
    let b = build_bill(&i).unwrap();
    assert_eq!(b.line_ids().collect::<Vec<_>>(), ["charge:L:2026-02-01", "credit:S:2026-01-01", "charge:L:2026-01-01"]);
    // February: 31.00, tax 6.20.
    assert_eq!(amounts(line(&b, "charge:L:2026-02-01")), (eur("31.00"), eur("6.20"), eur("37.20")));
    // Credit: 20.00 × 11 / 31 = 7.0967… → −7.10; tax −1.42.
    let credit = line(&b, "credit:S:2026-01-01");
    assert_eq!((credit.kind, amounts(credit)), (LineKind::ProrationCredit, (eur("-7.10"), eur("-1.42"), eur("-8.52"))));
    assert_eq!(credit.period, Some(Interval { from: date("2026-01-21"), to: date("2026-02-01") }));
    assert_eq!(credit.proration, Some(Proration { days_charged: 11, days_in_period: 31 }));
    // Charge: 31.00 × 11 / 31 = 11.00; tax 2.20.
    let charge = line(&b, "charge:L:2026-01-01");
    assert_eq!((charge.kind, amounts(charge)), (LineKind::ProrationCharge, (eur("11.00"), eur("2.20"), eur("13.20"))));
    assert_eq!(charge.description, "Plan L (11 of 31 days)");
    // 31.00 − 7.10 + 11.00 = 34.90; 6.20 − 1.42 + 2.20 = 6.98.
    assert_eq!((b.subtotal, b.tax_total, b.total), (eur("34.90"), eur("6.98"), eur("41.88")));
    assert!(b.adds_up());
}

#[test]
fn a_termination_credits_the_unused_days_and_a_suspension_bills_active_days_only() {
    let mut i = input();
    // Terminated on 10 January: 22 of 31 days unused; 30.00 × 22 / 31 = 21.2903… → −21.29;
    // tax −4.258 → −4.26.
    i.plan_changes.push(PlanChange {
        product_id: "prod-1".into(),
        period: None,
        change_date: date("2026-01-10"),
        old: charge_ref("T", eur("30.00")),
        new: None,
    });
    // Suspended 11–21 January: active 1–11 and 21 January–1 February, 10 + 11 = 21 days;
    // 31.00 × 21 / 31 = 21.00 on one line.
    i.recurring.push(recurring("S", eur("31.00"), &[("2026-01-01", "2026-01-11"), ("2026-01-21", "2026-02-01")]));
    let b = build_bill(&i).unwrap();
    assert_eq!(amounts(line(&b, "credit:T:2026-01-01")), (eur("-21.29"), eur("-4.26"), eur("-25.55")));
    let s = line(&b, "charge:S:2026-01-01");
    assert_eq!(amounts(s), (eur("21.00"), eur("4.20"), eur("25.20")));
    assert_eq!(s.proration, Some(Proration { days_charged: 21, days_in_period: 31 }));
    assert_eq!(s.period, Some(jan().whole()));
    // −25.55 + 25.20 = −0.35: a bill can be a credit.
    assert_eq!((b.total, b.amount_due), (eur("-0.35"), eur("-0.35")));
    assert!(b.adds_up());
    // Overlapping intervals would bill days twice.
    i.recurring[0].active.push(Interval { from: date("2026-01-05"), to: date("2026-01-06") });
    assert!(matches!(build_bill(&i), Err(BillingError::Overlap { .. })));
}

#[test]
fn usage_lines_show_allowances_and_keep_the_rated_tax() {
    let mut i = input();
    let summary = |service, qty, allowance, net: &str, tax: Option<&str>| UsageSummary {
        product_id: "prod-1".into(),
        service,
        description: None,
        tax_category: "standard".into(),
        quantity_base_units: qty,
        allowance_base_units: allowance,
        records: 12,
        net: eur(net),
        tax: tax.map(eur),
    };
    // Voice: 3 600 s of which 3 000 from the allowance, 600 s × 0.01 = 6.00 taxed here: 1.20.
    i.usage.push(summary(Service::Voice, 3_600, 3_000, "6.00", None));
    // SMS all inside the allowance: a zero line that still shows the quantities.
    i.usage.push(summary(Service::Sms, 40, 40, "0.00", None));
    // Data rated with tax per record: Σ rounded taxes 0.51 is kept (not 20 % × 2.53 = 0.506).
    i.usage.push(summary(Service::Data, 5_000_000, 0, "2.53", Some("0.51")));
    let b = build_bill(&i).unwrap();
    let voice = line(&b, "usage:prod-1:voice:2026-01-01");
    assert_eq!((voice.description.as_str(), voice.unit.as_deref()), ("Voice usage", Some("second")));
    assert_eq!(voice.quantity, d("3600"));
    assert_eq!(voice.usage.unwrap().allowance_base_units, 3_000);
    assert_eq!(amounts(voice), (eur("6.00"), eur("1.20"), eur("7.20")));
    assert_eq!(amounts(line(&b, "usage:prod-1:sms:2026-01-01")), (eur("0.00"), eur("0.00"), eur("0.00")));
    assert_eq!(amounts(line(&b, "usage:prod-1:data:2026-01-01")), (eur("2.53"), eur("0.51"), eur("3.04")));
    assert_eq!(b.total, eur("10.24"));
    assert!(b.adds_up());
    // A rated amount finer than the cent is refused (it was rounded per record).
    i.usage[0].net = eur("6.001");
    assert!(matches!(build_bill(&i), Err(BillingError::InvalidAmount { .. })));
}

fn delta(record: &str, net: &str, tax: &str, gross: &str) -> ChargeDelta {
    ChargeDelta {
        record_id: record.into(),
        old_tariff: (Name::new("voice"), Name::new("3")),
        new_tariff: (Name::new("voice"), Name::new("4")),
        net: eur(net),
        tax: eur(tax),
        gross: eur(gross),
    }
}

#[test]
fn a_correction_bills_the_rerating_delta() {
    let mut i = input();
    // Record cdr-1 was rated 1.20 + 0.24; rerated 0.80 + 0.16: delta −0.40, −0.08, −0.48.
    i.corrections.push(Correction {
        rerate_run_id: "run-7".into(),
        product_id: "prod-1".into(),
        description: None,
        tax_category: "standard".into(),
        delta: delta("cdr-1", "-0.40", "-0.08", "-0.48"),
    });
    let b = build_bill(&i).unwrap();
    let c = line(&b, "correction:run-7:cdr-1");
    assert_eq!((c.kind, amounts(c)), (LineKind::Correction, (eur("-0.40"), eur("-0.08"), eur("-0.48"))));
    assert_eq!(c.description, "Correction of usage record cdr-1 (tariff voice 3 → voice 4)");
    assert_eq!(c.reference.as_deref(), Some("cdr-1"));
    assert!(b.adds_up());
    i.corrections[0].delta.gross = eur("-0.50");
    assert_eq!(build_bill(&i), Err(BillingError::InconsistentCorrection { record_id: "cdr-1".into() }));
}

#[test]
fn payments_credit_notes_and_refunds_since_the_last_bill_make_the_amount_due() {
    let mut i = input();
    i.recurring.push(recurring("c1", eur("20.00"), &[("2026-01-01", "2026-02-01")]));
    i.previous_balance = eur("50.00");
    let act = |id: &str, kind, amount: &str| AccountActivity {
        id: id.into(),
        kind,
        amount: eur(amount),
        at: at("2026-01-10T10:00:00Z"),
        bill_id: None,
    };
    i.activity = vec![
        act("pay-1", ActivityKind::Payment, "30.00"),
        act("cn-1", ActivityKind::CreditNote, "5.00"),
        act("ref-1", ActivityKind::Refund, "2.00"),
    ];
    let b = build_bill(&i).unwrap();
    // 50.00 + 24.00 − 30.00 − 5.00 + 2.00 = 41.00. Credit notes are no lines of the bill.
    assert_eq!((b.total, b.payments, b.credits, b.refunds), (eur("24.00"), eur("30.00"), eur("5.00"), eur("2.00")));
    assert_eq!(b.amount_due, eur("41.00"));
    assert_eq!(b.lines.len(), 1);
    // An over-payment leaves a credit: 50.00 + 24.00 − 80.00 = −6.00.
    i.activity = vec![act("pay-2", ActivityKind::Payment, "80.00")];
    assert_eq!(build_bill(&i).unwrap().amount_due, eur("-6.00"));
    i.activity.push(act("pay-2", ActivityKind::Payment, "80.00"));
    assert_eq!(build_bill(&i), Err(BillingError::DuplicateEntry { id: "pay-2".into() }));
}

#[test]
fn another_currency_is_refused_never_converted() {
    let mut i = input();
    i.one_time.push(one_time("sim", usd("10.00"), "standard"));
    let e = build_bill(&i).unwrap_err();
    assert_eq!(
        e,
        BillingError::CurrencyMismatch {
            expected: Currency::new("EUR").unwrap(),
            found: Currency::new("USD").unwrap(),
            item: "charge sim".into()
        }
    );
    assert_eq!(e.to_string(), "charge sim is in USD but the account bills in EUR; amounts are never converted");
    let mut i = input();
    i.previous_balance = usd("1.00");
    assert!(matches!(build_bill(&i), Err(BillingError::CurrencyMismatch { .. })));
    let mut i = input();
    i.corrections.push(Correction {
        rerate_run_id: "r".into(),
        product_id: "p".into(),
        description: None,
        tax_category: "standard".into(),
        delta: ChargeDelta { net: usd("1"), tax: usd("0"), gross: usd("1"), ..delta("x", "1", "0", "1") },
    });
    assert!(matches!(build_bill(&i), Err(BillingError::CurrencyMismatch { .. })));
    let mut i = input();
    i.discounts.push(DiscountInput {
        rule_id: "r".into(),
        description: "r".into(),
        value: DiscountValue::Amount(usd("1")),
        charge_id: None,
    });
    assert!(matches!(build_bill(&i), Err(BillingError::CurrencyMismatch { .. })));
}

fn discount(rule: &str, value: DiscountValue, charge: Option<&str>) -> DiscountInput {
    DiscountInput {
        rule_id: rule.into(),
        description: format!("Rule {rule}"),
        value,
        charge_id: charge.map(str::to_string),
    }
}

#[test]
fn discounts_on_a_charge_then_on_the_total_per_tax_category() {
    let mut i = input();
    i.recurring.push(recurring("A", eur("40.00"), &[("2026-01-01", "2026-02-01")]));
    i.one_time.push(one_time("B", eur("10.00"), "reduced"));
    i.discounts = vec![
        // On the total (applied after the charge discounts whatever the input order).
        discount("pct", DiscountValue::Percentage(d("10")), None),
        discount("fix", DiscountValue::Amount(eur("7.00")), None),
        discount("onA", DiscountValue::Percentage(d("10")), Some("A")),
    ];
    let b = build_bill(&i).unwrap();
    // A: 40.00 (tax 8.00); B: 10.00 (tax 5.5 % = 0.55).
    assert_eq!(amounts(line(&b, "oneTime:B")), (eur("10.00"), eur("0.55"), eur("10.55")));
    // 10 % on A: −4.00, tax −0.80.
    let on_a = line(&b, "discount:onA:A:2026-01-01");
    assert_eq!((on_a.applies_to.as_deref(), amounts(on_a)), (Some("A"), (eur("-4.00"), eur("-0.80"), eur("-4.80"))));
    // 10 % on the total per category: reduced 10.00 → −1.00 (tax −0.055 → −0.06 half-even);
    // standard 36.00 → −3.60 (tax −0.72).
    let total = "total:acct-1:2026-01-01";
    assert_eq!(amounts(line(&b, &format!("discount:pct:{total}:reduced"))), (eur("-1.00"), eur("-0.06"), eur("-1.06")));
    assert_eq!(
        amounts(line(&b, &format!("discount:pct:{total}:standard"))),
        (eur("-3.60"), eur("-0.72"), eur("-4.32"))
    );
    // 7.00 off what is left, 9.00 reduced and 32.40 standard: 7 × 9 / 41.4 = 1.5217…,
    // 7 × 32.4 / 41.4 = 5.4782…; 1.52 + 5.47 = 6.99, the last cent to the larger remainder.
    // Taxes: 1.52 × 5.5 % = 0.0836 → −0.08; 5.48 × 20 % = 1.096 → −1.10.
    assert_eq!(amounts(line(&b, &format!("discount:fix:{total}:reduced"))), (eur("-1.52"), eur("-0.08"), eur("-1.60")));
    assert_eq!(
        amounts(line(&b, &format!("discount:fix:{total}:standard"))),
        (eur("-5.48"), eur("-1.10"), eur("-6.58"))
    );
    // Net 40 + 10 − 4 − 1 − 3.60 − 1.52 − 5.48 = 34.40;
    // tax 8 + 0.55 − 0.80 − 0.06 − 0.72 − 0.08 − 1.10 = 5.79.
    assert_eq!((b.subtotal, b.tax_total, b.total), (eur("34.40"), eur("5.79"), eur("40.19")));
    let summary: Vec<_> = b.tax_summary.iter().map(|t| (t.tax_category.as_str(), t.taxable, t.tax)).collect();
    assert_eq!(summary, [("reduced", eur("7.48"), eur("0.41")), ("standard", eur("26.92"), eur("5.38"))]);
    assert!(b.adds_up());
    // A fixed discount on a charge is capped at its net; an unknown charge is refused.
    i.discounts = vec![discount("big", DiscountValue::Amount(eur("50.00")), Some("B"))];
    assert_eq!(build_bill(&i).unwrap().subtotal, eur("40.00"));
    i.discounts = vec![discount("x", DiscountValue::Percentage(d("10")), Some("nope"))];
    assert!(matches!(build_bill(&i), Err(BillingError::InvalidDiscount { .. })));
    i.discounts = vec![discount("x", DiscountValue::Percentage(d("120")), None)];
    assert!(matches!(build_bill(&i), Err(BillingError::InvalidDiscount { .. })));
}

#[test]
fn taxes_follow_the_jurisdiction_and_a_missing_rate_is_refused() {
    let mut i = input();
    i.jurisdiction = Some("DE".into());
    i.one_time.push(one_time("x", eur("10.00"), "standard"));
    i.one_time.push(one_time("y", eur("10.00"), "reduced"));
    let b = build_bill(&i).unwrap();
    assert_eq!((line(&b, "oneTime:x").tax_rate_id.as_str(), line(&b, "oneTime:x").tax), ("tax-std-de", eur("1.90")));
    assert_eq!(line(&b, "oneTime:x").jurisdiction.as_deref(), Some("DE"));
    // No DE rate for reduced: the default rate.
    assert_eq!(line(&b, "oneTime:y").tax_rate_id, "tax-red");
    i.one_time.push(one_time("z", eur("1.00"), "luxury"));
    assert_eq!(
        build_bill(&i),
        Err(BillingError::MissingTaxRate { category: "luxury".into(), jurisdiction: Some("DE".into()) })
    );
}

#[test]
fn a_rerun_gives_the_same_ids_and_cannot_bill_twice() {
    let mut i = input();
    i.recurring.push(recurring("c1", eur("20.00"), &[("2026-01-15", "2026-02-01")]));
    i.one_time.push(one_time("sim", eur("10.00"), "standard"));
    let first = build_bill(&i).unwrap();
    assert_eq!(build_bill(&i).unwrap(), first);
    // The one-time charge was billed by an earlier run: skipped, and said so.
    i.already_billed.insert("oneTime:sim".into());
    let again = build_bill(&i).unwrap();
    assert_eq!(again.line_ids().collect::<Vec<_>>(), ["charge:c1:2026-01-01"]);
    assert_eq!(again.skipped_line_ids, ["oneTime:sim"]);
    // The same charge twice in one period is refused, whatever its days.
    i.recurring.push(recurring("c1", eur("20.00"), &[("2026-01-01", "2026-01-02")]));
    assert_eq!(build_bill(&i), Err(BillingError::DuplicateLine { id: "charge:c1:2026-01-01".into() }));
    // A plan change's new charge and a recurring charge of it for the same period are one thing.
    let mut i = input();
    i.recurring.push(recurring("L", eur("31.00"), &[("2026-01-21", "2026-02-01")]));
    i.plan_changes.push(PlanChange {
        product_id: "p".into(),
        period: None,
        change_date: date("2026-01-21"),
        old: charge_ref("S", eur("20.00")),
        new: Some(charge_ref("L", eur("31.00"))),
    });
    assert_eq!(build_bill(&i), Err(BillingError::DuplicateLine { id: "charge:L:2026-01-01".into() }));
}

#[test]
fn bills_are_camel_case_json_and_read_back() {
    let mut i = input();
    i.recurring.push(recurring("c1", eur("20.00"), &[("2026-01-15", "2026-02-01")]));
    i.usage.push(UsageSummary {
        product_id: "prod-c1".into(),
        service: Service::Data,
        description: None,
        tax_category: "standard".into(),
        quantity_base_units: 10,
        allowance_base_units: 10,
        records: 1,
        net: eur("0"),
        tax: None,
    });
    i.discounts.push(discount("d", DiscountValue::Percentage(d("5")), Some("c1")));
    let json = serde_json::to_value(&i).unwrap();
    assert_eq!(json["timeZone"], "Europe/Paris");
    assert_eq!(json["discounts"][0]["value"], serde_json::json!({"percentage": "5"}));
    assert_eq!(serde_json::from_value::<BillInput>(json).unwrap(), i);
    let b = build_bill(&i).unwrap();
    let json = serde_json::to_value(&b).unwrap();
    assert_eq!(json["lines"][0]["kind"], "recurring");
    assert_eq!(json["lines"][0]["proration"], serde_json::json!({"daysCharged": 17, "daysInPeriod": 31}));
    assert_eq!(json["lines"][0]["net"], serde_json::json!({"amount": "10.97", "currency": "EUR"}));
    assert_eq!(json["lines"][1]["usage"]["allowanceBaseUnits"], 10);
    // 20.00 × 17 / 31 = 10.9677… → 10.97 + 2.19 tax; 5 % of 10.97 = 0.5485 → −0.55 − 0.11 tax.
    assert_eq!(json["amountDue"]["amount"], "12.50");
    assert_eq!(json["state"], "new");
    assert_eq!(serde_json::from_value::<Bill>(json).unwrap(), b);
}

// ---- Property tests ----

fn arb_money(max_cents: i64) -> impl Strategy<Value = Money> {
    (0..=max_cents).prop_map(|c| Money::new(Decimal::new(c, 2), Currency::new("EUR").unwrap()))
}

fn arb_signed(max_cents: i64) -> impl Strategy<Value = Money> {
    (-max_cents..=max_cents).prop_map(|c| Money::new(Decimal::new(c, 2), Currency::new("EUR").unwrap()))
}

fn arb_category() -> impl Strategy<Value = String> {
    prop_oneof![Just("standard".to_string()), Just("reduced".to_string())]
}

/// Intervals of January: sorted, disjoint cut points paired up.
fn arb_intervals() -> impl Strategy<Value = Vec<Interval>> {
    proptest::collection::btree_set(0i64..=31, 0..6).prop_map(|cuts| {
        let pts: Vec<NaiveDate> = cuts.into_iter().map(|c| date("2026-01-01") + chrono::Duration::days(c)).collect();
        pts.chunks_exact(2).map(|w| Interval { from: w[0], to: w[1] }).collect()
    })
}

fn arb_discount() -> impl Strategy<Value = (bool, DiscountValue)> {
    (
        any::<bool>(),
        prop_oneof![
            (1i64..=10_000).prop_map(|p| DiscountValue::Percentage(Decimal::new(p, 2))),
            (1i64..=5_000)
                .prop_map(|c| DiscountValue::Amount(Money::new(Decimal::new(c, 2), Currency::new("EUR").unwrap()))),
        ],
    )
}

prop_compose! {
    fn arb_input()(
        recurrings in proptest::collection::vec((arb_money(100_000), arb_category(), arb_intervals()), 0..5),
        changes in proptest::collection::vec(
            (arb_money(100_000), proptest::option::of(arb_money(100_000)), 0i64..31), 0..3),
        once in proptest::collection::vec((arb_money(50_000), 1u32..5, arb_category()), 0..4),
        usage in proptest::collection::vec(
            (arb_money(20_000), proptest::option::of(arb_money(4_000)), 0u64..10_000), 0..3),
        corrections in proptest::collection::vec((arb_signed(1_000), arb_signed(200)), 0..3),
        discounts in proptest::collection::vec(arb_discount(), 0..4),
        previous in arb_signed(100_000),
        activity in proptest::collection::vec((0usize..3, 1i64..100_000), 0..4),
        rule in arb_rule(),
    ) -> BillInput {
        let mut i = input();
        i.rounding = rule;
        i.previous_balance = previous;
        for (n, (price, cat, active)) in recurrings.into_iter().enumerate() {
            let mut r = recurring(&format!("r{n}"), price, &[]);
            r.tax_category = cat;
            r.active = active;
            i.recurring.push(r);
        }
        for (n, (old, new, day)) in changes.into_iter().enumerate() {
            i.plan_changes.push(PlanChange {
                product_id: format!("pc{n}"),
                period: None,
                change_date: date("2026-01-01") + chrono::Duration::days(day),
                old: charge_ref(&format!("old{n}"), old),
                new: new.map(|p| charge_ref(&format!("new{n}"), p)),
            });
        }
        for (n, (price, qty, cat)) in once.into_iter().enumerate() {
            let mut o = one_time(&format!("o{n}"), price, &cat);
            o.quantity = qty;
            i.one_time.push(o);
        }
        for (n, (net, tax, qty)) in usage.into_iter().enumerate() {
            i.usage.push(UsageSummary {
                product_id: format!("u{n}"),
                service: Service::ALL[n % 3],
                description: None,
                tax_category: "standard".into(),
                quantity_base_units: qty,
                allowance_base_units: qty / 2,
                records: 1,
                net,
                tax,
            });
        }
        for (n, (net, tax)) in corrections.into_iter().enumerate() {
            let gross = net.checked_add(tax).unwrap();
            i.corrections.push(Correction {
                rerate_run_id: "run".into(),
                product_id: "p".into(),
                description: None,
                tax_category: "reduced".into(),
                delta: ChargeDelta { net, tax, gross, ..delta(&format!("rec{n}"), "0", "0", "0") },
            });
        }
        let charges: Vec<String> = i.recurring.iter().map(|r| r.charge_id.clone())
            .chain(i.one_time.iter().map(|o| o.charge_id.clone()))
            .collect();
        for (n, (on_charge, value)) in discounts.into_iter().enumerate() {
            let charge = (on_charge && !charges.is_empty()).then(|| charges[n % charges.len()].as_str());
            i.discounts.push(discount(&format!("d{n}"), value, charge));
        }
        let kinds = [ActivityKind::Payment, ActivityKind::CreditNote, ActivityKind::Refund];
        for (n, (k, cents)) in activity.into_iter().enumerate() {
            i.activity.push(AccountActivity {
                id: format!("a{n}"),
                kind: kinds[k],
                amount: Money::new(Decimal::new(cents, 2), i.currency),
                at: at("2026-01-10T00:00:00Z"),
                bill_id: None,
            });
        }
        i
    }
}

proptest! {
    #[test]
    fn a_bill_total_is_the_sum_of_its_lines_to_the_cent(i in arb_input()) {
        let b = build_bill(&i).unwrap();
        prop_assert!(b.adds_up(), "{:#?}", b);
        let c = i.currency;
        for l in &b.lines {
            prop_assert_eq!(l.net.checked_add(l.tax).unwrap(), l.gross);
            for m in [l.net, l.tax, l.gross] {
                prop_assert!(m.amount.normalize().scale() <= c.minor_digits(), "{} on {}", m, l.id);
            }
        }
        prop_assert_eq!(Money::sum(c, b.lines.iter().map(|l| l.gross)).unwrap(), b.total);
        // Ids are unique, and a rerun gives the same bill.
        let ids: BTreeSet<&str> = b.line_ids().collect();
        prop_assert_eq!(ids.len(), b.lines.len());
        prop_assert_eq!(&build_bill(&i).unwrap(), &b);
        // A recurring charge over the whole period is its price exactly.
        for r in &i.recurring {
            if r.active.iter().map(Interval::days).sum::<i64>() == 31 {
                prop_assert_eq!(line(&b, &format!("charge:{}:2026-01-01", r.charge_id)).net, r.price);
            }
        }
        // A discount on the total never takes a tax category below zero.
        for t in &b.tax_summary {
            let of = |l: &&BillLine| l.tax_category == t.tax_category && l.kind != LineKind::Correction;
            let on_total = |l: &&BillLine| l.kind == LineKind::Discount && l.applies_to.is_none();
            let base: Decimal = b.lines.iter().filter(of).filter(|l| !on_total(l)).map(|l| l.net.amount).sum();
            let off: Decimal = b.lines.iter().filter(of).filter(on_total).map(|l| l.net.amount).sum();
            prop_assert!(off <= Decimal::ZERO && base.max(Decimal::ZERO) + off >= Decimal::ZERO, "{} {}", base, off);
        }
        // Billing everything again bills nothing.
        let mut rerun = i.clone();
        rerun.already_billed = b.line_ids().map(str::to_string).collect();
        let again = build_bill(&rerun).unwrap();
        prop_assert!(again.lines.is_empty(), "{:?}", again.line_ids().collect::<Vec<_>>());
        // (Discounts have nothing left to discount, so they are not even attempted.)
        prop_assert_eq!(again.skipped_line_ids.len(), b.lines.iter().filter(|l| l.kind != LineKind::Discount).count());
        prop_assert!(again.adds_up());
    }
}
