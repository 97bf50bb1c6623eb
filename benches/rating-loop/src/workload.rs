//! The rating workload shared by the criterion bench (`benches/benches/rating.rs`), the timing
//! loop (`rating-loop`, native and wasm) and the runner (`rating-wasm`): the sample catalog's
//! tariffs, a retail mix (voice, some crossing period boundaries, some roaming and some
//! international, domestic SMS and data against allowances, taxed) and wholesale interconnect records, generated deterministically.

use bss_domain::catalog::tariff::Tariff;
use bss_domain::catalog::tax::TaxRate;
use bss_domain::rating::{Direction, PreparedTariff, RatingContext, Service, Taxation, UsageRecord};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use std::hint::black_box;

/// Records per pass by default (a realistic batch of a mediation file).
pub const RECORDS: usize = 10_000;

/// A tariff, the records rated against it and the rating context.
pub struct Workload {
    /// `retail` or `wholesale`.
    pub name: &'static str,
    pub tariff: PreparedTariff,
    pub records: Vec<UsageRecord>,
    pub ctx: RatingContext,
}

impl Workload {
    /// Rates every record once from fresh buckets; the number of records rated without error.
    pub fn pass(&self) -> usize {
        let mut buckets = self.tariff.fresh_buckets();
        self.records.iter().filter(|r| black_box(self.tariff.rate(r, &self.ctx, &mut buckets)).is_ok()).count()
    }
}

/// Both workloads, `records` records each.
pub fn all(records: usize) -> Vec<Workload> {
    vec![retail(records), wholesale(records)]
}

/// `tariff-mobile-m`, Europe/Paris, 20% tax, a retail mix of `n` records.
pub fn retail(n: usize) -> Workload {
    let tax = TaxRate::read(&serde_json::json!({"id": "tax-standard", "taxCategory": "standard", "rate": 20,
        "lifecycleStatus": "active"}))
    .expect("tax rate");
    let ctx = RatingContext {
        time_zone: chrono_tz::Europe::Paris,
        tax: Some(Taxation::new(tax)),
        ..RatingContext::default()
    };
    Workload { name: "retail", tariff: tariff("tariff-mobile-m"), records: retail_records(n), ctx }
}

/// `tariff-interconnect`, default context, `n` incoming interconnect voice records.
pub fn wholesale(n: usize) -> Workload {
    Workload {
        name: "wholesale",
        tariff: tariff("tariff-interconnect"),
        records: wholesale_records(n),
        ctx: RatingContext::default(),
    }
}

fn tariff(id: &str) -> PreparedTariff {
    let text = include_str!("../../../infra/samples/catalog.json");
    let v: Value = serde_json::from_str(text).expect("sample catalog");
    let doc = v["tariff"].as_array().and_then(|a| a.iter().find(|t| t["id"] == id)).expect("sample tariff");
    PreparedTariff::new(Tariff::read(doc).expect("valid tariff"))
}

/// A deterministic generator (no dependency, same records every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn retail_records(n: usize) -> Vec<UsageRecord> {
    let base: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
    let numbers = ["+33612345678", "+33145000000", "+33712345678", "+4930123456", "+447700900123", "+12025550100"];
    let networks = ["26201", "21407", "310260", "20404"];
    let mut g = Lcg(42);
    (0..n)
        .map(|i| {
            let kind = g.next(100);
            let service = match kind {
                0..50 => Service::Voice,
                50..75 => Service::Sms,
                _ => Service::Data,
            };
            // Calls cluster around 19:55-20:05 and midnight so that about a fifth cross a boundary.
            let start = if service == Service::Voice && g.next(5) == 0 {
                base + Duration::days(g.next(7) as i64) + Duration::hours(19) + Duration::minutes(55 + g.next(5) as i64)
            } else {
                base + Duration::seconds(g.next(7 * 86_400) as i64)
            };
            let quantity = match service {
                Service::Voice => 1 + g.next(900),
                Service::Sms => 1,
                Service::Data => 1 + g.next(50_000_000),
            };
            // Roaming voice only: the sample tariffs rate per minute, so SMS and data outside allowances (World zone 1) have no rate.
            let roaming = g.next(10) == 0 && service == Service::Voice;
            UsageRecord {
                record_id: format!("cdr-{i}"),
                subscriber: "+33611111111".into(),
                service,
                start,
                quantity,
                // SMS go to domestic numbers (the first three): international destination groups
                // opt out of the allowances and rate per minute, so an international SMS has no rate.
                called_number: (service != Service::Data).then(|| {
                    let n = g.next(6) as usize;
                    numbers[if service == Service::Sms { n % 3 } else { n }].to_string()
                }),
                apn: (service == Service::Data).then(|| "internet".to_string()),
                visited_network: roaming.then(|| networks[g.next(4) as usize].to_string()),
                on_net: false,
                direction: None,
                carrier: None,
            }
        })
        .collect()
}

fn wholesale_records(n: usize) -> Vec<UsageRecord> {
    let base: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
    let numbers = ["+4930123456", "+4915112345678", "+441632960000", "+447700900123", "+12025550100", "+33612345678"];
    let mut g = Lcg(7);
    (0..n)
        .map(|i| UsageRecord {
            record_id: format!("ic-{i}"),
            subscriber: "+33611111111".into(),
            service: Service::Voice,
            start: base + Duration::seconds(g.next(7 * 86_400) as i64),
            quantity: 1 + g.next(1_800),
            called_number: Some(numbers[g.next(6) as usize].to_string()),
            apn: None,
            visited_network: None,
            on_net: false,
            direction: Some(Direction::Incoming),
            carrier: Some("carrier-a".into()),
        })
        .collect()
}
