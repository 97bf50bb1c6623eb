//! Customer management rules (TMF632 party, TMF629 customer, TMF666 account, TMF669 partner roles):
//! validation of the stored documents, account hierarchies, revenue-share terms, privacy erasure
//! and the audit diff. Pure: no I/O, no wasm. Test with `cargo test -p bss-domain customer`.
//!
//! Design:
//! - Resources are stored as their TMF JSON documents, so attributes this crate does not model are
//!   kept as the client sent them. The rules here read a document by deserialising it into a typed
//!   *view* (`serde(rename_all = "camelCase")`, only the attributes a rule needs) and answer a
//!   [`Problem`] that names the attribute path (`contactMedium[1].characteristic.emailAddress`)
//!   and the rule.
//! - A [`Problem`] maps to an HTTP status: [`Problem::Malformed`] (missing mandatory attribute,
//!   wrong JSON type) is a 400, [`Problem::Invalid`] (a rule: a bad e-mail address, a bill cycle
//!   day of 31, an unknown reference, a cycle) a 422, [`Problem::Conflict`] (the state forbids it:
//!   editing an erased person, deleting an account with children) a 409.
//! - References to other documents are not resolved here (that needs the store): validators
//!   return the [`Ref`]s a document makes, and the component checks that each exists.
//! - Numbers that are amounts or rates are read as exact decimals (a JSON number is read from its
//!   text, never through `f64`; a string such as `"12.5"` is accepted too).
//!
//! Modules: [`party`] (individual, organization, erasure), [`customer_record`] (customer, status
//! transitions, credit profile), [`account`] (billing, party and settlement accounts),
//! [`hierarchy`] (account forests: cycles, moves, payer), [`partner`] (TMF669 party roles with
//! revenue share), [`audit`] (JSON diff and audit records, scrubbing after an erasure).

pub mod account;
pub mod audit;
pub mod customer_record;
pub mod hierarchy;
pub mod partner;
pub mod party;

use chrono::{DateTime, NaiveDate};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// Longest free-text attribute (names, reasons...), in characters.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Most elements of a list attribute (contact media, identifications, characteristics, refs).
pub const MAX_LIST_ITEMS: usize = 100;

/// Why a document is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not the expected shape: a mandatory attribute is missing or has the wrong JSON type (400).
    Malformed {
        /// Attribute path (`.` for the document itself).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Well-formed, but breaks a rule (422).
    Invalid {
        /// Attribute path.
        field: String,
        /// The rule broken.
        message: String,
    },
    /// The current state forbids the operation (409).
    Conflict(String),
}

impl Problem {
    /// A [`Problem::Malformed`].
    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem::Malformed { field: field.into(), message: message.into() }
    }

    /// A [`Problem::Invalid`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem::Invalid { field: field.into(), message: message.into() }
    }

    /// The HTTP status the problem is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Problem::Malformed { .. } => 400,
            Problem::Invalid { .. } => 422,
            Problem::Conflict(_) => 409,
        }
    }

    /// The attribute path, if the problem is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Problem::Malformed { field, .. } | Problem::Invalid { field, .. } => Some(field),
            Problem::Conflict(_) => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed { field, message } | Problem::Invalid { field, message } if field == "." => {
                write!(f, "{message}")
            }
            Problem::Malformed { field, message } | Problem::Invalid { field, message } => {
                write!(f, "{field}: {message}")
            }
            Problem::Conflict(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Problem {}

/// The kinds of document a reference can point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// An `Individual` party.
    Individual,
    /// An `Organization` party.
    Organization,
    /// A `Customer`.
    Customer,
    /// A `BillingAccount`.
    BillingAccount,
    /// A `PartyAccount`.
    PartyAccount,
    /// A `SettlementAccount`.
    SettlementAccount,
}

impl RefKind {
    /// The KV collection (and path segment) of the kind.
    pub fn collection(self) -> &'static str {
        match self {
            RefKind::Individual => "individual",
            RefKind::Organization => "organization",
            RefKind::Customer => "customer",
            RefKind::BillingAccount => "billingAccount",
            RefKind::PartyAccount => "partyAccount",
            RefKind::SettlementAccount => "settlementAccount",
        }
    }

    /// The TMF `@referredType` / `@type` name.
    pub fn type_name(self) -> &'static str {
        match self {
            RefKind::Individual => "Individual",
            RefKind::Organization => "Organization",
            RefKind::Customer => "Customer",
            RefKind::BillingAccount => "BillingAccount",
            RefKind::PartyAccount => "PartyAccount",
            RefKind::SettlementAccount => "SettlementAccount",
        }
    }
}

/// A reference a document makes, which must resolve for the document to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// Attribute path of the reference (`engagedParty.id`).
    pub field: String,
    /// Where it must resolve.
    pub kind: RefKind,
    /// The referenced id.
    pub id: String,
}

impl Ref {
    /// The 422 of a reference that does not resolve.
    pub fn unresolved(&self) -> Problem {
        Problem::invalid(&self.field, format!("{} {} does not exist", self.kind.collection(), self.id))
    }
}

/// Reads `doc` as the typed view `T`; a missing attribute or a wrong JSON type is a
/// [`Problem::Malformed`] naming the attribute path.
pub fn view<T: DeserializeOwned>(doc: &Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        Problem::malformed(path, e.into_inner().to_string())
    })
}

/// A non-empty text of at most [`MAX_TEXT_CHARS`] characters.
pub fn check_text(field: &str, value: &str) -> Result<(), Problem> {
    if value.trim().is_empty() {
        return Err(Problem::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(Problem::invalid(field, format!("must be at most {MAX_TEXT_CHARS} characters")));
    }
    Ok(())
}

/// An optional text: absent is fine, present must pass [`check_text`].
pub fn check_opt_text(field: &str, value: Option<&str>) -> Result<(), Problem> {
    value.map_or(Ok(()), |v| check_text(field, v))
}

/// A list of at most [`MAX_LIST_ITEMS`] elements.
pub fn check_len<T>(field: &str, items: &[T]) -> Result<(), Problem> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(Problem::invalid(field, format!("must have at most {MAX_LIST_ITEMS} elements")));
    }
    Ok(())
}

/// One of the allowed values.
pub fn check_one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), Problem> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Problem::invalid(field, format!("must be one of {}, not {value:?}", allowed.join("|"))))
    }
}

/// An RFC 3339 date-time.
pub fn check_date_time(field: &str, value: &str) -> Result<DateTime<chrono::FixedOffset>, Problem> {
    DateTime::parse_from_rfc3339(value)
        .map_err(|_| Problem::invalid(field, format!("must be an RFC 3339 date-time, not {value:?}")))
}

/// A TMF `validFor` period.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidFor {
    /// Start (RFC 3339).
    pub start_date_time: Option<String>,
    /// End (RFC 3339).
    pub end_date_time: Option<String>,
}

impl ValidFor {
    /// Both ends are RFC 3339 date-times and the start is not after the end.
    pub fn check(&self, field: &str) -> Result<(), Problem> {
        let start = self
            .start_date_time
            .as_deref()
            .map(|s| check_date_time(&format!("{field}.startDateTime"), s))
            .transpose()?;
        let end =
            self.end_date_time.as_deref().map(|s| check_date_time(&format!("{field}.endDateTime"), s)).transpose()?;
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(Problem::invalid(field, "startDateTime must not be after endDateTime"));
        }
        Ok(())
    }
}

/// A date (`YYYY-MM-DD`) or an RFC 3339 date-time, as its date.
pub fn check_date(field: &str, value: &str) -> Result<NaiveDate, Problem> {
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(d);
    }
    DateTime::parse_from_rfc3339(value).map(|d| d.date_naive()).map_err(|_| {
        Problem::invalid(field, format!("must be a date (YYYY-MM-DD) or an RFC 3339 date-time, not {value:?}"))
    })
}

/// An exact decimal from a JSON number (read from its text, never through `f64`) or a string.
pub fn decimal(field: &str, value: &Value) -> Result<Decimal, Problem> {
    crate::json::decimal(value).map_err(|e| match e {
        crate::json::DecimalError::WrongType(t) => Problem::malformed(field, format!("must be a number, not {t}")),
        crate::json::DecimalError::NotDecimal(text) => {
            Problem::invalid(field, format!("must be a decimal number, not {text:?}"))
        }
    })
}

/// An IANA time zone name (`Europe/Paris`, `UTC`).
pub fn check_time_zone(field: &str, value: &str) -> Result<chrono_tz::Tz, Problem> {
    chrono_tz::Tz::from_str(value).map_err(|_| {
        Problem::invalid(field, format!("must be an IANA time zone name such as Europe/Paris, not {value:?}"))
    })
}

/// An ISO 4217 currency code.
pub fn check_currency(field: &str, value: &str) -> Result<crate::money::Currency, Problem> {
    crate::money::Currency::new(value)
        .map_err(|_| Problem::invalid(field, format!("must be an ISO 4217 currency code such as EUR, not {value:?}")))
}

pub use crate::json::type_name as json_type;

/// A TMF money amount `{unit, value}`: `unit` an ISO 4217 code, `value` an exact decimal.
pub fn check_money(field: &str, value: &Value) -> Result<crate::money::Money, Problem> {
    let Value::Object(m) = value else {
        return Err(Problem::malformed(field, format!("must be an object {{unit, value}}, not {}", json_type(value))));
    };
    let unit = match m.get("unit") {
        Some(Value::String(u)) => u,
        Some(other) => {
            return Err(Problem::malformed(
                format!("{field}.unit"),
                format!("must be a string, not {}", json_type(other)),
            ));
        }
        None => return Err(Problem::malformed(field, "missing field `unit`")),
    };
    let currency = check_currency(&format!("{field}.unit"), unit)?;
    let amount = match m.get("value") {
        Some(v) => decimal(&format!("{field}.value"), v)?,
        None => return Err(Problem::malformed(field, "missing field `value`")),
    };
    Ok(crate::money::Money::new(amount, currency))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct V {
        given_name: String,
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        n: u32,
    }

    #[test]
    fn views_name_the_path() {
        let p = view::<V>(&json!({"items": []})).unwrap_err();
        assert_eq!(p.status(), 400);
        assert!(p.to_string().contains("missing field `givenName`"), "{p}");
        let p = view::<V>(&json!({"givenName": "a", "items": [{"n": 1}, {"n": "x"}]})).unwrap_err();
        assert_eq!(p.field(), Some("items[1].n"));
        assert!(p.to_string().starts_with("items[1].n: invalid type"), "{p}");
    }

    #[test]
    fn decimals_never_go_through_f64() {
        assert_eq!(decimal("x", &json!(0.1)).unwrap(), Decimal::from_str("0.1").unwrap());
        assert_eq!(decimal("x", &json!("12.345")).unwrap(), Decimal::from_str("12.345").unwrap());
        assert_eq!(decimal("x", &json!(1e-3)).unwrap(), Decimal::from_str("0.001").unwrap());
        assert_eq!(decimal("x", &json!(true)).unwrap_err().status(), 400);
        assert_eq!(decimal("x", &json!("abc")).unwrap_err().status(), 422);
    }

    #[test]
    fn small_checks() {
        assert!(check_time_zone("tz", "Europe/Paris").is_ok());
        assert!(check_time_zone("tz", "UTC").is_ok());
        assert!(check_time_zone("tz", "Mars/Olympus").is_err());
        assert!(check_currency("c", "EUR").is_ok());
        assert!(check_currency("c", "eur").is_err());
        assert!(check_date("d", "1990-02-03").is_ok());
        assert!(check_date("d", "1990-02-30").is_err());
        let vf = ValidFor {
            start_date_time: Some("2025-01-02T00:00:00Z".into()),
            end_date_time: Some("2025-01-01T00:00:00Z".into()),
        };
        assert!(vf.check("validFor").is_err());
        assert!(check_money("creditLimit", &json!({"unit": "EUR", "value": 500})).is_ok());
        assert_eq!(check_money("creditLimit", &json!({"unit": "EUR"})).unwrap_err().status(), 400);
        assert_eq!(check_money("creditLimit", &json!({"unit": "E", "value": 1})).unwrap_err().status(), 422);
        assert_eq!(check_text("name", " ").unwrap_err().to_string(), "name: must not be empty");
    }
}
