//! Partners (TMF669 `PartyRole`): an organization in the role of reseller, MVNO, interconnect
//! carrier, roaming partner or content provider, with its settlement account and revenue share.
//!
//! Rules: `role` one of [`ROLES`]; `engagedParty {id, @referredType: Organization}` must resolve
//! to an organization; `account[] {id}` at least one, each a settlement account that must
//! resolve; `revenueShare` (BSS extension) mandatory:
//! `{basis: retail|wholesale, percentage?, ratePerUnit? {unit, value}, settlementPeriod:
//! month|quarter, currency}` — at least one of `percentage` (0 < p ≤ 100) and `ratePerUnit` (a
//! non-negative amount in `currency`, paid per settled unit); every number an exact decimal.
//! `tariff {id}` (BSS extension, optional): the partner's wholesale tariff — usage records of an
//! interconnect carrier or roaming partner (their `carrier`) are rated against it.

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

use super::customer_record::{RefView, party_ref};
use super::{
    Problem, Ref, RefKind, check_currency, check_len, check_money, check_one_of, check_opt_text, check_text, decimal,
    view,
};

/// Partner roles.
pub const ROLES: &[&str] = &["reseller", "mvno", "interconnectCarrier", "roamingPartner", "contentProvider"];
/// Revenue-share bases.
pub const BASES: &[&str] = &["retail", "wholesale"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevenueShare {
    basis: String,
    percentage: Option<Value>,
    rate_per_unit: Option<Value>,
    settlement_period: String,
    currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartyRoleView {
    role: String,
    name: Option<String>,
    status: Option<String>,
    engaged_party: RefView,
    #[serde(default)]
    account: Vec<RefView>,
    revenue_share: RevenueShare,
    tariff: Option<IdOnly>,
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    id: String,
}

/// Validates a partner role document; the references to resolve.
pub fn validate_party_role(doc: &Value) -> Result<Vec<Ref>, Problem> {
    let v: PartyRoleView = view(doc)?;
    check_one_of("role", &v.role, ROLES)?;
    check_opt_text("name", v.name.as_deref())?;
    check_opt_text("status", v.status.as_deref())?;
    let party = party_ref("engagedParty", &v.engaged_party)?;
    if party.kind != RefKind::Organization {
        return Err(Problem::invalid("engagedParty.@referredType", "a partner is an Organization"));
    }
    let mut refs = vec![party];
    if v.account.is_empty() {
        return Err(Problem::malformed(".", "missing field `account` (the partner's settlement account)"));
    }
    check_len("account", &v.account)?;
    for (i, a) in v.account.iter().enumerate() {
        check_text(&format!("account[{i}].id"), &a.id)?;
        if let Some(t) = a.referred_type.as_deref()
            && t != "SettlementAccount"
        {
            return Err(Problem::invalid(format!("account[{i}].@referredType"), "must be SettlementAccount"));
        }
        refs.push(Ref { field: format!("account[{i}].id"), kind: RefKind::SettlementAccount, id: a.id.clone() });
    }
    if let Some(t) = &v.tariff {
        check_text("tariff.id", &t.id)?;
    }
    let rs = &v.revenue_share;
    check_one_of("revenueShare.basis", &rs.basis, BASES)?;
    check_one_of("revenueShare.settlementPeriod", &rs.settlement_period, super::account::SETTLEMENT_PERIODS)?;
    let currency = check_currency("revenueShare.currency", &rs.currency)?;
    if rs.percentage.is_none() && rs.rate_per_unit.is_none() {
        return Err(Problem::malformed("revenueShare", "needs percentage, ratePerUnit or both"));
    }
    if let Some(p) = &rs.percentage {
        let p = decimal("revenueShare.percentage", p)?;
        if p <= Decimal::ZERO || p > Decimal::ONE_HUNDRED {
            return Err(Problem::invalid(
                "revenueShare.percentage",
                format!("must be above 0 and at most 100, not {p}"),
            ));
        }
    }
    if let Some(r) = &rs.rate_per_unit {
        let m = check_money("revenueShare.ratePerUnit", r)?;
        if m.amount.is_sign_negative() {
            return Err(Problem::invalid("revenueShare.ratePerUnit.value", "must not be negative"));
        }
        if m.currency != currency {
            return Err(Problem::invalid(
                "revenueShare.ratePerUnit.unit",
                format!("must be the revenue share currency {currency}, not {}", m.currency),
            ));
        }
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role() -> Value {
        json!({
            "role": "mvno", "engagedParty": {"id": "o1", "@referredType": "Organization"},
            "account": [{"id": "s1", "@referredType": "SettlementAccount"}],
            "revenueShare": {"basis": "wholesale", "percentage": 12.5, "ratePerUnit": {"unit": "EUR", "value": "0.002"},
                             "settlementPeriod": "month", "currency": "EUR"}
        })
    }

    #[test]
    fn valid_partner() {
        let refs = validate_party_role(&role()).unwrap();
        assert_eq!(
            refs.iter().map(|r| r.kind).collect::<Vec<_>>(),
            [RefKind::Organization, RefKind::SettlementAccount]
        );
    }

    #[test]
    fn bad_partners() {
        let check = |f: &dyn Fn(&mut Value), status: u16, needle: &str| {
            let mut d = role();
            f(&mut d);
            let p = validate_party_role(&d).unwrap_err();
            assert_eq!(p.status(), status, "{p}");
            assert!(p.to_string().contains(needle), "{p} lacks {needle}");
        };
        check(&|d| d["role"] = json!("friend"), 422, "role");
        check(&|d| d["engagedParty"]["@referredType"] = json!("Individual"), 422, "Organization");
        check(&|d| d["account"] = json!([]), 400, "account");
        check(&|d| d["revenueShare"]["percentage"] = json!(0), 422, "percentage");
        check(&|d| d["revenueShare"]["percentage"] = json!(100.01), 422, "percentage");
        check(&|d| d["revenueShare"]["percentage"] = json!([1]), 400, "percentage");
        check(&|d| d["revenueShare"]["ratePerUnit"]["unit"] = json!("USD"), 422, "ratePerUnit.unit");
        check(&|d| d["revenueShare"]["settlementPeriod"] = json!("year"), 422, "settlementPeriod");
        check(
            &|d| {
                let rs = d["revenueShare"].as_object_mut().unwrap();
                rs.remove("percentage");
                rs.remove("ratePerUnit");
            },
            400,
            "percentage, ratePerUnit",
        );
        check(&|d| drop(d.as_object_mut().unwrap().remove("revenueShare")), 400, "revenueShare");
    }
}
