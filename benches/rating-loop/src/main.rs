//! rating-loop: times the pure rating kernel (`bss_domain::rating`) on the sample workload
//! (retail and wholesale, see `workload`) and prints one JSON line per workload with the
//! records/s of every pass and their median/min/max (one thread: records/s per core).
//!
//! Native: `cargo run --profile release-lto -p bss-rating-loop -- [records=10000] [passes=31]`.
//! Wasm (a WASI command): `cargo build --profile release-lto --target wasm32-wasip2 -p bss-rating-loop`,
//! then `cargo run --release -p bss-bench --bin rating-wasm`, or just `benches/rating.sh`,
//! which prints native against wasm side by side.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (records, passes) = match bss_rating_loop::parse_args(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("rating-loop: {e}\nusage: rating-loop [records=10000] [passes=31]");
            return ExitCode::from(2);
        }
    };
    for summary in bss_rating_loop::run(records, passes) {
        println!("{}", summary.to_json_line());
    }
    ExitCode::SUCCESS
}
