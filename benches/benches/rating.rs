//! Records per second of the pure rating kernel (`bss_domain::rating`), natively, on the sample
//! catalog's tariffs: a retail mix (voice, some crossing period boundaries, some roaming, SMS and
//! data against allowances, taxed) and wholesale interconnect records. Besides criterion's
//! estimate it prints the median of 31 timed passes. Run with `cargo bench -p bss-bench --bench rating`.

use bss_domain::catalog::tariff::Tariff;
use bss_domain::catalog::tax::TaxRate;
use bss_domain::rating::{PreparedTariff, RatingContext, Service, Taxation, UsageRecord};
use chrono::{DateTime, Duration, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use std::hint::black_box;
use std::time::Instant;

/// Records per pass (realistic batch of a mediation file).
const RECORDS: usize = 10_000;

fn tariff(id: &str) -> PreparedTariff {
    let text = include_str!("../../infra/samples/catalog.json");
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

fn retail_records() -> Vec<UsageRecord> {
    let base: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
    let numbers = ["+33612345678", "+33145000000", "+33712345678", "+4930123456", "+447700900123", "+12025550100"];
    let networks = ["26201", "21407", "310260", "20404"];
    let mut g = Lcg(42);
    (0..RECORDS)
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
                called_number: (service != Service::Data).then(|| numbers[g.next(6) as usize].to_string()),
                apn: (service == Service::Data).then(|| "internet".to_string()),
                visited_network: roaming.then(|| networks[g.next(4) as usize].to_string()),
                on_net: false,
                direction: None,
                carrier: None,
            }
        })
        .collect()
}

fn wholesale_records() -> Vec<UsageRecord> {
    let base: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
    let numbers = ["+4930123456", "+4915112345678", "+441632960000", "+447700900123", "+12025550100", "+33612345678"];
    let mut g = Lcg(7);
    (0..RECORDS)
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
            direction: Some(bss_domain::rating::Direction::Incoming),
            carrier: Some("carrier-a".into()),
        })
        .collect()
}

/// Rates every record once from fresh buckets; the number of rated records.
fn pass(t: &PreparedTariff, records: &[UsageRecord], ctx: &RatingContext) -> usize {
    let mut buckets = t.fresh_buckets();
    records.iter().filter(|r| black_box(t.rate(r, ctx, &mut buckets)).is_ok()).count()
}

fn median_records_per_sec(name: &str, t: &PreparedTariff, records: &[UsageRecord], ctx: &RatingContext) {
    let mut rates: Vec<f64> = (0..31)
        .map(|_| {
            let started = Instant::now();
            let ok = pass(t, records, ctx);
            assert_eq!(ok, records.len(), "every sample record rates");
            records.len() as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!("{name}: median {:.0} records/s on one core ({} records per pass, 31 passes)", rates[15], records.len());
}

fn bench(c: &mut Criterion) {
    let tax = TaxRate::read(&serde_json::json!({"id": "tax-standard", "taxCategory": "standard", "rate": 20,
        "lifecycleStatus": "active"}))
    .expect("tax rate");
    let retail_ctx = RatingContext {
        time_zone: chrono_tz::Europe::Paris,
        tax: Some(Taxation::new(tax)),
        ..RatingContext::default()
    };
    let wholesale_ctx = RatingContext::default();
    let mobile = tariff("tariff-mobile-m");
    let interconnect = tariff("tariff-interconnect");
    let retail = retail_records();
    let wholesale = wholesale_records();
    median_records_per_sec("rating/retail", &mobile, &retail, &retail_ctx);
    median_records_per_sec("rating/wholesale", &interconnect, &wholesale, &wholesale_ctx);

    let mut g = c.benchmark_group("rating");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.bench_function("retail", |b| b.iter(|| pass(&mobile, &retail, &retail_ctx)));
    g.bench_function("wholesale", |b| b.iter(|| pass(&interconnect, &wholesale, &wholesale_ctx)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
