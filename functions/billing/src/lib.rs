//! `billing`: bill runs, bills and their lines (TMF678), on-demand bills. Build with `cargo build
//! --target wasm32-wasip2 --profile release-lto -p billing`; tested end to end by `cargo test -p bss-host
//! --test e2e_billing`. The rules are pure code in `bss_domain::billing` (periods and proration,
//! bills, roll-up, ledger, dunning, numbering); [`bills`] gathers, builds and stores one bill
//! exactly once, [`run`] fans a bill run out over the queue to `billing-worker`.
//!
//! Routes under `/tmf-api/customerBillManagement/v4` (tenant API key required):
//! - `POST billRun` `{billCycleDay?, periodStart?, accounts?, validate?}` → 201 the run;
//!   `GET billRun/{id}`: progress (done / total, failures with reasons, elapsed, estimated
//!   remaining); `POST billRun/{id}/retry`: re-bills the failed accounts.
//! - `GET customerBill[/{id}]`: TMF lists / one bill (the computation whole under `bill`);
//!   `PATCH customerBill/{id}` `{state}`: `onHold`, `validated` (numbers and posts a draft),
//!   `sent`; issued bills are otherwise immutable (corrections are credit notes).
//! - `GET appliedCustomerBillingRate?bill.id=<id>` / `GET appliedCustomerBillingRate/{billId}~{n}`:
//!   the lines.
//! - `POST customerBillOnDemand` `{billingAccount: {id}}` → 201 the bill of the account's current
//!   period up to now (e.g. on termination); the cycle run later finds it and bills nothing twice.
//! - `GET customerBill/{id}/document[?format=html|pdf]`: presentment ([`present`]).
//! - `POST creditNote`, `GET creditNote[/{id}]`, `GET billingAccountBalance/{accountId}`: see
//!   [`payments`]; `POST dunningRun` (daily, by cron; over every account it is queued like a bill
//!   run), `GET dunningRun[/{id}]`: see [`dunning`].
//!
//! Under `/tmf-api/paymentManagement/v4` (TMF676): `POST payment`, `POST refund`, `GET
//! payment[/{id}]`, `GET refund[/{id}]` — allocated by the account's ledger ([`payments`]).

pub mod bills;
pub mod dunning;
pub mod payments;
pub mod present;
pub mod run;

use bss_kit::ApiError;
use bss_kit::http::{Ctx, Reply};
use bss_kit::kv::KvBackend;
use bss_kit::resource::Env;
use serde_json::{Value, json};

use crate::bills::{BASE, BILL, domain_bill};

/// `PATCH customerBill/{id}`: a state change only.
pub fn patch_bill<B: KvBackend>(
    env: &Env<'_, B>,
    ctx: &Ctx,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Reply, ApiError> {
    use bss_domain::billing::number::BillState;
    let body: Value = ctx.json()?;
    let Some(obj) = body.as_object() else { return Err(ApiError::bad_request("the body must be a JSON object")) };
    if obj.keys().any(|k| k != "state") {
        return Err(ApiError::conflict(
            "an issued bill is immutable: only its state changes (corrections are credit notes)",
        )
        .with_code("BILL_IMMUTABLE"));
    }
    let target = obj
        .get("state")
        .and_then(Value::as_str)
        .and_then(BillState::parse)
        .ok_or_else(|| ApiError::bad_request("state: one of new, onHold, validated, sent"))?;
    let current = env.resources(BILL).get(id)?.data;
    let bill = domain_bill(&current)?;
    bill.state.transition(target).map_err(|e| ApiError::conflict(e.to_string()).with_code("INVALID_TRANSITION"))?;
    let account = bills::account(env, &bill.account_id)?;
    let doc = match target {
        BillState::Validated => bills::issue(env, &account, id, now)?,
        BillState::OnHold | BillState::Sent | BillState::New => {
            let change = env.resources(BILL).modify(env, &bss_kit::resource::NoHooks, id, |d| {
                let mut next = d.clone();
                let mut b = domain_bill(d)?;
                b.state = b.state.transition(target).map_err(|e| ApiError::conflict(e.to_string()))?;
                next["state"] = json!(target.as_str());
                next["bill"] = serde_json::to_value(&b).map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(next)
            })?;
            change.after.unwrap_or_default()
        }
        other => {
            return Err(ApiError::conflict(format!("{} comes from payments, not from a PATCH", other.as_str()))
                .with_code("INVALID_TRANSITION"));
        }
    };
    Reply::json(200, &doc)
}

/// The lines of bills as TMF678 `AppliedCustomerBillingRate`s.
pub fn lines_of(doc: &Value) -> Result<Vec<Value>, ApiError> {
    let bill = domain_bill(doc)?;
    let money = bills::money;
    Ok(bill
        .lines
        .iter()
        .enumerate()
        .map(|(n, l)| {
            let id = format!("{}~{n}", bill.id);
            json!({
                "id": id,
                "href": format!("{BASE}/appliedCustomerBillingRate/{id}"),
                "@type": "AppliedCustomerBillingRate",
                "name": l.description,
                "type": l.kind,
                "lineId": l.id,
                "date": bill.bill_date.to_string(),
                "isBilled": !bill.state.is_draft(),
                "bill": {"id": bill.id},
                "billingAccount": {"id": bill.account_id},
                "product": l.product_id.as_ref().map(|p| json!({"id": p})),
                "periodCoverage": l.period.as_ref().map(|p| json!({"startDateTime": p.from.to_string(), "endDateTime": p.to.to_string()})),
                "proration": l.proration,
                "quantity": l.quantity,
                "usage": l.usage,
                "taxExcludedAmount": money(&l.net),
                "taxIncludedAmount": money(&l.gross),
                "appliedTax": [{"taxCategory": l.tax_category, "taxRate": l.tax_rate, "taxAmount": money(&l.tax)}],
            })
        })
        .collect())
}

#[cfg(feature = "component")]
mod component {
    use super::*;
    use bss_kit::http::Router;
    use bss_kit::http::{handler, method_not_allowed, not_found, param};
    use bss_kit::resource::{list_reply, routes, with_env};
    use spin_sdk::http::{Request, Response};

    bss_kit::export_http!(route);

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    fn route(req: Request) -> Response {
        let mut r = Router::for_request(&req);
        r.post(
            &format!("{BASE}/billRun"),
            handler(|ctx, _| with_env(ctx, |env| Reply::json(201, &run::start(env, ctx.json()?, now())?))),
        );
        r.get(&format!("{BASE}/billRun"), handler(|ctx, _| with_env(ctx, |env| routes::list(env, run::RUN, ctx))));
        r.get(
            &format!("{BASE}/billRun/:id"),
            handler(|ctx, p| with_env(ctx, |env| Reply::json(200, &run::status(env, &param(p, "id")?, now())?))),
        );
        r.post(
            &format!("{BASE}/billRun/:id/retry"),
            handler(|ctx, p| with_env(ctx, |env| Reply::json(200, &run::retry(env, &param(p, "id")?)?))),
        );
        r.get(&format!("{BASE}/customerBill"), handler(|ctx, _| with_env(ctx, |env| routes::list(env, BILL, ctx))));
        r.get(
            &format!("{BASE}/customerBill/:id"),
            handler(|ctx, p| with_env(ctx, |env| routes::get(env, BILL, ctx, &param(p, "id")?))),
        );
        r.patch(
            &format!("{BASE}/customerBill/:id"),
            handler(|ctx, p| with_env(ctx, |env| patch_bill(env, ctx, &param(p, "id")?, now()))),
        );
        r.get(
            &format!("{BASE}/appliedCustomerBillingRate"),
            handler(|ctx, _| {
                with_env(ctx, |env| {
                    let bill = ctx.query_param("bill.id").ok_or_else(|| {
                        ApiError::bad_request("bill.id: lines are listed per bill (?bill.id=<customerBill id>)")
                    })?;
                    let doc = env.resources(BILL).get(&bill)?.data;
                    let query: String =
                        ctx.query.split('&').filter(|p| !p.starts_with("bill.id=")).collect::<Vec<_>>().join("&");
                    let ctx = Ctx { query, ..ctx.clone() };
                    list_reply(&ctx, lines_of(&doc)?)
                })
            }),
        );
        r.get(
            &format!("{BASE}/appliedCustomerBillingRate/:id"),
            handler(|ctx, p| {
                with_env(ctx, |env| {
                    let id = param(p, "id")?;
                    let (bill, _) = id.rsplit_once('~').ok_or_else(|| {
                        ApiError::not_found(format!("appliedCustomerBillingRate {id} does not exist"))
                    })?;
                    let doc = env.resources(BILL).get(bill)?.data;
                    let line = lines_of(&doc)?.into_iter().find(|l| l["id"] == id.as_str()).ok_or_else(|| {
                        ApiError::not_found(format!("appliedCustomerBillingRate {id} does not exist"))
                    })?;
                    Reply::json(200, &line)
                })
            }),
        );
        r.post(
            &format!("{BASE}/customerBillOnDemand"),
            handler(|ctx, _| {
                with_env(ctx, |env| {
                    let body: Value = ctx.json()?;
                    let account = body
                        .pointer("/billingAccount/id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ApiError::bad_request("billingAccount.id: which account to bill"))?;
                    let facts = bills::account(env, account)?;
                    let at = now();
                    let period = bss_domain::billing::period::BillPeriod::at(at, facts.bill_cycle_day, facts.tz);
                    let doc = bills::bill_account(env, account, Some(period), at, None, true, None)?;
                    Reply::json(201, &doc)
                })
            }),
        );
        crate::payments::register(&mut r);
        crate::dunning::register(&mut r);
        crate::present::register(&mut r);
        r.any(&format!("{BASE}/..."), method_not_allowed);
        r.any(&format!("{}/...", crate::payments::BASE), method_not_allowed);
        r.any("/...", not_found);
        r.handle(req)
    }
}
