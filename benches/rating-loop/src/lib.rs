//! bss-rating-loop: the rating workload ([`workload`]) and a plain timing loop over it, built
//! both natively and for `wasm32-wasip2` so the same code measures the rating kernel in both.
//! The `rating-loop` binary prints one JSON [`Summary`] line per workload; `rating-wasm`
//! (in bss-bench) runs it inside wasmtime and natively and prints the comparison;
//! `benches/rating.sh` builds both in release and runs it.

pub mod workload;

use serde_json::{Value, json};
use std::time::Instant;
use workload::Workload;

/// Records/s of each of `passes` timed passes over `w`, after one untimed warm-up pass. Panics if
/// a record fails to rate (the sample workload rates every record).
pub fn measure(w: &Workload, passes: usize) -> Vec<f64> {
    let check = |ok: usize| assert_eq!(ok, w.records.len(), "every {} record rates", w.name);
    check(w.pass());
    (0..passes)
        .map(|_| {
            let started = Instant::now();
            let ok = w.pass();
            let secs = started.elapsed().as_secs_f64();
            check(ok);
            w.records.len() as f64 / secs
        })
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Records/s of the passes over one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub workload: String,
    pub records: usize,
    /// Records/s of each pass, in the order run.
    pub rates: Vec<f64>,
}

impl Summary {
    /// Median records/s (the mean of the middle two for an even count); 0 without passes.
    pub fn median(&self) -> f64 {
        median(&self.rates)
    }

    /// Slowest pass, records/s.
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(0.0)
    }

    /// Fastest pass, records/s.
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(0.0)
    }

    fn sorted(&self) -> Vec<f64> {
        let mut s = self.rates.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    /// One JSON line: workload, records per pass, passes, median/min/max records/s, every pass.
    pub fn to_json_line(&self) -> String {
        json!({
            "workload": self.workload, "records": self.records, "passes": self.rates.len(),
            "median": self.median().round(), "min": self.min().round(), "max": self.max().round(),
            "rates": self.rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// Reads a line written by [`Summary::to_json_line`].
    pub fn from_json_line(line: &str) -> Result<Summary, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let workload = v["workload"].as_str().ok_or("no workload")?.to_string();
        let records = v["records"].as_u64().ok_or("no records")? as usize;
        let rates = v["rates"].as_array().ok_or("no rates")?.iter().filter_map(Value::as_f64).collect();
        Ok(Summary { workload, records, rates })
    }
}

/// Builds every workload with `records` records and times `passes` passes over each.
pub fn run(records: usize, passes: usize) -> Vec<Summary> {
    workload::all(records)
        .iter()
        .map(|w| Summary { workload: w.name.to_string(), records: w.records.len(), rates: measure(w, passes) })
        .collect()
}

/// Parses `[records] [passes]` (defaults [`workload::RECORDS`] and 31).
pub fn parse_args(args: &[String]) -> Result<(usize, usize), String> {
    let num = |i: usize, default: usize| -> Result<usize, String> {
        args.get(i).map_or(Ok(default), |a| a.parse().map_err(|_| format!("not a count: {a}")))
    };
    let (records, passes) = (num(0, workload::RECORDS)?, num(1, 31)?);
    if records == 0 || passes == 0 {
        return Err("records and passes must be at least 1".into());
    }
    Ok((records, passes))
}
