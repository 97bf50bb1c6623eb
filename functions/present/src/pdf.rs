//! The bill as an A4 PDF written with `pdf-writer`: standard Helvetica fonts in WinAnsi (nothing
//! embedded), content streams deflated, no dates or ids, so the same document gives the same
//! bytes. Test with `cargo test -p bss-present`.
//!
//! Two passes: [`Layout`] flows the bill into pages of drawing [`Op`]s (breaking tables between
//! rows and repeating their headers), then [`write`] adds the "Page n of m" footers, which need
//! the page count, and serialises.

use crate::winansi::{self, Font};
use crate::{
    Document, Error, PAGES_MAX, check, format_amount, format_date, format_money, format_period, format_rate,
    is_web_link, subtotals,
};
use pdf_writer::types::{ActionType, AnnotationType};
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Settings, Str, TextStr};
use rust_decimal::Decimal;

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const LEFT: f32 = 45.0;
const RIGHT: f32 = PAGE_W - 45.0;
const WIDTH: f32 = RIGHT - LEFT;
/// Where content starts on a page.
const TOP: f32 = PAGE_H - 42.0;
/// Content never goes below this; the footer lives under it.
const BOTTOM: f32 = 62.0;
const FOOTER_RULE: f32 = 48.0;
const FOOTER_BASELINE: f32 = 36.0;

const BODY: f32 = 8.5;
const LEADING: f32 = 10.0;
/// Space above and below the text of a table row.
const ROW_PAD: f32 = 2.5;
/// Space between a cell's edge and its text.
const CELL_PAD: f32 = 4.0;
/// Smallest size an amount is shrunk to before it is cut.
const FIT_MIN: f32 = 6.0;
const GAP: f32 = 14.0;

type Rgb = [f32; 3];
const INK: Rgb = [0.106, 0.122, 0.137];
const MUTED: Rgb = [0.357, 0.396, 0.439];
const ACCENT: Rgb = [0.043, 0.329, 0.408];
const RULE: Rgb = [0.835, 0.859, 0.878];
const TINT: Rgb = [0.933, 0.961, 0.969];
const HEAD_FILL: Rgb = [0.914, 0.929, 0.941];

/// One drawing operation, in PDF points from the page's bottom-left corner.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Text { x: f32, y: f32, font: Font, size: f32, color: Rgb, text: Vec<u8> },
    Fill { x: f32, y: f32, w: f32, h: f32, color: Rgb },
    Frame { x: f32, y: f32, w: f32, h: f32, width: f32, color: Rgb },
    Rule { x1: f32, x2: f32, y: f32, width: f32, color: Rgb },
    Link { x1: f32, y1: f32, x2: f32, y2: f32, uri: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A table column: left edge relative to [`LEFT`], width, alignment. Left-aligned columns wrap
/// their text; right-aligned ones (amounts) shrink it to fit.
#[derive(Debug, Clone, Copy)]
struct Col {
    x: f32,
    w: f32,
    align: Align,
}

const fn col(x: f32, w: f32, align: Align) -> Col {
    Col { x, w, align }
}

const LINE_COLS: [Col; 6] = [
    col(0.0, 186.0, Align::Left),
    col(186.0, 136.0, Align::Left),
    col(322.0, 52.0, Align::Right),
    col(374.0, 34.0, Align::Right),
    col(408.0, 46.0, Align::Right),
    col(454.0, WIDTH - 454.0, Align::Right),
];
const USAGE_COLS: [Col; 4] = [
    col(0.0, 170.0, Align::Left),
    col(170.0, 110.0, Align::Left),
    col(280.0, 160.0, Align::Left),
    col(440.0, WIDTH - 440.0, Align::Right),
];
const TAX_COLS: [Col; 5] = [
    col(0.0, 180.0, Align::Left),
    col(180.0, 128.0, Align::Left),
    col(308.0, 44.0, Align::Right),
    col(352.0, 78.0, Align::Right),
    col(430.0, WIDTH - 430.0, Align::Right),
];

/// A table row, laid out: each cell's lines (and the size amounts were shrunk to).
struct Row {
    cells: Vec<(Vec<Vec<u8>>, f32)>,
    font: Font,
    height: f32,
}

/// What to print above a table, and again "(continued)" after a page break.
struct Caption<'a> {
    title: &'a str,
    subtitle: Option<&'a str>,
}

/// The bill as an A4 PDF.
pub fn pdf(doc: &Document) -> Result<Vec<u8>, Error> {
    check(doc)?;
    let mut pages = Layout::flow(doc);
    if pages.len() > PAGES_MAX {
        return Err(Error::TooManyPages { pages: pages.len(), max: PAGES_MAX });
    }
    footers(doc, &mut pages);
    Ok(write(doc, &pages))
}

struct Layout<'a> {
    doc: &'a Document,
    pages: Vec<Vec<Op>>,
    /// The top of the free space on the current page.
    y: f32,
}

impl<'a> Layout<'a> {
    fn flow(doc: &'a Document) -> Vec<Vec<Op>> {
        let mut l = Layout { doc, pages: vec![Vec::new()], y: TOP };
        l.header();
        l.parties();
        l.charges();
        l.usage();
        l.taxes();
        l.how_to_pay();
        l.notes();
        l.pages
    }

    fn ops(&mut self) -> &mut Vec<Op> {
        // `flow` starts with one page and only ever adds more.
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn text(&mut self, x: f32, y: f32, font: Font, size: f32, color: Rgb, text: Vec<u8>) {
        if !text.is_empty() {
            self.ops().push(Op::Text { x, y, font, size, color, text });
        }
    }

    fn text_right(&mut self, right: f32, y: f32, font: Font, size: f32, color: Rgb, text: Vec<u8>) {
        let x = right - winansi::width(&text, font, size);
        self.text(x, y, font, size, color, text);
    }

    fn rule(&mut self, x1: f32, x2: f32, y: f32, width: f32, color: Rgb) {
        self.ops().push(Op::Rule { x1, x2, y, width, color });
    }

    /// Room for `height` more points, on a new page if need be; true when a page was started.
    fn ensure(&mut self, height: f32) -> bool {
        if self.y - height >= BOTTOM {
            return false;
        }
        self.new_page();
        true
    }

    /// A continuation page: a slim header saying whose bill this is.
    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        let doc = self.doc;
        let base = TOP - 8.0;
        let (name, size) = fit(&winansi::encode(&doc.operator.name), Font::Bold, 9.0, WIDTH * 0.38);
        self.text(LEFT, base, Font::Bold, size, ACCENT, name);
        let right = format!("Bill {} · {}", doc.bill_number, doc.customer.name);
        let right = fit(&winansi::encode(&right), Font::Regular, 8.0, WIDTH * 0.58);
        self.text_right(RIGHT, base, Font::Regular, right.1, MUTED, right.0);
        self.rule(LEFT, RIGHT, TOP - 14.0, 0.6, ACCENT);
        self.y = TOP - 28.0;
    }

    /// Operator (left), the bill's facts (right), an accent rule under both.
    fn header(&mut self) {
        let doc = self.doc;
        let op = &doc.operator;
        let mut y = TOP;
        if let Some(logo) = &op.logo_text {
            y -= 18.0;
            let (t, s) = fit(&winansi::encode(logo), Font::Bold, 20.0, 280.0);
            self.text(LEFT, y, Font::Bold, s, ACCENT, t);
            y -= 6.0;
        }
        y -= 12.0;
        let (t, s) = fit(&winansi::encode(&op.name), Font::Bold, 10.0, 280.0);
        self.text(LEFT, y, Font::Bold, s, INK, t);
        let mut small: Vec<String> = op.address.clone();
        small.extend(op.contact.iter().cloned());
        if let Some(vat) = &op.vat_id {
            small.push(format!("VAT ID {vat}"));
        }
        for line in small {
            for part in wrap(&winansi::encode(&line), Font::Regular, 8.0, 280.0) {
                y -= 10.0;
                self.text(LEFT, y, Font::Regular, 8.0, MUTED, part);
            }
        }
        let left_bottom = y;

        let mut y = TOP - 20.0;
        self.text_right(RIGHT, y, Font::Bold, 22.0, ACCENT, winansi::encode("Bill"));
        y -= 8.0;
        let facts = [
            ("Bill number", doc.bill_number.clone()),
            ("Issue date", format_date(doc.issue_date)),
            ("Billing period", format_period(doc.period)),
            ("Account", doc.customer.account_id.clone()),
            ("Due date", format_date(doc.due_date)),
        ];
        let label_x = RIGHT - 205.0;
        for (label, value) in facts {
            y -= 12.0;
            self.text(label_x, y, Font::Regular, BODY, MUTED, winansi::encode(label));
            let (t, s) = fit(&winansi::encode(&value), Font::Bold, BODY, 140.0);
            self.text_right(RIGHT, y, Font::Bold, s, INK, t);
        }
        let bottom = left_bottom.min(y) - 10.0;
        self.rule(LEFT, RIGHT, bottom, 1.5, ACCENT);
        self.y = bottom - 20.0;
    }

    /// The customer's block (left) and the summary box (right).
    fn parties(&mut self) {
        let doc = self.doc;
        let cu = &doc.customer;
        let top = self.y;
        let mut y = top - 8.0;
        self.text(LEFT, y, Font::Bold, 7.0, MUTED, winansi::encode("BILL TO"));
        let width = 240.0;
        for part in wrap(&winansi::encode(&cu.name), Font::Bold, 11.0, width) {
            y -= 14.0;
            self.text(LEFT, y, Font::Bold, 11.0, INK, part);
        }
        let mut more: Vec<String> = cu.address.clone();
        more.push(format!("Account {}", cu.account_id));
        if let Some(vat) = &cu.vat_id {
            more.push(format!("VAT ID {vat}"));
        }
        for (i, line) in more.iter().enumerate() {
            if i == cu.address.len() {
                y -= 4.0;
            }
            for part in wrap(&winansi::encode(line), Font::Regular, 9.5, width) {
                y -= 12.0;
                self.text(LEFT, y, Font::Regular, 9.5, INK, part);
            }
        }
        let left_bottom = y - 4.0;

        // Summary box: measure, paint the background, then the text over it.
        let box_w = 215.0;
        let x = RIGHT - box_w;
        let inner = box_w - 20.0;
        let s = &doc.summary;
        let c = doc.currency;
        let rows = [
            ("Previous balance", s.previous_balance),
            ("Payments", s.payments),
            ("Credits", s.credits),
            ("New charges", s.new_charges),
        ];
        let by = wrap(
            &winansi::encode(&format!(
                "Please pay by {} quoting {}.",
                format_date(doc.due_date),
                doc.payment.reference
            )),
            Font::Regular,
            8.0,
            inner,
        );
        let height = 10.0 + 14.0 + rows.len() as f32 * 13.0 + 8.0 + 16.0 + by.len() as f32 * 10.0 + 10.0;
        self.ops().push(Op::Fill { x, y: top - height, w: box_w, h: height, color: TINT });
        let mut y = top - 10.0 - 11.0;
        self.text(x + 10.0, y, Font::Bold, 11.0, ACCENT, winansi::encode("Summary"));
        y -= 3.0;
        for (label, amount) in rows {
            y -= 13.0;
            self.text(x + 10.0, y, Font::Regular, 9.0, INK, winansi::encode(label));
            let (t, size) = fit(&winansi::encode(&format_money(amount, c)), Font::Regular, 9.0, inner - 80.0);
            self.text_right(RIGHT - 10.0, y, Font::Regular, size, INK, t);
        }
        y -= 6.0;
        self.rule(x + 10.0, RIGHT - 10.0, y, 0.8, ACCENT);
        y -= 15.0;
        self.text(x + 10.0, y, Font::Bold, 11.0, INK, winansi::encode("Amount due"));
        let (t, size) = fit(&winansi::encode(&format_money(s.amount_due, c)), Font::Bold, 11.0, inner - 75.0);
        self.text_right(RIGHT - 10.0, y, Font::Bold, size, INK, t);
        y -= 3.0;
        for part in by {
            y -= 10.0;
            self.text(x + 10.0, y, Font::Regular, 8.0, MUTED, part);
        }
        self.y = left_bottom.min(top - height) - 22.0;
    }

    /// A part's heading, kept on the page with `keep` points of what follows.
    fn heading(&mut self, title: &str, keep: f32) {
        self.ensure(20.0 + keep);
        self.text(LEFT, self.y - 12.0, Font::Bold, 12.0, ACCENT, winansi::encode(title));
        self.y -= 20.0;
    }

    fn charges(&mut self) {
        let doc = self.doc;
        let c = doc.currency;
        let code = c.code();
        let head = [
            "Description".to_string(),
            "Period / quantity".to_string(),
            format!("Net {code}"),
            "Tax rate".to_string(),
            format!("Tax {code}"),
            format!("Total {code}"),
        ];
        if !doc.sections.is_empty() {
            self.heading("Charges", 70.0);
        }
        for section in &doc.sections {
            let rows: Vec<[String; 6]> = section
                .lines
                .iter()
                .map(|l| {
                    [
                        l.description.clone(),
                        l.detail.clone(),
                        format_amount(l.net, c),
                        format_rate(l.tax_rate),
                        format_amount(l.tax, c),
                        format_amount(l.gross, c),
                    ]
                })
                .collect();
            let (net, tax, gross) = subtotals(section);
            let foot = [
                "Subtotal".to_string(),
                String::new(),
                format_amount(net, c),
                String::new(),
                format_amount(tax, c),
                format_amount(gross, c),
            ];
            let caption = Caption { title: &section.title, subtitle: section.subtitle.as_deref() };
            self.table(Some(caption), &LINE_COLS, &head, &rows, Some(&foot));
        }
        self.totals();
    }

    /// Net, tax and gross of the new charges, right-aligned under the sections.
    fn totals(&mut self) {
        let doc = self.doc;
        let c = doc.currency;
        let t = &doc.totals;
        self.ensure(60.0);
        let x = RIGHT - 215.0;
        let mut y = self.y - 4.0;
        for (label, amount, font, size) in [
            ("Total excluding tax", t.net, Font::Regular, 9.0),
            ("Total tax", t.tax, Font::Regular, 9.0),
            ("Total new charges", t.gross, Font::Bold, 10.5),
        ] {
            y -= 13.0;
            if font == Font::Bold {
                self.rule(x, RIGHT, y + 10.5, 0.8, ACCENT);
                y -= 4.0;
            }
            self.text(x, y, font, size, INK, winansi::encode(label));
            let (text, size) = fit(&winansi::encode(&format_money(amount, c)), font, size, 100.0);
            self.text_right(RIGHT - CELL_PAD, y, font, size, INK, text);
        }
        self.y = y - 8.0 - GAP;
    }

    fn usage(&mut self) {
        let doc = self.doc;
        if doc.usage_by_service.is_empty() {
            return;
        }
        let c = doc.currency;
        let head = [
            "Service".to_string(),
            "Quantity".to_string(),
            "Included used".to_string(),
            format!("Charged {}", c.code()),
        ];
        let rows: Vec<[String; 4]> = doc
            .usage_by_service
            .iter()
            .map(|u| [u.service.clone(), u.quantity.clone(), u.included.clone(), format_amount(u.net, c)])
            .collect();
        self.heading("Usage by service", 45.0);
        self.table(None, &USAGE_COLS, &head, &rows, None);
    }

    fn taxes(&mut self) {
        let doc = self.doc;
        if doc.tax_summary.is_empty() {
            return;
        }
        let c = doc.currency;
        let code = c.code();
        let head = [
            "Tax".to_string(),
            "Jurisdiction".to_string(),
            "Rate".to_string(),
            format!("Taxable {code}"),
            format!("Tax {code}"),
        ];
        let rows: Vec<[String; 5]> = doc
            .tax_summary
            .iter()
            .map(|r| {
                [
                    r.category.clone(),
                    r.jurisdiction.clone(),
                    format_rate(r.rate),
                    format_amount(r.base, c),
                    format_amount(r.tax, c),
                ]
            })
            .collect();
        let base: Decimal = doc.tax_summary.iter().map(|r| r.base).sum();
        let tax: Decimal = doc.tax_summary.iter().map(|r| r.tax).sum();
        let foot = ["Total".to_string(), String::new(), String::new(), format_amount(base, c), format_amount(tax, c)];
        self.heading("Tax summary", 45.0);
        self.table(None, &TAX_COLS, &head, &rows, Some(&foot));
    }

    /// A framed box with what to pay, by when, and where; the instructions inside it when the
    /// whole box fits on one page, after it otherwise.
    fn how_to_pay(&mut self) {
        let doc = self.doc;
        let p = &doc.payment;
        let label_w = 90.0;
        let value_x = LEFT + 12.0 + label_w;
        let value_w = RIGHT - 12.0 - value_x;
        let mut fields: Vec<(&str, String, bool)> = vec![
            ("Amount", format_money(doc.summary.amount_due, doc.currency), false),
            ("Due date", format_date(doc.due_date), false),
        ];
        if let Some(iban) = &p.iban {
            fields.push(("IBAN", iban.clone(), false));
        }
        if let Some(bic) = &p.bic {
            fields.push(("BIC", bic.clone(), false));
        }
        fields.push(("Reference", p.reference.clone(), false));
        if let Some(url) = &p.pay_online_url {
            fields.push(("Pay online", url.clone(), is_web_link(url)));
        }
        let fields: Vec<(&str, Vec<Vec<u8>>, bool)> = fields
            .into_iter()
            .map(|(label, value, link)| (label, wrap(&winansi::encode(&value), Font::Bold, 9.0, value_w), link))
            .collect();
        let instructions: Vec<Vec<Vec<u8>>> =
            p.instructions.iter().map(|text| wrap(&winansi::encode(text), Font::Regular, BODY, WIDTH - 24.0)).collect();
        let fields_h: f32 = fields.iter().map(|(_, lines, _)| lines.len() as f32 * 12.0).sum();
        let instructions_h: f32 = instructions.iter().map(|lines| lines.len() as f32 * LEADING + 4.0).sum();
        let frame_h = 12.0 + 14.0 + 4.0 + fields_h + 10.0;
        let inside = frame_h + instructions_h <= TOP - 28.0 - BOTTOM;
        let height = if inside { frame_h + instructions_h } else { frame_h };
        self.ensure(height);
        let top = self.y;
        self.ops().push(Op::Frame { x: LEFT, y: top - height, w: WIDTH, h: height, width: 0.9, color: ACCENT });
        let mut y = top - 12.0 - 10.0;
        self.text(LEFT + 12.0, y, Font::Bold, 11.0, ACCENT, winansi::encode("How to pay"));
        y -= 6.0;
        for (label, lines, link) in fields {
            let first = y - 12.0;
            self.text(LEFT + 12.0, first, Font::Regular, BODY, MUTED, winansi::encode(label));
            let mut right = value_x;
            for line in lines {
                y -= 12.0;
                right = right.max(value_x + winansi::width(&line, Font::Bold, 9.0));
                self.text(value_x, y, Font::Bold, 9.0, if link { ACCENT } else { INK }, line);
            }
            if link && let Some(uri) = &p.pay_online_url {
                let uri = uri.clone();
                self.ops().push(Op::Link { x1: value_x - 1.0, y1: y - 3.0, x2: right + 1.0, y2: first + 9.0, uri });
            }
        }
        if inside {
            y -= 6.0;
            for lines in instructions {
                for line in lines {
                    y -= LEADING;
                    self.text(LEFT + 12.0, y, Font::Regular, BODY, INK, line);
                }
                y -= 4.0;
            }
            self.y = top - height - GAP;
        } else {
            self.y = top - height - 8.0;
            for lines in instructions {
                self.paragraph(lines, Font::Regular, BODY, INK);
            }
            self.y -= GAP;
        }
    }

    fn notes(&mut self) {
        let doc = self.doc;
        if doc.notes.is_empty() {
            return;
        }
        self.heading("Notes", 24.0);
        for note in &doc.notes {
            let lines = wrap(&winansi::encode(note), Font::Regular, 8.0, WIDTH);
            self.paragraph(lines, Font::Regular, 8.0, MUTED);
        }
    }

    /// Lines of text flowing down the page (and onto the next), then a small gap.
    fn paragraph(&mut self, lines: Vec<Vec<u8>>, font: Font, size: f32, color: Rgb) {
        for line in lines {
            self.ensure(LEADING);
            self.y -= LEADING;
            self.text(LEFT, self.y + 2.5, font, size, color, line);
        }
        self.y -= 4.0;
    }

    /// A table: optional caption, a header row, `rows`, an optional bold `foot` row. Rows are never
    /// split; a page break repeats the caption ("continued") and the header row.
    fn table<const N: usize>(
        &mut self,
        caption: Option<Caption>,
        cols: &[Col; N],
        head: &[String; N],
        rows: &[[String; N]],
        foot: Option<&[String; N]>,
    ) {
        let head_row = layout_row(cols, head, Font::Bold, 7.5);
        let rows: Vec<Row> = rows.iter().map(|r| layout_row(cols, r, Font::Regular, BODY)).collect();
        let foot = foot.map(|f| layout_row(cols, f, Font::Bold, BODY));
        let caption_h = if caption.is_some() { 20.0 } else { 0.0 };
        let first = rows.first().or(foot.as_ref()).map_or(0.0, |r| r.height);
        self.ensure(caption_h + head_row.height + first);
        self.table_top(caption.as_ref(), false, cols, &head_row);
        for row in &rows {
            if self.ensure(row.height) {
                self.table_top(caption.as_ref(), true, cols, &head_row);
            }
            self.draw_row(cols, row, INK);
            self.rule(LEFT, RIGHT, self.y, 0.4, RULE);
        }
        if let Some(foot) = foot {
            if self.ensure(foot.height) {
                self.table_top(caption.as_ref(), true, cols, &head_row);
            }
            self.rule(LEFT, RIGHT, self.y, 0.8, ACCENT);
            self.draw_row(cols, &foot, INK);
        }
        self.y -= GAP;
    }

    fn table_top(&mut self, caption: Option<&Caption>, continued: bool, cols: &[Col], head: &Row) {
        if let Some(caption) = caption {
            let base = self.y - 13.0;
            let mut title = winansi::encode(caption.title);
            if continued {
                title.extend_from_slice(b" (continued)");
            }
            let (title, size) = fit(&title, Font::Bold, 10.5, WIDTH * 0.6);
            let title_w = winansi::width(&title, Font::Bold, size);
            self.text(LEFT, base, Font::Bold, size, ACCENT, title);
            if let Some(sub) = caption.subtitle {
                let room = WIDTH - title_w - 10.0;
                let (sub, size) = fit(&winansi::encode(sub), Font::Regular, BODY, room);
                self.text(LEFT + title_w + 10.0, base, Font::Regular, size, MUTED, sub);
            }
            self.y -= 20.0;
        }
        let y = self.y - head.height;
        self.ops().push(Op::Fill { x: LEFT, y, w: WIDTH, h: head.height, color: HEAD_FILL });
        self.draw_row(cols, head, MUTED);
    }

    /// Draws `row` from `self.y` down and moves below it.
    fn draw_row(&mut self, cols: &[Col], row: &Row, color: Rgb) {
        let top = self.y;
        for (col, (lines, size)) in cols.iter().zip(&row.cells) {
            let mut base = top - ROW_PAD - 7.5;
            for line in lines {
                match col.align {
                    Align::Left => self.text(LEFT + col.x + CELL_PAD, base, row.font, *size, color, line.clone()),
                    Align::Right => {
                        self.text_right(LEFT + col.x + col.w - CELL_PAD, base, row.font, *size, color, line.clone())
                    }
                }
                base -= LEADING;
            }
        }
        self.y = top - row.height;
    }
}

/// Cells wrapped (left-aligned columns) or fitted (right-aligned ones) to their columns.
fn layout_row(cols: &[Col], cells: &[String], font: Font, size: f32) -> Row {
    let cells: Vec<(Vec<Vec<u8>>, f32)> = cols
        .iter()
        .zip(cells)
        .map(|(col, text)| {
            let text = winansi::encode(text);
            let room = col.w - 2.0 * CELL_PAD;
            match col.align {
                Align::Left => (wrap(&text, font, size, room), size),
                Align::Right => {
                    let (t, s) = fit(&text, font, size, room);
                    (vec![t], s)
                }
            }
        })
        .collect();
    let lines = cells.iter().map(|(l, _)| l.len()).max().unwrap_or(1).max(1);
    Row { cells, font, height: lines as f32 * LEADING + 2.0 * ROW_PAD }
}

/// Greedy word wrap of encoded text into lines no wider than `max` (a word wider than a line is
/// cut between characters). Always at least one line.
fn wrap(text: &[u8], font: Font, size: f32, max: f32) -> Vec<Vec<u8>> {
    let space = winansi::width(b" ", font, size);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut line_w = 0.0;
    for word in text.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        let word_w = winansi::width(word, font, size);
        if !line.is_empty() && line_w + space + word_w <= max {
            line.push(b' ');
            line.extend_from_slice(word);
            line_w += space + word_w;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if word_w <= max {
            line = word.to_vec();
            line_w = word_w;
            continue;
        }
        // A word longer than the line: as many characters per line as fit.
        let mut piece: Vec<u8> = Vec::new();
        for &b in word {
            if !piece.is_empty() && winansi::width(&piece, font, size) + winansi::width(&[b], font, size) > max {
                lines.push(std::mem::take(&mut piece));
            }
            piece.push(b);
        }
        line_w = winansi::width(&piece, font, size);
        line = piece;
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text` at `size`, or smaller (down to [`FIT_MIN`]) so it fits `max`; cut with an ellipsis if
/// even that is too wide.
fn fit(text: &[u8], font: Font, size: f32, max: f32) -> (Vec<u8>, f32) {
    let w = winansi::width(text, font, size);
    if w <= max {
        return (text.to_vec(), size);
    }
    let shrunk = (size * max / w).max(FIT_MIN);
    if winansi::width(text, font, shrunk) <= max {
        return (text.to_vec(), shrunk);
    }
    let mut cut = text.to_vec();
    while !cut.is_empty() && winansi::width(&cut, font, shrunk) + winansi::width(b"\x85", font, shrunk) > max {
        cut.pop();
    }
    cut.push(0x85);
    (cut, shrunk)
}

const F_REGULAR: Name<'static> = Name(b"F1");
const F_BOLD: Name<'static> = Name(b"F2");

/// The footer of every page: operator, bill number, "Page n of m".
fn footers(doc: &Document, pages: &mut [Vec<Op>]) {
    let count = pages.len();
    let mut left = doc.operator.name.clone();
    if let Some(vat) = &doc.operator.vat_id {
        left.push_str(" · VAT ID ");
        left.push_str(vat);
    }
    let (left, left_size) = fit(&winansi::encode(&left), Font::Regular, 7.5, WIDTH * 0.33);
    let (middle, middle_size) = fit(&winansi::encode(&format!("Bill {}", doc.bill_number)), Font::Regular, 7.5, 150.0);
    let middle_w = winansi::width(&middle, Font::Regular, middle_size);
    for (i, ops) in pages.iter_mut().enumerate() {
        ops.push(Op::Rule { x1: LEFT, x2: RIGHT, y: FOOTER_RULE, width: 0.5, color: RULE });
        ops.push(Op::Text {
            x: LEFT,
            y: FOOTER_BASELINE,
            font: Font::Regular,
            size: left_size,
            color: MUTED,
            text: left.clone(),
        });
        ops.push(Op::Text {
            x: LEFT + (WIDTH - middle_w) / 2.0,
            y: FOOTER_BASELINE,
            font: Font::Regular,
            size: middle_size,
            color: MUTED,
            text: middle.clone(),
        });
        let page = winansi::encode(&format!("Page {} of {count}", i + 1));
        let page_w = winansi::width(&page, Font::Bold, 7.5);
        ops.push(Op::Text {
            x: RIGHT - page_w,
            y: FOOTER_BASELINE,
            font: Font::Bold,
            size: 7.5,
            color: MUTED,
            text: page,
        });
    }
}

/// The PDF objects.
fn write(doc: &Document, pages: &[Vec<Op>]) -> Vec<u8> {
    let count = pages.len();
    let mut pdf = Pdf::with_settings(Settings { pretty: false });
    let catalog_id = Ref::new(1);
    let tree_id = Ref::new(2);
    let regular_id = Ref::new(3);
    let bold_id = Ref::new(4);
    let info_id = Ref::new(5);
    let mut next = 6;
    let mut alloc = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let layout: Vec<(Ref, Ref, Vec<Ref>)> = pages
        .iter()
        .map(|ops| {
            let page = alloc();
            let content = alloc();
            let links = ops.iter().filter(|op| matches!(op, Op::Link { .. })).map(|_| alloc()).collect();
            (page, content, links)
        })
        .collect();

    let mut catalog = pdf.catalog(catalog_id);
    catalog.pages(tree_id).lang(TextStr(&doc.lang));
    catalog.viewer_preferences().display_doc_title(true);
    catalog.finish();
    pdf.pages(tree_id).kids(layout.iter().map(|(page, _, _)| *page)).count(count as i32);
    pdf.type1_font(regular_id).base_font(Name(b"Helvetica")).encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold_id).base_font(Name(b"Helvetica-Bold")).encoding_predefined(Name(b"WinAnsiEncoding"));
    let title = format!("Bill {} – {}", doc.bill_number, doc.customer.name);
    pdf.document_info(info_id)
        .title(TextStr(&title))
        .author(TextStr(&doc.operator.name))
        .creator(TextStr("bss-present"));

    for (ops, (page_id, content_id, link_ids)) in pages.iter().zip(&layout) {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H)).parent(tree_id).contents(*content_id);
        if !link_ids.is_empty() {
            page.annotations(link_ids.iter().copied());
        }
        page.resources().fonts().pair(F_REGULAR, regular_id).pair(F_BOLD, bold_id);
        page.finish();

        let links = ops.iter().filter_map(|op| match op {
            Op::Link { x1, y1, x2, y2, uri } => Some((Rect::new(*x1, *y1, *x2, *y2), uri)),
            _ => None,
        });
        for (id, (rect, uri)) in link_ids.iter().zip(links) {
            let mut annotation = pdf.annotation(*id);
            annotation.subtype(AnnotationType::Link).rect(rect).border(0.0, 0.0, 0.0, None);
            annotation.action().action_type(ActionType::Uri).uri(Str(uri.as_bytes()));
        }

        let content = content(ops);
        let deflated = miniz_oxide::deflate::compress_to_vec_zlib(&content, 6);
        pdf.stream(*content_id, &deflated).filter(Filter::FlateDecode);
    }
    pdf.finish()
}

/// One page's content stream.
fn content(ops: &[Op]) -> Vec<u8> {
    let mut c = Content::new();
    let mut in_text = false;
    let mut font: Option<(Font, f32)> = None;
    let mut fill: Option<Rgb> = None;
    for op in ops {
        let is_text = matches!(op, Op::Text { .. });
        if in_text && !is_text {
            c.end_text();
            in_text = false;
        }
        match op {
            Op::Text { x, y, font: f, size, color, text } => {
                if !in_text {
                    c.begin_text();
                    in_text = true;
                }
                if font != Some((*f, *size)) {
                    c.set_font(if *f == Font::Bold { F_BOLD } else { F_REGULAR }, *size);
                    font = Some((*f, *size));
                }
                if fill != Some(*color) {
                    c.set_fill_rgb(color[0], color[1], color[2]);
                    fill = Some(*color);
                }
                c.set_text_matrix([1.0, 0.0, 0.0, 1.0, *x, *y]);
                c.show(Str(text));
            }
            Op::Fill { x, y, w, h, color } => {
                if fill != Some(*color) {
                    c.set_fill_rgb(color[0], color[1], color[2]);
                    fill = Some(*color);
                }
                c.rect(*x, *y, *w, *h).fill_nonzero();
            }
            Op::Frame { x, y, w, h, width, color } => {
                c.set_stroke_rgb(color[0], color[1], color[2]).set_line_width(*width);
                c.rect(*x, *y, *w, *h).stroke();
            }
            Op::Rule { x1, x2, y, width, color } => {
                c.set_stroke_rgb(color[0], color[1], color[2]).set_line_width(*width);
                c.move_to(*x1, *y).line_to(*x2, *y).stroke();
            }
            Op::Link { .. } => {}
        }
    }
    if in_text {
        c.end_text();
    }
    c.finish().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Line, Section, TEXT_CHARS_MAX};

    fn sample() -> Document {
        serde_json::from_str(include_str!("../tests/sample.json")).unwrap()
    }

    /// Everything at its longest: texts at the limits, huge amounts, many notes.
    fn extreme() -> Document {
        let mut doc = sample();
        let long = |word: &str| {
            let mut s = String::new();
            while s.chars().count() + word.len() < TEXT_CHARS_MAX {
                s.push_str(word);
            }
            s
        };
        doc.operator.name = long("Operator ");
        doc.operator.logo_text = Some(long("LOGO"));
        doc.operator.address = vec![long("Street "); crate::ADDRESS_LINES_MAX];
        doc.customer.name = long("Name ");
        doc.customer.account_id = long("A");
        doc.bill_number = long("9");
        doc.summary.amount_due = Decimal::new(-9_999_999_999_999, 2);
        doc.summary.payments = Decimal::new(9_999_999_999_999, 2);
        doc.payment.pay_online_url = Some(format!("https://pay.example/{}", &long("x")[20..]));
        doc.payment.instructions = vec!["word ".repeat(200); crate::INSTRUCTIONS_MAX];
        doc.notes = vec!["note ".repeat(200); crate::NOTES_MAX];
        let big = Decimal::new(-123_456_789_012, 2);
        let line = Line {
            description: long("description "),
            detail: long("1 Mar – 31 Mar "),
            net: big,
            tax_rate: Decimal::new(12_345, 3),
            tax: big,
            gross: big,
        };
        doc.sections.push(Section { title: long("Title "), subtitle: Some(long("Subtitle ")), lines: vec![line; 30] });
        doc.usage_by_service[0].service = long("Service ");
        doc.usage_by_service[0].net = big;
        doc.tax_summary[0].category = long("Category ");
        doc.tax_summary[0].base = big;
        crate::check(&doc).unwrap();
        doc
    }

    /// Every text inside the page's margins, no two texts overlapping.
    fn assert_clean(doc: &Document) -> usize {
        let mut pages = Layout::flow(doc);
        footers(doc, &mut pages);
        for (n, ops) in pages.iter().enumerate() {
            let boxes: Vec<(f32, f32, f32, f32, &[u8])> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Text { x, y, font, size, text, .. } => {
                        let w = winansi::width(text, *font, *size);
                        Some((*x, *y - 0.2 * size, *x + w, *y + 0.72 * size, text.as_slice()))
                    }
                    _ => None,
                })
                .collect();
            for &(x1, y1, x2, y2, t) in &boxes {
                let t = String::from_utf8_lossy(t);
                assert!(x1 >= LEFT - 0.01 && x2 <= RIGHT + 0.01, "page {n}: {t:?} from {x1} to {x2}");
                assert!(y1 >= FOOTER_BASELINE - 2.0 && y2 <= TOP + 0.01, "page {n}: {t:?} at {y1}..{y2}");
            }
            for (i, a) in boxes.iter().enumerate() {
                for b in &boxes[i + 1..] {
                    let overlap = a.0 < b.2 - 0.01 && b.0 < a.2 - 0.01 && a.1 < b.3 - 0.01 && b.1 < a.3 - 0.01;
                    assert!(
                        !overlap,
                        "page {n}: {:?} overlaps {:?}",
                        String::from_utf8_lossy(a.4),
                        String::from_utf8_lossy(b.4)
                    );
                }
            }
        }
        pages.len()
    }

    #[test]
    fn the_sample_and_an_extreme_bill_lay_out_cleanly() {
        assert_eq!(assert_clean(&sample()), 2);
        let pages = assert_clean(&extreme());
        assert!(pages > 2 && pages < PAGES_MAX);
    }

    #[test]
    fn wrap_keeps_words_and_cuts_only_long_ones() {
        let lines = wrap(b"one two three four five six", Font::Regular, 10.0, 60.0);
        assert!(lines.len() > 1);
        assert_eq!(lines.join(&b' '), b"one two three four five six");
        for l in &lines {
            assert!(winansi::width(l, Font::Regular, 10.0) <= 60.0);
        }
        let long = wrap(&[b'W'; 40], Font::Bold, 10.0, 50.0);
        assert!(long.len() > 1);
        assert_eq!(long.concat(), vec![b'W'; 40]);
        assert_eq!(wrap(b"", Font::Regular, 10.0, 50.0), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn fit_shrinks_then_cuts() {
        assert_eq!(fit(b"12.00", Font::Regular, 8.5, 100.0), (b"12.00".to_vec(), 8.5));
        let (t, s) = fit(b"1,234,567.00", Font::Regular, 8.5, 45.0);
        assert_eq!(t, b"1,234,567.00");
        assert!(s < 8.5 && winansi::width(&t, Font::Regular, s) <= 45.0);
        let (t, s) = fit(&[b'x'; 200], Font::Regular, 8.5, 45.0);
        assert_eq!(s, FIT_MIN);
        assert_eq!(t.last(), Some(&0x85));
        assert!(winansi::width(&t, Font::Regular, s) <= 45.0);
    }

    #[test]
    fn columns_fill_the_width() {
        for cols in [&LINE_COLS[..], &USAGE_COLS[..], &TAX_COLS[..]] {
            for pair in cols.windows(2) {
                assert_eq!(pair[0].x + pair[0].w, pair[1].x);
            }
            let last = cols[cols.len() - 1];
            assert!((last.x + last.w - WIDTH).abs() < 0.01);
        }
    }
}
