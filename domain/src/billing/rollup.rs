//! Enterprise roll-up: the bills of accounts with `billRollUp: true` are consolidated into the
//! bill of their paying account ([`Forest::payer_of`]), one section per account with its own
//! lines and subtotal. Tests: `cargo test -p bss-domain billing`.
//!
//! Rules:
//! - The bill run computes a draft bill per account of the payer's roll-up tree (each with its
//!   own charges, usage and discounts, [`super::bill::build_bill`]) and consolidates them: the
//!   payer's bill and bills of accounts whose payer it is, all drafts of the same period and
//!   currency. The payer's own section comes first, then the others in hierarchy order
//!   (breadth first, ids in order).
//! - Only the payer has an account balance: its bill brings the previous balance and the
//!   payments, credit notes and refunds; a rolled-up account's bill must have none.
//! - Sections keep their lines as computed (rounded once per line), so the consolidated total
//!   is the sum of the section totals, which are sums of their lines, to the cent; the tax
//!   summary is the sum of the sections' summaries. Line ids stay unique across sections.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::bill::{AccountActivity, Bill, BillLine, TaxSummary, amount_due};
use super::number::{BillState, Numbered};
use super::period::BillPeriod;
use super::{BillingError, add, sum};
use crate::customer::hierarchy::Forest;
use crate::money::{Currency, Money, RoundingRule};

/// One account's part of a consolidated bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillSection {
    /// The account.
    pub account_id: String,
    /// Its parent account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Depth below the payer (0: the payer).
    pub depth: usize,
    /// The draft bill it comes from.
    pub bill_id: String,
    /// Its lines.
    pub lines: Vec<BillLine>,
    /// Σ net.
    pub subtotal: Money,
    /// Σ tax.
    pub tax_total: Money,
    /// Σ gross.
    pub total: Money,
}

/// The bill of a paying account with the sections of the accounts rolled up into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsolidatedBill {
    /// `bill:<payerAccountId>:<periodStart>` (the payer's own bill id).
    pub id: String,
    /// The paying account.
    pub account_id: String,
    /// Currency.
    pub currency: Currency,
    /// Bill period.
    pub period: BillPeriod,
    /// Local date of issue.
    pub bill_date: NaiveDate,
    /// Payment due.
    pub due_date: NaiveDate,
    /// Lifecycle state.
    pub state: BillState,
    /// Gap-free number, from validation on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_no: Option<String>,
    /// The rounding used.
    pub rounding: RoundingRule,
    /// Per account, payer first.
    pub sections: Vec<BillSection>,
    /// Per tax category, jurisdiction and rate, over all sections.
    pub tax_summary: Vec<TaxSummary>,
    /// Σ section subtotals.
    pub subtotal: Money,
    /// Σ section tax totals.
    pub tax_total: Money,
    /// Σ section totals.
    pub total: Money,
    /// The payer's previous balance.
    pub previous_balance: Money,
    /// The payer's payments since the last bill.
    pub payments: Money,
    /// Its credit notes since.
    pub credits: Money,
    /// Its refunds since.
    pub refunds: Money,
    /// Those payments, credit notes and refunds.
    #[serde(default)]
    pub activity: Vec<AccountActivity>,
    /// previousBalance + total − payments − credits + refunds.
    pub amount_due: Money,
}

impl Numbered for ConsolidatedBill {
    fn state(&self) -> BillState {
        self.state
    }

    fn bill_date(&self) -> NaiveDate {
        self.bill_date
    }

    fn set_validated(&mut self, bill_no: String) {
        self.state = BillState::Validated;
        self.bill_no = Some(bill_no);
    }
}

impl ConsolidatedBill {
    /// Whether its sums hold: each section sums its lines, the bill sums its sections, the tax
    /// summary sums to the tax total, and the amount due follows.
    pub fn adds_up(&self) -> bool {
        let c = self.currency;
        let sections_ok = self.sections.iter().all(|s| {
            sum(c, s.lines.iter().map(|l| l.net)).ok() == Some(s.subtotal)
                && sum(c, s.lines.iter().map(|l| l.tax)).ok() == Some(s.tax_total)
                && sum(c, s.lines.iter().map(|l| l.gross)).ok() == Some(s.total)
        });
        sections_ok
            && sum(c, self.sections.iter().map(|s| s.subtotal)).ok() == Some(self.subtotal)
            && sum(c, self.sections.iter().map(|s| s.tax_total)).ok() == Some(self.tax_total)
            && sum(c, self.sections.iter().map(|s| s.total)).ok() == Some(self.total)
            && add(self.subtotal, self.tax_total).ok() == Some(self.total)
            && sum(c, self.tax_summary.iter().map(|t| t.tax)).ok() == Some(self.tax_total)
            && amount_due(self.previous_balance, self.total, self.payments, self.credits, self.refunds).ok()
                == Some(self.amount_due)
    }
}

fn refuse(account_id: &str, reason: impl Into<String>) -> BillingError {
    BillingError::NotConsolidable { account_id: account_id.to_string(), reason: reason.into() }
}

/// Consolidates `payer`'s draft bill with the draft bills of accounts that roll up into it.
pub fn consolidate(forest: &Forest, payer: Bill, rolled_up: Vec<Bill>) -> Result<ConsolidatedBill, BillingError> {
    let payer_id = payer.account_id.clone();
    if forest.payer_of(&payer_id)? != payer_id {
        return Err(refuse(&payer_id, "it rolls up into another account"));
    }
    let mut by_account: BTreeMap<String, Bill> = BTreeMap::new();
    for b in std::iter::once(payer).chain(rolled_up) {
        let id = b.account_id.clone();
        if !b.state.is_draft() {
            return Err(refuse(&id, "only draft bills are consolidated (a validated bill is final)"));
        }
        if id != payer_id {
            let actual = forest.payer_of(&id)?;
            if actual != payer_id {
                return Err(refuse(&id, format!("its bills go to {actual}, not {payer_id}")));
            }
            if !b.activity.is_empty() || !b.previous_balance.amount.is_zero() {
                return Err(refuse(&id, "a rolled-up account has no balance, payments or credit notes of its own"));
            }
        }
        if by_account.contains_key(&id) {
            return Err(refuse(&id, "two bills of one account"));
        }
        by_account.insert(id, b);
    }
    let head = by_account[&payer_id].clone();
    let (currency, period) = (head.currency, head.period);
    let mut seen = BTreeSet::new();
    for b in by_account.values() {
        if b.currency != currency {
            return Err(BillingError::CurrencyMismatch {
                expected: currency,
                found: b.currency,
                item: format!("the bill of {}", b.account_id),
            });
        }
        if b.period != period {
            return Err(refuse(
                &b.account_id,
                format!("its period starts {}, the payer's {}", b.period.start, period.start),
            ));
        }
        if !b.adds_up() {
            return Err(refuse(&b.account_id, "its bill does not add up"));
        }
        for l in &b.lines {
            if !seen.insert(l.id.clone()) {
                return Err(BillingError::DuplicateLine { id: l.id.clone() });
            }
        }
    }

    let mut sections = Vec::new();
    for placed in forest.subtree(&payer_id)? {
        let Some(b) = by_account.remove(&placed.id) else { continue };
        sections.push(BillSection {
            account_id: b.account_id,
            parent_id: if placed.depth == 0 { None } else { placed.parent },
            depth: placed.depth,
            bill_id: b.id,
            lines: b.lines,
            subtotal: b.subtotal,
            tax_total: b.tax_total,
            total: b.total,
        });
    }
    // Every rolled-up account's payer is `payer_id`, so it is in the payer's subtree.
    if let Some(id) = by_account.keys().next() {
        return Err(refuse(id, format!("it is not below {payer_id}")));
    }

    let mut groups: BTreeMap<(String, Option<String>, String), TaxSummary> = BTreeMap::new();
    for l in sections.iter().flat_map(|s| &s.lines) {
        let key = (l.tax_category.clone(), l.jurisdiction.clone(), l.tax_rate_id.clone());
        let g = groups.entry(key).or_insert_with(|| TaxSummary {
            tax_category: l.tax_category.clone(),
            jurisdiction: l.jurisdiction.clone(),
            tax_rate_id: l.tax_rate_id.clone(),
            rate: l.tax_rate,
            taxable: Money::zero(currency),
            tax: Money::zero(currency),
        });
        g.taxable = add(g.taxable, l.net)?;
        g.tax = add(g.tax, l.tax)?;
    }
    let subtotal = sum(currency, sections.iter().map(|s| s.subtotal))?;
    let tax_total = sum(currency, sections.iter().map(|s| s.tax_total))?;
    let total = sum(currency, sections.iter().map(|s| s.total))?;
    let amount_due = amount_due(head.previous_balance, total, head.payments, head.credits, head.refunds)?;
    Ok(ConsolidatedBill {
        id: head.id,
        account_id: payer_id,
        currency,
        period,
        bill_date: head.bill_date,
        due_date: head.due_date,
        state: BillState::New,
        bill_no: None,
        rounding: head.rounding,
        sections,
        tax_summary: groups.into_values().collect(),
        subtotal,
        tax_total,
        total,
        previous_balance: head.previous_balance,
        payments: head.payments,
        credits: head.credits,
        refunds: head.refunds,
        activity: head.activity,
        amount_due,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::bill::{ActivityKind, BillInput, OneTimeCharge, UsageSummary, build_bill};
    use crate::billing::testing::*;
    use crate::customer::hierarchy::Node;
    use crate::rating::Service;
    use proptest::prelude::*;

    fn forest() -> Forest {
        // R pays; C1, C2 and C1's child G roll up into it; X (under R) pays for itself.
        let mut f = Forest::new();
        let mut add = |id: &str, parent: Option<&str>, roll: bool| {
            f.insert(id, Node { parent: parent.map(str::to_string), bill_roll_up: roll });
        };
        add("R", None, false);
        add("C1", Some("R"), true);
        add("C2", Some("R"), true);
        add("G", Some("C1"), true);
        add("X", Some("R"), false);
        f
    }

    fn input(account: &str) -> BillInput {
        serde_json::from_value(serde_json::json!({
            "accountId": account, "currency": "EUR",
            "period": {"start": "2026-01-01", "end": "2026-02-01"}, "timeZone": "Europe/Paris",
            "issuedAt": "2026-02-01T05:00:00Z", "paymentTermsDays": 30,
            "taxRates": [{"id": "std", "taxCategory": "standard", "rate": "20"},
                         {"id": "red", "taxCategory": "reduced", "rate": "5.5"}],
            "previousBalance": {"amount": "0", "currency": "EUR"}
        }))
        .unwrap()
    }

    fn with_fee(account: &str, price: Money, category: &str) -> BillInput {
        let mut i = input(account);
        i.one_time.push(OneTimeCharge {
            charge_id: format!("fee-{account}"),
            product_id: format!("p-{account}"),
            description: "Fee".into(),
            unit_price: price,
            quantity: 1,
            tax_category: category.into(),
        });
        i
    }

    fn bills() -> (Bill, Vec<Bill>) {
        let mut r = with_fee("R", eur("10.00"), "standard");
        r.previous_balance = eur("10.00");
        r.activity.push(AccountActivity {
            id: "pay-1".into(),
            kind: ActivityKind::Payment,
            amount: eur("10.00"),
            at: at("2026-01-20T10:00:00Z"),
            bill_id: None,
        });
        let mut g = input("G");
        g.usage.push(UsageSummary {
            product_id: "p-G".into(),
            service: Service::Voice,
            description: None,
            tax_category: "standard".into(),
            quantity_base_units: 600,
            allowance_base_units: 0,
            records: 3,
            net: eur("3.00"),
            tax: None,
        });
        let children = vec![
            build_bill(&g).unwrap(),
            build_bill(&with_fee("C2", eur("5.00"), "reduced")).unwrap(),
            build_bill(&with_fee("C1", eur("20.00"), "standard")).unwrap(),
        ];
        (build_bill(&r).unwrap(), children)
    }

    #[test]
    fn children_roll_up_into_sections_of_the_payers_bill() {
        let (r, children) = bills();
        let c = consolidate(&forest(), r, children).unwrap();
        assert_eq!(c.id, "bill:R:2026-01-01");
        let sections: Vec<_> = c.sections.iter().map(|s| (s.account_id.as_str(), s.depth, s.total)).collect();
        // R: 10.00 + 2.00; C1: 20.00 + 4.00; C2: 5.00 + 0.275 → 0.28; G: 3.00 + 0.60.
        assert_eq!(
            sections,
            [("R", 0, eur("12.00")), ("C1", 1, eur("24.00")), ("C2", 1, eur("5.28")), ("G", 2, eur("3.60"))]
        );
        assert_eq!(c.sections[3].parent_id.as_deref(), Some("C1"));
        // 12.00 + 24.00 + 5.28 + 3.60 = 44.88; the payer's 10.00 balance was paid.
        assert_eq!((c.subtotal, c.tax_total, c.total), (eur("38.00"), eur("6.88"), eur("44.88")));
        assert_eq!(c.amount_due, eur("44.88"));
        let summary: Vec<_> = c.tax_summary.iter().map(|t| (t.tax_category.as_str(), t.taxable, t.tax)).collect();
        assert_eq!(summary, [("reduced", eur("5.00"), eur("0.28")), ("standard", eur("33.00"), eur("6.60"))]);
        assert!(c.adds_up());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["sections"][1]["accountId"], "C1");
        assert_eq!(serde_json::from_value::<ConsolidatedBill>(json).unwrap(), c);
    }

    #[test]
    fn only_accounts_that_roll_up_into_the_payer_are_consolidated() {
        let (r, mut children) = bills();
        // X pays for itself.
        children.push(build_bill(&with_fee("X", eur("1.00"), "standard")).unwrap());
        let e = consolidate(&forest(), r.clone(), children).unwrap_err();
        assert_eq!(e.to_string(), "the bill of X cannot be consolidated: its bills go to X, not R");
        // C1 is not a payer.
        let c1 = build_bill(&with_fee("C1", eur("1.00"), "standard")).unwrap();
        assert!(matches!(consolidate(&forest(), c1, vec![]), Err(BillingError::NotConsolidable { .. })));
        // A rolled-up account has no payments of its own.
        let mut c2 = with_fee("C2", eur("1.00"), "standard");
        c2.previous_balance = eur("3.00");
        assert!(consolidate(&forest(), r.clone(), vec![build_bill(&c2).unwrap()]).is_err());
        // Another currency is refused.
        let mut usd_bill = build_bill(&with_fee("C2", eur("1.00"), "standard")).unwrap();
        usd_bill.currency = Currency::new("USD").unwrap();
        assert!(matches!(
            consolidate(&forest(), r.clone(), vec![usd_bill]),
            Err(BillingError::CurrencyMismatch { .. })
        ));
        // A validated bill is final.
        let mut done = r.clone();
        done.state = BillState::Validated;
        assert!(consolidate(&forest(), done, vec![]).is_err());
        // Unknown accounts are named.
        let stranger = build_bill(&with_fee("Z", eur("1.00"), "standard")).unwrap();
        assert!(matches!(consolidate(&forest(), r, vec![stranger]), Err(BillingError::Hierarchy(_))));
    }

    proptest! {
        #[test]
        fn a_consolidated_total_is_the_sum_of_its_sections(
            fees in proptest::collection::vec((0i64..1_000_000, any::<bool>()), 4),
        ) {
            let accounts = ["R", "C1", "C2", "G"];
            let mut all: Vec<Bill> = accounts.iter().zip(&fees).map(|(a, (cents, reduced))| {
                let price = Money::new(rust_decimal::Decimal::new(*cents, 2), Currency::new("EUR").unwrap());
                build_bill(&with_fee(a, price, if *reduced { "reduced" } else { "standard" })).unwrap()
            }).collect();
            let payer = all.remove(0);
            let lines: Vec<Money> =
                std::iter::once(&payer).chain(&all).flat_map(|b| b.lines.iter().map(|l| l.gross)).collect();
            let c = consolidate(&forest(), payer, all).unwrap();
            prop_assert!(c.adds_up());
            prop_assert_eq!(c.total, Money::sum(c.currency, c.sections.iter().map(|s| s.total)).unwrap());
            prop_assert_eq!(c.total, Money::sum(c.currency, lines).unwrap());
        }
    }
}
