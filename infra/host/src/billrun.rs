//! `bss-host bill-run` and `bss-host dunning-run`: start a bill run (or a dunning run over every
//! account) on a running host and show its progress as a bar — accounts done of the total,
//! failures (and a dunning run's actions), elapsed time and the estimate of what remains — until
//! it ends (or `--watch <id>` follows a run already started). Schedule them with cron, a systemd
//! timer or a Kubernetes CronJob (`infra/deploy/billrun-cronjob.yaml`,
//! `infra/deploy/dunning-cronjob.yaml`). Tested by `cargo test -p bss-host --test e2e_billing`
//! and `--test e2e_payments`.

use std::io::Write as _;
use std::time::Duration;

/// What `bill-run` and `dunning-run` share: where the host is, whose run, and how to follow it.
#[derive(clap::Args, Debug)]
pub struct Follow {
    /// The host's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "BSS_URL")]
    pub url: String,
    /// The tenant's API key.
    #[arg(long, env = "BSS_API_KEY")]
    pub api_key: String,
    /// Follow this run instead of starting one.
    #[arg(long)]
    pub watch: Option<String>,
    /// Seconds between two looks at the progress.
    #[arg(long, default_value_t = 1.0)]
    pub interval_secs: f64,
    /// Give up watching after this many seconds (the run goes on).
    #[arg(long, default_value_t = 86_400)]
    pub timeout_secs: u64,
}

/// Arguments of `bill-run`.
#[derive(clap::Args, Debug)]
pub struct BillRunArgs {
    #[command(flatten)]
    pub follow: Follow,
    /// Bill the accounts of this cycle day only (default: every account, each on its own cycle).
    #[arg(long)]
    pub cycle_day: Option<u32>,
    /// Start of the period to bill (YYYY-MM-DD; default: each account's last closed period).
    #[arg(long)]
    pub period_start: Option<String>,
}

/// Arguments of `dunning-run`.
#[derive(clap::Args, Debug)]
pub struct DunningRunArgs {
    #[command(flatten)]
    pub follow: Follow,
    /// The time the run acts at (RFC 3339; default: now).
    #[arg(long)]
    pub now: Option<String>,
    /// A file with the dunning policy as JSON (`{steps: [{afterDays, action}], minimumAmount}`;
    /// default: the built-in policy).
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,
}

const BAR_WIDTH: usize = 40;
const BASE: &str = "/tmf-api/customerBillManagement/v4";

/// One line of progress: `[#####-----] 120/400 accounts, 2 failed, 3.1 s, ~7 s left` — or, while
/// a run over every account is still queueing them, `120/~400 accounts` (the run's estimate, once
/// its first step counted them) or `120/10000+ accounts` (those queued so far).
/// A dunning run's status (it counts `accountsChecked`) adds its actions: `…, 7 actions, 2 failed, …`.
pub fn bar(status: &serde_json::Value) -> String {
    let n = |f: &str| status.get(f).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let queueing = status.get("accountsTotal").is_none();
    let estimated = queueing && status.get("accountsEstimated").is_some();
    let total = match (queueing, estimated) {
        (false, _) => n("accountsTotal"),
        (true, true) => n("accountsEstimated").max(n("accountsQueued")),
        (true, false) => n("accountsQueued"),
    };
    let dunning = status.get("accountsChecked").is_some();
    let (finished, failed) = if dunning {
        (n("accountsChecked"), n("failures"))
    } else {
        (n("accountsDone") + n("accountsSkipped") + n("accountsFailed"), n("accountsFailed"))
    };
    let actions = if dunning { format!(", {} actions", n("actionsTaken")) } else { String::new() };
    let filled = match total {
        0 if queueing => 0,
        0 => BAR_WIDTH,
        _ => (finished.min(total) as usize * BAR_WIDTH) / total as usize,
    };
    let left = match status.get("estimatedRemainingMs").and_then(serde_json::Value::as_u64) {
        Some(ms) => format!(", ~{:.0} s left", ms as f64 / 1000.0),
        None => String::new(),
    };
    format!(
        "[{}{}] {finished}/{}{total}{} accounts{actions}, {failed} failed, {:.1} s{left}",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled),
        if estimated { "~" } else { "" },
        if queueing && !estimated { "+" } else { "" },
        n("elapsedMs") as f64 / 1000.0,
    )
}

/// Runs `bill-run`; the run's final status on success.
pub fn run(a: BillRunArgs) -> anyhow::Result<serde_json::Value> {
    let mut body = serde_json::json!({});
    if let Some(d) = a.cycle_day {
        body["billCycleDay"] = d.into();
    }
    if let Some(p) = &a.period_start {
        body["periodStart"] = p.clone().into();
    }
    a.follow.start_and_follow("billRun", "bill run", body)
}

/// Runs `dunning-run` (a run over every account with a ledger); the run's final status on
/// success.
pub fn dunning(a: DunningRunArgs) -> anyhow::Result<serde_json::Value> {
    let mut body = serde_json::json!({});
    if let Some(now) = &a.now {
        body["now"] = now.clone().into();
    }
    if let Some(path) = &a.policy {
        let text = std::fs::read_to_string(path)?;
        body["policy"] = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the policy in {} is not JSON: {e}", path.display()))?;
    }
    a.follow.start_and_follow("dunningRun", "dunning run", body)
}

impl Follow {
    /// Starts a run (`POST <collection>` with `body`) unless `--watch` names one, then follows it.
    fn start_and_follow(
        &self,
        collection: &str,
        what: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let auth = format!("Bearer {}", self.api_key);
        let base = format!("{}{BASE}/{collection}", self.url.trim_end_matches('/'));
        let id = match &self.watch {
            Some(id) => id.clone(),
            None => {
                let run: serde_json::Value =
                    ureq::post(&base).set("Authorization", &auth).send_json(body).map_err(refused)?.into_json()?;
                run.get("id").and_then(serde_json::Value::as_str).unwrap_or_default().to_string()
            }
        };
        eprintln!("{what} {id}");
        follow(&base, &id, &auth, self.interval_secs, self.timeout_secs)
    }
}

/// An API's refusal as the operator should read it: the status and the error body's message
/// (`bad policy` rather than `status code 422`); other failures as they are.
fn refused(e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(code, response) => {
            let url = response.get_url().to_string();
            let body: serde_json::Value = response.into_json().unwrap_or_default();
            let message = body.get("message").and_then(serde_json::Value::as_str).unwrap_or("no message");
            anyhow::anyhow!("{url} answered {code}: {message}")
        }
        other => other.into(),
    }
}

/// Shows the progress of the run `base/id` until it ends; its final status.
fn follow(
    base: &str,
    id: &str,
    auth: &str,
    interval_secs: f64,
    timeout_secs: u64,
) -> anyhow::Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let status: serde_json::Value =
            ureq::get(&format!("{base}/{id}")).set("Authorization", auth).call().map_err(refused)?.into_json()?;
        eprint!("\r{}", bar(&status));
        let _ = std::io::stderr().flush();
        let state = status.get("state").and_then(serde_json::Value::as_str).unwrap_or_default();
        if state != "inProgress" {
            eprintln!();
            // A bill run lists its failures; a dunning run, the accounts it acted on or failed for.
            for f in status.get("failure").and_then(serde_json::Value::as_array).into_iter().flatten() {
                eprintln!("  failed: {} — {}", f["billingAccount"]["id"], f["reason"]);
            }
            let listed = status.get("accounts").and_then(serde_json::Value::as_array);
            for f in listed.into_iter().flatten().filter(|a| a.get("failure").is_some()) {
                eprintln!("  failed: {} — {}", f["billingAccount"]["id"], f["failure"]["message"]);
            }
            eprintln!("{state}");
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            eprintln!();
            anyhow::bail!("still in progress after {timeout_secs} s: follow it with --watch {id}");
        }
        std::thread::sleep(Duration::from_secs_f64(interval_secs.clamp(0.1, 60.0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_bar_shows_progress_failures_and_the_estimate() {
        let s = json!({"accountsTotal": 400, "accountsDone": 118, "accountsFailed": 2, "elapsedMs": 3100,
                       "estimatedRemainingMs": 7000});
        assert_eq!(
            bar(&s),
            format!("[{}{}] 120/400 accounts, 2 failed, 3.1 s, ~7 s left", "#".repeat(12), "-".repeat(28))
        );
        let empty = json!({"accountsTotal": 0});
        assert!(bar(&empty).starts_with(&format!("[{}]", "#".repeat(BAR_WIDTH))));
        let queueing = json!({"accountsQueued": 20000, "accountsDone": 5000, "elapsedMs": 1000});
        assert_eq!(
            bar(&queueing),
            format!("[{}{}] 5000/20000+ accounts, 0 failed, 1.0 s", "#".repeat(10), "-".repeat(30))
        );
        let dunning = json!({"accountsTotal": 400, "accountsChecked": 200, "actionsTaken": 7, "failures": 2,
                             "elapsedMs": 1000, "estimatedRemainingMs": 1000});
        assert_eq!(
            bar(&dunning),
            format!("[{}{}] 200/400 accounts, 7 actions, 2 failed, 1.0 s, ~1 s left", "#".repeat(20), "-".repeat(20))
        );
        let estimated = json!({"accountsQueued": 20000, "accountsEstimated": 40000, "accountsDone": 10000,
                               "elapsedMs": 1000, "estimatedRemainingMs": 3000});
        assert_eq!(
            bar(&estimated),
            format!("[{}{}] 10000/~40000 accounts, 0 failed, 1.0 s, ~3 s left", "#".repeat(10), "-".repeat(30))
        );
        let starting = json!({"accountsQueued": 0});
        assert!(
            bar(&starting).starts_with(&format!("[{}] 0/0+ accounts", "-".repeat(BAR_WIDTH))),
            "{}",
            bar(&starting)
        );
    }
}
