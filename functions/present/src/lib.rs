//! `bss-present`: bill presentment. One bill, already computed and rounded, as a [`Document`];
//! [`html`] renders it as a self-contained printable HTML5 page and [`pdf`] as an A4 PDF (written
//! with `pdf-writer`, the standard Helvetica fonts, no embedding, no I/O: builds for
//! `wasm32-wasip2`). Test with `cargo test -p bss-present` (the PDF image test renders with
//! `pdftoppm` from poppler-utils when it is installed and says it skipped when not).
//!
//! The model is this crate's own: billing maps its bill into a [`Document`] (serde, camelCase; a
//! full example is `tests/sample.json`). Nothing here computes money: amounts are printed as given,
//! with the currency's minor digits; only section subtotals are sums of their (exact) lines.
//! Documents are bounded ([`LINES_MAX`] and the other `*_MAX` consts); [`check`] says which
//! limit a document breaks and both renderers call it first.

use bss_domain::money::Currency;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

mod html;
mod pdf;
mod winansi;

pub use html::html;
pub use pdf::pdf;

/// Charge lines in all sections together.
pub const LINES_MAX: usize = 2_000;
/// Sections (one per subscription, child account, one-off charges…).
pub const SECTIONS_MAX: usize = 100;
/// Rows of the usage-by-service table.
pub const USAGE_ROWS_MAX: usize = 64;
/// Rows of the tax summary.
pub const TAX_ROWS_MAX: usize = 32;
/// Lines of one postal address (operator or customer).
pub const ADDRESS_LINES_MAX: usize = 8;
/// Free-text payment instructions.
pub const INSTRUCTIONS_MAX: usize = 8;
/// Notes printed at the end of the bill.
pub const NOTES_MAX: usize = 16;
/// Characters of one short text (a name, a description, an address line, a URL…).
pub const TEXT_CHARS_MAX: usize = 300;
/// Characters of one note or payment instruction (a paragraph).
pub const PARAGRAPH_CHARS_MAX: usize = 1_000;
/// PDF pages: a document within the other limits stays far below this (it is checked anyway).
pub const PAGES_MAX: usize = 500;

/// One bill as it is shown to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// BCP 47 language of the texts (the HTML `lang`); `en` when absent. Labels are English.
    #[serde(default = "default_lang")]
    pub lang: String,
    pub operator: Operator,
    pub bill_number: String,
    pub issue_date: NaiveDate,
    pub due_date: NaiveDate,
    pub period: Period,
    pub customer: Customer,
    /// Every amount of the document is in this currency and already rounded to its minor unit.
    pub currency: Currency,
    pub summary: Summary,
    #[serde(default)]
    pub sections: Vec<Section>,
    #[serde(default)]
    pub usage_by_service: Vec<UsageRow>,
    #[serde(default)]
    pub tax_summary: Vec<TaxRow>,
    pub totals: Totals,
    pub payment: Payment,
    #[serde(default)]
    pub notes: Vec<String>,
}

fn default_lang() -> String {
    "en".to_string()
}

/// Who issues the bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operator {
    pub name: String,
    #[serde(default)]
    pub address: Vec<String>,
    #[serde(default)]
    pub vat_id: Option<String>,
    /// A word mark printed as the logo (no images: nothing to fetch or embed).
    #[serde(default)]
    pub logo_text: Option<String>,
    /// Contact lines (phone, web site) under the address.
    #[serde(default)]
    pub contact: Vec<String>,
}

/// Who the bill is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub name: String,
    pub account_id: String,
    #[serde(default)]
    pub address: Vec<String>,
    #[serde(default)]
    pub vat_id: Option<String>,
}

/// The billing period, both days included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// The account summary. Each amount is signed as it counts towards the amount due, so payments
/// and credits are normally negative and `amount_due` is the sum of the four others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub previous_balance: Decimal,
    pub payments: Decimal,
    pub credits: Decimal,
    pub new_charges: Decimal,
    pub amount_due: Decimal,
}

/// A group of charge lines: a subscription, a child account, one-off charges…
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Section {
    pub title: String,
    /// E.g. the child account or the phone number the section is for.
    #[serde(default)]
    pub subtitle: Option<String>,
    #[serde(default)]
    pub lines: Vec<Line>,
}

/// One charge (or credit, with negative amounts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub description: String,
    /// The period or the quantity charged, as text (`1 Mar – 14 Mar`, `42 min`).
    #[serde(default)]
    pub detail: String,
    pub net: Decimal,
    /// Percent: `20` is 20 %.
    pub tax_rate: Decimal,
    pub tax: Decimal,
    pub gross: Decimal,
}

/// Usage of one service over the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    pub service: String,
    /// Quantity used, as text (`312 min`, `18.4 GB`).
    pub quantity: String,
    /// How much of it the allowances covered, as text (`300 of 300 min`).
    #[serde(default)]
    pub included: String,
    /// What the rest cost, before tax.
    pub net: Decimal,
}

/// Tax per category and jurisdiction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaxRow {
    pub category: String,
    pub jurisdiction: String,
    /// Percent: `5.5` is 5.5 %.
    pub rate: Decimal,
    pub base: Decimal,
    pub tax: Decimal,
}

/// The bill's new charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub net: Decimal,
    pub tax: Decimal,
    pub gross: Decimal,
}

/// How to pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    #[serde(default)]
    pub iban: Option<String>,
    #[serde(default)]
    pub bic: Option<String>,
    /// What to quote with a transfer.
    pub reference: String,
    /// `https://` (or `http://`), ASCII (percent-encoded): anything else is refused by [`check`].
    #[serde(default)]
    pub pay_online_url: Option<String>,
    /// Free text, e.g. that the amount is collected by direct debit on a given day.
    #[serde(default)]
    pub instructions: Vec<String>,
}

/// Why a document cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{what}: {count} is over the limit of {max}")]
    TooMany { what: &'static str, count: usize, max: usize },
    #[error("{field}: {chars} characters is over the limit of {max}")]
    TooLong { field: String, chars: usize, max: usize },
    #[error("payment.payOnlineUrl: only ASCII http:// and https:// links are printed")]
    BadUrl,
    #[error("the PDF would have {pages} pages, over the limit of {max}")]
    TooManyPages { pages: usize, max: usize },
}

/// Whether `doc` is within every limit; [`html`] and [`pdf`] call it first.
pub fn check(doc: &Document) -> Result<(), Error> {
    let lines: usize = doc.sections.iter().map(|s| s.lines.len()).sum();
    count("sections", doc.sections.len(), SECTIONS_MAX)?;
    count("lines", lines, LINES_MAX)?;
    count("usageByService", doc.usage_by_service.len(), USAGE_ROWS_MAX)?;
    count("taxSummary", doc.tax_summary.len(), TAX_ROWS_MAX)?;
    count("operator.address", doc.operator.address.len(), ADDRESS_LINES_MAX)?;
    count("operator.contact", doc.operator.contact.len(), ADDRESS_LINES_MAX)?;
    count("customer.address", doc.customer.address.len(), ADDRESS_LINES_MAX)?;
    count("payment.instructions", doc.payment.instructions.len(), INSTRUCTIONS_MAX)?;
    count("notes", doc.notes.len(), NOTES_MAX)?;

    let short = |field: &dyn Fn() -> String, text: &str| length(field, text, TEXT_CHARS_MAX);
    let singles = [
        ("lang", Some(&doc.lang)),
        ("operator.name", Some(&doc.operator.name)),
        ("operator.vatId", doc.operator.vat_id.as_ref()),
        ("operator.logoText", doc.operator.logo_text.as_ref()),
        ("billNumber", Some(&doc.bill_number)),
        ("customer.name", Some(&doc.customer.name)),
        ("customer.accountId", Some(&doc.customer.account_id)),
        ("customer.vatId", doc.customer.vat_id.as_ref()),
        ("payment.iban", doc.payment.iban.as_ref()),
        ("payment.bic", doc.payment.bic.as_ref()),
        ("payment.reference", Some(&doc.payment.reference)),
        ("payment.payOnlineUrl", doc.payment.pay_online_url.as_ref()),
    ];
    for (field, text) in singles {
        if let Some(text) = text {
            short(&|| field.to_string(), text)?;
        }
    }
    let lists = [
        ("operator.address", &doc.operator.address),
        ("operator.contact", &doc.operator.contact),
        ("customer.address", &doc.customer.address),
    ];
    for (field, list) in lists {
        for (i, text) in list.iter().enumerate() {
            short(&|| format!("{field}[{i}]"), text)?;
        }
    }
    for (i, s) in doc.sections.iter().enumerate() {
        short(&|| format!("sections[{i}].title"), &s.title)?;
        short(&|| format!("sections[{i}].subtitle"), s.subtitle.as_deref().unwrap_or_default())?;
        for (j, l) in s.lines.iter().enumerate() {
            short(&|| format!("sections[{i}].lines[{j}].description"), &l.description)?;
            short(&|| format!("sections[{i}].lines[{j}].detail"), &l.detail)?;
        }
    }
    for (i, u) in doc.usage_by_service.iter().enumerate() {
        short(&|| format!("usageByService[{i}].service"), &u.service)?;
        short(&|| format!("usageByService[{i}].quantity"), &u.quantity)?;
        short(&|| format!("usageByService[{i}].included"), &u.included)?;
    }
    for (i, t) in doc.tax_summary.iter().enumerate() {
        short(&|| format!("taxSummary[{i}].category"), &t.category)?;
        short(&|| format!("taxSummary[{i}].jurisdiction"), &t.jurisdiction)?;
    }
    for (i, text) in doc.payment.instructions.iter().enumerate() {
        length(&|| format!("payment.instructions[{i}]"), text, PARAGRAPH_CHARS_MAX)?;
    }
    for (i, text) in doc.notes.iter().enumerate() {
        length(&|| format!("notes[{i}]"), text, PARAGRAPH_CHARS_MAX)?;
    }
    if let Some(url) = &doc.payment.pay_online_url
        && !is_web_link(url)
    {
        return Err(Error::BadUrl);
    }
    Ok(())
}

fn count(what: &'static str, count: usize, max: usize) -> Result<(), Error> {
    if count > max {
        return Err(Error::TooMany { what, count, max });
    }
    Ok(())
}

/// `field` names the text only when it is too long (no allocation per line otherwise).
fn length(field: &dyn Fn() -> String, text: &str, max: usize) -> Result<(), Error> {
    let chars = text.chars().count();
    if chars > max {
        return Err(Error::TooLong { field: field(), chars, max });
    }
    Ok(())
}

/// A link we are willing to print as a link: http(s), ASCII (a PDF URI is 7-bit), no spaces or
/// control characters.
fn is_web_link(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")) && url.bytes().all(|b| b.is_ascii_graphic())
}

/// `amount` with the currency's minor digits and thousands separators: `-1,234.50`.
pub fn format_amount(amount: Decimal, currency: Currency) -> String {
    let digits = currency.minor_digits();
    let rounded = amount.round_dp(digits);
    let negative = rounded.is_sign_negative() && !rounded.is_zero();
    let mut plain = rounded.abs();
    plain.rescale(digits);
    let text = plain.to_string();
    let (int, frac) = text.split_once('.').map_or((text.as_str(), ""), |(i, f)| (i, f));
    let mut out = String::with_capacity(text.len() + text.len() / 3 + 1);
    if negative {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// `amount` as [`format_amount`] followed by the currency code: `1,234.50 EUR`.
pub fn format_money(amount: Decimal, currency: Currency) -> String {
    format!("{} {}", format_amount(amount, currency), currency.code())
}

/// A tax rate in percent without trailing zeros: `20%`, `5.5%`.
pub fn format_rate(percent: Decimal) -> String {
    format!("{}%", percent.normalize())
}

/// A date as `5 Mar 2025`.
pub fn format_date(date: NaiveDate) -> String {
    date.format("%-d %b %Y").to_string()
}

/// A period as `1 Mar 2025 – 31 Mar 2025`.
pub fn format_period(period: Period) -> String {
    format!("{} – {}", format_date(period.from), format_date(period.to))
}

/// A section's subtotals (net, tax, gross): exact sums of its lines.
fn subtotals(section: &Section) -> (Decimal, Decimal, Decimal) {
    section
        .lines
        .iter()
        .fold((Decimal::ZERO, Decimal::ZERO, Decimal::ZERO), |(n, t, g), l| (n + l.net, t + l.tax, g + l.gross))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amounts_have_the_minor_digits_and_separators() {
        let eur = Currency::new("EUR").unwrap();
        assert_eq!(format_amount(d("1234.5"), eur), "1,234.50");
        assert_eq!(format_amount(d("-1234567.891"), eur), "-1,234,567.89");
        assert_eq!(format_amount(d("0"), eur), "0.00");
        assert_eq!(format_amount(d("-0.001"), eur), "0.00", "no negative zero");
        assert_eq!(format_amount(d("999"), eur), "999.00");
        assert_eq!(format_amount(d("1000"), Currency::new("JPY").unwrap()), "1,000");
        assert_eq!(format_amount(d("12.5"), Currency::new("KWD").unwrap()), "12.500");
        assert_eq!(format_money(d("7"), eur), "7.00 EUR");
        assert_eq!(format_rate(d("20.00")), "20%");
        assert_eq!(format_rate(d("5.50")), "5.5%");
        assert_eq!(format_date(NaiveDate::from_ymd_opt(2025, 3, 5).unwrap()), "5 Mar 2025");
    }

    #[test]
    fn web_links_only() {
        assert!(is_web_link("https://pay.example.com/x?y=1"));
        assert!(is_web_link("HTTP://example.com"));
        assert!(!is_web_link("javascript:alert(1)"));
        assert!(!is_web_link("https://example.com/a b"));
        assert!(!is_web_link("https://exämple.com/"));
    }
}
