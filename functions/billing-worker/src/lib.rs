//! `billing-worker`: the queue consumer of bill runs and dunning runs (`billing.run`): queues the
//! batches of a run over every account a page at a time (`billing::run::plan_step`), and bills
//! every account of a batch with `billing::run::bill_batch` (or duns it, `billing::dunning::
//! dun_batch`) — exactly once per account, failures recorded on the run and never blocking the
//! batch, the batch counted on the run once; a store failure asks the queue for a retry (the
//! batch then finds what it did and counts it once). Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p billing-worker`; tested by
//! `cargo test -p bss-host --test e2e_billing` and `--test e2e_payments`.

use billing::run::Work;
use bss_kit::Tenant;
use bss_kit::events::Message;
use bss_kit::resource::Env;

bss_kit::export_consumer!(handle);

fn handle(msg: Message) -> Result<(), String> {
    let work: Work = match serde_json::from_slice(&msg.body) {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "billing-worker: dropping message {} on {}: not a bill-run step or batch ({e})",
                msg.id, msg.subject
            );
            return Ok(());
        }
    };
    let store = bss_kit::wasi_kv::open_store().map_err(|e| e.message)?;
    let tenant = Tenant { tenant_id: work.tenant_id().to_string(), key_id: "billing-worker".into() };
    let env = Env::new(&store, &tenant);
    billing::run::work(&env, &work, &msg.id).map_err(|e| format!("{} ({})", e.message, e.detail().unwrap_or_default()))
}
