//! Inventory products (TMF637) and the charges that start billing when an order item completes.
//!
//! Product status: `created → active | terminated`, `active → suspended | terminated`,
//! `suspended → active | terminated`; `terminated` is final. Only orders change it.
//!
//! Charges (collection `billingCharge`, one per non-usage price line of an added product):
//! - recurring: `chargeType: recurring`, the full period `amount`, and `firstPeriod` — for a
//!   monthly price prorated from the activation date to the account's next bill cycle day
//!   ([`super::proration`]); other periods are charged in full from the activation date;
//!   `nextChargeDate` is where regular periods start;
//! - one-time: `chargeType: oneTime`, `billOn: nextBill`, `state: pendingBilling` — billed on
//!   the account's next bill.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::proration::first_period;
use crate::catalog::{money_from_json, money_to_json};
use crate::money::RoundingRule;

/// Status of an inventory product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductStatus {
    /// Recorded, not yet active.
    Created,
    /// In service.
    Active,
    /// Temporarily stopped.
    Suspended,
    /// Ended (final).
    Terminated,
}

impl ProductStatus {
    /// Parses the TMF name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => Self::Created,
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "terminated" => Self::Terminated,
            _ => return None,
        })
    }

    /// The TMF name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Terminated => "terminated",
        }
    }

    /// Whether `self → next` is legal.
    pub fn can_become(self, next: ProductStatus) -> bool {
        use ProductStatus::*;
        matches!(
            (self, next),
            (Created, Active | Terminated) | (Active, Suspended | Terminated) | (Suspended, Active | Terminated)
        )
    }
}

/// What a completed order item does to an existing product's status (`productAction`).
pub fn status_after(action: &str) -> Option<ProductStatus> {
    match action {
        "suspend" => Some(ProductStatus::Suspended),
        "resume" => Some(ProductStatus::Active),
        "deactivate" => Some(ProductStatus::Terminated),
        _ => None,
    }
}

/// The billing account facts charges need.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    /// 1 to 28.
    pub bill_cycle_day: u32,
    /// IANA time zone.
    pub tz: Tz,
}

/// The charge documents of a product activated at `activated`, from its `productPrice` lines
/// (`{priceType, recurringChargePeriod, name, price: {dutyFreeAmount}, productOfferingPrice,
/// priceVersion}`), each with a deterministic id `<productId>.<n>`. Lines that cannot be read
/// are skipped (they were checked when the order was placed).
pub fn charges(product: &Value, account: Account, activated: DateTime<Utc>, rounding: RoundingRule) -> Vec<Value> {
    let pid = product.get("id").and_then(Value::as_str).unwrap_or_default();
    let lines = product.get("productPrice").and_then(Value::as_array).cloned().unwrap_or_default();
    let at = activated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(amount) = line.pointer("/price/dutyFreeAmount").and_then(|m| money_from_json(m).ok()) else {
            continue;
        };
        let mut c = json!({
            "id": format!("{pid}.{}", n + 1),
            "product": {"id": pid},
            "billingAccount": product.get("billingAccount").cloned().unwrap_or(Value::Null),
            "name": line.get("name").cloned().unwrap_or(Value::Null),
            "productOfferingPrice": line.get("productOfferingPrice").cloned().unwrap_or(Value::Null),
            "priceVersion": line.get("priceVersion").cloned().unwrap_or(Value::Null),
            "amount": money_to_json(&amount),
            "startDate": at,
        });
        match line.get("priceType").and_then(Value::as_str) {
            Some("recurring") => {
                c["chargeType"] = json!("recurring");
                c["state"] = json!("active");
                let period = line.get("recurringChargePeriod").and_then(Value::as_str).unwrap_or("month");
                c["recurringChargePeriod"] = json!(period);
                if period == "month" {
                    let p = first_period(amount, activated, account.bill_cycle_day, account.tz, rounding);
                    c["firstPeriod"] = json!({
                        "startDate": p.start.to_string(), "endDate": p.end.to_string(),
                        "daysCharged": p.days_charged, "daysInPeriod": p.days_in_period,
                        "amount": money_to_json(&p.amount), "prorated": p.days_charged < p.days_in_period,
                    });
                    c["nextChargeDate"] = json!(p.end.to_string());
                } else {
                    c["firstPeriod"] = json!({"startDate": activated.date_naive().to_string(),
                        "amount": money_to_json(&amount.round(rounding)), "prorated": false});
                }
            }
            Some("oneTime") => {
                c["chargeType"] = json!("oneTime");
                c["state"] = json!("pendingBilling");
                c["billOn"] = json!("nextBill");
            }
            _ => continue,
        }
        out.push(c);
    }
    out
}

impl Account {
    /// From a billing account's `billCycleDay` and `timeZone` (defaults: 1 and UTC).
    pub fn from_billing_account(doc: &Value) -> Account {
        Account::from_fields(doc.get("billCycleDay"), doc.get("timeZone"))
    }

    /// From the two fields alone, as [`Account::from_billing_account`] reads them (for callers
    /// that pick them out of a document without parsing all of it).
    pub fn from_fields(bill_cycle_day: Option<&Value>, time_zone: Option<&Value>) -> Account {
        let day = bill_cycle_day.and_then(Value::as_u64).unwrap_or(1).clamp(1, 28) as u32;
        let tz = time_zone.and_then(Value::as_str).and_then(|t| t.parse().ok()).unwrap_or(Tz::UTC);
        Account { bill_cycle_day: day, tz }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_transitions() {
        use ProductStatus::*;
        assert!(Active.can_become(Suspended) && Suspended.can_become(Active));
        assert!(!Terminated.can_become(Active));
        assert!(!Created.can_become(Suspended));
        assert_eq!(status_after("deactivate"), Some(Terminated));
    }

    #[test]
    fn charges_start_billing() {
        let product = json!({"id": "p1", "billingAccount": {"id": "ba"}, "productPrice": [
            {"priceType": "recurring", "recurringChargePeriod": "month", "name": "fee",
             "price": {"dutyFreeAmount": {"unit": "EUR", "value": 30}}},
            {"priceType": "oneTime", "name": "SIM", "price": {"dutyFreeAmount": {"unit": "EUR", "value": 10}}},
        ]});
        let acct = Account { bill_cycle_day: 1, tz: Tz::UTC };
        let c = charges(&product, acct, "2026-04-16T08:00:00Z".parse().unwrap(), RoundingRule::HalfEven);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["firstPeriod"]["daysCharged"], 15);
        assert_eq!(money_from_json(&c[0]["firstPeriod"]["amount"]).unwrap().amount, rust_decimal::Decimal::from(15));
        assert_eq!(c[0]["nextChargeDate"], "2026-05-01");
        assert_eq!(c[1]["billOn"], "nextBill");
        assert_eq!(c[1]["id"], "p1.2");
    }
}
