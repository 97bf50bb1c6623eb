//! The bill as one self-contained, printable HTML5 page: inline CSS, no scripts, no external
//! assets, every text escaped, real table headers for screen readers. Test with
//! `cargo test -p bss-present`.

use crate::{
    Document, Error, Section, check, format_amount, format_date, format_money, format_period, format_rate, is_web_link,
    subtotals,
};
use rust_decimal::Decimal;
use std::fmt::Write;

const STYLE: &str = r#"
:root { --accent: #0b5468; --ink: #1b1f23; --muted: #5b6570; --rule: #d5dbe0; --tint: #eef5f7; }
* { box-sizing: border-box; }
html { font-family: "Helvetica Neue", Helvetica, Arial, sans-serif; font-size: 10pt; color: var(--ink); background: #f3f4f6; }
body { margin: 0; padding: 24px 12px; }
main { max-width: 210mm; margin: 0 auto; background: #fff; padding: 16mm 15mm; box-shadow: 0 1px 4px rgba(0,0,0,.12); }
h1, h2, h3 { color: var(--accent); margin: 0; }
h1 { font-size: 20pt; text-align: right; }
h2 { font-size: 12pt; margin: 22px 0 8px; }
address { font-style: normal; }
.top { display: flex; justify-content: space-between; gap: 24px; border-bottom: 2px solid var(--accent); padding-bottom: 12px; }
.operator p, .operator address { margin: 0; color: var(--muted); font-size: 8.5pt; line-height: 1.4; }
.operator .logo { font-size: 20pt; font-weight: bold; color: var(--accent); margin: 0 0 4px; line-height: 1.1; }
.operator .op-name { color: var(--ink); font-weight: bold; font-size: 10pt; }
.meta dl { display: grid; grid-template-columns: auto auto; gap: 2px 16px; margin: 8px 0 0; font-size: 9pt; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; text-align: right; font-weight: bold; }
.parties { display: flex; justify-content: space-between; gap: 24px; margin-top: 20px; align-items: flex-start; }
.customer { line-height: 1.45; }
.customer .label { color: var(--muted); font-size: 8pt; text-transform: uppercase; letter-spacing: .05em; margin: 0; }
.customer .name { font-weight: bold; font-size: 11pt; margin: 0; }
.summary { background: var(--tint); border-radius: 4px; padding: 10px 14px; min-width: 72mm; }
.summary h2 { margin: 0 0 6px; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
.summary th { text-align: left; font-weight: normal; padding: 2px 0; }
.summary td { text-align: right; padding: 2px 0; }
.summary .due th, .summary .due td { font-weight: bold; font-size: 11.5pt; border-top: 2px solid var(--accent); padding-top: 6px; }
.summary .by { color: var(--muted); font-size: 8.5pt; margin: 4px 0 0; }
table.grid { margin: 0 0 14px; font-size: 9pt; table-layout: fixed; }
table.grid col.wide { width: 34%; } table.grid col.mid { width: 24%; } table.grid col.num { width: 11.3%; }
table.grid col.half { width: 21%; } table.grid col.rate { width: 8%; }
table.grid caption { text-align: left; font-weight: bold; color: var(--accent); font-size: 10.5pt; padding: 6px 0; }
table.grid caption .sub { color: var(--muted); font-weight: normal; font-size: 9pt; margin-left: 8px; }
table.grid thead th { background: #e9edf0; text-align: left; font-size: 8pt; padding: 4px 6px; }
table.grid td, table.grid tbody th { padding: 4px 6px; border-bottom: 1px solid var(--rule); text-align: left; font-weight: normal; vertical-align: top; overflow-wrap: anywhere; }
table.grid tfoot th, table.grid tfoot td { padding: 5px 6px; font-weight: bold; text-align: left; border-top: 2px solid var(--accent); border-bottom: none; }
table.grid .num { text-align: right; }
.detail { color: var(--muted); }
.totals { width: 80mm; margin-left: auto; font-size: 10pt; }
.totals th { text-align: left; font-weight: normal; padding: 2px 0; }
.totals td { text-align: right; padding: 2px 0; }
.totals .grand th, .totals .grand td { font-weight: bold; border-top: 2px solid var(--accent); padding-top: 5px; }
.pay { border: 1px solid var(--accent); border-radius: 4px; padding: 10px 14px; }
.pay h2 { margin: 0 0 6px; }
.pay dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 0; }
.pay dt { color: var(--muted); }
.pay dd { margin: 0; font-weight: bold; overflow-wrap: anywhere; }
.pay p { margin: 6px 0 0; }
.notes { color: var(--muted); font-size: 8.5pt; padding-left: 18px; }
footer { margin-top: 24px; border-top: 1px solid var(--rule); padding-top: 6px; color: var(--muted); font-size: 8pt; display: flex; justify-content: space-between; }
@page { size: A4; margin: 14mm; }
@media print {
  html { background: #fff; }
  body { padding: 0; }
  main { box-shadow: none; padding: 0; max-width: none; }
  tr, .pay, .summary { break-inside: avoid; }
  h2 { break-after: avoid; }
}
"#;

/// The bill as a self-contained HTML5 page.
pub fn html(doc: &Document) -> Result<String, Error> {
    check(doc)?;
    let mut out = String::with_capacity(16 * 1024);
    let c = doc.currency;
    let money = |d: Decimal| esc(&format_money(d, c));
    let amount = |d: Decimal| esc(&format_amount(d, c));
    let code = esc(c.code());

    // Writing to a String cannot fail; `let _ =` keeps the fmt::Result out of the way.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Bill {number} – {operator}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        lang = esc(&doc.lang),
        number = esc(&doc.bill_number),
        operator = esc(&doc.operator.name),
    );

    // Header: operator left, bill facts right.
    let op = &doc.operator;
    out.push_str("<header class=\"top\">\n<div class=\"operator\">\n");
    if let Some(logo) = &op.logo_text {
        let _ = writeln!(out, "<p class=\"logo\">{}</p>", esc(logo));
    }
    let _ = writeln!(out, "<p class=\"op-name\">{}</p>", esc(&op.name));
    if !op.address.is_empty() {
        let _ = writeln!(out, "<address>{}</address>", lines(&op.address));
    }
    if !op.contact.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", lines(&op.contact));
    }
    if let Some(vat) = &op.vat_id {
        let _ = writeln!(out, "<p>VAT ID: {}</p>", esc(vat));
    }
    out.push_str("</div>\n<div class=\"meta\">\n<h1>Bill</h1>\n<dl>\n");
    let facts = [
        ("Bill number", esc(&doc.bill_number)),
        ("Issue date", esc(&format_date(doc.issue_date))),
        ("Billing period", esc(&format_period(doc.period))),
        ("Account", esc(&doc.customer.account_id)),
        ("Due date", esc(&format_date(doc.due_date))),
    ];
    for (label, value) in facts {
        let _ = writeln!(out, "<dt>{label}</dt><dd>{value}</dd>");
    }
    out.push_str("</dl>\n</div>\n</header>\n");

    // Customer and summary.
    let cu = &doc.customer;
    out.push_str("<div class=\"parties\">\n<section class=\"customer\" aria-label=\"Customer\">\n");
    out.push_str("<p class=\"label\">Bill to</p>\n");
    let _ = writeln!(out, "<p class=\"name\">{}</p>", esc(&cu.name));
    if !cu.address.is_empty() {
        let _ = writeln!(out, "<address>{}</address>", lines(&cu.address));
    }
    let _ = writeln!(out, "<p>Account {}</p>", esc(&cu.account_id));
    if let Some(vat) = &cu.vat_id {
        let _ = writeln!(out, "<p>VAT ID: {}</p>", esc(vat));
    }
    out.push_str("</section>\n");
    let s = &doc.summary;
    out.push_str(
        "<section class=\"summary\" aria-labelledby=\"summary-h\">\n<h2 id=\"summary-h\">Summary</h2>\n<table>\n",
    );
    for (label, value) in [
        ("Previous balance", s.previous_balance),
        ("Payments", s.payments),
        ("Credits", s.credits),
        ("New charges", s.new_charges),
    ] {
        let _ = writeln!(out, "<tr><th scope=\"row\">{label}</th><td>{}</td></tr>", money(value));
    }
    let _ = writeln!(
        out,
        "<tr class=\"due\"><th scope=\"row\">Amount due</th><td>{}</td></tr>\n</table>\n\
         <p class=\"by\">Please pay by {} quoting {}.</p>\n</section>\n</div>",
        money(s.amount_due),
        esc(&format_date(doc.due_date)),
        esc(&doc.payment.reference),
    );

    // Charges.
    if !doc.sections.is_empty() {
        out.push_str("<section aria-labelledby=\"charges-h\">\n<h2 id=\"charges-h\">Charges</h2>\n");
        for section in &doc.sections {
            section_table(&mut out, section, &code, &amount);
        }
        out.push_str("</section>\n");
    }
    let t = &doc.totals;
    let _ = writeln!(
        out,
        "<table class=\"totals\" aria-label=\"Totals\">\n\
         <tr><th scope=\"row\">Total excluding tax</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Total tax</th><td>{}</td></tr>\n\
         <tr class=\"grand\"><th scope=\"row\">Total new charges</th><td>{}</td></tr>\n</table>",
        money(t.net),
        money(t.tax),
        money(t.gross),
    );

    // Usage by service.
    if !doc.usage_by_service.is_empty() {
        let _ = writeln!(
            out,
            "<section aria-labelledby=\"usage-h\">\n<h2 id=\"usage-h\">Usage by service</h2>\n\
             <table class=\"grid\">\n<colgroup><col class=\"wide\"><col class=\"half\"><col class=\"half\"><col></colgroup>\n<thead><tr><th scope=\"col\">Service</th><th scope=\"col\">Quantity</th>\
             <th scope=\"col\">Included used</th><th scope=\"col\" class=\"num\">Charged ({code})</th></tr></thead>\n<tbody>"
        );
        for u in &doc.usage_by_service {
            let _ = writeln!(
                out,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(&u.service),
                esc(&u.quantity),
                esc(&u.included),
                amount(u.net)
            );
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }

    // Tax summary.
    if !doc.tax_summary.is_empty() {
        let _ = writeln!(
            out,
            "<section aria-labelledby=\"tax-h\">\n<h2 id=\"tax-h\">Tax summary</h2>\n<table class=\"grid\">\n\
             <colgroup><col class=\"wide\"><col class=\"half\"><col class=\"rate\"><col><col></colgroup>\n\
             <thead><tr><th scope=\"col\">Tax</th><th scope=\"col\">Jurisdiction</th><th scope=\"col\" class=\"num\">Rate</th>\
             <th scope=\"col\" class=\"num\">Taxable ({code})</th><th scope=\"col\" class=\"num\">Tax ({code})</th></tr></thead>\n<tbody>"
        );
        for r in &doc.tax_summary {
            let _ = writeln!(
                out,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&r.category),
                esc(&r.jurisdiction),
                esc(&format_rate(r.rate)),
                amount(r.base),
                amount(r.tax)
            );
        }
        let base: Decimal = doc.tax_summary.iter().map(|r| r.base).sum();
        let tax: Decimal = doc.tax_summary.iter().map(|r| r.tax).sum();
        let _ = writeln!(
            out,
            "</tbody>\n<tfoot><tr><th scope=\"row\" colspan=\"3\">Total</th><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tfoot>\n</table>\n</section>",
            amount(base),
            amount(tax)
        );
    }

    // How to pay.
    let p = &doc.payment;
    out.push_str("<section class=\"pay\" aria-labelledby=\"pay-h\">\n<h2 id=\"pay-h\">How to pay</h2>\n<dl>\n");
    let _ = writeln!(out, "<dt>Amount</dt><dd>{}</dd>", money(s.amount_due));
    let _ = writeln!(out, "<dt>Due date</dt><dd>{}</dd>", esc(&format_date(doc.due_date)));
    if let Some(iban) = &p.iban {
        let _ = writeln!(out, "<dt>IBAN</dt><dd>{}</dd>", esc(iban));
    }
    if let Some(bic) = &p.bic {
        let _ = writeln!(out, "<dt>BIC</dt><dd>{}</dd>", esc(bic));
    }
    let _ = writeln!(out, "<dt>Reference</dt><dd>{}</dd>", esc(&p.reference));
    if let Some(url) = &p.pay_online_url {
        if is_web_link(url) {
            let _ = writeln!(out, "<dt>Pay online</dt><dd><a href=\"{0}\">{0}</a></dd>", esc(url));
        } else {
            let _ = writeln!(out, "<dt>Pay online</dt><dd>{}</dd>", esc(url));
        }
    }
    out.push_str("</dl>\n");
    for text in &p.instructions {
        let _ = writeln!(out, "<p>{}</p>", esc(text));
    }
    out.push_str("</section>\n");

    if !doc.notes.is_empty() {
        out.push_str("<section aria-labelledby=\"notes-h\">\n<h2 id=\"notes-h\">Notes</h2>\n<ul class=\"notes\">\n");
        for note in &doc.notes {
            let _ = writeln!(out, "<li>{}</li>", esc(note));
        }
        out.push_str("</ul>\n</section>\n");
    }

    let _ = write!(
        out,
        "<footer><span>{}{}</span><span>Bill {}</span></footer>\n</main>\n</body>\n</html>\n",
        esc(&op.name),
        op.vat_id.as_deref().map(|v| format!(" · VAT ID {}", esc(v))).unwrap_or_default(),
        esc(&doc.bill_number),
    );
    Ok(out)
}

fn section_table(out: &mut String, section: &Section, code: &str, amount: &dyn Fn(Decimal) -> String) {
    out.push_str("<table class=\"grid\">\n<caption>");
    out.push_str(&esc(&section.title));
    if let Some(sub) = &section.subtitle {
        let _ = write!(out, "<span class=\"sub\">{}</span>", esc(sub));
    }
    let _ = writeln!(
        out,
        "</caption>\n<colgroup><col class=\"wide\"><col class=\"mid\"><col class=\"num\"><col class=\"rate\">\
         <col class=\"num\"><col class=\"num\"></colgroup>\n<thead><tr><th scope=\"col\">Description</th><th scope=\"col\">Period / quantity</th>\
         <th scope=\"col\" class=\"num\">Net ({code})</th><th scope=\"col\" class=\"num\">Tax rate</th>\
         <th scope=\"col\" class=\"num\">Tax ({code})</th><th scope=\"col\" class=\"num\">Total ({code})</th></tr></thead>\n<tbody>"
    );
    for l in &section.lines {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td class=\"detail\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&l.description),
            esc(&l.detail),
            amount(l.net),
            esc(&format_rate(l.tax_rate)),
            amount(l.tax),
            amount(l.gross),
        );
    }
    let (net, tax, gross) = subtotals(section);
    let _ = writeln!(
        out,
        "</tbody>\n<tfoot><tr><th scope=\"row\" colspan=\"2\">Subtotal</th><td class=\"num\">{}</td><td></td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tfoot>\n</table>",
        amount(net),
        amount(tax),
        amount(gross),
    );
}

/// Address-like lines joined with `<br>`, each escaped.
fn lines(list: &[String]) -> String {
    list.iter().map(|l| esc(l)).collect::<Vec<_>>().join("<br>")
}

/// `text` safe in HTML text and in double- or single-quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(esc("a\u{0}b"), "a\u{FFFD}b");
    }
}
