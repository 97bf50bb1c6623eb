//! Mediation's normalisation: raw usage fields (any unit, time zone or number format) into a
//! [`UsageRecord`], with every problem naming its field. Tests: `cargo test -p bss-domain rating`.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::{Direction, MAX_DURATION_SECS, MAX_EVENTS, MAX_ID_CHARS, MAX_VOLUME_BYTES, Service, UsageRecord};
use crate::catalog::Problem;

/// A usage record as a network element or a partner sends it (TMF635 `usageCharacteristic`
/// flattened). Quantities are signed so a negative one is reported, not a parse failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawUsage {
    /// Unique record id.
    pub record_id: String,
    /// Subscriber MSISDN (national or international form).
    pub subscriber: String,
    /// `voice`, `sms` or `data`.
    pub service: String,
    /// RFC 3339 with an offset, or a local `YYYY-MM-DDTHH:MM:SS` in `timeZone`.
    pub start_time: String,
    /// IANA time zone of a local `startTime` (absent: the configuration's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Duration in `durationUnit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// `s` (default), `ms` or `min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_unit: Option<String>,
    /// Volume in `volumeUnit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<i64>,
    /// `B` (default), `kB`, `MB`, `GB` (decimal) or `KiB`, `MiB`, `GiB` (binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_unit: Option<String>,
    /// Number of events (SMS; default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<i64>,
    /// Called number (national or international form, separators allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub called_number: Option<String>,
    /// Access point name of a data session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apn: Option<String>,
    /// Visited network MCC-MNC (`262-01` or `26201`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visited_network: Option<String>,
    /// The other party is on our network.
    pub on_net: bool,
    /// `outgoing`, `incoming` or `transit` (wholesale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Partner carrier (wholesale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
}

/// How numbers and times are read.
#[derive(Debug, Clone)]
pub struct NormaliseConfig {
    /// Country calling code of national numbers (`33`).
    pub default_country_code: String,
    /// Trunk prefix of national numbers (`0`).
    pub national_prefix: String,
    /// International call prefix (`00`).
    pub international_prefix: String,
    /// Time zone of local start times without one.
    pub default_time_zone: chrono_tz::Tz,
    /// Now, given by the caller (the kernel never reads the clock).
    pub now: DateTime<Utc>,
    /// How far in the future a start may be (clock skew of network elements).
    pub future_tolerance_secs: u64,
}

impl NormaliseConfig {
    /// France-like numbering (`33`, `0`, `00`), UTC, 5 minutes of tolerance, at `now`.
    pub fn new(default_country_code: &str, now: DateTime<Utc>) -> NormaliseConfig {
        NormaliseConfig {
            default_country_code: default_country_code.to_string(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
            default_time_zone: chrono_tz::UTC,
            now,
            future_tolerance_secs: 300,
        }
    }
}

/// A phone number in E.164 (`+` and 4 to 15 digits, not starting with 0) from its international
/// (`+33 6 12…`, `0033612…`), national (`0612…`) or bare international (`33612…`) form.
pub fn e164(raw: &str, cfg: &NormaliseConfig) -> Result<String, String> {
    if raw.len() > 64 {
        return Err("is longer than 64 characters".into());
    }
    let cleaned: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/')).collect();
    let digits = if let Some(rest) = cleaned.strip_prefix('+') {
        rest.to_string()
    } else if let Some(rest) =
        cleaned.strip_prefix(cfg.international_prefix.as_str()).filter(|_| !cfg.international_prefix.is_empty())
    {
        rest.to_string()
    } else if let Some(rest) =
        cleaned.strip_prefix(cfg.national_prefix.as_str()).filter(|_| !cfg.national_prefix.is_empty())
    {
        [cfg.default_country_code.as_str(), rest].concat()
    } else {
        cleaned
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{raw:?} is not a phone number (digits, an optional + and separators)"));
    }
    if !(4..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(format!("{raw:?} is not an E.164 number (4 to 15 digits after the country code's first digit)"));
    }
    // `concat`, not `format!`: every record's numbers pass here.
    Ok(["+", digits.as_str()].concat())
}

fn start_time(raw: &RawUsage, cfg: &NormaliseConfig) -> Result<DateTime<Utc>, String> {
    let s = raw.start_time.trim();
    if s.is_empty() {
        return Err("is mandatory".into());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .map_err(|_| format!("{s:?} is neither RFC 3339 nor a local YYYY-MM-DDTHH:MM:SS"))?;
    let tz = match &raw.time_zone {
        Some(z) => z.parse::<chrono_tz::Tz>().map_err(|_| format!("time zone {z:?} is not an IANA zone"))?,
        None => cfg.default_time_zone,
    };
    // A local time repeated by a DST change takes the first; one skipped by it is refused.
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.to_utc())
        .ok_or_else(|| format!("{s:?} does not exist in {tz} (skipped by a DST change)"))
}

fn scaled(value: i64, factor: u64, divisor: u64, max: u64) -> Result<u64, String> {
    if value < 0 {
        return Err(format!("must not be negative (got {value})"));
    }
    let v = (value as u64).checked_mul(factor).map(|v| v.div_ceil(divisor)).filter(|v| *v <= max);
    v.ok_or_else(|| format!("is above the limit of {max} base units"))
}

fn quantity(raw: &RawUsage, service: Service) -> Result<u64, Problem> {
    match service {
        Service::Voice => {
            let d = raw.duration.ok_or_else(|| Problem::new("duration", "is mandatory for voice"))?;
            // Milliseconds round up to the started second: a 100 ms call is 1 s of usage.
            let (factor, divisor) = match raw.duration_unit.as_deref().unwrap_or("s") {
                "s" => (1, 1),
                "ms" => (1, 1000),
                "min" => (60, 1),
                u => return Err(Problem::new("durationUnit", format!("{u:?} is not one of s, ms, min"))),
            };
            scaled(d, factor, divisor, MAX_DURATION_SECS).map_err(|m| Problem::new("duration", m))
        }
        Service::Data => {
            let v = raw.volume.ok_or_else(|| Problem::new("volume", "is mandatory for data"))?;
            let factor = match raw.volume_unit.as_deref().unwrap_or("B") {
                "B" => 1,
                "kB" | "KB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                u => {
                    return Err(Problem::new(
                        "volumeUnit",
                        format!("{u:?} is not one of B, kB, MB, GB, KiB, MiB, GiB"),
                    ));
                }
            };
            scaled(v, factor, 1, MAX_VOLUME_BYTES).map_err(|m| Problem::new("volume", m))
        }
        Service::Sms => scaled(raw.events.unwrap_or(1), 1, 1, MAX_EVENTS).map_err(|m| Problem::new("events", m)),
    }
}

fn text(field: &str, v: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > MAX_ID_CHARS || v.chars().any(char::is_control) {
        problems.push(Problem::new(field, format!("must be 1 to {MAX_ID_CHARS} printable characters")));
        return None;
    }
    Some(v.to_string())
}

/// The normalised record of raw fields, or every problem found (each naming its field).
pub fn normalise(raw: &RawUsage, cfg: &NormaliseConfig) -> Result<UsageRecord, Vec<Problem>> {
    let mut p = Vec::new();
    let record_id = text("recordId", &raw.record_id, &mut p);
    let subscriber = e164(&raw.subscriber, cfg).map_err(|m| p.push(Problem::new("subscriber", m))).ok();
    let service = Service::parse(raw.service.trim())
        .ok_or_else(|| p.push(Problem::new("service", format!("{:?} is not one of voice, sms, data", raw.service))))
        .ok();
    let start = match start_time(raw, cfg) {
        Ok(t) if t > cfg.now + chrono::Duration::seconds(cfg.future_tolerance_secs.min(86_400) as i64) => {
            p.push(Problem::new("startTime", format!("{t} is in the future (now {})", cfg.now)));
            None
        }
        Ok(t) => Some(t),
        Err(m) => {
            p.push(Problem::new(if m.starts_with("time zone") { "timeZone" } else { "startTime" }, m));
            None
        }
    };
    let quantity = service.and_then(|s| quantity(raw, s).map_err(|e| p.push(e)).ok());
    let called_number = match (&raw.called_number, service) {
        (Some(n), _) => e164(n, cfg).map_err(|m| p.push(Problem::new("calledNumber", m))).ok(),
        (None, Some(Service::Voice | Service::Sms)) => {
            p.push(Problem::new("calledNumber", "is mandatory for voice and SMS"));
            None
        }
        (None, _) => None,
    };
    let apn = raw.apn.as_deref().and_then(|a| {
        let ok =
            !a.is_empty() && a.len() <= 100 && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok {
            p.push(Problem::new("apn", "must be 1 to 100 letters, digits, dots or hyphens"));
        }
        ok.then(|| a.to_ascii_lowercase())
    });
    let visited_network = raw.visited_network.as_deref().and_then(|n| {
        let digits: String = n.chars().filter(|c| *c != '-').collect();
        let ok = (5..=6).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            p.push(Problem::new("visitedNetwork", format!("{n:?} is not an MCC-MNC (5 or 6 digits)")));
        }
        ok.then_some(digits)
    });
    let direction = raw.direction.as_deref().and_then(|d| match d {
        "outgoing" => Some(Direction::Outgoing),
        "incoming" => Some(Direction::Incoming),
        "transit" => Some(Direction::Transit),
        _ => {
            p.push(Problem::new("direction", format!("{d:?} is not one of outgoing, incoming, transit")));
            None
        }
    });
    let carrier = raw.carrier.as_deref().and_then(|c| text("carrier", c, &mut p));
    match (record_id, subscriber, service, start, quantity) {
        (Some(record_id), Some(subscriber), Some(service), Some(start), Some(quantity)) if p.is_empty() => {
            Ok(UsageRecord {
                record_id,
                subscriber,
                service,
                start,
                quantity,
                called_number,
                apn,
                visited_network,
                on_net: raw.on_net,
                direction,
                carrier,
            })
        }
        _ => Err(p),
    }
}
