//! The TMF629 `Customer`: a party in the role of the operator's customer.
//!
//! Rules: `name` mandatory; `engagedParty {id, @referredType: Individual|Organization}` mandatory
//! and must resolve; `status` one of [`STATUSES`] (default `initialized`), changed only along
//! [`transition_allowed`]; `creditProfile[] {creditProfileDate, creditRiskRating 1..10,
//! creditScore?, validFor?}`; `creditLimit {unit, value}` a non-negative money amount;
//! `account[] {id, @referredType?}` references to accounts that must resolve (billing account
//! unless `@referredType` says PartyAccount or SettlementAccount); `marketSegment` a text.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Problem, Ref, RefKind, ValidFor, check_date_time, check_len, check_money, check_one_of, check_opt_text, check_text,
    view,
};

/// Customer statuses.
pub const STATUSES: &[&str] = &["initialized", "approved", "active", "suspended", "closed"];

/// Whether a customer may go from `from` to `to` (staying is always allowed).
pub fn transition_allowed(from: &str, to: &str) -> bool {
    from == to
        || matches!(
            (from, to),
            ("initialized", "approved" | "active" | "closed")
                | ("approved", "active" | "closed")
                | ("active", "suspended" | "closed")
                | ("suspended", "active" | "closed")
        )
}

/// A reference `{id, @referredType}`.
#[derive(Debug, Clone, Deserialize)]
pub struct RefView {
    /// The id.
    pub id: String,
    /// The type it points at.
    #[serde(rename = "@referredType")]
    pub referred_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreditProfile {
    credit_profile_date: String,
    credit_risk_rating: i64,
    credit_score: Option<i64>,
    valid_for: Option<ValidFor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerView {
    name: String,
    engaged_party: RefView,
    status: Option<String>,
    #[serde(default)]
    credit_profile: Vec<CreditProfile>,
    credit_limit: Option<Value>,
    #[serde(default)]
    account: Vec<RefView>,
    market_segment: Option<String>,
}

/// The party reference of `engagedParty` (Individual or Organization).
pub fn party_ref(field: &str, r: &RefView) -> Result<Ref, Problem> {
    check_text(&format!("{field}.id"), &r.id)?;
    let t = r
        .referred_type
        .as_deref()
        .ok_or_else(|| Problem::malformed(field, "missing field `@referredType` (Individual or Organization)"))?;
    check_one_of(&format!("{field}.@referredType"), t, &["Individual", "Organization"])?;
    let kind = if t == "Individual" { RefKind::Individual } else { RefKind::Organization };
    Ok(Ref { field: format!("{field}.id"), kind, id: r.id.clone() })
}

/// An account reference; `@referredType` picks the account type (billing account by default).
pub fn account_ref(field: &str, r: &RefView) -> Result<Ref, Problem> {
    check_text(&format!("{field}.id"), &r.id)?;
    let kind = match r.referred_type.as_deref() {
        None | Some("BillingAccount") => RefKind::BillingAccount,
        Some("PartyAccount") => RefKind::PartyAccount,
        Some("SettlementAccount") => RefKind::SettlementAccount,
        Some(other) => {
            return Err(Problem::invalid(
                format!("{field}.@referredType"),
                format!("must be BillingAccount, PartyAccount or SettlementAccount, not {other:?}"),
            ));
        }
    };
    Ok(Ref { field: format!("{field}.id"), kind, id: r.id.clone() })
}

/// Fills defaults of a new customer (`status: initialized`).
pub fn with_defaults(mut doc: Value) -> Value {
    if let Value::Object(m) = &mut doc
        && !m.contains_key("status")
    {
        m.insert("status".into(), json!("initialized"));
    }
    doc
}

/// Validates a customer document (`before`: the stored one on a change); the references to resolve.
pub fn validate_customer(doc: &Value, before: Option<&Value>) -> Result<Vec<Ref>, Problem> {
    let v: CustomerView = view(doc)?;
    check_text("name", &v.name)?;
    let mut refs = vec![party_ref("engagedParty", &v.engaged_party)?];
    let status = v.status.as_deref().unwrap_or("initialized");
    check_one_of("status", status, STATUSES)?;
    if let Some(from) = before.and_then(|b| b.get("status")).and_then(Value::as_str)
        && !transition_allowed(from, status)
    {
        return Err(Problem::invalid("status", format!("a customer cannot go from {from} to {status}")));
    }
    check_len("creditProfile", &v.credit_profile)?;
    for (i, cp) in v.credit_profile.iter().enumerate() {
        let at = |f: &str| format!("creditProfile[{i}].{f}");
        check_date_time(&at("creditProfileDate"), &cp.credit_profile_date)?;
        if !(1..=10).contains(&cp.credit_risk_rating) {
            return Err(Problem::invalid(at("creditRiskRating"), "must be between 1 and 10"));
        }
        if cp.credit_score.is_some_and(|s| !(0..=1000).contains(&s)) {
            return Err(Problem::invalid(at("creditScore"), "must be between 0 and 1000"));
        }
        if let Some(vf) = &cp.valid_for {
            vf.check(&at("validFor"))?;
        }
    }
    if let Some(limit) = &v.credit_limit {
        let m = check_money("creditLimit", limit)?;
        if m.amount.is_sign_negative() {
            return Err(Problem::invalid("creditLimit.value", "must not be negative"));
        }
    }
    check_len("account", &v.account)?;
    for (i, a) in v.account.iter().enumerate() {
        refs.push(account_ref(&format!("account[{i}]"), a)?);
    }
    check_opt_text("marketSegment", v.market_segment.as_deref())?;
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer() -> Value {
        json!({
            "name": "Ada L.", "engagedParty": {"id": "p1", "@referredType": "Individual"},
            "creditProfile": [{"creditProfileDate": "2025-01-01T00:00:00Z", "creditRiskRating": 3, "creditScore": 700}],
            "creditLimit": {"unit": "EUR", "value": 500}, "account": [{"id": "a1"}], "marketSegment": "residential"
        })
    }

    #[test]
    fn valid_customer_lists_its_references() {
        let refs = validate_customer(&with_defaults(customer()), None).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(
            (refs[0].kind, refs[0].id.as_str(), refs[0].field.as_str()),
            (RefKind::Individual, "p1", "engagedParty.id")
        );
        assert_eq!((refs[1].kind, refs[1].field.as_str()), (RefKind::BillingAccount, "account[0].id"));
        assert_eq!(with_defaults(customer())["status"], "initialized");
    }

    #[test]
    fn bad_customers() {
        let check = |f: &dyn Fn(&mut Value), status: u16, needle: &str| {
            let mut d = customer();
            f(&mut d);
            let p = validate_customer(&d, None).unwrap_err();
            assert_eq!(p.status(), status, "{p}");
            assert!(p.to_string().contains(needle), "{p} lacks {needle}");
        };
        check(&|d| drop(d.as_object_mut().unwrap().remove("name")), 400, "name");
        check(&|d| drop(d.as_object_mut().unwrap().remove("engagedParty")), 400, "engagedParty");
        check(&|d| d["engagedParty"]["@referredType"] = json!("Customer"), 422, "engagedParty.@referredType");
        check(&|d| d["status"] = json!("happy"), 422, "status");
        check(&|d| d["creditProfile"][0]["creditRiskRating"] = json!(11), 422, "creditRiskRating");
        check(&|d| d["creditProfile"][0]["creditRiskRating"] = json!("3"), 400, "creditRiskRating");
        check(&|d| d["creditLimit"]["value"] = json!(-1), 422, "creditLimit.value");
        check(&|d| d["creditLimit"] = json!({"unit": "euro", "value": 1}), 422, "creditLimit.unit");
        check(&|d| d["account"][0]["@referredType"] = json!("Product"), 422, "account[0]");
    }

    #[test]
    fn status_transitions() {
        assert!(transition_allowed("initialized", "active"));
        assert!(transition_allowed("active", "suspended"));
        assert!(transition_allowed("suspended", "active"));
        assert!(!transition_allowed("closed", "active"));
        assert!(!transition_allowed("suspended", "initialized"));
        let before = json!({"status": "closed"});
        let mut d = customer();
        d["status"] = json!("active");
        let p = validate_customer(&d, Some(&before)).unwrap_err();
        assert_eq!(p.to_string(), "status: a customer cannot go from closed to active");
    }
}
