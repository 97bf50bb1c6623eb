//! Reading numbers out of JSON documents exactly, shared by every domain module that validates
//! TMF documents: a decimal comes from a JSON number's text (never through `f64`) or a string.

use rust_decimal::Decimal;
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// Why a JSON value is not a decimal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecimalError {
    /// Neither a number nor a string (the JSON type's name).
    WrongType(&'static str),
    /// A number or string whose text is not a decimal (the text).
    NotDecimal(String),
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongType(t) => write!(f, "must be a number or a decimal string, not {t}"),
            Self::NotDecimal(text) => write!(f, "{text:?} is not a decimal number"),
        }
    }
}

impl std::error::Error for DecimalError {}

/// An exact decimal from a JSON number (read from its text: `19.99` is exactly 19.99) or a
/// decimal string; scientific notation is accepted.
pub fn decimal(v: &Value) -> Result<Decimal, DecimalError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => return Err(DecimalError::WrongType(type_name(other))),
    };
    Decimal::from_str(&text).or_else(|_| Decimal::from_scientific(&text)).map_err(|_| DecimalError::NotDecimal(text))
}

/// The JSON type of a value, for error messages (`a string`, `an object`…).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(&json!(19.99)).unwrap(), Decimal::from_str("19.99").unwrap());
        assert_eq!(decimal(&json!(0.1)).unwrap() + decimal(&json!(0.2)).unwrap(), Decimal::from_str("0.3").unwrap());
        assert_eq!(decimal(&json!(" 12.50 ")).unwrap(), Decimal::from_str("12.50").unwrap());
        assert_eq!(decimal(&json!(1e3)).unwrap(), Decimal::from(1000));
        assert_eq!(decimal(&json!(true)), Err(DecimalError::WrongType("a boolean")));
        assert_eq!(decimal(&json!("ten")), Err(DecimalError::NotDecimal("ten".into())));
    }
}
