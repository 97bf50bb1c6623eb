//! Mediation batches read into [`RawUsage`] records: CSV files as switches export them, and JSON
//! arrays of flat records or TMF635 `Usage` resources. One result per record, so a bad row never
//! stops the batch; only a batch that cannot be read at all (header, size) is a [`CsvError`].
//! Tests: `cargo test -p bss-domain usage`.
//!
//! Rules:
//! - CSV: RFC 4180 (quotes, doubled quotes, commas and line breaks in quoted cells, CRLF); the
//!   delimiter is the most frequent of `,` `;` tab `|` on the header line (`,` on a tie). A UTF-8
//!   BOM is ignored. The first line is the header; its names are matched ignoring case, `_`, `-`
//!   and spaces, with the aliases switches use ([`FIELDS`]). An unknown, duplicated or missing
//!   mandatory column is a [`CsvError`] naming it.
//! - Cells are trimmed; an empty cell is `None` (empty text for a mandatory field, which
//!   [`normalise`](fn@crate::rating::normalise) then reports). Rows whose cells are all empty are
//!   skipped. `service` accepts `voice`, `sms`, `data` and the switch names `moc`, `mtc`, `call`
//!   (voice) and `gprs`, `packet` (data), in any case; `moc`/`mtc` also give the `direction`
//!   (outgoing/incoming) when the row has none. `onNet` is `true`/`false`/`1`/`0`/`yes`/`no`.
//! - JSON: a flat object's keys and a TMF635 `usageCharacteristic`'s names are matched like CSV
//!   columns; keys starting with `@` are TMF metadata and ignored. A TMF635 resource is an object
//!   with `usageDate`, `usageType` or `usageCharacteristic`: `id` is the record id, `usageDate` the
//!   start time, `usageType` the service; its other resource attributes are ignored; the subscriber
//!   may come from the `relatedParty` whose `role` is `subscriber` (its `id`) when no
//!   characteristic gives it. A value set twice (`id` and a `recordId` characteristic) is a problem.
//! - Numbers: quantities are whole numbers (a JSON number or a string of digits); text fields
//!   accept JSON strings and numbers.

use serde_json::{Map, Value};
use std::fmt;

use crate::json::type_name;
use crate::rating::{MAX_BATCH, RawUsage};

/// Largest CSV text of one batch.
pub const MAX_TEXT_BYTES: usize = 128 * 1024 * 1024;
/// Longest CSV row (its bytes, quotes and line break included).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Most columns in a CSV header.
pub const MAX_COLUMNS: usize = 64;
/// Most records of one batch, whatever limit the caller asks for.
pub const MAX_RECORDS: usize = MAX_BATCH;
/// Most characteristics of one TMF635 `Usage`.
pub const MAX_CHARACTERISTICS: usize = 64;

/// A field of [`RawUsage`], as columns and keys name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    RecordId,
    Subscriber,
    Service,
    StartTime,
    TimeZone,
    Duration,
    DurationUnit,
    Volume,
    VolumeUnit,
    Events,
    CalledNumber,
    Apn,
    VisitedNetwork,
    OnNet,
    Direction,
    Carrier,
}

/// Every field: its [`RawUsage`] (camelCase) name and the column names that mean it, in the
/// matched form (lower case, without `_`, `-` or spaces).
pub const FIELDS: [(&str, &[&str]); 16] = [
    ("recordId", &["recordid", "id", "cdrid", "callid"]),
    ("subscriber", &["subscriber", "msisdn", "anumber", "callingnumber"]),
    ("service", &["service", "servicetype", "type", "recordtype"]),
    ("startTime", &["starttime", "start", "eventtime", "seizuretime"]),
    ("timeZone", &["timezone", "tz"]),
    ("duration", &["duration", "durationsecs", "callduration"]),
    ("durationUnit", &["durationunit"]),
    ("volume", &["volume", "bytes", "volumebytes", "datavolume"]),
    ("volumeUnit", &["volumeunit"]),
    ("events", &["events", "count"]),
    ("calledNumber", &["callednumber", "bnumber", "destination"]),
    ("apn", &["apn"]),
    ("visitedNetwork", &["visitednetwork", "mccmnc", "vplmn"]),
    ("onNet", &["onnet"]),
    ("direction", &["direction"]),
    ("carrier", &["carrier", "partner", "trunk"]),
];

/// Longer than every alias of [`FIELDS`], folded.
const NAME_FOLDED_MAX: usize = 32;
const _: () = {
    let mut i = 0;
    while i < FIELDS.len() {
        let mut j = 0;
        while j < FIELDS[i].1.len() {
            assert!(FIELDS[i].1[j].len() < NAME_FOLDED_MAX);
            j += 1;
        }
        i += 1;
    }
};

/// The same order as [`FIELDS`].
const ALL: [Field; 16] = [
    Field::RecordId,
    Field::Subscriber,
    Field::Service,
    Field::StartTime,
    Field::TimeZone,
    Field::Duration,
    Field::DurationUnit,
    Field::Volume,
    Field::VolumeUnit,
    Field::Events,
    Field::CalledNumber,
    Field::Apn,
    Field::VisitedNetwork,
    Field::OnNet,
    Field::Direction,
    Field::Carrier,
];

/// Columns a CSV batch must have.
const MANDATORY: [Field; 4] = [Field::RecordId, Field::Subscriber, Field::Service, Field::StartTime];

impl Field {
    fn name(self) -> &'static str {
        FIELDS[self as usize].0
    }

    /// The field a column or key names, if any.
    fn named(name: &str) -> Option<Field> {
        // The canonical names first, as written (every key of every JSON record comes here, and
        // folding it and searching the aliases was 7% of the native pipeline's instructions);
        // each folds to one of its own aliases, so this answers as the search below would.
        if let Some(i) = FIELDS.iter().position(|(canonical, _)| *canonical == name) {
            return Some(ALL[i]);
        }
        // Folded on the stack: a heap string per key of every JSON record was 2% of ingestion.
        // A key that folds longer than the buffer is longer than every alias.
        let mut buf = [0u8; NAME_FOLDED_MAX];
        let mut len = 0;
        for c in name.trim().chars().filter(|c| !matches!(c, '_' | '-' | ' ')).flat_map(char::to_lowercase) {
            let end = len + c.len_utf8();
            if end > buf.len() {
                return None;
            }
            c.encode_utf8(&mut buf[len..end]);
            len = end;
        }
        let key = std::str::from_utf8(&buf[..len]).ok()?;
        ALL.into_iter().find(|f| FIELDS[*f as usize].1.contains(&key))
    }
}

fn known_fields() -> String {
    FIELDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Why a whole batch cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvError {
    /// The text has no header line.
    Empty,
    /// The text is larger than [`MAX_TEXT_BYTES`] (its size).
    TooLarge(usize),
    /// The header has more than [`MAX_COLUMNS`] columns (their number).
    TooManyColumns(usize),
    /// Header names that are no usage field: (1-based column, name).
    UnknownColumns(Vec<(usize, String)>),
    /// Two columns (or keys) mean the same field.
    DuplicateColumn { field: &'static str, first: String, second: String },
    /// Mandatory fields without a column.
    MissingColumns(Vec<&'static str>),
    /// More records than the limit (the limit).
    TooManyRecords(usize),
    /// The header line itself cannot be read (why).
    BadHeader(String),
    /// A JSON batch that is not an array (the JSON type's name).
    NotArray(&'static str),
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsvError::Empty => f.write_str("the batch is empty: the first line must be a header"),
            CsvError::TooLarge(n) => write!(f, "the batch is {n} bytes, more than the limit of {MAX_TEXT_BYTES}"),
            CsvError::TooManyColumns(n) => {
                write!(f, "the header has {n} columns, more than the limit of {MAX_COLUMNS}")
            }
            CsvError::UnknownColumns(cols) => {
                let names: Vec<String> = cols.iter().map(|(i, n)| format!("{n:?} (column {i})")).collect();
                write!(f, "unknown columns {}; known: {}", names.join(", "), known_fields())
            }
            CsvError::DuplicateColumn { field, first, second } => {
                write!(f, "columns {first:?} and {second:?} both give {field}")
            }
            CsvError::MissingColumns(fields) => write!(f, "missing mandatory columns: {}", fields.join(", ")),
            CsvError::TooManyRecords(limit) => write!(f, "the batch has more than the limit of {limit} records"),
            CsvError::BadHeader(why) => write!(f, "the header cannot be read: {why}"),
            CsvError::NotArray(t) => write!(f, "a batch must be a JSON array of usage records, not {t}"),
        }
    }
}

impl std::error::Error for CsvError {}

/// Why one record cannot be read; the rest of its batch still is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblem {
    /// CSV: the 1-based line where the row starts (the header is line 1). JSON batch: the 1-based
    /// position in the array. A single JSON object: 0.
    pub line: usize,
    /// The record's id, when it could be read.
    pub record_id: Option<String>,
    /// The [`RawUsage`] field concerned (camelCase), `row` for the whole row, or the unknown key.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl CsvProblem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> CsvProblem {
        CsvProblem { line: 0, record_id: None, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for CsvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}", self.line)?;
            if let Some(id) = &self.record_id {
                write!(f, " (record {id:?})")?;
            }
            f.write_str(": ")?;
        } else if let Some(id) = &self.record_id {
            write!(f, "record {id:?}: ")?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for CsvProblem {}

/// A record being read: the fields set so far (to refuse a second value) and the service alias.
#[derive(Default)]
struct Builder {
    raw: RawUsage,
    set: [bool; 16],
    /// `outgoing`/`incoming` implied by a `moc`/`mtc` service.
    implied_direction: Option<&'static str>,
}

impl Builder {
    /// Sets `field` from a trimmed cell (`None` or empty: absent). Errors are messages about it.
    fn set(&mut self, field: Field, cell: Option<&str>) -> Result<(), String> {
        let Some(cell) = cell.map(str::trim).filter(|c| !c.is_empty()) else { return Ok(()) };
        if std::mem::replace(&mut self.set[field as usize], true) {
            return Err("is given twice".into());
        }
        let text = || Some(cell.to_string());
        let r = &mut self.raw;
        match field {
            Field::RecordId => r.record_id = cell.to_string(),
            Field::Subscriber => r.subscriber = cell.to_string(),
            Field::Service => {
                let lower = cell.to_ascii_lowercase();
                let (service, implied) = match lower.as_str() {
                    "voice" | "call" => ("voice", None),
                    "moc" => ("voice", Some("outgoing")),
                    "mtc" => ("voice", Some("incoming")),
                    "sms" => ("sms", None),
                    "data" | "gprs" | "packet" => ("data", None),
                    _ => {
                        return Err(format!(
                            "{cell:?} is not one of voice, sms, data (or moc, mtc, call, gprs, packet)"
                        ));
                    }
                };
                r.service = service.to_string();
                self.implied_direction = implied;
            }
            Field::StartTime => r.start_time = cell.to_string(),
            Field::TimeZone => r.time_zone = text(),
            Field::Duration => r.duration = Some(whole(cell)?),
            Field::DurationUnit => r.duration_unit = text(),
            Field::Volume => r.volume = Some(whole(cell)?),
            Field::VolumeUnit => r.volume_unit = text(),
            Field::Events => r.events = Some(whole(cell)?),
            Field::CalledNumber => r.called_number = text(),
            Field::Apn => r.apn = text(),
            Field::VisitedNetwork => r.visited_network = text(),
            Field::OnNet => {
                r.on_net = match cell.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(format!("{cell:?} is not one of true, false, 1, 0, yes, no")),
                }
            }
            Field::Direction => r.direction = Some(cell.to_ascii_lowercase()),
            Field::Carrier => r.carrier = text(),
        }
        Ok(())
    }

    fn finish(mut self) -> RawUsage {
        if self.raw.direction.is_none() {
            self.raw.direction = self.implied_direction.map(str::to_string);
        }
        self.raw
    }
}

fn whole(cell: &str) -> Result<i64, String> {
    cell.parse::<i64>().map_err(|_| format!("{cell:?} is not a whole number"))
}

/// The delimiter of a header line: the most frequent of `,` `;` tab `|` outside quotes.
fn delimiter(text: &str) -> u8 {
    let mut counts = [0usize; 4];
    let mut quoted = false;
    for b in text.bytes().take(MAX_LINE_BYTES) {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if quoted => {}
            b',' => counts[0] += 1,
            b';' => counts[1] += 1,
            b'\t' => counts[2] += 1,
            b'|' => counts[3] += 1,
            _ => {}
        }
    }
    let best = (0..4).rev().max_by_key(|i| (counts[*i], *i == 0)).unwrap_or(0);
    [b',', b';', b'\t', b'|'][best]
}

/// The columns of a header: the field of each, or the error naming what is wrong.
fn columns(header: &::csv::StringRecord) -> Result<Vec<Field>, CsvError> {
    if header.len() > MAX_COLUMNS {
        return Err(CsvError::TooManyColumns(header.len()));
    }
    if header.iter().all(|h| h.trim().is_empty()) {
        return Err(CsvError::Empty);
    }
    let mut fields: Vec<Field> = Vec::with_capacity(header.len());
    let mut unknown = Vec::new();
    for (i, name) in header.iter().enumerate() {
        let Some(f) = Field::named(name) else {
            unknown.push((i + 1, name.trim().to_string()));
            continue;
        };
        if let Some(first) = header.iter().find(|h| Field::named(h) == Some(f)).filter(|_| fields.contains(&f)) {
            let (first, second) = (first.trim().to_string(), name.trim().to_string());
            return Err(CsvError::DuplicateColumn { field: f.name(), first, second });
        }
        fields.push(f);
    }
    if !unknown.is_empty() {
        return Err(CsvError::UnknownColumns(unknown));
    }
    let missing: Vec<&'static str> = MANDATORY.into_iter().filter(|m| !fields.contains(m)).map(Field::name).collect();
    if !missing.is_empty() {
        return Err(CsvError::MissingColumns(missing));
    }
    Ok(fields)
}

/// The 1-based line and byte offset where a row starts. The reader's position of a row is where
/// the previous one ended, so the blank lines it skipped are skipped here too.
fn row_start(text: &[u8], position: Option<&::csv::Position>) -> (usize, usize) {
    let Some(p) = position else { return (0, 0) };
    let (mut line, mut at) = (p.line() as usize, p.byte() as usize);
    while let Some(b @ (b'\r' | b'\n')) = text.get(at) {
        if *b == b'\n' || text.get(at + 1) != Some(&b'\n') {
            line += 1;
        }
        at += 1;
    }
    (line, at)
}

/// Reads a mediation CSV batch: one result per data row, in order (see the module's rules).
/// At most `max_records` rows (and never more than [`MAX_RECORDS`]): past it the batch is refused.
pub fn parse_csv(text: &str, max_records: usize) -> Result<Vec<Result<RawUsage, CsvProblem>>, CsvError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(CsvError::TooLarge(text.len()));
    }
    let limit = max_records.min(MAX_RECORDS);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter(text))
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut record = ::csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err(CsvError::Empty),
        Err(e) => return Err(CsvError::BadHeader(e.to_string())),
    }
    if reader.position().byte() as usize > MAX_LINE_BYTES {
        return Err(CsvError::BadHeader(format!("it is longer than {MAX_LINE_BYTES} bytes")));
    }
    let fields = columns(&record)?;
    let names: Vec<String> = record.iter().map(|h| h.trim().to_string()).collect();
    let id_column = fields.iter().position(|f| *f == Field::RecordId);
    let mut out = Vec::new();
    loop {
        let read = reader.read_record(&mut record);
        let position = match &read {
            Err(e) => e.position(),
            Ok(_) => record.position(),
        };
        match read {
            Ok(false) => break,
            Ok(true) if record.iter().all(|c| c.trim().is_empty()) => continue,
            _ => {}
        }
        if out.len() == limit {
            return Err(CsvError::TooManyRecords(limit));
        }
        let (line, start) = row_start(text.as_bytes(), position);
        let bytes = (reader.position().byte() as usize).saturating_sub(start);
        let record_id =
            id_column.and_then(|i| record.get(i)).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let problem = |field: &str, message: String| {
            Err(CsvProblem { line, record_id: record_id.clone(), field: field.to_string(), message })
        };
        let row = if let Err(e) = read {
            problem("row", format!("cannot be read: {e}"))
        } else if bytes > MAX_LINE_BYTES {
            problem("row", format!("is {bytes} bytes, longer than the limit of {MAX_LINE_BYTES}"))
        } else if record.len() != fields.len() {
            problem("row", format!("has {} cells, the header has {}", record.len(), fields.len()))
        } else {
            let mut b = Builder::default();
            let failed = fields
                .iter()
                .zip(record.iter())
                .enumerate()
                .find_map(|(i, (f, cell))| b.set(*f, Some(cell)).err().map(|m| (i, *f, m)));
            match failed {
                Some((i, f, m)) => problem(f.name(), format!("{m} (column {:?})", names[i])),
                None => Ok(b.finish()),
            }
        };
        out.push(row);
    }
    Ok(out)
}

/// Reads a JSON batch: an array of flat records or TMF635 `Usage` resources (see the module's
/// rules), one result per element, in order. At most `max_records` elements (and never more
/// than [`MAX_RECORDS`]).
pub fn parse_json_batch(value: &Value, max_records: usize) -> Result<Vec<Result<RawUsage, CsvProblem>>, CsvError> {
    let items = value.as_array().ok_or_else(|| CsvError::NotArray(type_name(value)))?;
    let limit = max_records.min(MAX_RECORDS);
    if items.len() > limit {
        return Err(CsvError::TooManyRecords(limit));
    }
    let read = |(i, v): (usize, &Value)| raw_from_json(v).map_err(|p| CsvProblem { line: i + 1, ..p });
    Ok(items.iter().enumerate().map(read).collect())
}

/// One usage record from a JSON object, flat (`{"recordId": …, "duration": 60}`) or a TMF635
/// `Usage` resource. The problem's `line` is 0.
pub fn raw_from_json(value: &Value) -> Result<RawUsage, CsvProblem> {
    let Some(obj) = value.as_object() else {
        return Err(CsvProblem::new("record", format!("must be an object, not {}", type_name(value))));
    };
    let tmf = ["usageDate", "usageType", "usageCharacteristic"].iter().any(|k| obj.contains_key(*k));
    let record_id = obj
        .iter()
        .filter(|(k, _)| Field::named(k) == Some(Field::RecordId))
        .find_map(|(_, v)| cell(v).ok().flatten())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let read = if tmf { tmf_usage(obj) } else { flat(obj) };
    read.map_err(|p| CsvProblem { record_id, ..p })
}

/// A JSON value as cell text: strings as they are, numbers and booleans as their JSON text.
fn cell(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(format!("must be a string or a number, not {}", type_name(other))),
    }
}

/// Sets `field` from `v`; `whence` names where it came from, in an error (built only then).
fn set_json(b: &mut Builder, field: Field, v: &Value, whence: &dyn Fn() -> String) -> Result<(), CsvProblem> {
    if matches!(v, Value::Bool(_)) && field != Field::OnNet {
        let m = format!("must be a string or a number, not a boolean{}", whence());
        return Err(CsvProblem::new(field.name(), m));
    }
    let text = cell(v).map_err(|m| CsvProblem::new(field.name(), format!("{m}{}", whence())))?;
    b.set(field, text.as_deref()).map_err(|m| CsvProblem::new(field.name(), format!("{m}{}", whence())))
}

fn flat(obj: &Map<String, Value>) -> Result<RawUsage, CsvProblem> {
    let mut b = Builder::default();
    for (key, v) in obj {
        if key.starts_with('@') {
            continue;
        }
        let field = Field::named(key).ok_or_else(|| {
            CsvProblem::new(key.as_str(), format!("is not a usage field (one of {})", known_fields()))
        })?;
        set_json(&mut b, field, v, &|| format!(" (key {key:?})"))?;
    }
    Ok(b.finish())
}

fn tmf_usage(obj: &Map<String, Value>) -> Result<RawUsage, CsvProblem> {
    let mut b = Builder::default();
    for (key, field) in [("id", Field::RecordId), ("usageDate", Field::StartTime), ("usageType", Field::Service)] {
        if let Some(v) = obj.get(key) {
            set_json(&mut b, field, v, &|| format!(" ({key})"))?;
        }
    }
    let chars = match obj.get("usageCharacteristic") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => {
            let m = format!("must be an array of {{name, value}}, not {}", type_name(other));
            return Err(CsvProblem::new("usageCharacteristic", m));
        }
    };
    if chars.len() > MAX_CHARACTERISTICS {
        let m = format!("has {} entries, more than the limit of {MAX_CHARACTERISTICS}", chars.len());
        return Err(CsvProblem::new("usageCharacteristic", m));
    }
    for (i, c) in chars.iter().enumerate() {
        let at = || format!("usageCharacteristic[{i}]");
        let Some(name) = c.get("name").and_then(Value::as_str) else {
            return Err(CsvProblem::new(at(), "must be an object with a string name and a value"));
        };
        let field = Field::named(name).ok_or_else(|| {
            CsvProblem::new(name, format!("{} is not a usage field (one of {})", at(), known_fields()))
        })?;
        set_json(&mut b, field, c.get("value").unwrap_or(&Value::Null), &|| format!(" ({})", at()))?;
    }
    if !b.set[Field::Subscriber as usize] {
        let party = obj.get("relatedParty").and_then(Value::as_array).and_then(|parties| {
            parties
                .iter()
                .find(|p| p.get("role").and_then(Value::as_str).is_some_and(|r| r.eq_ignore_ascii_case("subscriber")))
        });
        if let Some(id) = party.and_then(|p| p.get("id")) {
            set_json(&mut b, Field::Subscriber, id, &|| " (relatedParty subscriber's id)".into())?;
        }
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rating::{NormaliseConfig, Service, normalise};
    use serde_json::json;

    fn ok(rows: &[Result<RawUsage, CsvProblem>]) -> Vec<&RawUsage> {
        rows.iter().map(|r| r.as_ref().unwrap()).collect()
    }

    fn voice(id: &str) -> RawUsage {
        RawUsage {
            record_id: id.into(),
            subscriber: "+33611111111".into(),
            service: "voice".into(),
            start_time: "2026-03-09T10:00:00Z".into(),
            duration: Some(60),
            called_number: Some("+33622222222".into()),
            ..RawUsage::default()
        }
    }

    #[test]
    fn reads_quotes_commas_and_line_breaks() {
        let text = "record_id,MSISDN,Service Type,Start Time,Duration,B-Number,Carrier\r\n\
            \"cdr,1\",+33611111111,voice,2026-03-09T10:00:00Z,60,+33622222222,\"Big \"\"Telco\"\", Inc.\"\r\n\
            cdr-2,+33611111111,voice,2026-03-09T10:00:00Z,60,+33622222222,\"two\nlines\"\r\n\
            cdr-3,+33611111111,voice,2026-03-09T10:00:00Z,60,+33622222222,\r\n";
        let rows = parse_csv(text, 10).unwrap();
        let rows = ok(&rows);
        assert_eq!(rows.len(), 3);
        assert_eq!(*rows[0], RawUsage { carrier: Some("Big \"Telco\", Inc.".into()), ..voice("cdr,1") });
        assert_eq!(rows[1].carrier.as_deref(), Some("two\nlines"));
        assert_eq!(*rows[2], voice("cdr-3"), "an empty cell is None");
    }

    #[test]
    fn matches_every_alias_ignoring_case_underscores_hyphens_and_spaces() {
        for (name, aliases) in FIELDS {
            for alias in aliases.iter().chain([&name]) {
                let field = Field::named(alias).unwrap();
                assert_eq!(field.name(), name, "{alias}");
                assert_eq!(Field::named(&alias.to_uppercase()), Some(field));
            }
        }
        for (i, (canonical, aliases)) in FIELDS.iter().enumerate() {
            // The canonical name's shortcut gives what folding it would.
            let folded: String = canonical.chars().flat_map(char::to_lowercase).collect();
            assert!(aliases.contains(&folded.as_str()), "{canonical} folds to an alias of its own");
            assert_eq!(Field::named(canonical), Some(ALL[i]));
            assert_eq!(ALL[i].name(), *canonical);
        }
        assert_eq!(Field::named(" Calling_Number ").map(Field::name), Some("subscriber"));
        assert_eq!(Field::named("cdr-id").map(Field::name), Some("recordId"));
        assert_eq!(Field::named("MCC MNC").map(Field::name), Some("visitedNetwork"));
        assert_eq!(Field::named("Seizure-Time").map(Field::name), Some("startTime"));
        assert_eq!(Field::named("cellId"), None);
        // Folded on the stack: separators do not count towards its size, a key too long for it
        // is no field (as it was when folded into a string), and nothing overflows.
        assert_eq!(Field::named(&format!("record{}id", "_".repeat(200))).map(Field::name), Some("recordId"));
        assert_eq!(Field::named(&"x".repeat(NAME_FOLDED_MAX + 1)), None);
        assert_eq!(Field::named(&format!("{}{}", "recordid", "é".repeat(NAME_FOLDED_MAX))), None);

        let text = "CallID,A_Number,Record Type,Seizure Time,TZ,Call Duration,Duration Unit,bnumber,On-Net,VPLMN,Trunk,Direction\n\
            c1,0611111111,MOC,2026-03-09 11:00:00,Europe/Paris,1500,ms,0622222222,yes,262-01,PARTNER1,\n";
        let rows = parse_csv(text, 10).unwrap();
        let want = RawUsage {
            record_id: "c1".into(),
            subscriber: "0611111111".into(),
            service: "voice".into(),
            start_time: "2026-03-09 11:00:00".into(),
            time_zone: Some("Europe/Paris".into()),
            duration: Some(1500),
            duration_unit: Some("ms".into()),
            called_number: Some("0622222222".into()),
            on_net: true,
            visited_network: Some("262-01".into()),
            carrier: Some("PARTNER1".into()),
            direction: Some("outgoing".into()),
            ..RawUsage::default()
        };
        assert_eq!(*ok(&rows)[0], want);

        let text = "id,msisdn,type,start,bytes,volume_unit,apn,events,count\n";
        assert!(matches!(parse_csv(text, 10), Err(CsvError::DuplicateColumn { field: "events", .. })));
        let text = "id,msisdn,type,start,data volume,volumeunit,apn,partner\n\
            d1,+33611111111,GPRS,2026-03-09T10:00:00Z,5,MB,internet,\n";
        let rows = parse_csv(text, 10).unwrap();
        let r = ok(&rows)[0];
        assert_eq!((r.service.as_str(), r.volume, r.volume_unit.as_deref()), ("data", Some(5), Some("MB")));
        assert_eq!((r.apn.as_deref(), r.carrier.as_deref()), (Some("internet"), None));
    }

    #[test]
    fn service_aliases_and_their_direction() {
        let text = "id,msisdn,service,start,direction,events\n\
            a,1,moc,t,,\nb,1,MTC,t,,\nc,1,mtc,t,transit,\nd,1,Call,t,,\ne,1,packet,t,,\nf,1,SMS,t,,3\ng,1,fax,t,,\nh,1,Data,t,OUTGOING,\n";
        let rows = parse_csv(text, 10).unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| r.as_ref().map(|r| (r.service.as_str(), r.direction.as_deref())).map_err(|p| p.field.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                Ok(("voice", Some("outgoing"))),
                Ok(("voice", Some("incoming"))),
                Ok(("voice", Some("transit"))),
                Ok(("voice", None)),
                Ok(("data", None)),
                Ok(("sms", None)),
                Err("service"),
                Ok(("data", Some("outgoing"))),
            ]
        );
        let fax = rows[6].as_ref().unwrap_err();
        assert!(fax.message.contains("\"fax\" is not one of voice, sms, data"), "{fax}");
        assert_eq!(rows[5].as_ref().unwrap().events, Some(3));
    }

    #[test]
    fn header_errors_name_what_is_wrong() {
        let err = parse_csv("id,msisdn,service,start,cell_id,Foo\n", 10).unwrap_err();
        assert_eq!(err, CsvError::UnknownColumns(vec![(5, "cell_id".into()), (6, "Foo".into())]));
        let msg = err.to_string();
        assert!(msg.contains("\"cell_id\" (column 5)") && msg.contains("\"Foo\" (column 6)"), "{msg}");
        assert!(msg.contains("calledNumber"), "lists the known fields: {msg}");

        let err = parse_csv("id,msisdn,service,start,trunk_group,carrier\n", 10).unwrap_err();
        assert_eq!(err, CsvError::UnknownColumns(vec![(5, "trunk_group".into())]), "an unknown column is no duplicate");
        let err = parse_csv("msisdn,duration\n", 10).unwrap_err();
        assert_eq!(err, CsvError::MissingColumns(vec!["recordId", "service", "startTime"]));
        assert_eq!(err.to_string(), "missing mandatory columns: recordId, service, startTime");

        let err = parse_csv("id,cdr_id,msisdn,service,start\n", 10).unwrap_err();
        assert_eq!(err, CsvError::DuplicateColumn { field: "recordId", first: "id".into(), second: "cdr_id".into() });
        assert_eq!(err.to_string(), "columns \"id\" and \"cdr_id\" both give recordId");

        assert_eq!(parse_csv("", 10), Err(CsvError::Empty));
        assert_eq!(parse_csv("\u{feff}", 10), Err(CsvError::Empty));
        assert_eq!(parse_csv(",,\n", 10), Err(CsvError::Empty));
        assert_eq!(parse_csv("\u{feff}id,msisdn,service,start\r\n", 10), Ok(vec![]));
        let wide = vec!["x"; MAX_COLUMNS + 1].join(",");
        assert_eq!(parse_csv(&wide, 10), Err(CsvError::TooManyColumns(MAX_COLUMNS + 1)));
        let long = format!("id,msisdn,service,start,{}\n", "x".repeat(MAX_LINE_BYTES));
        assert!(matches!(parse_csv(&long, 10), Err(CsvError::BadHeader(_))));
    }

    #[test]
    fn a_bad_row_is_reported_and_the_others_are_kept() {
        let text = "id,msisdn,service,start,duration,onnet,bnumber\n\
            r1,+33611111111,voice,2026-03-09T10:00:00Z,60,,+33622222222\n\
            r2,+33611111111,voice,2026-03-09T10:00:00Z,12.5,,+33622222222\n\
            r3,+33611111111,voice\n\
            \n\
            r4,+33611111111,voice,2026-03-09T10:00:00Z,60,maybe,+33622222222\n\
            ,,,,,,\n\
            \"r5\n\",+33611111111,voice,2026-03-09T10:00:00Z,60,0,+33622222222\n\
            r6,+33611111111,voice,2026-03-09T10:00:00Z,60,,+33622222222,extra\n\
            r7,+33611111111,voice,2026-03-09T10:00:00Z,60,1,+33622222222\n";
        let rows = parse_csv(text, 100).unwrap();
        assert_eq!(rows.len(), 7, "the blank line and the all-empty row are skipped");
        let problem = |i: usize| rows[i].as_ref().unwrap_err();
        assert_eq!(rows[0], Ok(voice("r1")));
        assert_eq!(
            *problem(1),
            CsvProblem {
                line: 3,
                record_id: Some("r2".into()),
                field: "duration".into(),
                message: "\"12.5\" is not a whole number (column \"duration\")".into()
            }
        );
        assert_eq!((problem(2).line, problem(2).field.as_str()), (4, "row"));
        assert_eq!(problem(2).message, "has 3 cells, the header has 7");
        assert_eq!((problem(3).line, problem(3).field.as_str()), (6, "onNet"));
        assert!(problem(3).message.contains("\"maybe\" is not one of true, false"));
        assert_eq!(rows[4].as_ref().unwrap().record_id, "r5", "cells are trimmed");
        assert_eq!((problem(5).line, problem(5).record_id.as_deref()), (10, Some("r6")));
        assert_eq!(rows[6], Ok(RawUsage { on_net: true, ..voice("r7") }));
        assert_eq!(
            problem(1).to_string(),
            "line 3 (record \"r2\"): duration: \"12.5\" is not a whole number (column \"duration\")"
        );
    }

    #[test]
    fn lines_count_blank_lines_and_quoted_line_breaks() {
        let text = "id,msisdn,service,start,duration\r\n\r\n\r\na,1,voice,t,x\r\n\"b\r\nb\",1,voice,t,1\r\n\nc,1,voice,t,y\r\n";
        let rows = parse_csv(text, 10).unwrap();
        let lines: Vec<usize> = rows.iter().filter_map(|r| r.as_ref().err()).map(|p| p.line).collect();
        assert_eq!(lines, [4, 8]);
        assert_eq!(rows[1].as_ref().unwrap().record_id, "b\r\nb");
    }

    #[test]
    fn limits_are_enforced() {
        let row = "r,+33611111111,voice,2026-03-09T10:00:00Z\n";
        let text = format!("id,msisdn,service,start\n{}", row.repeat(3));
        assert_eq!(parse_csv(&text, 3).map(|r| r.len()), Ok(3));
        assert_eq!(parse_csv(&text, usize::MAX).map(|r| r.len()), Ok(3));
        let err = parse_csv(&text, 2).unwrap_err();
        assert_eq!(err, CsvError::TooManyRecords(2));
        assert_eq!(err.to_string(), "the batch has more than the limit of 2 records");
        assert_eq!(parse_csv(&text, 0), Err(CsvError::TooManyRecords(0)));

        let long = format!("id,msisdn,service,start\nr1,1,voice,\"{}\"\n{row}", "x".repeat(MAX_LINE_BYTES));
        let rows = parse_csv(&long, 10).unwrap();
        let p = rows[0].as_ref().unwrap_err();
        assert_eq!((p.line, p.field.as_str(), p.record_id.as_deref()), (2, "row", Some("r1")));
        assert!(p.message.contains(&format!("longer than the limit of {MAX_LINE_BYTES}")), "{p}");
        assert!(rows[1].is_ok());
        let just = format!("id,msisdn,service,start\nr1,1,voice,{}\n", "x".repeat(MAX_LINE_BYTES - 16));
        assert!(parse_csv(&just, 10).unwrap()[0].is_ok());
    }

    #[test]
    fn detects_the_delimiter_from_the_header() {
        let text = "id;msisdn;service;start;carrier\nr1;+33611111111;sms;2026-03-09T10:00:00Z;\"a;b, c\"\n";
        let rows = parse_csv(text, 10).unwrap();
        assert_eq!(ok(&rows)[0].carrier.as_deref(), Some("a;b, c"));
        let text = "id\tmsisdn\tservice\tstart\nr1\t+33611111111\tsms\t2026-03-09T10:00:00Z\n";
        assert_eq!(ok(&parse_csv(text, 10).unwrap())[0].service, "sms");
        let text = "id|msisdn|service|start\nr1|+33611111111|sms|t\n";
        assert_eq!(ok(&parse_csv(text, 10).unwrap())[0].start_time, "t");
        assert_eq!(delimiter("\"a;b;c\",d\n"), b',', "quoted delimiters do not count");
        assert_eq!(delimiter("a"), b',');
    }

    #[test]
    fn parsed_rows_normalise() {
        let text = "cdr_id,calling_number,record_type,event_time,time_zone,duration_secs,called_number\n\
            c1,06 11 11 11 11,moc,2026-03-09 11:00:00,Europe/Paris,61,0622222222\n";
        let rows = parse_csv(text, 10).unwrap();
        let cfg = NormaliseConfig::new("33", "2026-03-10T00:00:00Z".parse().unwrap());
        let u = normalise(ok(&rows)[0], &cfg).unwrap();
        assert_eq!((u.subscriber.as_str(), u.service, u.quantity), ("+33611111111", Service::Voice, 61));
        assert_eq!(u.start, "2026-03-09T10:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    }

    #[test]
    fn json_flat_records() {
        let v = json!({"recordId": "r1", "subscriber": "+33611111111", "service": "voice", "startTime": "2026-03-09T10:00:00Z",
            "duration": 60, "calledNumber": "+33622222222", "onNet": false, "apn": null, "@type": "Usage"});
        assert_eq!(raw_from_json(&v), Ok(voice("r1")));
        let v = json!({"id": 42, "msisdn": 33611111111u64, "service": "SMS", "start_time": "t", "events": "2", "onNet": "yes"});
        let r = raw_from_json(&v).unwrap();
        assert_eq!((r.record_id.as_str(), r.subscriber.as_str(), r.service.as_str()), ("42", "33611111111", "sms"));
        assert_eq!((r.events, r.on_net), (Some(2), true));

        let p = raw_from_json(&json!({"recordId": "r1", "duration": 60.5})).unwrap_err();
        assert_eq!((p.line, p.record_id.as_deref(), p.field.as_str()), (0, Some("r1"), "duration"));
        assert_eq!(p.message, "\"60.5\" is not a whole number (key \"duration\")");
        assert_eq!(p.to_string(), "record \"r1\": duration: \"60.5\" is not a whole number (key \"duration\")");
        let p = raw_from_json(&json!({"record_id": "r1", "cellId": "x"})).unwrap_err();
        assert_eq!((p.field.as_str(), p.record_id.as_deref()), ("cellId", Some("r1")));
        assert!(p.message.starts_with("is not a usage field (one of recordId, subscriber"), "{p}");
        let p = raw_from_json(&json!({"subscriber": true})).unwrap_err();
        assert_eq!(
            (p.field.as_str(), p.message.as_str()),
            ("subscriber", "must be a string or a number, not a boolean (key \"subscriber\")")
        );
        let p = raw_from_json(&json!({"calledNumber": ["1"]})).unwrap_err();
        assert_eq!(p.message, "must be a string or a number, not an array (key \"calledNumber\")");
        let p = raw_from_json(&json!({"id": "a", "recordId": "b"})).unwrap_err();
        assert_eq!((p.field.as_str(), p.message.as_str()), ("recordId", "is given twice (key \"recordId\")"));
        let p = raw_from_json(&json!("r1")).unwrap_err();
        assert_eq!((p.field.as_str(), p.message.as_str()), ("record", "must be an object, not a string"));
    }

    #[test]
    fn json_tmf635_usage() {
        let v = json!({
            "id": "u1", "href": "/usage/u1", "status": "received", "@type": "Usage",
            "usageDate": "2026-03-09T10:00:00Z", "usageType": "VOICE",
            "usageCharacteristic": [
                {"name": "duration", "value": 60, "valueType": "integer"},
                {"name": "calledNumber", "value": "+33622222222"},
                {"name": "apn", "value": null}
            ],
            "relatedParty": [{"role": "customer", "id": "cust-1"}, {"role": "Subscriber", "id": "+33611111111"}]
        });
        assert_eq!(raw_from_json(&v), Ok(voice("u1")));
        let v = json!({"id": "u2", "usageDate": "t", "usageType": "data",
            "usageCharacteristic": [{"name": "msisdn", "value": "+33611111111"}, {"name": "volume", "value": "100"}],
            "relatedParty": [{"role": "subscriber", "id": "+33699999999"}]});
        let r = raw_from_json(&v).unwrap();
        assert_eq!(
            (r.subscriber.as_str(), r.volume),
            ("+33611111111", Some(100)),
            "a characteristic wins over the party"
        );

        let bad = |chars: Value| {
            raw_from_json(&json!({"id": "u3", "usageType": "sms", "usageCharacteristic": chars})).unwrap_err()
        };
        let p = bad(json!([{"name": "cellId", "value": "x"}]));
        assert_eq!((p.record_id.as_deref(), p.field.as_str()), (Some("u3"), "cellId"));
        assert!(p.message.starts_with("usageCharacteristic[0] is not a usage field"), "{p}");
        let p = bad(json!([{"name": "events", "value": 1}, {"name": "events", "value": "x"}]));
        assert_eq!((p.field.as_str(), p.message.as_str()), ("events", "is given twice (usageCharacteristic[1])"));
        let p = bad(json!([{"name": "recordId", "value": "other"}]));
        assert_eq!((p.field.as_str(), p.message.as_str()), ("recordId", "is given twice (usageCharacteristic[0])"));
        let p = bad(json!([{"value": 1}]));
        assert_eq!(p.field, "usageCharacteristic[0]");
        let p = bad(json!({"name": "events"}));
        assert_eq!(
            (p.field.as_str(), p.message.as_str()),
            ("usageCharacteristic", "must be an array of {name, value}, not an object")
        );
        let p = bad(json!([{"name": "onNet", "value": "perhaps"}]));
        assert_eq!(p.field, "onNet");
        let p = bad(Value::Array(vec![json!({"name": "apn", "value": "a"}); MAX_CHARACTERISTICS + 1]));
        assert!(p.message.contains("more than the limit"), "{p}");
        let p = raw_from_json(&json!({"id": "u4", "usageType": "fax"})).unwrap_err();
        assert_eq!((p.field.as_str(), p.record_id.as_deref()), ("service", Some("u4")));
        assert!(p.message.ends_with("(usageType)"), "{p}");
    }

    #[test]
    fn json_batches_mix_both_shapes() {
        let batch = json!([
            {"recordId": "r1", "subscriber": "+33611111111", "service": "voice", "startTime": "2026-03-09T10:00:00Z",
             "duration": 60, "calledNumber": "+33622222222"},
            {"id": "u2", "usageType": "voice", "usageCharacteristic": [{"name": "duration", "value": "long"}]},
            {"id": "u1", "usageDate": "2026-03-09T10:00:00Z", "usageType": "voice",
             "usageCharacteristic": [{"name": "subscriber", "value": "+33611111111"}, {"name": "duration", "value": 60},
                                     {"name": "called_number", "value": "+33622222222"}]},
            7
        ]);
        let rows = parse_json_batch(&batch, 10).unwrap();
        assert_eq!(rows[0], Ok(voice("r1")));
        let p = rows[1].as_ref().unwrap_err();
        assert_eq!((p.line, p.record_id.as_deref(), p.field.as_str()), (2, Some("u2"), "duration"));
        assert_eq!(rows[2], Ok(voice("u1")));
        let p = rows[3].as_ref().unwrap_err();
        assert_eq!((p.line, p.field.as_str()), (4, "record"));
        assert_eq!(p.to_string(), "line 4: record: must be an object, not a number");

        assert_eq!(parse_json_batch(&batch, 3), Err(CsvError::TooManyRecords(3)));
        assert_eq!(parse_json_batch(&json!([]), 0), Ok(vec![]));
        let err = parse_json_batch(&json!({"id": "r1"}), 10).unwrap_err();
        assert_eq!(err, CsvError::NotArray("an object"));
        assert_eq!(err.to_string(), "a batch must be a JSON array of usage records, not an object");
    }
}
