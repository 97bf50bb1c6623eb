//! Bill presentment end to end on `tests/sample.json`: the HTML page has every part and escapes
//! everything, the PDF is well formed, paginates and is deterministic, limits are enforced, and —
//! when poppler-utils (`pdftoppm`, `pdftotext`) is installed — the PDF renders to a non-blank
//! image with the right text. Run with `cargo test -p bss-present`.

use bss_present::{Document, Error, LINES_MAX, Line, Section, TEXT_CHARS_MAX, check, html, pdf};
use rust_decimal::Decimal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

fn sample() -> Document {
    serde_json::from_str(include_str!("sample.json")).expect("sample.json is a Document")
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// The sample with one more section of `n` one-row lines (`Usage item 0001`…).
fn long_bill(n: usize) -> Document {
    let mut doc = sample();
    let lines = (1..=n)
        .map(|i| Line {
            description: format!("Usage item {i:04}"),
            detail: format!("{i} min"),
            net: d("0.50"),
            tax_rate: d("20"),
            tax: d("0.10"),
            gross: d("0.60"),
        })
        .collect();
    doc.sections.push(Section { title: "Itemised usage".into(), subtitle: Some("+33 6 12 34 56 78".into()), lines });
    doc
}

/// The decompressed content stream of every page, in order.
fn page_contents(pdf: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = pdf;
    while let Some(start) = find(rest, b"stream\n") {
        let after = &rest[start + b"stream\n".len()..];
        let end = find(after, b"\nendstream").expect("every stream ends");
        out.push(miniz_oxide::inflate::decompress_to_vec_zlib(&after[..end]).expect("deflated stream"));
        rest = &after[end + b"\nendstream".len()..];
    }
    out
}

/// The strings each page shows, decoded from WinAnsi: the operands of its literal `(…)` and hex
/// `<…>` strings (only text operators take strings in these streams).
fn page_texts(pdf: &[u8]) -> Vec<Vec<String>> {
    page_contents(pdf).iter().map(|c| shown(c).iter().map(|s| winansi(s)).collect()).collect()
}

fn shown(content: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < content.len() {
        match content[i] {
            b'(' => {
                let (mut s, mut depth) = (Vec::new(), 1);
                i += 1;
                while depth > 0 {
                    let c = content[i];
                    i += 1;
                    match c {
                        b'\\' => {
                            let e = content[i];
                            i += 1;
                            match e {
                                b'n' => s.push(b'\n'),
                                b'r' => s.push(b'\r'),
                                b't' => s.push(b'\t'),
                                b'0'..=b'7' => {
                                    let mut v = u32::from(e - b'0');
                                    for _ in 0..2 {
                                        if (b'0'..=b'7').contains(&content[i]) {
                                            v = v * 8 + u32::from(content[i] - b'0');
                                            i += 1;
                                        }
                                    }
                                    s.push(v as u8);
                                }
                                other => s.push(other),
                            }
                        }
                        b'(' => {
                            depth += 1;
                            s.push(c);
                        }
                        b')' => {
                            depth -= 1;
                            if depth > 0 {
                                s.push(c);
                            }
                        }
                        _ => s.push(c),
                    }
                }
                out.push(s);
            }
            b'<' => {
                let end = i + content[i..].iter().position(|&c| c == b'>').expect("hex string ends");
                let hex = std::str::from_utf8(&content[i + 1..end]).unwrap();
                out.push((0..hex.len()).step_by(2).map(|j| u8::from_str_radix(&hex[j..j + 2], 16).unwrap()).collect());
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// WinAnsi bytes as text (Latin-1 plus the few 0x80..0x9F characters the sample uses).
fn winansi(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x80 => '€',
            0x85 => '…',
            0x93 => '“',
            0x94 => '”',
            0x96 => '–',
            0x81..=0x84 | 0x86..=0x92 | 0x95 | 0x97..=0x9F => '\u{FFFD}',
            b => char::from(b),
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    find(haystack, needle.as_bytes()).is_some()
}

#[test]
fn sample_round_trips_through_json() {
    let doc = sample();
    let again: Document = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
    assert_eq!(doc, again);
    check(&doc).expect("the sample is within the limits");
}

#[test]
fn html_has_every_part_of_the_bill() {
    let page = html(&sample()).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    for part in [
        "<meta charset=\"utf-8\">",
        "<title>Bill INV-2025-03-000482 – Lumen Telecom SAS</title>",
        // operator
        "LUMEN",
        "Lumen Telecom SAS",
        "12 rue de la Fibre<br>75011 Paris<br>France",
        "VAT ID: FR 12 345678901",
        // bill facts
        "<dd>INV-2025-03-000482</dd>",
        "<dd>1 Apr 2025</dd>",
        "<dd>15 Apr 2025</dd>",
        "<dd>1 Mar 2025 – 31 Mar 2025</dd>",
        // customer
        "Camille Martin",
        "8 avenue des Tilleuls<br>Apt 3B<br>69003 Lyon<br>France",
        "Account ACC-000482",
        // summary
        "<th scope=\"row\">Previous balance</th><td>71.43 EUR</td>",
        "<th scope=\"row\">Payments</th><td>-71.43 EUR</td>",
        "<th scope=\"row\">Credits</th><td>-5.00 EUR</td>",
        "<th scope=\"row\">New charges</th><td>131.62 EUR</td>",
        "<th scope=\"row\">Amount due</th><td>126.62 EUR</td>",
        // sections and lines
        "<caption>Mobile<span class=\"sub\">+33 6 12 34 56 78 · Camille Martin</span></caption>",
        "<caption>Fibre &amp; TV<span class=\"sub\">",
        "Child account ACC-000482-02",
        "<th scope=\"col\">Description</th>",
        "<th scope=\"col\" class=\"num\">Net (EUR)</th>",
        "Credit: Mobile 20 GB plan billed in advance, not used",
        "<td class=\"num\">-8.23</td>",
        "<td class=\"num\">5.5%</td>",
        "Video on demand: “The Long Night”",
        "Subtotal",
        // totals
        "<th scope=\"row\">Total excluding tax</th><td>111.24 EUR</td>",
        "<th scope=\"row\">Total tax</th><td>20.38 EUR</td>",
        "<th scope=\"row\">Total new charges</th><td>131.62 EUR</td>",
        // usage by service
        "Usage by service",
        "<th scope=\"row\">Roaming data, outside the EU</th><td>1.45 GB</td><td>none</td><td class=\"num\">16.17</td>",
        // taxes
        "Tax summary",
        "<th scope=\"row\">VAT, standard rate</th><td>France</td><td class=\"num\">20%</td>",
        "<th scope=\"row\">VAT, reduced rate (TV and video)</th><td>France</td><td class=\"num\">5.5%</td>",
        // how to pay
        "How to pay",
        "<dd>FR76 3000 6000 0112 3456 7890 189</dd>",
        "<dd>AGRIFRPPXXX</dd>",
        "<dt>Reference</dt><dd>INV-2025-03-000482</dd>",
        "<a href=\"https://pay.lumen-telecom.example/bill/INV-2025-03-000482\">",
        "mandate RUM-000482",
        // notes
        "goodwill credit of 5.00 EUR",
    ] {
        assert!(page.contains(part), "missing {part:?}");
    }
    // Self-contained: no scripts, no external resources.
    for banned in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!page.contains(banned), "has {banned:?}");
    }
}

#[test]
fn html_escapes_a_script_in_the_customer_name() {
    let mut doc = sample();
    doc.customer.name = "<script>alert('pwned')</script> & Co".into();
    doc.sections[0].lines[0].description = "<img src=x onerror=alert(1)>".into();
    let page = html(&doc).unwrap();
    assert!(page.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &amp; Co"));
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!page.contains("<script"));
    assert!(!page.contains("<img"));
}

#[test]
fn only_web_links_are_accepted() {
    let mut doc = sample();
    doc.payment.pay_online_url = Some("javascript:alert(1)".into());
    assert_eq!(html(&doc), Err(Error::BadUrl));
    assert_eq!(pdf(&doc), Err(Error::BadUrl));
}

#[test]
fn amounts_use_the_currency_minor_unit() {
    let mut doc = sample();
    doc.currency = serde_json::from_str("\"JPY\"").unwrap();
    doc.summary.amount_due = d("12650");
    let page = html(&doc).unwrap();
    assert!(page.contains("<th scope=\"row\">Amount due</th><td>12,650 JPY</td>"));
    assert!(page.contains("<th scope=\"col\" class=\"num\">Net (JPY)</th>"));
}

#[test]
fn limits_are_enforced() {
    let doc = long_bill(LINES_MAX + 1);
    assert!(matches!(html(&doc), Err(Error::TooMany { what: "lines", .. })));
    assert!(matches!(pdf(&doc), Err(Error::TooMany { what: "lines", .. })));
    let mut doc = sample();
    doc.sections[1].lines[2].description = "x".repeat(TEXT_CHARS_MAX + 1);
    assert_eq!(
        check(&doc),
        Err(Error::TooLong {
            field: "sections[1].lines[2].description".into(),
            chars: TEXT_CHARS_MAX + 1,
            max: TEXT_CHARS_MAX
        })
    );
    assert!(check(&long_bill(LINES_MAX - sample().sections.iter().map(|s| s.lines.len()).sum::<usize>())).is_ok());
}

#[test]
fn pdf_is_well_formed_and_deterministic() {
    let doc = sample();
    let bytes = pdf(&doc).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    assert!(bytes.trim_ascii_end().ends_with(b"%%EOF"));
    assert_eq!(bytes, pdf(&doc).unwrap(), "same document, same bytes");
    assert!(!contains(&bytes, "CreationDate") && !contains(&bytes, "ModDate"));
    assert!(contains(&bytes, "/BaseFont/Helvetica") && contains(&bytes, "/BaseFont/Helvetica-Bold"));
    assert!(contains(&bytes, "/WinAnsiEncoding"));
    assert!(contains(&bytes, "/URI(https://pay.lumen-telecom.example/bill/INV-2025-03-000482)"));

    let pages = page_texts(&bytes);
    let all: Vec<&str> = pages.iter().flatten().map(String::as_str).collect();
    for text in [
        "LUMEN",
        "Camille Martin",
        "Amount due",
        "126.62 EUR",
        "1 Mar 2025 – 31 Mar 2025",
        "Child account ACC-000482-02 · +33 6 98 76 54 32 · Léo Martin",
        "Video on demand: “The Long Night”",
        "How to pay",
        "Tax summary",
    ] {
        assert!(all.contains(&text), "missing {text:?}");
    }
    let n = pages.len();
    for (i, page) in pages.iter().enumerate() {
        assert!(page.contains(&format!("Page {} of {n}", i + 1)));
    }
}

#[test]
fn text_outside_winansi_is_replaced() {
    let mut doc = sample();
    doc.customer.name = "Алексей 🙂 Müller".into();
    let pages = page_texts(&pdf(&doc).unwrap());
    assert!(pages[0].iter().any(|t| t == "??????? ? Müller"));
}

/// The sample plus a section of 150 one-row lines: the sample's sections fill page 1, the rows
/// (15 pt each, about 45 to a page) pages 2 to 5, and how-to-pay and the notes go to page 6.
/// Checked by eye on the rendered pages and independently by `pdftoppm`'s page count below.
const LONG_LINES: usize = 150;
const LONG_PAGES: usize = 6;

#[test]
fn a_long_bill_breaks_into_numbered_pages() {
    let bytes = pdf(&long_bill(LONG_LINES)).unwrap();
    let pages = page_texts(&bytes);
    assert_eq!(pages.len(), LONG_PAGES);
    assert!(contains(&bytes, &format!("/Count {LONG_PAGES}")));
    for (i, page) in pages.iter().enumerate() {
        assert!(page.contains(&format!("Page {} of {LONG_PAGES}", i + 1)));
    }
    // Every line printed exactly once; the table header is repeated on every page it spans.
    let all: Vec<&String> = pages.iter().flatten().collect();
    for i in 1..=LONG_LINES {
        let line = format!("Usage item {i:04}");
        assert_eq!(all.iter().filter(|t| ***t == line).count(), 1, "{line}");
    }
    let spanned = pages.iter().filter(|p| p.iter().any(|t| t.starts_with("Usage item "))).count();
    let continued = pages.iter().filter(|p| p.iter().any(|t| t == "Itemised usage (continued)")).count();
    assert!(spanned >= 3);
    assert_eq!(continued, spanned - 1);
    for page in pages.iter().filter(|p| p.iter().any(|t| t.starts_with("Usage item "))) {
        assert!(page.iter().any(|t| t == "Description"), "header row repeated");
    }
    for page in &pages[1..] {
        assert!(page.iter().any(|t| t == "Bill INV-2025-03-000482 · Camille Martin"), "whose bill");
    }
}

/// Renders `pdf` with `pdftoppm` into `dir`, returns the files it wrote (sorted), or None when
/// poppler-utils is not installed.
fn pdftoppm(pdf: &Path, dir: &Path, args: &[&str], prefix: &str) -> Option<Vec<PathBuf>> {
    let out = dir.join(prefix);
    let status = Command::new("pdftoppm").args(args).arg(pdf).arg(&out).status();
    match status {
        Err(_) => None,
        Ok(s) => {
            assert!(s.success(), "pdftoppm failed on {}", pdf.display());
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{prefix}-")))
                .collect();
            files.sort();
            Some(files)
        }
    }
}

/// Width, height and gray pixels of a binary PGM (P5, maxval 255) as `pdftoppm -gray` writes.
fn read_pgm(path: &Path) -> (usize, usize, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&bytes[start..i]).to_string());
    }
    assert_eq!(fields[0], "P5");
    assert_eq!(fields[3], "255");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (w, h, bytes[i + 1..].to_vec())
}

#[test]
fn the_pdf_renders_to_a_non_blank_image() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bss-present");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sample_pdf = dir.join("sample.pdf");
    std::fs::write(&sample_pdf, pdf(&sample()).unwrap()).unwrap();
    std::fs::write(dir.join("sample.html"), html(&sample()).unwrap()).unwrap();

    let Some(pngs) = pdftoppm(&sample_pdf, &dir, &["-png", "-r", "80"], "sample") else {
        println!("skipped: pdftoppm not found (install poppler-utils to render the PDF)");
        return;
    };
    assert!(!pngs.is_empty());
    let pgms = pdftoppm(&sample_pdf, &dir, &["-gray", "-r", "40", "-f", "1", "-l", "1"], "gray").unwrap();
    let (w, h, pixels) = read_pgm(&pgms[0]);
    assert_eq!(pixels.len(), w * h);
    assert!((w as f32 / h as f32 - 595.28 / 841.89).abs() < 0.01, "A4 portrait, got {w}x{h}");
    let ink = |rows: std::ops::Range<usize>| {
        let part = &pixels[rows.start * w..rows.end * w];
        part.iter().filter(|&&p| p < 160).count() as f32 / part.len() as f32
    };
    let all = ink(0..h);
    assert!(all > 0.01 && all < 0.5, "page 1 ink coverage {all}");
    assert!(ink(0..h / 6) > 0.005, "the header is drawn");
    assert!(ink(h / 3..h * 2 / 3) > 0.005, "the middle is drawn");
    println!("rendered {} page(s) to {}", pngs.len(), dir.display());

    // The text a reader extracts is the text we meant (WinAnsi decoded back).
    if let Ok(out) = Command::new("pdftotext").args(["-layout"]).arg(&sample_pdf).arg("-").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        for part in
            ["Camille Martin", "Léo Martin", "“The Long Night”", "126.62 EUR", "Page 1 of", "1 Mar 2025 – 31 Mar 2025"]
        {
            assert!(text.contains(part), "pdftotext lacks {part:?}");
        }
    }

    // An independent count of the long bill's pages.
    let long_pdf = dir.join("long.pdf");
    std::fs::write(&long_pdf, pdf(&long_bill(LONG_LINES)).unwrap()).unwrap();
    let pages = pdftoppm(&long_pdf, &dir, &["-gray", "-r", "10"], "long").unwrap();
    assert_eq!(pages.len(), LONG_PAGES);
}
