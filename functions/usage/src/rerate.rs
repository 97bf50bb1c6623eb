//! Rerating runs: after a tariff correction, a product's usage of one bill period is rated
//! again, in usage order from fresh buckets, with today's catalog. Each record whose charge
//! changes gets a correction `usageCorrection/<runId>/<recordId>` with the exact difference
//! (`bss_domain::rating::charge_delta`), which billing puts on the next bill — an issued bill is
//! never edited. The record keeps its previous rating beside the new one (`rerated`; a billed
//! record stays `billed` and only its correction is new). A prepaid account gets the difference
//! back (or debited, within its balance). All under the account's shard lease; the run
//! document `usageRerateRun/<runId>` is written last, with the totals.

use bss_domain::money::{Money, RoundingRule};
use bss_domain::rating::{RatingContext, rerate};
use bss_domain::usage::UsageTotals;
use bss_domain::usage::mediation::UsageStatus;
use bss_kit::ApiError;
use bss_kit::http::{Ctx, Reply};
use bss_kit::kv::{KvBackend, Versioned};
use bss_kit::resource::Env;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ingest::{Config, Pipeline, read_many};
use crate::model::{AccountState, Keys, PeriodState, UsageDoc, storable_id};

/// Most records one run rates again.
pub const RUN_RECORDS_MAX: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunRequest {
    product: IdRef,
    period: String,
}

#[derive(Debug, Deserialize)]
struct IdRef {
    id: String,
}

fn run_key(keys: &Keys, id: &str) -> String {
    keys.usage(id).replacen("/usage/", "/usageRerateRun/", 1)
}

fn money(m: &Money) -> Value {
    json!({"unit": m.currency.code(), "value": m.amount})
}

fn bytes<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(e.to_string()))
}

/// `POST rerateRun`.
pub fn run<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, cfg: Config) -> Result<Reply, ApiError> {
    let req: RunRequest = ctx.json()?;
    if !storable_id(&req.product.id) {
        return Err(ApiError::bad_request(format!("product.id: {:?} is not a valid id", req.product.id)));
    }
    if chrono::NaiveDate::parse_from_str(&req.period, "%Y-%m-%d").is_err() {
        return Err(ApiError::bad_request(format!(
            "period: {:?} is not a date (YYYY-MM-DD, the period's start)",
            req.period
        )));
    }
    let kv = env.store.backend();
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let product: Value = docs
        .get::<Value>("product", &req.product.id)?
        .map(|v: Versioned<Value>| v.data)
        .ok_or_else(|| ApiError::unprocessable(format!("product: {:?} does not exist", req.product.id)))?;
    let offering = product.pointer("/productOffering/id").and_then(Value::as_str).unwrap_or_default().to_string();
    let account_id = product.pointer("/billingAccount/id").and_then(Value::as_str).unwrap_or_default().to_string();
    let now = cfg.normalise.now;
    let mut pipeline = Pipeline::new(env, cfg);
    let account = pipeline
        .account(&account_id)?
        .ok_or_else(|| ApiError::unprocessable(format!("billingAccount: {account_id:?} does not exist")))?;
    if pipeline.shares_allowances(&offering)? {
        return Err(ApiError::conflict(format!(
            "product {}: its offering shares allowances across the account hierarchy, whose pool a \
             rerun of one product cannot replay; rerating pools is not supported yet",
            req.product.id
        ))
        .with_code("SHARED_ALLOWANCES"));
    }
    let keys = pipeline.keys().clone();
    let run_id = bss_kit::ids::new_id();
    let lease_account = account.root.clone();
    let report = pipeline.under_lease_mut(&lease_account, |pipeline| {
        let ids = bss_commerce::usage_keys::record_ids(env.store, &keys, &req.product.id, &req.period, RUN_RECORDS_MAX)?;
        let wanted: Vec<String> = ids.iter().map(|i| keys.usage(i)).collect();
        let found = read_many(kv, &wanted)?;
        let mut records: Vec<UsageDoc> =
            wanted.iter().filter_map(|k| found.get(k)).filter_map(|b| bss_domain::stored::decode(b).ok()).collect();
        records.retain(|d| d.rated.is_some() && d.record.is_some());
        records.sort_by(|a, b| {
            let (ra, rb) = (a.record.as_ref().expect("kept"), b.record.as_ref().expect("kept"));
            (ra.start, &a.id).cmp(&(rb.start, &b.id))
        });
        let mut buckets: Vec<bss_domain::rating::Buckets> = Vec::new();
        let mut writes = Vec::new();
        let mut corrections = Vec::new();
        let currency = records.first().and_then(|d| d.rated.as_ref()).map(|r| r.gross.currency);
        let mut total = currency.map(|c| (Money::zero(c), Money::zero(c), Money::zero(c)));
        // Every record's rating after the run, for the period's totals.
        let mut finals = Vec::with_capacity(records.len());
        for mut doc in records.clone() {
            let record = doc.record.clone().expect("kept");
            let old = doc.rated.clone().expect("kept");
            let (tariff, tax) = pipeline.tariff_of(&offering, &record).map_err(ApiError::unprocessable)?;
            let tid = tariff.tariff().id.clone();
            let slot = match buckets.iter().position(|b| b.tariff_id == tid) {
                Some(i) => i,
                None => {
                    buckets.push(tariff.fresh_buckets());
                    buckets.len() - 1
                }
            };
            let ctx = RatingContext { time_zone: account.tz, tax: tax.clone(), rounding: RoundingRule::HalfEven };
            let (new, delta) = rerate(&tariff, &ctx, &record, &old, &mut buckets[slot])
                .map_err(|e| ApiError::unprocessable(format!("record {}: {e}", doc.id)))?;
            if delta.gross.amount.is_zero() && delta.net.amount.is_zero() && new.tariff_version == old.tariff_version {
                finals.push(old);
                continue;
            }
            finals.push(new.clone());
            if let Some((n, t, g)) = total.as_mut() {
                let add = |a: Money, b: Money| a.checked_add(b).map_err(|e| ApiError::unprocessable(e.to_string()));
                *n = add(*n, delta.net)?;
                *t = add(*t, delta.tax)?;
                *g = add(*g, delta.gross)?;
            }
            let correction = json!({
                "id": format!("{run_id}.{}", doc.id),
                "rerateRun": {"id": run_id},
                "usage": {"id": doc.id},
                "product": {"id": req.product.id},
                "billingAccount": {"id": account.id},
                "period": req.period,
                "oldTariff": {"id": delta.old_tariff.0.as_str(), "version": delta.old_tariff.1.as_str()},
                "newTariff": {"id": delta.new_tariff.0.as_str(), "version": delta.new_tariff.1.as_str()},
                "oldAmount": {"taxExcluded": money(&old.net), "taxIncluded": money(&old.gross)},
                "newAmount": {"taxExcluded": money(&new.net), "taxIncluded": money(&new.gross)},
                "difference": {"taxExcluded": money(&delta.net), "tax": money(&delta.tax), "taxIncluded": money(&delta.gross)},
                "state": "pendingBilling",
                "delta": delta,
                "taxCategory": tax.as_ref().map(|t| t.rate().tax_category.clone()),
            });
            writes.push((keys.correction(&run_id, &doc.id), bytes(&correction)?));
            writes.push((keys.correction_by_account(&account.id, &run_id, &doc.id), bytes(&correction)?));
            corrections.push(correction);
            if doc.status != UsageStatus::Billed {
                doc.status = UsageStatus::Rerated;
            }
            doc.previous = Some(old);
            doc.rated = Some(new);
            doc.tax_percent = tax.as_ref().map(|t| t.rate().rate.to_string());
            doc.rated_at = Some(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            writes.push((keys.usage(&doc.id), bss_domain::stored::encode(&doc)));
        }
        // The period's buckets are what the replay left, and its totals the new ratings (empty
        // when they cannot be summed: billing then reads the records).
        let skey = keys.state(&req.product.id, &req.period);
        if !records.is_empty() {
            writes.push((skey, bss_domain::stored::encode(&PeriodState { buckets, records: records.len() as u64 })));
            // Complete when rebuilt from every record the index lists (none left out as unrated,
            // and the index not cut at the run's limit).
            let every_record = ids.len() < RUN_RECORDS_MAX && finals.len() == ids.len();
            let totals = match UsageTotals::of(&finals) {
                Ok(t) => UsageTotals { complete: every_record, ..t },
                Err(_) => UsageTotals::default(),
            };
            writes.push((keys.totals(&req.product.id, &req.period), bss_domain::stored::encode(&totals)));
        }
        let mut balance_adjusted = None;
        if let (true, Some((_, _, g))) = (account.prepaid, total) {
            let akey = keys.account(&account.id);
            let mut state: AccountState =
                kv.get(&akey)?.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            if let Some(b) = state.balance.as_mut() {
                let ok = if g.amount < Decimal::ZERO {
                    b.top_up(-g.amount, now).is_ok()
                } else if g.amount > Decimal::ZERO {
                    b.debit(g.amount, now).is_ok()
                } else {
                    true
                };
                balance_adjusted = Some(ok);
                writes.push((akey, bytes(&state)?));
            }
        }
        let run = json!({
            "id": run_id,
            "href": format!("{}/rerateRun/{run_id}", crate::model::BASE),
            "@type": "RerateRun",
            "state": "completed",
            "product": {"id": req.product.id},
            "period": req.period,
            "records": records.len(),
            "changed": corrections.len(),
            "difference": total.map(|(n, t, g)| json!({"taxExcluded": money(&n), "tax": money(&t), "taxIncluded": money(&g)})),
            "prepaidBalanceAdjusted": balance_adjusted,
            "correction": corrections,
            "completedAt": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        for chunk in writes.chunks(900) {
            kv.set_many(chunk)?;
        }
        kv.set(&run_key(&keys, &run_id), &bytes(&run)?)?;
        Ok(run)
    })?;
    Reply::json(201, &report)
}

/// `GET rerateRun/{id}`.
pub fn get<B: KvBackend>(env: &Env<'_, B>, id: &str) -> Result<Reply, ApiError> {
    let keys = Keys::new(&env.tenant.tenant_id);
    let run: Option<Value> = match storable_id(id) {
        true => env.store.backend().get(&run_key(&keys, id))?.and_then(|b| serde_json::from_slice(&b).ok()),
        false => None,
    };
    Reply::json(200, &run.ok_or_else(|| ApiError::not_found(format!("rerateRun {id} does not exist")))?)
}
