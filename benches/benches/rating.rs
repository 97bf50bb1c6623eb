//! Records per second of the pure rating kernel (`bss_domain::rating`), natively, on the sample
//! catalog's tariffs: the workload of `bss_rating_loop::workload` (a retail mix and wholesale
//! interconnect records). Besides criterion's estimate it prints the median of 31 timed passes.
//! Run with `cargo bench -p bss-bench --bench rating`; `benches/rating.sh` compares native with wasm.

use bss_rating_loop::workload::{self, RECORDS};
use bss_rating_loop::{Summary, measure};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let workloads = workload::all(RECORDS);
    for w in &workloads {
        let s = Summary { workload: w.name.to_string(), records: w.records.len(), rates: measure(w, 31) };
        println!(
            "rating/{}: median {:.0} records/s on one core ({} records per pass, 31 passes)",
            w.name,
            s.median(),
            s.records
        );
    }
    let mut g = c.benchmark_group("rating");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for w in &workloads {
        g.bench_function(w.name, |b| b.iter(|| w.pass()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
