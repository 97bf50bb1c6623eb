//! Accounts (TMF666): `BillingAccount`, `PartyAccount`, `SettlementAccount`.
//!
//! Rules common to the three: `name` mandatory; `relatedParty[] {id, role, @referredType:
//! Individual|Organization|Customer}`, at least one, each must resolve; `state` a text;
//! the hierarchy extension `parentAccount {id}` (an account of the same type, which must
//! resolve; see [`super::hierarchy`]) and `billRollUp: bool` (default false).
//! - billingAccount: `billCycleDay` 1..=28 (every month has it), `timeZone` an IANA name,
//!   `currency` ISO 4217 — all three mandatory, billing needs them; `paymentMethod {id}` an opaque
//!   reference for now; `billDelivery` email|post|portal.
//! - settlementAccount (partners): `currency` and `settlementPeriod` month|quarter mandatory; at
//!   least one related party is an Organization (the partner).
//! - partyAccount: the common rules only.

use serde::Deserialize;
use serde_json::Value;

use super::{
    Problem, Ref, RefKind, check_currency, check_len, check_one_of, check_opt_text, check_text, check_time_zone, view,
};

/// Bill delivery channels.
pub const BILL_DELIVERY: &[&str] = &["email", "post", "portal"];
/// Settlement periods.
pub const SETTLEMENT_PERIODS: &[&str] = &["month", "quarter"];

/// The three account types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountType {
    /// `billingAccount`.
    Billing,
    /// `partyAccount`.
    Party,
    /// `settlementAccount`.
    Settlement,
}

impl AccountType {
    /// The reference kind of accounts of this type.
    pub fn ref_kind(self) -> RefKind {
        match self {
            AccountType::Billing => RefKind::BillingAccount,
            AccountType::Party => RefKind::PartyAccount,
            AccountType::Settlement => RefKind::SettlementAccount,
        }
    }
}

/// What a valid account document says about its place in the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// References to resolve (related parties, parent).
    pub refs: Vec<Ref>,
    /// `parentAccount.id`.
    pub parent: Option<String>,
    /// `billRollUp`.
    pub bill_roll_up: bool,
}

#[derive(Debug, Deserialize)]
struct RelatedParty {
    id: String,
    role: String,
    #[serde(rename = "@referredType")]
    referred_type: String,
}

#[derive(Debug, Deserialize)]
struct IdRef {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountView {
    name: String,
    #[serde(default)]
    related_party: Vec<RelatedParty>,
    state: Option<String>,
    parent_account: Option<IdRef>,
    #[serde(default)]
    bill_roll_up: bool,
    bill_cycle_day: Option<i64>,
    time_zone: Option<String>,
    currency: Option<String>,
    payment_method: Option<IdRef>,
    bill_delivery: Option<String>,
    settlement_period: Option<String>,
}

fn required<'a, T>(field: &str, v: &'a Option<T>, what: &str) -> Result<&'a T, Problem> {
    v.as_ref().ok_or_else(|| Problem::malformed(".", format!("missing field `{field}` ({what})")))
}

/// Validates an account document of type `t`; its references and hierarchy attributes.
pub fn validate_account(t: AccountType, doc: &Value) -> Result<AccountInfo, Problem> {
    let v: AccountView = view(doc)?;
    check_text("name", &v.name)?;
    check_opt_text("state", v.state.as_deref())?;
    if v.related_party.is_empty() {
        return Err(Problem::malformed(
            ".",
            "missing field `relatedParty` (at least one party the account belongs to)",
        ));
    }
    check_len("relatedParty", &v.related_party)?;
    let mut refs = Vec::new();
    for (i, rp) in v.related_party.iter().enumerate() {
        let at = |f: &str| format!("relatedParty[{i}].{f}");
        check_text(&at("id"), &rp.id)?;
        check_text(&at("role"), &rp.role)?;
        check_one_of(&at("@referredType"), &rp.referred_type, &["Individual", "Organization", "Customer"])?;
        let kind = match rp.referred_type.as_str() {
            "Individual" => RefKind::Individual,
            "Organization" => RefKind::Organization,
            _ => RefKind::Customer,
        };
        refs.push(Ref { field: at("id"), kind, id: rp.id.clone() });
    }
    let parent = match &v.parent_account {
        Some(p) => {
            check_text("parentAccount.id", &p.id)?;
            if doc.get("id").and_then(Value::as_str) == Some(p.id.as_str()) {
                return Err(Problem::invalid(
                    "parentAccount.id",
                    format!("moving {0} under {0} would make a cycle: {0} → {0}", p.id),
                ));
            }
            refs.push(Ref { field: "parentAccount.id".into(), kind: t.ref_kind(), id: p.id.clone() });
            Some(p.id.clone())
        }
        None => None,
    };
    match t {
        AccountType::Billing => {
            let day = *required("billCycleDay", &v.bill_cycle_day, "1 to 28")?;
            if !(1..=28).contains(&day) {
                return Err(Problem::invalid("billCycleDay", format!("must be between 1 and 28, not {day}")));
            }
            check_time_zone("timeZone", required("timeZone", &v.time_zone, "an IANA time zone name")?)?;
            check_currency("currency", required("currency", &v.currency, "ISO 4217")?)?;
            if let Some(pm) = &v.payment_method {
                check_text("paymentMethod.id", &pm.id)?;
            }
            if let Some(d) = &v.bill_delivery {
                check_one_of("billDelivery", d, BILL_DELIVERY)?;
            }
        }
        AccountType::Settlement => {
            check_currency("currency", required("currency", &v.currency, "ISO 4217")?)?;
            let period = required("settlementPeriod", &v.settlement_period, "month or quarter")?;
            check_one_of("settlementPeriod", period, SETTLEMENT_PERIODS)?;
            if !v.related_party.iter().any(|rp| rp.referred_type == "Organization") {
                return Err(Problem::invalid("relatedParty", "a settlement account belongs to a partner Organization"));
            }
        }
        AccountType::Party => {
            if let Some(c) = &v.currency {
                check_currency("currency", c)?;
            }
        }
    }
    Ok(AccountInfo { refs, parent, bill_roll_up: v.bill_roll_up })
}

/// The hierarchy attributes of a stored account, leniently (a stored document is valid).
pub fn hierarchy_attributes(doc: &Value) -> (Option<String>, bool) {
    let parent = doc.get("parentAccount").and_then(|p| p.get("id")).and_then(Value::as_str).map(str::to_string);
    let roll_up = doc.get("billRollUp").and_then(Value::as_bool).unwrap_or(false);
    (parent, roll_up)
}

/// Ids of the parties / customers an account names in `relatedParty`.
pub fn related_party_ids(doc: &Value) -> Vec<String> {
    doc.get("relatedParty")
        .and_then(Value::as_array)
        .map(|rps| rps.iter().filter_map(|rp| rp.get("id").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Reads a `{id, @referredType}` reference list leniently (`account[]` of a customer or role).
pub fn ref_ids(doc: &Value, attribute: &str) -> Vec<String> {
    let one = |r: &Value| r.get("id").and_then(Value::as_str).map(str::to_string);
    match doc.get(attribute) {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(r @ Value::Object(_)) => one(r).into_iter().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn billing() -> Value {
        json!({
            "name": "Main", "billCycleDay": 5, "timeZone": "Europe/Paris", "currency": "EUR",
            "paymentMethod": {"id": "pm1"}, "billDelivery": "email",
            "relatedParty": [{"id": "c1", "role": "owner", "@referredType": "Customer"}],
            "parentAccount": {"id": "a0"}, "billRollUp": true
        })
    }

    #[test]
    fn valid_billing_account() {
        let info = validate_account(AccountType::Billing, &billing()).unwrap();
        assert_eq!(info.parent.as_deref(), Some("a0"));
        assert!(info.bill_roll_up);
        assert_eq!(info.refs.len(), 2);
        assert_eq!(info.refs[1].kind, RefKind::BillingAccount);
    }

    #[test]
    fn bad_billing_accounts() {
        let check = |f: &dyn Fn(&mut Value), status: u16, needle: &str| {
            let mut d = billing();
            f(&mut d);
            let p = validate_account(AccountType::Billing, &d).unwrap_err();
            assert_eq!(p.status(), status, "{p}");
            assert!(p.to_string().contains(needle), "{p} lacks {needle}");
        };
        check(&|d| d["billCycleDay"] = json!(29), 422, "billCycleDay");
        check(&|d| d["billCycleDay"] = json!("5"), 400, "billCycleDay");
        check(&|d| drop(d.as_object_mut().unwrap().remove("billCycleDay")), 400, "billCycleDay");
        check(&|d| d["timeZone"] = json!("Paris"), 422, "timeZone");
        check(&|d| d["currency"] = json!("EURO"), 422, "currency");
        check(&|d| d["billDelivery"] = json!("pigeon"), 422, "billDelivery");
        check(&|d| d["relatedParty"] = json!([]), 400, "relatedParty");
        check(&|d| d["relatedParty"][0]["@referredType"] = json!("Product"), 422, "relatedParty[0].@referredType");
        check(&|d| d["billRollUp"] = json!("yes"), 400, "billRollUp");
        check(
            &|d| {
                d["id"] = json!("a1");
                d["parentAccount"] = json!({"id": "a1"});
            },
            422,
            "a1 → a1",
        );
    }

    #[test]
    fn settlement_accounts_belong_to_an_organization() {
        let mut d = json!({"name": "S", "currency": "EUR", "settlementPeriod": "month",
                           "relatedParty": [{"id": "o1", "role": "partner", "@referredType": "Organization"}]});
        validate_account(AccountType::Settlement, &d).unwrap();
        d["relatedParty"][0]["@referredType"] = json!("Individual");
        assert_eq!(validate_account(AccountType::Settlement, &d).unwrap_err().status(), 422);
        d["settlementPeriod"] = json!("week");
        assert!(validate_account(AccountType::Settlement, &d).unwrap_err().to_string().contains("settlementPeriod"));
        let p = json!({"name": "P", "relatedParty": [{"id": "o1", "role": "owner", "@referredType": "Organization"}]});
        validate_account(AccountType::Party, &p).unwrap();
    }
}
