//! Prepaid money and online charging — the shape an OCS offers a network (Diameter Gy /
//! Nchf in spirit): reserve units before a session (the answer is the granted units), commit the
//! used units (rated like any record, settled against the reservation), release the rest.
//! Reservations expire by themselves (`validitySecs`, default 300): an expired one gives its
//! money back at the next look at the balance, so a network that never reports loses nothing.
//! Every change of an account's money happens under its shard's lease (the same one rating
//! takes), written with one `set_many`. The money rules are `bss_domain::usage::balance`.

use bss_domain::rating::{RatingContext, RawUsage, normalise};
use bss_domain::usage::Balance;
use bss_kit::ApiError;
use bss_kit::http::{Ctx, Reply};
use bss_kit::kv::KvBackend;
use bss_kit::resource::Env;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ingest::{Config, Pipeline};
use crate::model::{AccountState, Keys, storable_id};

/// Longest reservation validity.
pub const VALIDITY_SECS_MAX: u64 = 3_600;
/// Default reservation validity.
pub const VALIDITY_SECS_DEFAULT: u64 = 300;

/// A stored reservation: what the commit needs to rate the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationDoc {
    /// Id (also the id of the usage record its commit writes).
    pub id: String,
    /// The record as requested, without a quantity.
    pub raw: RawUsage,
    /// The account charged.
    pub account_id: String,
    /// Units granted (base units).
    pub granted_units: u64,
    /// Money held.
    #[serde(with = "bss_domain::json::decimal_str")]
    pub amount: Decimal,
    /// Currency.
    pub currency: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// `reserved`, `committed` or `released`.
    pub state: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReserveRequest {
    #[serde(default)]
    id: Option<String>,
    subscriber: String,
    service: String,
    requested_units: u64,
    #[serde(default)]
    called_number: Option<String>,
    #[serde(default)]
    visited_network: Option<String>,
    #[serde(default)]
    validity_secs: Option<u64>,
}

fn reservation_key(keys: &Keys, id: &str) -> String {
    // Kept beside the records: `usageReservation/<id>`.
    keys.usage(id).replacen("/usage/", "/usageReservation/", 1)
}

fn read<T: serde::de::DeserializeOwned, B: KvBackend>(kv: &B, key: &str) -> Result<Option<T>, ApiError> {
    Ok(kv.get(key)?.and_then(|b| serde_json::from_slice(&b).ok()))
}

fn bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(e.to_string()))
}

fn raw_with_units(raw: &RawUsage, units: u64) -> RawUsage {
    let mut r = raw.clone();
    let units = i64::try_from(units).unwrap_or(i64::MAX);
    match r.service.as_str() {
        "voice" => r.duration = Some(units),
        "data" => r.volume = Some(units),
        _ => r.events = Some(units),
    }
    r
}

fn money(amount: Decimal, currency: &str) -> Value {
    json!({"unit": currency, "value": amount})
}

fn reservation_json(r: &ReservationDoc) -> Value {
    json!({
        "id": r.id,
        "href": format!("{}/reservation/{}", crate::model::BASE, r.id),
        "@type": "Reservation",
        "state": r.state,
        "billingAccount": {"id": r.account_id},
        "grantedUnits": r.granted_units,
        "amount": money(r.amount, &r.currency),
        "expiresAt": r.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// `POST reservation`: grants as many of the requested units as the prepaid balance covers.
pub fn reserve<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, cfg: Config) -> Result<Reply, ApiError> {
    let req: ReserveRequest = ctx.json()?;
    let id = req.id.clone().unwrap_or_else(bss_kit::ids::new_id);
    if !storable_id(&id) {
        return Err(ApiError::bad_request(format!("id: {id:?} is not 1 to 128 characters of A-Z a-z 0-9 . _ : -")));
    }
    if req.requested_units == 0 {
        return Err(ApiError::unprocessable("requestedUnits: must be at least 1"));
    }
    let validity = req.validity_secs.unwrap_or(VALIDITY_SECS_DEFAULT);
    if validity == 0 || validity > VALIDITY_SECS_MAX {
        return Err(ApiError::unprocessable(format!("validitySecs: must be 1 to {VALIDITY_SECS_MAX}")));
    }
    let now = cfg.normalise.now;
    let raw = RawUsage {
        record_id: id.clone(),
        subscriber: req.subscriber,
        service: req.service,
        start_time: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        called_number: req.called_number,
        visited_network: req.visited_network,
        ..RawUsage::default()
    };
    let record = normalise(&raw_with_units(&raw, req.requested_units), &cfg.normalise)
        .map_err(|p| ApiError::unprocessable(bss_domain::catalog::describe(&p)))?;
    let mut pipeline = Pipeline::new(env, cfg);
    let guide = pipeline.guide_record(&record).map_err(|r| ApiError::unprocessable(r).with_code("NOT_CHARGEABLE"))?;
    if !guide.account.prepaid {
        return Err(ApiError::unprocessable(format!(
            "billingAccount {} is not prepaid: online charging reserves prepaid money",
            guide.account.id
        )));
    }
    let kv = env.store.backend();
    let keys = pipeline.keys().clone();
    let rkey = reservation_key(&keys, &id);
    let akey = keys.account(&guide.account.id);
    let skey = keys.state(&guide.bucket_owner, &guide.bucket_period);
    let doc = pipeline.under_lease(&guide.account.root, || {
        if let Some(existing) = read::<ReservationDoc, _>(kv, &rkey)? {
            // The same reservation asked again (a network retry): the same grant.
            return Ok(existing);
        }
        // Price the whole request against a copy of the period's buckets: allowances first.
        let state: Option<crate::model::PeriodState> =
            bss_commerce::usage_keys::get(kv, &keys, &skey)?.and_then(|b| bss_domain::stored::decode(&b).ok());
        let tid = guide.tariff.tariff().id.clone();
        let mut buckets = state
            .and_then(|s| s.buckets.into_iter().find(|b| b.tariff_id == tid))
            .filter(|b| b.allowances.len() == guide.tariff.fresh_buckets().allowances.len())
            .unwrap_or_else(|| guide.tariff.fresh_buckets());
        let ctx = RatingContext { time_zone: guide.account.tz, tax: guide.tax.clone(), ..RatingContext::default() };
        let priced = guide
            .tariff
            .rate(&record, &ctx, &mut buckets)
            .map_err(|e| ApiError::unprocessable(e.to_string()).with_code("NOT_CHARGEABLE"))?;
        let unit_price = priced.gross.amount / Decimal::from(req.requested_units);
        let mut account: AccountState = read(kv, &akey)?.unwrap_or_default();
        let balance = account.balance.get_or_insert_with(|| Balance::new(priced.gross.currency));
        let expires_at = now + chrono::Duration::seconds(validity as i64);
        let grant = balance
            .reserve(&id, req.requested_units, unit_price, expires_at, now)
            .map_err(|e| ApiError::unprocessable(e.to_string()).with_code("INSUFFICIENT_BALANCE"))?;
        let doc = ReservationDoc {
            id: id.clone(),
            raw: raw.clone(),
            account_id: guide.account.id.clone(),
            granted_units: grant.units,
            amount: grant.amount,
            currency: guide.account.currency.clone(),
            expires_at,
            state: "reserved".into(),
        };
        kv.set_many(&[(akey.clone(), bytes(&account)?), (rkey.clone(), bytes(&doc)?)])?;
        Ok(doc)
    })?;
    Reply::json(201, &reservation_json(&doc))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CommitRequest {
    used_units: u64,
}

/// `POST reservation/{id}/commit`: rates the used units as a usage record (id = the
/// reservation's) and settles it: the reservation is released and the charge debited, under
/// one lease. A repeated commit is a duplicate record: charged once.
pub fn commit<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, id: &str, cfg: Config) -> Result<Reply, ApiError> {
    let req: CommitRequest = ctx.json()?;
    let keys = Keys::new(&env.tenant.tenant_id);
    let kv = env.store.backend();
    let rkey = reservation_key(&keys, id);
    let mut doc: ReservationDoc = match storable_id(id) {
        true => read(kv, &rkey)?,
        false => None,
    }
    .ok_or_else(|| ApiError::not_found(format!("reservation {id} does not exist")))?;
    if req.used_units > doc.granted_units {
        return Err(ApiError::unprocessable(format!(
            "usedUnits: {} is more than the {} units granted",
            req.used_units, doc.granted_units
        )));
    }
    if doc.state == "released" {
        return Err(ApiError::conflict(format!("reservation {id} was released")));
    }
    let raw = raw_with_units(&doc.raw, req.used_units);
    let mut pipeline = Pipeline::new(env, cfg);
    pipeline.settles(id, id);
    let outcome = pipeline.ingest(vec![Ok(raw)])?;
    crate::publish(env.tenant, &outcome);
    let rated = outcome
        .docs
        .get(&0)
        .filter(|d| !d.status.is_held())
        .cloned()
        .or(crate::load(env, id)?.filter(|d| !d.status.is_held()));
    let Some(rated) = rated else {
        let reason = outcome.report.records.first().map(|r| r.reason.clone()).unwrap_or_default();
        return Err(
            ApiError::unprocessable(format!("the session could not be charged: {reason}")).with_code("NOT_CHARGEABLE")
        );
    };
    if doc.state != "committed" {
        doc.state = "committed".into();
        kv.set(&rkey, &bytes(&doc)?)?;
    }
    Reply::json(200, &json!({"reservation": reservation_json(&doc), "usage": crate::model::render(&rated)}))
}

/// `POST reservation/{id}/release`: gives the money back.
pub fn release<B: KvBackend>(env: &Env<'_, B>, id: &str, cfg: Config) -> Result<Reply, ApiError> {
    let keys = Keys::new(&env.tenant.tenant_id);
    let kv = env.store.backend();
    let rkey = reservation_key(&keys, id);
    let doc: ReservationDoc = match storable_id(id) {
        true => read(kv, &rkey)?,
        false => None,
    }
    .ok_or_else(|| ApiError::not_found(format!("reservation {id} does not exist")))?;
    let now = cfg.normalise.now;
    let mut pipeline = Pipeline::new(env, cfg);
    let akey = keys.account(&doc.account_id);
    let root = pipeline.account(&doc.account_id)?.map(|a| a.root.clone()).unwrap_or_else(|| doc.account_id.clone());
    let doc = pipeline.under_lease(&root, || {
        let mut doc: ReservationDoc = read(kv, &rkey)?.unwrap_or(doc);
        if doc.state != "reserved" {
            return Ok(doc);
        }
        let mut account: AccountState = read(kv, &akey)?.unwrap_or_default();
        if let Some(b) = account.balance.as_mut() {
            let _ = b.release(id, now);
        }
        doc.state = "released".into();
        kv.set_many(&[(akey.clone(), bytes(&account)?), (rkey.clone(), bytes(&doc)?)])?;
        Ok(doc)
    })?;
    Reply::json(200, &reservation_json(&doc))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopUp {
    billing_account: IdRef,
    amount: Value,
}

#[derive(Debug, Deserialize)]
struct IdRef {
    id: String,
}

/// `POST topupBalance`: adds money to a prepaid account, in its currency.
pub fn top_up<B: KvBackend>(env: &Env<'_, B>, ctx: &Ctx, cfg: Config) -> Result<Reply, ApiError> {
    let req: TopUp = ctx.json()?;
    let amount =
        bss_domain::catalog::money_from_json(&req.amount).map_err(|m| ApiError::bad_request(format!("amount: {m}")))?;
    if amount.amount <= Decimal::ZERO {
        return Err(ApiError::unprocessable("amount.value: must be positive"));
    }
    let now = cfg.normalise.now;
    let mut pipeline = Pipeline::new(env, cfg);
    let account = pipeline.account(&req.billing_account.id)?.ok_or_else(|| {
        ApiError::unprocessable(format!("billingAccount: {:?} does not exist", req.billing_account.id))
    })?;
    if !account.prepaid {
        return Err(ApiError::unprocessable(format!("billingAccount {} is not prepaid (accountType)", account.id)));
    }
    if amount.currency.code() != account.currency {
        return Err(ApiError::unprocessable(format!(
            "amount.unit: {} but account {} is in {}; no silent conversion",
            amount.currency.code(),
            account.id,
            account.currency
        )));
    }
    let kv = env.store.backend();
    let akey = pipeline.keys().account(&account.id);
    let state = pipeline.under_lease(&account.root, || {
        let mut state: AccountState = read(kv, &akey)?.unwrap_or_default();
        let balance = state.balance.get_or_insert_with(|| Balance::new(amount.currency));
        balance.top_up(amount.amount, now).map_err(|e| ApiError::unprocessable(e.to_string()))?;
        kv.set(&akey, &bytes(&state)?)?;
        Ok(state)
    })?;
    Reply::json(201, &balance_json(&account.id, &state, now))
}

fn balance_json(account: &str, state: &AccountState, now: DateTime<Utc>) -> Value {
    let mut v = json!({"id": account, "@type": "AccountBalance", "billingAccount": {"id": account}});
    if let Some(b) = &state.balance {
        let code = b.currency.code();
        let live: Vec<Value> = b
            .reservations
            .iter()
            .filter(|r| r.expires_at > now)
            .map(|r| json!({"id": r.id, "units": r.units, "amount": money(r.amount, code), "expiresAt": r.expires_at}))
            .collect();
        v["balance"] = money(b.amount, code);
        v["available"] = money(b.available(now), code);
        v["reservation"] = Value::Array(live);
    }
    if let Some(c) = &state.credit {
        v["credit"] = json!({
            "period": c.period,
            "creditLimit": money(c.limit.limit.amount, c.limit.limit.currency.code()),
            "spent": money(c.limit.spent, c.limit.limit.currency.code()),
            "thresholdsNotified": c.limit.notified,
        });
    }
    v
}

/// `GET accountBalance/{id}`.
pub fn balance<B: KvBackend>(env: &Env<'_, B>, id: &str, cfg: Config) -> Result<Reply, ApiError> {
    let keys = Keys::new(&env.tenant.tenant_id);
    if !storable_id(id) {
        return Err(ApiError::not_found(format!("accountBalance {id} does not exist")));
    }
    let state: Option<AccountState> = read(env.store.backend(), &keys.account(id))?;
    let state = state.ok_or_else(|| ApiError::not_found(format!("accountBalance {id} does not exist")))?;
    Reply::json(200, &balance_json(id, &state, cfg.normalise.now))
}
