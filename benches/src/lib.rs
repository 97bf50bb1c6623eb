//! bss-bench: benchmarks of bss-host. `benches/host-kv.sh` runs the KV round-trip load test
//! (bss-host against the native baseline `native-kv`, same machine, same run);
//! `cargo bench -p bss-bench --bench instantiate` measures per-request instantiation time with
//! and without the pooling allocator, and a whole request on a fresh and on a reused instance;
//! `benches/rating.sh` runs the rating kernel natively and in wasm in one run (`rating-wasm` with
//! the `bss-rating-loop` WASI command, benches/rating-loop); `benches/usage-e2e.sh` runs usage
//! ingestion end to end through bss-host (`usage-load`: HTTP batches of 1,000 records, unique and
//! with 1% duplicates) and the usage component's pipeline natively on the same records, over the
//! in-memory store and over bss-host's SQLite store. `benches/billrun.sh` seeds and bills N
//! accounts (`billrun-seed`). `kv-layout` measures what the SQLite store takes of usage records
//! per key layout. The helpers below are the benchmark tools' shared parts: flags, a seeded
//! random stream, number formatting, a process's I/O counters, and calling the host's KV store
//! without an executor.

use std::collections::HashMap;

use anyhow::anyhow;

/// `--name value` / `--name=value` flags, and the other arguments in order.
pub struct Args {
    flags: HashMap<String, String>,
    /// Arguments that are not flags.
    pub rest: Vec<String>,
}

impl Args {
    /// Reads `args` (without the program name).
    pub fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut flags = HashMap::new();
        let mut rest = Vec::new();
        let mut it = args.peekable();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let (name, value) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), v.to_string()),
                    None => (name.to_string(), it.next().ok_or_else(|| anyhow!("--{name} needs a value"))?),
                };
                flags.insert(name, value);
            } else {
                rest.push(a);
            }
        }
        Ok(Args { flags, rest })
    }

    /// The flag's value, if given.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    /// The flag's value, or an error naming it.
    pub fn req(&self, name: &str) -> anyhow::Result<&str> {
        self.str(name).ok_or_else(|| anyhow!("--{name} is required"))
    }

    /// The flag parsed as a number, `default` if absent.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| anyhow!("--{name}: {v:?} is not a number")),
        }
    }
}

/// splitmix64: a well-mixed 64-bit value from `z`.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stream of random numbers from one seed (reproducible runs).
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    /// Below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// In `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// What one generated usage record measures, drawn by [`usage_mix`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measured {
    /// A call of `secs` seconds to `called`.
    Voice { secs: u64, called: String },
    /// One SMS to `called`.
    Sms { called: String },
    /// `bytes` of data on the `internet` APN.
    Data { bytes: u64 },
}

/// One record of the benchmarks' realistic mix: 50% voice (45% to French mobiles in national or
/// international form, 40% French fixed, 15% international; 30% under a minute, 50% up to five,
/// the rest up to half an hour), 25% SMS, 25% data; 3% roaming, mostly in Europe. Answers what
/// it measures and the visited network (MCC-MNC) when roaming.
pub fn usage_mix(r: &mut Rng) -> (Measured, Option<&'static str>) {
    let kind = r.below(100);
    let measured = if kind < 50 {
        let called = match r.below(100) {
            0..45 => {
                let n = r.range(10_000_000, 99_999_999);
                if r.below(2) == 0 { format!("0{}{n}", 6 + r.below(2)) } else { format!("+33{}{n}", 6 + r.below(2)) }
            }
            45..85 => format!("0{}{}", r.range(1, 5), r.range(10_000_000, 99_999_999)),
            85..92 => format!("+4420{}", r.range(10_000_000, 99_999_999)),
            92..97 => format!("0049301{}", r.range(1_000_000, 9_999_999)),
            _ => format!("+1212{}", r.range(1_000_000, 9_999_999)),
        };
        let secs = match r.below(100) {
            0..30 => r.range(1, 59),
            30..80 => r.range(60, 299),
            _ => r.range(300, 1_800),
        };
        Measured::Voice { secs, called }
    } else if kind < 75 {
        Measured::Sms { called: format!("+336{}", r.range(10_000_000, 99_999_999)) }
    } else {
        Measured::Data { bytes: r.range(1_000, 5_000_000) }
    };
    let visited = (r.below(100) < 3).then(|| {
        let visited = ["26201", "262-02", "21407", "22210", "20404", "310260", "23415"];
        visited[if r.below(100) < 80 { r.below(5) } else { 5 + r.below(2) } as usize]
    });
    (measured, visited)
}

/// `r` rounded, with thousands separators (`-12,345`).
pub fn thousands(r: f64) -> String {
    let s = format!("{:.0}", r);
    let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", s.as_str()));
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes a process has read and written through system calls (`rchar` and `wchar` of
/// `/proc/<pid>/io`; `pid` may be `self`): for bss-host, SQLite's reads and writes of its WAL and
/// database file, checkpoints included, plus its sockets. `None` where the file cannot be read.
pub fn io_bytes(pid: &str) -> Option<(u64, u64)> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| io.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok());
    Some((field("rchar:")?, field("wchar:")?))
}

/// bss-host's SQLite KV calls are synchronous, so the benchmark tools call them without an
/// executor.
pub use bss_host::kv::ready;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_bytes_counts_what_this_process_writes() {
        let (_, before) = io_bytes("self").expect("/proc/self/io is readable");
        let path = std::env::temp_dir().join(format!("bss-bench-io-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 64 << 10]).unwrap();
        let (_, after) = io_bytes("self").unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(after >= before + (64 << 10), "wchar {before} -> {after} after writing 64 KiB");
        assert_eq!(io_bytes("no-such-process"), None);
    }

    #[test]
    fn flags_numbers_and_separators() {
        let a = Args::parse(["run", "--n", "3", "--x=a b", "tail"].map(String::from).into_iter()).unwrap();
        assert_eq!(
            (a.str("x"), a.num::<u32>("n", 0).unwrap(), a.rest.clone()),
            (Some("a b"), 3, vec!["run".to_string(), "tail".into()])
        );
        assert!(a.req("missing").is_err() && a.num::<u32>("x", 0).is_err());
        assert!(Args::parse(["--dangling".to_string()].into_iter()).is_err());
        assert_eq!(
            (thousands(1234567.4), thousands(-1234.0), thousands(999.0)),
            ("1,234,567".into(), "-1,234".into(), "999".into())
        );
        let mut r = Rng(7);
        assert!((0..1000).map(|_| r.range(3, 5)).all(|v| (3..=5).contains(&v)));
    }
}
