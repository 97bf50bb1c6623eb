//! `usage`: usage mediation, rating and charging (TMF635), prepaid balances (TMF654 shape) and
//! online charging. Build with `cargo build --target wasm32-wasip2 --profile release-lto -p usage`; tested end
//! to end by `cargo test -p bss-host --test e2e_usage`. The rules are pure code in
//! `bss_domain::rating` (the kernel) and `bss_domain::usage` (CSV/JSON intake, exactly-once
//! bookkeeping, balances); this crate loads, calls them and stores (see [`ingest`] and [`model`]).
//!
//! Routes under `/tmf-api/usageManagement/v4` (tenant API key required):
//! - `POST usage`: one record, flat (`recordId`, `subscriber`, `service`, `startTime`,
//!   `duration`…) or TMF635 (`id`, `usageDate`, `usageType`, `usageCharacteristic`) → 201 the
//!   rated `Usage`; 200 the stored one for a duplicate; 409 for the same id with another payload;
//!   422 naming the problem for a rejected or held record (kept as `rejected`/`recycled` for
//!   correction).
//! - `POST usageBatch`: a JSON array or `text/csv` (header line; see `bss_domain::usage::csv`),
//!   at most [`ingest::BATCH_RECORDS_MAX`] records → 200 `{received, accepted, duplicates,
//!   conflicts, rejected, recycled, records: [{index, recordId, outcome, reason}]}`.
//! - `GET usage[/{id}]`: TMF list / one record (`status=rejected|recycled` lists the held ones
//!   from their index; other lists scan at most [`MAX_LISTED`] records).
//! - `PATCH usage/{id}`: corrects a held record (flat fields merged onto what was received) and
//!   re-submits it at once; 409 for a rated one (ratings change by rerating).
//! - `POST usageRecycle` `{ids?}`: re-submits held records (all `recycled` ones by default) —
//!   after the subscriber's order completed, a tariff was fixed or a prepaid top-up.
//! - `POST reservation` `{subscriber, service, requestedUnits, calledNumber?, validitySecs?}`,
//!   `POST reservation/{id}/commit` `{usedUnits}`, `POST reservation/{id}/release`: online
//!   charging on a prepaid balance (see [`ocs`]).
//! - `POST rerateRun` `{product: {id}, period}`: rates a product's period again with today's
//!   tariffs; stores the per-record differences as corrections (see [`rerate`]).
//!
//! Under `/tmf-api/prepayBalanceManagement/v4`: `POST topupBalance` `{billingAccount: {id},
//! amount: {unit, value}}` and `GET accountBalance/{accountId}`.
//!
//! Configuration (spin variables): `usage_country_code` (national numbers, default 33),
//! `usage_shards` (default 4: a batch commits once per shard it touches, and with fewer, larger
//! commits the store rewrites each page fewer times; change it only while no usage is ingested,
//! since accounts move between shard leases), `usage_lease_ttl_ms` (default 60000: above the
//! host's request timeout).

pub mod ingest;
pub mod model;
pub mod ocs;
pub mod rerate;

use bss_domain::rating::NormaliseConfig;
use bss_domain::usage::mediation::UsageStatus;
use bss_domain::usage::{parse_csv, parse_json_batch, raw_from_json};
use bss_kit::ApiError;
use bss_kit::http::Router;
use bss_kit::http::{Ctx, Reply, handler, method_not_allowed, not_found, param};
use bss_kit::kv::KvBackend;
use bss_kit::resource::{Env, list_reply, with_env};
use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};

use crate::ingest::{BATCH_RECORDS_MAX, Config, Outcome, Pipeline, read_many};
use crate::model::{BASE, Keys, UsageDoc, render};

bss_kit::export_http!(route);

/// Most records a plain list scans.
pub const MAX_LISTED: usize = 10_000;
/// Largest request body (a CSV batch of 10,000 records).
pub const BODY_MAX_BYTES: usize = 8 * 1024 * 1024;

fn variable<T: std::str::FromStr>(name: &str, default: T) -> T {
    spin_sdk::variables::get(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The configuration at `now`, from the component's variables.
pub fn config(now: chrono::DateTime<chrono::Utc>) -> Config {
    let cc: String = variable("usage_country_code", "33".to_string());
    Config {
        normalise: NormaliseConfig::new(&cc, now),
        shards: variable("usage_shards", 4u32).clamp(1, 1024),
        lease_ttl_ms: variable("usage_lease_ttl_ms", 60_000u64).max(1_000),
    }
}

fn route(req: Request) -> Response {
    let mut r = Router::for_request(&req);
    let item = format!("{BASE}/usage/:id");
    r.post(
        &format!("{BASE}/usage"),
        handler(|ctx, _| with_env(ctx, |env| post_one(env, ctx, config(chrono::Utc::now())))),
    );
    r.get(&format!("{BASE}/usage"), handler(|ctx, _| with_env(ctx, |env| list(env, ctx))));
    r.get(&item, handler(|ctx, p| with_env(ctx, |env| get_one(env, ctx, &param(p, "id")?))));
    r.patch(
        &item,
        handler(|ctx, p| with_env(ctx, |env| correct(env, ctx, &param(p, "id")?, config(chrono::Utc::now())))),
    );
    r.post(
        &format!("{BASE}/usageBatch"),
        handler(|ctx, _| with_env(ctx, |env| post_batch(env, ctx, config(chrono::Utc::now())))),
    );
    r.post(
        &format!("{BASE}/usageRecycle"),
        handler(|ctx, _| with_env(ctx, |env| recycle(env, ctx, config(chrono::Utc::now())))),
    );
    r.post(
        &format!("{BASE}/reservation"),
        handler(|ctx, _| with_env(ctx, |env| ocs::reserve(env, ctx, config(chrono::Utc::now())))),
    );
    r.post(
        &format!("{BASE}/reservation/:id/commit"),
        handler(|ctx, p| with_env(ctx, |env| ocs::commit(env, ctx, &param(p, "id")?, config(chrono::Utc::now())))),
    );
    r.post(
        &format!("{BASE}/reservation/:id/release"),
        handler(|ctx, p| with_env(ctx, |env| ocs::release(env, &param(p, "id")?, config(chrono::Utc::now())))),
    );
    r.post(
        &format!("{BASE}/rerateRun"),
        handler(|ctx, _| with_env(ctx, |env| rerate::run(env, ctx, config(chrono::Utc::now())))),
    );
    r.get(&format!("{BASE}/rerateRun/:id"), handler(|ctx, p| with_env(ctx, |env| rerate::get(env, &param(p, "id")?))));
    let prepay = "/tmf-api/prepayBalanceManagement/v4";
    r.post(
        &format!("{prepay}/topupBalance"),
        handler(|ctx, _| with_env(ctx, |env| ocs::top_up(env, ctx, config(chrono::Utc::now())))),
    );
    r.get(
        &format!("{prepay}/accountBalance/:id"),
        handler(|ctx, p| with_env(ctx, |env| ocs::balance(env, &param(p, "id")?, config(chrono::Utc::now())))),
    );
    r.any(&format!("{BASE}/..."), method_not_allowed);
    r.any("/...", not_found);
    r.handle(req)
}

fn check_size(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.body.len() > BODY_MAX_BYTES {
        return Err(ApiError::payload_too_large(format!(
            "the body is {} bytes; at most {BODY_MAX_BYTES}",
            ctx.body.len()
        )));
    }
    Ok(())
}

/// Publishes what a batch announces (thresholds); failures are logged (the records are stored).
pub fn publish(env_tenant: &bss_kit::Tenant, outcome: &Outcome) {
    for n in &outcome.notices {
        if let Err(e) =
            bss_kit::events::publish_event_keyed("usage", n.event_type, &env_tenant.tenant_id, &n.payload, Some(&n.key))
        {
            eprintln!("bss: publishing {}: {e}", n.event_type);
        }
    }
}

/// `POST usage`.
pub fn post_one<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, cfg: Config) -> Result<Reply, ApiError> {
    check_size(ctx)?;
    let body: Value = ctx.json()?;
    let raw = raw_from_json(&body).map_err(|p| ApiError::bad_request(p.to_string()))?;
    let outcome = Pipeline::new(env, cfg).ingest(vec![Ok(raw)])?;
    publish(env.tenant, &outcome);
    single_answer(env, outcome)
}

/// The answer to one record: 201 rated, 200 duplicate, 409 conflict, 422 rejected or held.
fn single_answer<B: KvBackend>(env: &Env<'_, B>, outcome: Outcome) -> Result<Reply, ApiError> {
    if let Some(doc) = outcome.docs.get(&0).filter(|d| d.status == UsageStatus::Rated) {
        return Reply::json(201, &render(doc));
    }
    let Some(r) = outcome.report.records.first() else {
        return Err(ApiError::internal("a record was neither rated nor reported"));
    };
    match r.outcome.as_str() {
        "duplicate" => {
            let id = r.record_id.clone().unwrap_or_default();
            let stored = load(env, &id)?.ok_or_else(|| ApiError::internal("a duplicate without its record"))?;
            Reply::json(200, &render(&stored))
        }
        "conflict" => {
            Err(ApiError::conflict(format!("usage {}: {}", r.record_id.clone().unwrap_or_default(), r.reason))
                .with_code("USAGE_ID_CONFLICT"))
        }
        outcome => Err(ApiError::unprocessable(format!(
            "usage {} {outcome}: {}",
            r.record_id.clone().unwrap_or_default(),
            r.reason
        ))
        .with_code(if outcome == "recycled" { "USAGE_HELD" } else { "USAGE_REJECTED" })),
    }
}

/// `POST usageBatch`: JSON array or CSV.
pub fn post_batch<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, cfg: Config) -> Result<Reply, ApiError> {
    check_size(ctx)?;
    let content_type = ctx.header("content-type").unwrap_or("application/json").to_ascii_lowercase();
    let batch = if content_type.starts_with("text/csv") {
        let text = std::str::from_utf8(&ctx.body).map_err(|_| ApiError::bad_request("the CSV body is not UTF-8"))?;
        parse_csv(text, BATCH_RECORDS_MAX)
    } else {
        let body: Value = ctx.json()?;
        parse_json_batch(&body, BATCH_RECORDS_MAX)
    }
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let outcome = Pipeline::new(env, cfg).ingest(batch)?;
    publish(env.tenant, &outcome);
    Reply::json(200, &outcome.report)
}

/// A stored record.
pub fn load<B: KvBackend>(env: &Env<'_, B>, id: &str) -> Result<Option<UsageDoc>, ApiError> {
    if !model::storable_id(id) {
        return Ok(None);
    }
    let keys = Keys::new(&env.tenant.tenant_id);
    Ok(env.store.backend().get(&keys.usage(id))?.and_then(|b| bss_domain::stored::decode(&b).ok()))
}

fn get_one<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, id: &str) -> Result<Reply, ApiError> {
    let doc = load(env, id)?.ok_or_else(|| ApiError::not_found(format!("usage {id} does not exist")))?;
    let query = bss_kit::list::ListQuery::parse(&ctx.query)?;
    Reply::json(200, &query.project(render(&doc)))
}

/// Ids under a key prefix (at most `max`).
fn ids_under<B: KvBackend>(env: &Env<'_, B>, prefix: &str, max: usize) -> Result<Vec<String>, ApiError> {
    Ok(env.store.list_keys(prefix, max)?.into_iter().map(|k| k[prefix.len()..].to_string()).collect())
}

fn docs<B: KvBackend>(env: &Env<'_, B>, ids: &[String]) -> Result<Vec<UsageDoc>, ApiError> {
    let keys = Keys::new(&env.tenant.tenant_id);
    let wanted: Vec<String> = ids.iter().map(|i| keys.usage(i)).collect();
    let found = read_many(env.store.backend(), &wanted)?;
    Ok(wanted.iter().filter_map(|k| found.get(k)).filter_map(|b| bss_domain::stored::decode(b).ok()).collect())
}

/// Held records (optionally only `status`).
pub fn held<B: KvBackend>(env: &Env<'_, B>, status: Option<UsageStatus>) -> Result<Vec<UsageDoc>, ApiError> {
    let keys = Keys::new(&env.tenant.tenant_id);
    let ids = ids_under(env, &keys.held_prefix(), MAX_LISTED)?;
    Ok(docs(env, &ids)?.into_iter().filter(|d| d.status.is_held() && status.is_none_or(|s| d.status == s)).collect())
}

fn list<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx) -> Result<Reply, ApiError> {
    let status = ctx.query_param("status");
    let rendered: Vec<Value> = match status.as_deref().and_then(UsageStatus::parse) {
        Some(s) if s.is_held() => held(env, Some(s))?.iter().map(render).collect(),
        _ => {
            let keys = Keys::new(&env.tenant.tenant_id);
            let ids = ids_under(env, &keys.usage_prefix(), MAX_LISTED)?;
            docs(env, &ids)?.iter().map(render).collect()
        }
    };
    list_reply(ctx, rendered)
}

/// `PATCH usage/{id}`: correct a held record and re-submit it.
fn correct<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, id: &str, cfg: Config) -> Result<Reply, ApiError> {
    check_size(ctx)?;
    let patch: Value = ctx.json()?;
    let Value::Object(fields) = patch else {
        return Err(ApiError::bad_request("the correction must be a JSON object of record fields"));
    };
    let doc = load(env, id)?.ok_or_else(|| ApiError::not_found(format!("usage {id} does not exist")))?;
    if !doc.status.is_held() {
        return Err(ApiError::conflict(format!(
            "usage {id} is {}: a rated record changes only by rerating",
            doc.status.as_str()
        ))
        .with_code("USAGE_NOT_HELD"));
    }
    let mut raw = serde_json::to_value(doc.raw.unwrap_or_default()).map_err(|e| ApiError::internal(e.to_string()))?;
    for (k, v) in fields {
        if k == "recordId" || k == "id" {
            continue;
        }
        raw[k] = v;
    }
    raw["recordId"] = json!(id);
    let raw = raw_from_json(&raw).map_err(|p| ApiError::bad_request(p.to_string()))?;
    let outcome = Pipeline::new(env, cfg).ingest(vec![Ok(raw)])?;
    publish(env.tenant, &outcome);
    match single_answer(env, outcome) {
        Ok(reply) if reply.status == 201 => Ok(Reply { status: 200, ..reply }),
        other => other,
    }
}

/// `POST usageRecycle`.
fn recycle<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, cfg: Config) -> Result<Reply, ApiError> {
    let body: Value = if ctx.body.is_empty() { json!({}) } else { ctx.json()? };
    let held = match body.get("ids").and_then(Value::as_array) {
        Some(ids) => {
            let ids: Vec<String> = ids.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
            if ids.len() > BATCH_RECORDS_MAX {
                return Err(ApiError::payload_too_large(format!("at most {BATCH_RECORDS_MAX} ids")));
            }
            docs(env, &ids)?.into_iter().filter(|d| d.status.is_held()).collect()
        }
        None => held(env, Some(UsageStatus::Recycled))?,
    };
    let batch: Vec<_> = held.into_iter().take(BATCH_RECORDS_MAX).filter_map(|d| d.raw).map(Ok).collect();
    let outcome = Pipeline::new(env, cfg).ingest(batch)?;
    publish(env.tenant, &outcome);
    Reply::json(200, &outcome.report)
}
