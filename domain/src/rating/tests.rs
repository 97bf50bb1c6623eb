//! Rating tests, unit and property, on the sample catalog's tariffs and small ad-hoc ones:
//! `cargo test -p bss-domain rating`.

use super::*;
use crate::catalog::tariff::{RatingUnit, Tariff, UsageEvent};
use chrono::NaiveDateTime;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::str::FromStr;

const SAMPLE: &str = include_str!("../../../infra/samples/catalog.json");

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn sample(id: &str) -> PreparedTariff {
    let v: Value = serde_json::from_str(SAMPLE).unwrap();
    let doc = v["tariff"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap();
    PreparedTariff::new(Tariff::read(doc).unwrap())
}

fn tariff(v: Value) -> PreparedTariff {
    PreparedTariff::new(Tariff::read(&v).unwrap())
}

/// A per-second voice tariff with a base rate, an evening period and a weekend period.
fn voice_tariff() -> Value {
    json!({"id": "v", "name": "Voice", "currency": "EUR", "ratingUnit": "minute", "lifecycleStatus": "active",
        "rate": {"unit": "EUR", "value": 0.60},
        "periods": [{"name": "weekend", "days": ["sat", "sun"], "from": "00:00", "to": "24:00", "rate": {"unit": "EUR", "value": 0.06}},
                    {"name": "evening", "from": "20:00", "to": "24:00", "rate": {"unit": "EUR", "value": 0.30}}]})
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn rec(service: Service, start: &str, quantity: u64, called: Option<&str>) -> UsageRecord {
    UsageRecord {
        record_id: "r1".into(),
        subscriber: "+33611111111".into(),
        service,
        start: at(start),
        quantity,
        called_number: called.map(str::to_string),
        apn: None,
        visited_network: None,
        on_net: false,
        direction: None,
        carrier: None,
    }
}

fn rate(t: &PreparedTariff, r: &UsageRecord) -> RatedRecord {
    let mut b = t.fresh_buckets();
    t.rate(r, &RatingContext::default(), &mut b).unwrap()
}

fn std_tax() -> Taxation {
    let v = json!({"id": "tax-standard", "taxCategory": "standard", "rate": 20, "lifecycleStatus": "active"});
    Taxation::new(crate::catalog::tax::TaxRate::read(&v).unwrap())
}

// A Monday in March 2026 (UTC, no DST nearby).
const MON: &str = "2026-03-09T10:00:00Z";

#[test]
fn normalises_numbers_units_and_time_zones() {
    let cfg = NormaliseConfig::new("33", at("2026-03-10T00:00:00Z"));
    assert_eq!(e164("06 12 34 56 78", &cfg).unwrap(), "+33612345678");
    assert_eq!(e164("+49 (151) 123-4567", &cfg).unwrap(), "+491511234567");
    assert_eq!(e164("0044 7700 900123", &cfg).unwrap(), "+447700900123");
    assert_eq!(e164("33612345678", &cfg).unwrap(), "+33612345678");
    assert!(e164("+33 6 12 ab", &cfg).is_err());
    assert!(e164("+1234567890123456", &cfg).is_err());
    let raw = RawUsage {
        record_id: "cdr-1".into(),
        subscriber: "0611111111".into(),
        service: "voice".into(),
        start_time: "2026-03-09T11:00:00".into(),
        time_zone: Some("Europe/Paris".into()),
        duration: Some(61_500),
        duration_unit: Some("ms".into()),
        called_number: Some("00 49 151 1234567".into()),
        visited_network: Some("262-01".into()),
        ..RawUsage::default()
    };
    let r = normalise(&raw, &cfg).unwrap();
    assert_eq!(r.subscriber, "+33611111111");
    assert_eq!(r.start, at("2026-03-09T10:00:00Z"));
    assert_eq!(r.quantity, 62, "milliseconds round up to the started second");
    assert_eq!(r.called_number.as_deref(), Some("+491511234567"));
    assert_eq!(r.visited_network.as_deref(), Some("26201"));
    let data = RawUsage {
        service: "data".into(),
        volume: Some(3),
        volume_unit: Some("MiB".into()),
        apn: Some("Internet.Operator".into()),
        start_time: "2026-03-09T10:00:00+01:00".into(),
        called_number: None,
        ..raw.clone()
    };
    let r = normalise(&data, &cfg).unwrap();
    assert_eq!((r.quantity, r.apn.as_deref()), (3 * 1_048_576, Some("internet.operator")));
    let sms = RawUsage { service: "sms".into(), duration: None, ..raw.clone() };
    assert_eq!(normalise(&sms, &cfg).unwrap().quantity, 1);
}

#[test]
fn normalisation_problems_name_their_field() {
    let cfg = NormaliseConfig::new("33", at("2026-03-10T00:00:00Z"));
    let good = RawUsage {
        record_id: "cdr-1".into(),
        subscriber: "+33611111111".into(),
        service: "voice".into(),
        start_time: "2026-03-09T10:00:00Z".into(),
        duration: Some(60),
        called_number: Some("+33622222222".into()),
        ..RawUsage::default()
    };
    let fields = |r: RawUsage| normalise(&r, &cfg).unwrap_err().into_iter().map(|p| p.field).collect::<Vec<_>>();
    assert_eq!(fields(RawUsage { duration: Some(-5), ..good.clone() }), ["duration"]);
    assert_eq!(fields(RawUsage { start_time: "2026-03-10T01:00:00Z".into(), ..good.clone() }), ["startTime"]);
    assert_eq!(fields(RawUsage { called_number: Some("12ab".into()), ..good.clone() }), ["calledNumber"]);
    assert_eq!(fields(RawUsage { subscriber: "x".into(), ..good.clone() }), ["subscriber"]);
    assert_eq!(fields(RawUsage { service: "fax".into(), ..good.clone() }), ["service"]);
    assert_eq!(fields(RawUsage { visited_network: Some("2620".into()), ..good.clone() }), ["visitedNetwork"]);
    assert_eq!(fields(RawUsage { duration_unit: Some("h".into()), ..good.clone() }), ["durationUnit"]);
    assert_eq!(fields(RawUsage { duration: Some(i64::MAX), ..good.clone() }), ["duration"]);
    assert_eq!(fields(RawUsage { record_id: " ".into(), ..good.clone() }), ["recordId"]);
    assert_eq!(
        fields(RawUsage {
            start_time: "2026-03-09T10:00:00".into(),
            time_zone: Some("Mars/Base".into()),
            ..good.clone()
        }),
        ["timeZone"]
    );
    assert_eq!(fields(RawUsage { direction: Some("up".into()), ..good.clone() }), ["direction"]);
    // Within the tolerance, a slightly early clock is accepted.
    assert!(normalise(&RawUsage { start_time: "2026-03-10T00:04:00Z".into(), ..good }, &cfg).is_ok());
}

#[test]
fn rounding_per_second_per_started_minute_and_first_minute_then_per_second() {
    let mut v = voice_tariff();
    let amount = |v: &Value, secs| rate(&tariff(v.clone()), &rec(Service::Voice, MON, secs, None)).net.amount;
    // Exact (per second): 61 s at 0.60/min = 0.61.
    assert_eq!(amount(&v, 61), d("0.61"));
    v["rounding"] = json!({"firstIncrement": 60, "nextIncrement": 60});
    assert_eq!(amount(&v, 61), d("1.20"));
    v["rounding"] = json!({"firstIncrement": 60, "nextIncrement": 1});
    assert_eq!(amount(&v, 10), d("0.60"));
    assert_eq!(amount(&v, 61), d("0.61"));
    let r = rate(&tariff(v), &rec(Service::Voice, MON, 10, None));
    assert_eq!((r.measured_base_units, r.charged_base_units), (10, 60));
    assert!(
        r.steps.iter().any(|s| matches!(s, Step::Rounding { measured_base_units: 10, charged_base_units: 60, .. }))
    );
}

#[test]
fn a_call_across_a_period_boundary_is_split_and_each_part_rated_at_its_rate() {
    let t = tariff(voice_tariff());
    // Monday 19:59:00 + 180 s: 60 s at 0.60 (no period), 120 s evening at 0.30.
    let r = rate(&t, &rec(Service::Voice, "2026-03-09T19:59:00Z", 180, None));
    assert_eq!(r.net.amount, d("1.20"));
    let parts: Vec<_> = r
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Part { period, base_units, .. } => Some((period.as_ref().map(|p| p.to_string()), *base_units)),
            _ => None,
        })
        .collect();
    assert_eq!(parts, [(None, 60), (Some("evening".into()), 120)]);
    // Friday 23:59 + 120 s: evening then weekend (day of week).
    let r = rate(&t, &rec(Service::Voice, "2026-03-13T23:59:00Z", 120, None));
    assert_eq!(r.net.amount, d("0.36"));
    // Local time: 19:30 UTC is 20:30 in Paris (evening all along).
    let ctx = RatingContext { time_zone: chrono_tz::Europe::Paris, ..RatingContext::default() };
    let mut b = t.fresh_buckets();
    let r = t.rate(&rec(Service::Voice, "2026-03-09T19:30:00Z", 60, None), &ctx, &mut b).unwrap();
    assert_eq!(r.net.amount, d("0.30"));
}

#[test]
fn destination_groups_by_longest_prefix_and_roaming_zones_by_visited_network() {
    let m = sample("tariff-mobile-m");
    // Domestic mobile (336) beats Domestic (33); the allowance covers it at home.
    let r = rate(&m, &rec(Service::Voice, MON, 120, Some("+33612345678")));
    assert!(r.steps.iter().any(|s| matches!(s, Step::Destination { group, prefix } if group.as_str() == "Domestic mobile" && prefix.as_str() == "336")));
    assert_eq!((r.allowance_base_units, r.net.amount), (120, d("0")));
    // World zone 1 (US network): its rate, no allowance.
    let mut us = rec(Service::Voice, MON, 120, Some("+33612345678"));
    us.visited_network = Some("310260".into());
    let r = rate(&m, &us);
    assert_eq!((r.allowance_base_units, r.net.amount), (0, d("3.00")));
    assert!(r.steps.iter().any(|s| matches!(s, Step::Rate { basis: Basis::RoamingZone, .. })));
    // EU: roam like at home.
    us.visited_network = Some("26201".into());
    assert_eq!(rate(&m, &us).allowance_base_units, 120);
    // A network of no zone: no allowance, the destination's rate.
    us.visited_network = Some("99999".into());
    let r = rate(&m, &us);
    assert_eq!((r.allowance_base_units, r.net.amount), (0, d("0.24")));
    assert!(matches!(r.steps[0], Step::OutsideRoamingZones { .. }));
}

/// The explanation's rate steps: (basis, rate, what it is per, amount).
fn rate_steps(r: &RatedRecord) -> Vec<(Basis, Decimal, Option<RatingUnit>, Decimal)> {
    r.steps
        .iter()
        .filter_map(|s| match s {
            Step::Rate { basis, rate, rating_unit, amount, .. } => Some((*basis, *rate, *rating_unit, *amount)),
            _ => None,
        })
        .collect()
}

#[test]
fn roaming_sms_and_data_in_world_zone_1_are_rated_at_the_zones_rate_for_each_service() {
    let m = sample("tariff-mobile-m");
    let ctx = RatingContext { tax: Some(std_tax()), ..RatingContext::default() };
    let in_us = |service, quantity, called: Option<&str>| {
        let mut r = rec(service, MON, quantity, called);
        r.visited_network = Some("310260".into());
        r
    };
    // 3 SMS at 0.50 per message = 1.50, tax 20 % = 0.30; no allowance in World zone 1.
    let mut b = m.fresh_buckets();
    let r = m.rate(&in_us(Service::Sms, 3, Some("+33622222222")), &ctx, &mut b).unwrap();
    assert_eq!(
        (r.allowance_base_units, r.net.amount, r.tax.amount, r.gross.amount),
        (0, d("1.50"), d("0.30"), d("1.80"))
    );
    assert_eq!(rate_steps(&r), [(Basis::RoamingZone, d("0.50"), Some(RatingUnit::Event), d("1.50"))]);
    assert_eq!(b, m.fresh_buckets(), "the SMS allowance is untouched");
    // 2.5 MB at 5.00 per MB = 12.50.
    let r = rate(&m, &in_us(Service::Data, 2_500_000, None));
    assert_eq!((r.allowance_base_units, r.net.amount), (0, d("12.50")));
    assert_eq!(rate_steps(&r), [(Basis::RoamingZone, d("5.00"), Some(RatingUnit::Megabyte), d("12.50"))]);
    // Byte-exact (the tariff's rounding is for its own unit, minutes): 1 234 567 B = 1.234567 MB
    // × 5.00 = 6.172835 → 6.17.
    let r = rate(&m, &in_us(Service::Data, 1_234_567, None));
    assert_eq!((r.charged_base_units, r.net.amount), (1_234_567, d("6.17")));
    // Voice keeps 1.50 per minute: 90 s = 2.25; an SMS to an international number in the zone
    // is at the zone's SMS rate, which beats the destination group's.
    let r = rate(&m, &in_us(Service::Voice, 90, Some("+33612345678")));
    assert_eq!(rate_steps(&r), [(Basis::RoamingZone, d("1.50"), Some(RatingUnit::Minute), d("2.25"))]);
    assert_eq!(r.net.amount, d("2.25"));
    assert_eq!(rate(&m, &in_us(Service::Sms, 1, Some("+447700900123"))).net.amount, d("0.50"));
}

#[test]
fn an_international_sms_is_rated_at_its_destination_groups_sms_rate() {
    let m = sample("tariff-mobile-m");
    // 2 SMS to the UK at 0.25 per message = 0.50; international groups opt out of the allowances.
    let r = rate(&m, &rec(Service::Sms, MON, 2, Some("+447700900123")));
    assert!(r.steps.iter().any(|s| matches!(s, Step::Destination { group, prefix } if group.as_str() == "International zone 1" && prefix.as_str() == "44")));
    assert_eq!((r.allowance_base_units, r.net.amount), (0, d("0.50")));
    assert_eq!(rate_steps(&r), [(Basis::DestinationGroup, d("0.25"), Some(RatingUnit::Event), d("0.50"))]);
    // International voice keeps the group's single rate, per minute: 60 s = 0.45.
    let r = rate(&m, &rec(Service::Voice, MON, 60, Some("+447700900123")));
    assert_eq!(rate_steps(&r), [(Basis::DestinationGroup, d("0.45"), Some(RatingUnit::Minute), d("0.45"))]);
    // Mobile L: 1 SMS to the US = 0.25; a domestic SMS still comes from the allowance.
    let l = sample("tariff-mobile-l");
    assert_eq!(rate(&l, &rec(Service::Sms, MON, 1, Some("+12025550100"))).net.amount, d("0.25"));
    let r = rate(&l, &rec(Service::Sms, MON, 1, Some("+33622222222")));
    assert_eq!((r.allowance_base_units, r.net.amount), (1, d("0")));
}

#[test]
fn sms_per_event_and_data_by_volume_with_its_unit() {
    let sms =
        tariff(json!({"id": "s", "name": "SMS", "currency": "EUR", "ratingUnit": "event", "lifecycleStatus": "active",
        "rate": {"unit": "EUR", "value": 0.05}}));
    assert_eq!(rate(&sms, &rec(Service::Sms, MON, 3, Some("+33622222222"))).net.amount, d("0.15"));
    let data = tariff(
        json!({"id": "d", "name": "Data", "currency": "EUR", "ratingUnit": "megabyte", "lifecycleStatus": "active",
        "rounding": {"firstIncrement": 1000, "nextIncrement": 1000}, "rate": {"unit": "EUR", "value": 0.01}}),
    );
    // 2.5 MB rounded up to whole kB = 2 500 000 bytes → 0.025 → 0.02 (half-even).
    let r = rate(&data, &rec(Service::Data, MON, 2_499_001, None));
    assert_eq!((r.charged_base_units, r.net.amount), (2_500_000, d("0.02")));
    // The sample's SMS and data are covered by allowances (the tariff rates per minute).
    let m = sample("tariff-mobile-m");
    assert_eq!(rate(&m, &rec(Service::Sms, MON, 1, Some("+33622222222"))).allowance_base_units, 1);
    assert_eq!(rate(&m, &rec(Service::Data, MON, 5_000_000, None)).allowance_base_units, 5_000_000);
}

#[test]
fn free_and_on_net_usage_consumes_no_allowance() {
    let mut v = sample("tariff-mobile-m").tariff().clone();
    v.on_net_rate = Some(Money::new(Decimal::ZERO, v.currency));
    let t = PreparedTariff::new(v);
    let mut r = rec(Service::Voice, MON, 300, Some("+33612345678"));
    r.on_net = true;
    let rated = rate(&t, &r);
    assert_eq!((rated.allowance_base_units, rated.net.amount), (0, d("0")));
    assert!(rated.steps.contains(&Step::OnNet));
    assert!(rated.steps.iter().any(|s| matches!(s, Step::Free { basis: Basis::OnNet, base_units: 300 })));
}

#[test]
fn allowances_are_consumed_in_order_then_overage_or_block() {
    let m = sample("tariff-mobile-m");
    let mut b = m.fresh_buckets();
    b.allowances[0].as_mut().unwrap().used_base_units = 500 * 60 - 60;
    let ctx = RatingContext { tax: Some(std_tax()), ..RatingContext::default() };
    // 180 s with 60 s left: 60 s from the allowance, 120 s at 0.15/min overage.
    let r = m.rate(&rec(Service::Voice, MON, 180, Some("+33612345678")), &ctx, &mut b).unwrap();
    assert_eq!((r.allowance_base_units, r.overage_base_units), (60, 120));
    assert_eq!((r.net.amount, r.tax.amount, r.gross.amount), (d("0.30"), d("0.06"), d("0.36")));
    assert_eq!(b.allowances[0].as_ref().unwrap().remaining_base_units(), 0);
    assert!(r.steps.iter().any(|s| matches!(s, Step::Tax { percent, .. } if *percent == d("20"))));
    // Data past 10 GB is blocked: the blocked part is shown, not charged.
    b.allowances[2].as_mut().unwrap().used_base_units = 10_000_000_000 - 1_000;
    let r = m.rate(&rec(Service::Data, MON, 5_000, None), &ctx, &mut b).unwrap();
    assert_eq!((r.allowance_base_units, r.blocked_base_units, r.net.amount), (1_000, 4_000, d("0")));
    // Mobile L charges data past 50 GB at 1 EUR per GB.
    let l = sample("tariff-mobile-l");
    let mut b = l.fresh_buckets();
    b.allowances[2].as_mut().unwrap().used_base_units = 50_000_000_000;
    let r = l.rate(&rec(Service::Data, MON, 250_000_000, None), &RatingContext::default(), &mut b).unwrap();
    assert_eq!((r.overage_base_units, r.net.amount), (250_000_000, d("0.25")));
}

#[test]
fn tiers_rate_the_running_total_of_the_period() {
    let ic = sample("tariff-interconnect");
    // A destination without a group: the volume tiers; the band of the running total.
    let mut b = ic.fresh_buckets();
    b.tier_units = d("999999");
    let ctx = RatingContext::default();
    let r = ic.rate(&rec(Service::Voice, MON, 60, Some("+33612345678")), &ctx, &mut b).unwrap();
    assert_eq!(r.net.amount, d("0.00"), "60 s at 0.0045/min rounds to 0.00");
    assert_eq!(b.tier_units, d("1000000"));
    let r = ic.rate(&rec(Service::Voice, MON, 6000, Some("+33612345678")), &ctx, &mut b).unwrap();
    assert_eq!(r.net.amount, d("0.45"));
    // A grouped destination: its rate (USD).
    let r = ic.rate(&rec(Service::Voice, MON, 6000, Some("+4915112345678")), &ctx, &mut b).unwrap();
    assert_eq!((r.net.amount, r.net.currency.code()), (d("1.20"), "USD"));
    // Graduated tiers: 150 minutes over 0..100 @0.10 and 100.. @0.05, from a running total of 50.
    let mut v = voice_tariff();
    v["rate"] = Value::Null;
    v["periods"] = json!([]);
    v["tiers"] = json!({"mode": "tiered", "bands": [
        {"fromUnits": 0, "toUnits": 100, "rate": {"unit": "EUR", "value": 0.10}},
        {"fromUnits": 100, "rate": {"unit": "EUR", "value": 0.05}}]});
    let t = tariff(v);
    let mut b = t.fresh_buckets();
    b.tier_units = d("50");
    let r = t.rate(&rec(Service::Voice, MON, 150 * 60, None), &ctx, &mut b).unwrap();
    assert_eq!(r.net.amount, d("10.00"));
    assert_eq!(b.tier_units, d("200"));
}

#[test]
fn the_charge_is_rounded_once_with_the_named_rule() {
    let t =
        tariff(json!({"id": "s", "name": "SMS", "currency": "EUR", "ratingUnit": "event", "lifecycleStatus": "active",
        "rate": {"unit": "EUR", "value": 0.0125}}));
    let r = |rule| {
        let mut b = t.fresh_buckets();
        let ctx = RatingContext { rounding: rule, ..RatingContext::default() };
        t.rate(&rec(Service::Sms, MON, 10, Some("+33622222222")), &ctx, &mut b).unwrap().net.amount
    };
    assert_eq!(r(RoundingRule::HalfEven), d("0.12"));
    assert_eq!(r(RoundingRule::HalfUp), d("0.13"));
}

#[test]
fn rated_records_name_tariff_and_version_and_serialize() {
    let mut v = voice_tariff();
    v["version"] = json!("3");
    let r = rate(&tariff(v), &rec(Service::Voice, MON, 60, None));
    assert_eq!((r.tariff_id.as_str(), r.tariff_version.as_str()), ("v", "3"));
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["net"], json!({"amount": "0.60", "currency": "EUR"}));
    assert_eq!(j["steps"][1]["step"], "rate");
    assert_eq!(j["steps"][1]["ratingUnit"], "minute");
    assert_eq!(serde_json::from_value::<RatedRecord>(j.clone()).unwrap(), r);
    // A step stored before steps named their unit still reads.
    let mut old = j["steps"][1].clone();
    old.as_object_mut().unwrap().remove("ratingUnit");
    assert!(matches!(serde_json::from_value::<Step>(old).unwrap(), Step::Rate { rating_unit: None, .. }));
}

#[test]
fn rerating_gives_the_exact_difference() {
    let old_t = tariff(voice_tariff());
    let mut v = voice_tariff();
    v["version"] = json!("2");
    v["rate"] = json!({"unit": "EUR", "value": 0.50});
    let new_t = tariff(v);
    let r = rec(Service::Voice, MON, 90, None);
    let old = rate(&old_t, &r);
    let mut b = new_t.fresh_buckets();
    let (new, delta) = rerate(&new_t, &RatingContext::default(), &r, &old, &mut b).unwrap();
    assert_eq!((old.net.amount, new.net.amount, delta.net.amount), (d("0.90"), d("0.75"), d("-0.15")));
    assert_eq!(delta.new_tariff.1.as_str(), "2");
    let usd = sample("tariff-interconnect");
    let other = rate(&usd, &rec(Service::Voice, MON, 90, Some("+4915112345678")));
    assert!(charge_delta(&old, &other).is_err());
}

#[test]
fn refusals_leave_the_buckets_untouched() {
    let m = sample("tariff-mobile-m");
    let ctx = RatingContext::default();
    let mut b = m.fresh_buckets();
    // Data roaming outside every zone: no allowance, and a per-minute rate cannot rate bytes.
    let mut r = rec(Service::Data, MON, 1_000, None);
    r.visited_network = Some("99999".into());
    assert!(matches!(m.rate(&r, &ctx, &mut b), Err(RatingError::NoRate { service: Service::Data, .. })));
    assert_eq!(b, m.fresh_buckets());
    let early = rec(Service::Voice, "2025-12-31T23:00:00Z", 60, None);
    assert!(matches!(m.rate(&early, &ctx, &mut b), Err(RatingError::TariffNotValidAt { .. })));
    let mut other = b.clone();
    other.tariff_id = "x".into();
    assert!(matches!(
        m.rate(&rec(Service::Voice, MON, 1, None), &ctx, &mut other),
        Err(RatingError::BucketsMismatch { .. })
    ));
    let mut v = voice_tariff();
    v["lifecycleStatus"] = json!("inDesign");
    let t = tariff(v.clone());
    assert!(matches!(
        t.rate(&rec(Service::Voice, MON, 1, None), &ctx, &mut t.fresh_buckets()),
        Err(RatingError::TariffInDesign { .. })
    ));
    // Retired tariffs still rate.
    v["lifecycleStatus"] = json!("retired");
    let t = tariff(v);
    assert!(t.rate(&rec(Service::Voice, MON, 1, None), &ctx, &mut t.fresh_buckets()).is_ok());
}

#[test]
fn absurd_quantities_and_amounts_are_refused_not_panicking() {
    let t = tariff(voice_tariff());
    let ctx = RatingContext::default();
    let mut b = t.fresh_buckets();
    let r = rec(Service::Voice, MON, MAX_DURATION_SECS + 1, None);
    assert!(matches!(t.rate(&r, &ctx, &mut b), Err(RatingError::QuantityTooLarge { .. })));
    let mut v = voice_tariff();
    v["rate"] = json!({"unit": "EUR", "value": "70000000000000000000000000000"});
    v["periods"] = json!([]);
    let t = tariff(v);
    let r = rec(Service::Voice, MON, 100_000, None);
    assert_eq!(t.rate(&r, &ctx, &mut t.fresh_buckets()), Err(RatingError::Overflow));
    let ic = sample("tariff-interconnect");
    let mut b = ic.fresh_buckets();
    b.tier_units = Decimal::MAX;
    let r = rec(Service::Voice, MON, 60, Some("+33612345678"));
    assert_eq!(ic.rate(&r, &ctx, &mut b), Err(RatingError::Overflow));
    assert_eq!(b.tier_units, Decimal::MAX, "untouched");
}

#[test]
fn sms_and_data_are_rated_in_the_period_of_their_start() {
    let mut v = voice_tariff();
    v["ratingUnit"] = json!("event");
    let t = tariff(v);
    let r = rate(&t, &rec(Service::Sms, "2026-03-14T12:00:00Z", 2, Some("+33622222222")));
    assert_eq!(r.net.amount, d("0.12"));
    assert!(
        r.steps
            .iter()
            .any(|s| matches!(s, Step::Part { period: Some(p), base_units: 2, .. } if p.as_str() == "weekend"))
    );
}

fn arb_record() -> impl Strategy<Value = UsageRecord> {
    let service = prop_oneof![Just(Service::Voice), Just(Service::Sms), Just(Service::Data)];
    let called = prop_oneof![
        Just(None),
        "\\+33[67][0-9]{8}".prop_map(Some),
        "\\+(1|44|49|4915)[0-9]{8}".prop_map(Some),
        "\\+[1-9][0-9]{6,12}".prop_map(Some)
    ];
    let visited = prop_oneof![
        4 => Just(None),
        1 => Just(Some("26201".to_string())),
        1 => Just(Some("310260".to_string())),
        1 => Just(Some("99999".to_string()))
    ];
    (service, 0i64..(60 * 86_400 * 30), 0u64..20_000, called, visited, any::<bool>()).prop_map(
        |(service, offset_secs, q, called_number, visited_network, on_net)| {
            let quantity = match service {
                Service::Voice => q,
                Service::Sms => q % 5 + 1,
                Service::Data => q * 100_000,
            };
            UsageRecord {
                record_id: format!("r{offset_secs}"),
                subscriber: "+33611111111".into(),
                service,
                start: at("2026-03-01T00:00:00Z") + chrono::Duration::seconds(offset_secs),
                quantity,
                called_number,
                apn: None,
                visited_network,
                on_net,
                direction: None,
                carrier: None,
            }
        },
    )
}

/// A tariff rated per minute, event or megabyte, with random per-service rates (some in the
/// tariff's unit without naming it, some free) and single rates in a roaming zone (`310260`)
/// and a destination group (`1`, `44`), a random on-net rate and period rate, and a voice
/// allowance (EU roaming and domestic numbers use it).
fn arb_service_rates_tariff() -> impl Strategy<Value = PreparedTariff> {
    let unit = prop_oneof![Just("minute"), Just("event"), Just("megabyte")];
    let entries = proptest::collection::vec((any::<bool>(), any::<bool>(), 0u32..200), 6);
    let singles = proptest::collection::vec(proptest::option::of(0u32..200), 4);
    (unit, entries, singles).prop_map(|(unit, entries, singles)| {
        let eur = |cents: u32| json!({"unit": "EUR", "value": Decimal::new(i64::from(cents), 2).to_string()});
        let rates = |from: usize| -> Vec<Value> {
            let units = [["minute", "second"], ["event", "event"], ["megabyte", "kilobyte"]];
            Service::ALL
                .iter()
                .zip(&entries[from..from + 3])
                .zip(units)
                .filter(|((_, (present, _, _)), _)| *present)
                .map(|((s, (_, other_unit, cents)), units)| {
                    let per = units[usize::from(*other_unit)];
                    let mut e = json!({"service": s.as_str(), "rate": eur(*cents)});
                    if per != unit {
                        e["ratingUnit"] = json!(per);
                    }
                    e
                })
                .collect()
        };
        let opt = |c: Option<u32>| c.map_or(Value::Null, eur);
        tariff(json!({"id": "per-service", "name": "Per service", "currency": "EUR", "ratingUnit": unit,
            "lifecycleStatus": "active", "rate": eur(10), "onNetRate": opt(singles[2]),
            "periods": [{"name": "evening", "from": "20:00", "to": "24:00", "rate": opt(singles[3])}],
            "roamingZones": [{"name": "EU", "visitedNetworks": ["26201"], "allowancesApply": true},
                             {"name": "World", "visitedNetworks": ["310260"], "rate": opt(singles[0]), "rates": rates(0)}],
            "destinationGroups": [{"name": "Domestic", "prefixes": ["33"]},
                                  {"name": "Intl", "prefixes": ["1", "44"], "allowancesApply": false,
                                   "rate": opt(singles[1]), "rates": rates(3)}],
            "allowances": [{"service": "voice", "amount": 5, "unit": "minute",
                            "overage": {"action": "charge", "rate": eur(20)}}]}))
    })
}

fn arb_tariff() -> impl Strategy<Value = PreparedTariff> {
    prop_oneof![
        1 => Just(sample("tariff-mobile-m")),
        1 => Just(sample("tariff-mobile-l")),
        1 => Just(sample("tariff-interconnect")),
        1 => Just(tariff(voice_tariff())),
        2 => arb_service_rates_tariff()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn taxation_taxes_like_its_rate(percent in 0i64..=10_000, percent_scale in 2u32..5, net in -10_000_000i64..10_000_000) {
        let percent: Value = serde_json::from_str(&Decimal::new(percent, percent_scale).to_string()).unwrap();
        let v = json!({"id": "t", "taxCategory": "standard", "rate": percent, "lifecycleStatus": "active"});
        let rate = crate::catalog::tax::TaxRate::read(&v).unwrap();
        let net = Decimal::new(net, 2);
        let by_rate = rate.tax_on(net);
        let by_taxation = Taxation::new(rate).tax_on(net);
        prop_assert_eq!(by_taxation, by_rate);
        let eur = Currency::new("EUR").unwrap();
        let round = |d: Decimal| Money::new(d, eur).round(RoundingRule::HalfEven).amount.to_string();
        prop_assert_eq!(round(by_taxation), round(by_rate));
    }

    #[test]
    fn rating_is_deterministic(t in arb_tariff(), r in arb_record(), used in 0u64..40_000) {
        let ctx = RatingContext { time_zone: chrono_tz::Europe::Paris, tax: Some(std_tax()), ..RatingContext::default() };
        let mut b1 = t.fresh_buckets();
        if let Some(Some(b)) = b1.allowances.first_mut() { b.used_base_units = used.min(b.initial_base_units); }
        let mut b2 = b1.clone();
        let one = t.rate(&r, &ctx, &mut b1);
        let two = t.rate(&r, &ctx, &mut b2);
        prop_assert_eq!(one, two);
        prop_assert_eq!(b1, b2);
    }

    #[test]
    fn splitting_never_loses_or_adds_a_second(start in 0i64..(86_400 * 400), secs in 0u64..200_000, paris in any::<bool>()) {
        let t = sample("tariff-mobile-m");
        let tz = if paris { chrono_tz::Europe::Paris } else { chrono_tz::UTC };
        let begin = at("2026-01-01T00:00:00Z") + chrono::Duration::seconds(start);
        let mut sum = 0u64;
        let mut next = begin;
        t.split(begin, secs, tz, |_, s, n| { assert_eq!(s, next, "parts are contiguous"); next = s + chrono::Duration::seconds(n as i64); sum += n; });
        prop_assert_eq!(sum, secs);
        // The rated parts plus the rounding extra are the charged quantity.
        let r = rate(&tariff(voice_tariff()), &rec(Service::Voice, "2026-03-13T19:00:00Z", secs.min(MAX_DURATION_SECS), None));
        let parts: u64 = r.steps.iter().map(|s| match s { Step::Part { base_units, .. } => *base_units, _ => 0 }).sum();
        prop_assert_eq!(parts, r.charged_base_units);
    }

    #[test]
    fn allowances_never_go_negative_and_add_up(t in arb_tariff(), records in proptest::collection::vec(arb_record(), 1..40)) {
        let ctx = RatingContext::default();
        let mut b = t.fresh_buckets();
        let mut taken = vec![0u64; b.allowances.len()];
        for r in &records {
            if let Ok(x) = t.rate(r, &ctx, &mut b) {
                for s in &x.steps {
                    if let Step::Allowance { allowance, base_units, .. } = s { taken[usize::from(*allowance)] += base_units; }
                }
                prop_assert_eq!(x.allowance_base_units + x.overage_base_units + x.blocked_base_units
                    + x.steps.iter().map(|s| match s { Step::Rate { base_units, .. } | Step::Free { base_units, .. } => *base_units, _ => 0 }).sum::<u64>()
                    + if x.steps.iter().any(|s| matches!(s, Step::Tier { .. })) { x.charged_base_units } else { 0 },
                    x.charged_base_units);
            }
        }
        for (i, bucket) in b.allowances.iter().enumerate() {
            if let Some(bucket) = bucket {
                prop_assert!(bucket.used_base_units <= bucket.initial_base_units);
                prop_assert_eq!(bucket.used_base_units + bucket.remaining_base_units(), bucket.initial_base_units);
                prop_assert_eq!(bucket.used_base_units, taken[i]);
            }
        }
    }

    #[test]
    fn a_batch_total_is_the_sum_of_its_records_to_the_cent(t in arb_tariff(), records in proptest::collection::vec(arb_record(), 0..60)) {
        let ctx = RatingContext { tax: Some(std_tax()), ..RatingContext::default() };
        let mut b = t.fresh_buckets();
        let out = rate_batch(&t, &records, &ctx, &mut b).unwrap();
        let ok: Vec<&RatedRecord> = out.rated.iter().filter_map(|r| r.as_ref().ok()).collect();
        let sum = Money::sum(t.currency(), ok.iter().map(|r| r.gross)).unwrap();
        prop_assert_eq!(out.total_gross, sum);
        for r in &ok {
            prop_assert_eq!(r.net.amount.scale() <= 2 && r.tax.amount.scale() <= 2, true);
            prop_assert_eq!(r.net.checked_add(r.tax).unwrap(), r.gross);
        }
        prop_assert_eq!(out.total_net.checked_add(Money::sum(t.currency(), ok.iter().map(|r| r.tax)).unwrap()).unwrap(), out.total_gross);
    }

    #[test]
    fn the_index_answers_like_the_tariff(t in arb_tariff(), number in "(00|\\+)?[0-9]{1,14}", net in "[0-9]{5,6}",
                                         in_zone in proptest::option::of(any::<proptest::sample::Index>()),
                                         service in 0usize..3, minute in 0i64..(7 * 1440), on_net in any::<bool>()) {
        let tf = t.tariff();
        prop_assert_eq!(t.destination(&number).map(|(g, _)| &tf.destination_groups[g].name), tf.destination(&number).map(|g| &g.name));
        for n in tf.roaming_zones.iter().flat_map(|z| z.visited_networks.iter()).chain([&net]) {
            prop_assert_eq!(t.roaming_zone(n).map(|z| &tf.roaming_zones[z].name), tf.roaming_zone(n).map(|z| &z.name));
        }
        let local = NaiveDateTime::parse_from_str("2026-03-09 00:00", "%Y-%m-%d %H:%M").unwrap() + chrono::Duration::minutes(minute);
        prop_assert_eq!(t.period(local).map(|p| &tf.periods[p].name), tf.period(local).map(|p| &p.name));
        // The rate the kernel charges follows Tariff::unit_rate's precedence, for every service.
        // Without allowances (they take usage before any rate) every record is charged at the
        // unit rate, by the tiers or refused.
        let t = PreparedTariff::new(Tariff { allowances: Vec::new(), ..tf.clone() });
        let networks: Vec<&String> = tf.roaming_zones.iter().flat_map(|z| z.visited_networks.iter()).collect();
        let net = match (in_zone, networks.is_empty()) {
            (Some(i), false) => i.get(&networks).to_string(),
            _ => net,
        };
        let (service, quantity) = [(Service::Voice, 60), (Service::Sms, 1), (Service::Data, 1_000_000)][service];
        let r = UsageRecord { called_number: Some(format!("+{}", number.trim_start_matches('+').trim_start_matches("00"))),
                              visited_network: Some(net.clone()), on_net, ..rec(service, "2026-03-09T00:00:00Z", quantity, None) };
        let r = UsageRecord { start: at("2026-03-09T00:00:00Z") + chrono::Duration::minutes(minute), ..r };
        let expected = tf.unit_rate(&UsageEvent { service: Some(service), destination: r.called_number.as_deref(),
                                                  visited_network: Some(&net), local_time: Some(local), on_net });
        let want = expected.map(|u| (u.rate.amount, u.source, (!u.rate.amount.is_zero()).then_some(u.per)));
        let rated = t.rate(&r, &RatingContext::default(), &mut t.fresh_buckets());
        let got = rated.as_ref().ok().and_then(|x| x.steps.iter().find_map(|s| match s {
            Step::Rate { rate, basis, rating_unit, .. } => Some((*rate, *basis, *rating_unit)),
            Step::Free { basis, .. } => Some((Decimal::ZERO, *basis, None)),
            _ => None,
        }));
        prop_assert_eq!(got, want, "{:?}", rated);
    }
}
