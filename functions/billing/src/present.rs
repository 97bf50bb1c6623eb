//! Bill presentment: a stored bill as the document `bss_present` renders — a clean HTML page
//! (`GET customerBill/{id}/document`, or `?format=html`) and an A4 PDF (`?format=pdf` or
//! `Accept: application/pdf`), rendered inside the component (pure Rust, no system fonts).
//! Sections group the lines by product, usage is summarised per service with what the
//! allowances covered, taxes per category and rate; the operator is the tenant, the customer the
//! billing account. Tested by `cargo test -p bss-host --test e2e_billing`.

use std::collections::BTreeMap;

use bss_domain::billing::bill::{Bill, LineKind};
use bss_domain::rating::Service;
use bss_kit::ApiError;
use bss_kit::kv::KvBackend;
use bss_kit::resource::Env;
use bss_present::{Customer, Document, Line, Operator, Payment, Period, Section, Summary, TaxRow, Totals, UsageRow};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::bills::domain_bill;

fn quantity_text(service: Service, base_units: u64) -> String {
    match service {
        Service::Voice => format!("{}:{:02} min", base_units / 60, base_units % 60),
        Service::Sms => format!("{base_units} SMS"),
        Service::Data => format!("{:.1} MB", base_units as f64 / 1_000_000.0),
    }
}

/// A product's section title (its name) and subtitle (its number), read once per bill.
fn product_title<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    cache: &mut BTreeMap<String, (String, String)>,
) -> Result<(String, String), ApiError> {
    if let Some(t) = cache.get(id) {
        return Ok(t.clone());
    }
    let doc = env.store.tenant(&env.tenant.tenant_id).get::<Value>("product", id)?.map(|v| v.data);
    let name = doc.as_ref().and_then(|d| d.get("name")).and_then(Value::as_str).unwrap_or(id).to_string();
    let number = doc.as_ref().and_then(bss_commerce::subscribers::msisdn_of).unwrap_or_default();
    let t = (name, number);
    cache.insert(id.to_string(), t.clone());
    Ok(t)
}

/// The document of a bill.
pub fn document<B: KvBackend>(env: &Env<'_, B>, bill_doc: &Value) -> Result<Document, ApiError> {
    let bill: Bill = domain_bill(bill_doc)?;
    let operator = bss_kit::tenancy::get_tenant(env.store, &env.tenant.tenant_id).map(|t| t.name).unwrap_or_default();
    let account =
        env.store.tenant(&env.tenant.tenant_id).get::<Value>("billingAccount", &bill.account_id)?.map(|v| v.data);
    let customer_name =
        account.as_ref().and_then(|a| a.get("name")).and_then(Value::as_str).unwrap_or(&bill.account_id);
    // A consolidated bill: each line's account, for a section per rolled-up account.
    let mut account_of: BTreeMap<String, String> = BTreeMap::new();
    for part in bill_doc.get("rollUp").and_then(Value::as_array).into_iter().flatten() {
        let a = part.pointer("/billingAccount/id").and_then(Value::as_str).unwrap_or_default();
        for l in part.get("lineId").and_then(Value::as_array).into_iter().flatten() {
            account_of.insert(l.as_str().unwrap_or_default().to_string(), a.to_string());
        }
    }
    let mut by_product: BTreeMap<(String, String), Vec<Line>> = BTreeMap::new();
    let mut products: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Per service, over every product: (service, quantity, from allowances, records, net).
    let mut usage: BTreeMap<&str, (Service, u64, u64, u64, Decimal)> = BTreeMap::new();
    for l in &bill.lines {
        // The days are in the line's description already; the detail is the dates.
        let detail = match &l.period {
            Some(p) => bss_present::format_period(Period { from: p.from, to: p.to.pred_opt().unwrap_or(p.to) }),
            None => String::new(),
        };
        let detail = match &l.usage {
            Some(u) => {
                let sum = usage.entry(u.service.as_str()).or_insert((u.service, 0, 0, 0, Decimal::ZERO));
                sum.1 += u.quantity_base_units;
                sum.2 += u.allowance_base_units;
                sum.3 += u.records;
                sum.4 += l.net.amount;
                quantity_text(u.service, u.quantity_base_units)
            }
            None => detail,
        };
        let (title, subtitle) = match (l.kind, &l.product_id) {
            (LineKind::Correction, _) => ("Corrections".to_string(), String::new()),
            (_, Some(p)) => product_title(env, p, &mut products)?,
            _ => ("Account".to_string(), String::new()),
        };
        let subtitle = match account_of.get(&l.id) {
            Some(a) if subtitle.is_empty() => format!("Account {a}"),
            Some(a) => format!("Account {a} · {subtitle}"),
            None => subtitle,
        };
        by_product.entry((subtitle, title)).or_default().push(Line {
            description: l.description.clone(),
            detail,
            net: l.net.amount,
            tax_rate: l.tax_rate,
            tax: l.tax.amount,
            gross: l.gross.amount,
        });
    }
    let sections = by_product
        .into_iter()
        .map(|((subtitle, title), lines)| Section { title, subtitle: Some(subtitle).filter(|s| !s.is_empty()), lines })
        .collect();
    let number = bill.bill_no.clone().unwrap_or_else(|| format!("DRAFT {}", bill.id));
    Ok(Document {
        lang: "en".into(),
        operator: Operator { name: operator, address: Vec::new(), vat_id: None, logo_text: None, contact: Vec::new() },
        bill_number: number.clone(),
        issue_date: bill.bill_date,
        due_date: bill.due_date,
        period: Period { from: bill.period.start, to: bill.period.end.pred_opt().unwrap_or(bill.period.end) },
        customer: Customer {
            name: customer_name.to_string(),
            account_id: bill.account_id.clone(),
            address: Vec::new(),
            vat_id: None,
        },
        currency: bill.currency,
        summary: Summary {
            previous_balance: bill.previous_balance.amount,
            payments: bill.refunds.amount - bill.payments.amount,
            credits: -bill.credits.amount,
            new_charges: bill.total.amount,
            amount_due: bill.amount_due.amount,
        },
        sections,
        usage_by_service: usage
            .into_values()
            .map(|(service, quantity, included, records, net)| UsageRow {
                service: service.as_str().to_string(),
                quantity: format!("{} ({records} records)", quantity_text(service, quantity)),
                included: quantity_text(service, included),
                net,
            })
            .collect(),
        tax_summary: bill
            .tax_summary
            .iter()
            .map(|t| TaxRow {
                category: t.tax_category.clone(),
                jurisdiction: t.jurisdiction.clone().unwrap_or_default(),
                rate: t.rate,
                base: t.taxable.amount,
                tax: t.tax.amount,
            })
            .collect(),
        totals: Totals { net: bill.subtotal.amount, tax: bill.tax_total.amount, gross: bill.total.amount },
        payment: Payment {
            iban: None,
            bic: None,
            reference: number,
            pay_online_url: None,
            instructions: vec![format!("Pay by the due date, quoting the reference; account {}.", bill.account_id)],
        },
        notes: Vec::new(),
    })
}

#[cfg(feature = "component")]
/// Registers `GET customerBill/{id}/document`.
pub fn register(r: &mut bss_kit::http::Router) {
    use bss_kit::http::{Reply, handler, param};
    use bss_kit::resource::with_env;
    r.get(
        &format!("{}/customerBill/:id/document", crate::bills::BASE),
        handler(|ctx, p| {
            with_env(ctx, |env| {
                let doc = env.resources(crate::bills::BILL).get(&param(p, "id")?)?.data;
                let document = document(env, &doc)?;
                let accept = ctx.header("accept").unwrap_or_default();
                let pdf = match ctx.query_param("format").as_deref() {
                    Some("pdf") => true,
                    Some("html") | None => accept.contains("application/pdf") && !accept.contains("text/html"),
                    Some(other) => return Err(ApiError::bad_request(format!("format: {other:?} is not html or pdf"))),
                };
                let unrenderable =
                    |e: bss_present::Error| ApiError::unprocessable(format!("the bill cannot be rendered: {e}"));
                if pdf {
                    let bytes = bss_present::pdf(&document).map_err(unrenderable)?;
                    Ok(Reply::new(200, bytes).with_header("content-type", "application/pdf"))
                } else {
                    let html = bss_present::html(&document).map_err(unrenderable)?;
                    Ok(Reply::new(200, html.into_bytes()).with_header("content-type", "text/html; charset=utf-8"))
                }
            })
        }),
    );
}
