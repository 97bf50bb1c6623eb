//! The account ledger (TMF676 payments against TMF678 bills): bills are debits; credit notes
//! and payments are credits; refunds pay credit back. A plain serde value: the component loads
//! it, an operation changes it (or refuses and changes nothing), the component stores it with
//! compare-and-swap. Tests: `cargo test -p bss-domain billing`.
//!
//! Rules:
//! - One currency, amounts exact to the minor unit; payments, credit notes and refunds are above
//!   zero. A bill is posted with its total (a bill whose total is negative is a credit).
//! - Invariant, always: `balance = bills − credit notes − payments + refunds`, and it equals
//!   the open amount of the bills less the credit not yet allocated ([`Ledger::check`]).
//! - Allocation: a payment or credit note goes first to the bill it names (up to what is open
//!   on it), then to the open bills oldest first (by issue time, then posting order); what is
//!   left is kept as credit (an over-payment) and goes to the next bills posted. So the account
//!   never has both an open bill and unallocated credit. An allocation never exceeds what is
//!   open on a bill, nor what is left of a credit.
//! - Settlement: a posted bill is `sent` while nothing of it is allocated, `partiallyPaid` while
//!   part is, `settled` when nothing is open (a bill of zero or less is settled when posted).
//!   Every operation reports the allocations it made and the state changes.
//! - Credit notes point at the bill they correct: they are issued for lines of a validated bill
//!   ([`CreditNote::for_lines`]; a line is credited at most once) or for an amount
//!   ([`CreditNote::for_amount`], a commercial gesture outside tax); the credit notes of a bill
//!   never exceed its total.
//! - A refund pays back credit not yet allocated: of the payment it names, else of the newest
//!   credits first; never more than is available ([`BillingError::RefundExceedsCredit`]).
//! - Posting an entry id again with the same data is a replay (nothing changes, `replayed`);
//!   with other data it is refused ([`BillingError::DuplicateEntry`]).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::bill::Bill;
use super::number::BillState;
use super::{BillingError, add, exact, neg, positive, same_currency, sub, sum};
use crate::money::{Currency, Money};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EntryKind {
    /// A bill posted (debit; a negative total is a credit).
    Bill,
    /// A credit note (credit).
    CreditNote,
    /// Money received (credit).
    Payment,
    /// Money paid back (debit, out of credit).
    Refund,
}

/// One posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The bill, credit note, payment or refund id.
    pub id: String,
    /// What it is.
    pub kind: EntryKind,
    /// Its amount (above zero, but a bill's total may be any).
    pub amount: Money,
    /// When.
    pub at: DateTime<Utc>,
    /// The bill a payment or credit note names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_id: Option<String>,
    /// The payment a refund names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// For a credit (payment, credit note, negative bill): what is not allocated yet.
    pub unallocated: Money,
}

impl LedgerEntry {
    fn credit_amount(&self) -> Money {
        match self.kind {
            EntryKind::Payment | EntryKind::CreditNote => self.amount,
            EntryKind::Bill if self.amount.amount < Decimal::ZERO => neg(self.amount),
            _ => Money::zero(self.amount.currency),
        }
    }
}

/// Money of a credit put against a bill or a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The credit (payment, credit note, negative bill).
    pub from: String,
    /// The bill or refund.
    pub to: String,
    /// Above zero.
    pub amount: Money,
}

/// A posted bill and what is still open on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerBill {
    /// The bill.
    pub bill_id: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When payment is due (local date).
    pub due_date: NaiveDate,
    /// Its total.
    pub amount: Money,
    /// Not yet paid or credited (0 to the total).
    pub open: Money,
    /// Σ credit notes naming it.
    pub credited: Money,
    /// Its lines credited by credit notes.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub credited_line_ids: BTreeSet<String>,
    /// `sent`, `partiallyPaid` or `settled`.
    pub state: BillState,
}

impl LedgerBill {
    fn derived_state(&self) -> BillState {
        if self.open.amount <= Decimal::ZERO {
            BillState::Settled
        } else if self.open.amount < self.amount.amount {
            BillState::PartiallyPaid
        } else {
            BillState::Sent
        }
    }
}

/// A bill's state moved by an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChange {
    /// The bill.
    pub bill_id: String,
    /// Before.
    pub from: BillState,
    /// After.
    pub to: BillState,
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Posting {
    /// The entry.
    pub entry_id: String,
    /// The same entry was posted before: nothing changed.
    pub replayed: bool,
    /// Allocations made.
    pub allocations: Vec<Allocation>,
    /// Bill states moved.
    pub state_changes: Vec<StateChange>,
}

/// A credit note: it corrects a bill (TMF678 has it as a bill of category credit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditNote {
    /// Its id.
    pub id: String,
    /// The bill it corrects.
    pub bill_id: String,
    /// The lines it credits in full (empty: an amount).
    #[serde(default)]
    pub line_ids: Vec<String>,
    /// Why.
    pub reason: String,
    /// When.
    pub issued_at: DateTime<Utc>,
    /// Net credited (above zero).
    pub net: Money,
    /// Tax credited.
    pub tax: Money,
    /// net + tax.
    pub gross: Money,
}

impl CreditNote {
    /// A credit note for lines of a validated (or later) bill, each in full: the sums of their
    /// net, tax and gross. The lines must exist, be listed once and charge something.
    pub fn for_lines(
        id: &str,
        bill: &Bill,
        line_ids: &[&str],
        reason: &str,
        issued_at: DateTime<Utc>,
    ) -> Result<CreditNote, BillingError> {
        if bill.state.is_draft() {
            return Err(BillingError::DraftBill { bill_id: bill.id.clone() });
        }
        let mut lines = Vec::new();
        for l in line_ids {
            let line = bill
                .lines
                .iter()
                .find(|x| x.id == *l)
                .ok_or_else(|| BillingError::Unknown { id: format!("line {l} of bill {}", bill.id) })?;
            if lines.iter().any(|x: &&super::bill::BillLine| x.id == *l) {
                return Err(BillingError::DuplicateLine { id: l.to_string() });
            }
            if line.gross.amount <= Decimal::ZERO {
                return Err(BillingError::InvalidAmount {
                    item: format!("line {l}"),
                    reason: "charges nothing to credit",
                });
            }
            lines.push(line);
        }
        if lines.is_empty() {
            return Err(BillingError::InvalidAmount { item: format!("credit note {id}"), reason: "credits no line" });
        }
        let c = bill.currency;
        Ok(CreditNote {
            id: id.to_string(),
            bill_id: bill.id.clone(),
            line_ids: line_ids.iter().map(|s| s.to_string()).collect(),
            reason: reason.to_string(),
            issued_at,
            net: sum(c, lines.iter().map(|l| l.net))?,
            tax: sum(c, lines.iter().map(|l| l.tax))?,
            gross: sum(c, lines.iter().map(|l| l.gross))?,
        })
    }

    /// A credit note of an amount on a bill (a commercial gesture, outside the scope of tax).
    pub fn for_amount(
        id: &str,
        bill_id: &str,
        amount: Money,
        reason: &str,
        issued_at: DateTime<Utc>,
    ) -> Result<CreditNote, BillingError> {
        positive(amount.currency, amount, &format!("credit note {id}"))?;
        Ok(CreditNote {
            id: id.to_string(),
            bill_id: bill_id.to_string(),
            line_ids: Vec::new(),
            reason: reason.to_string(),
            issued_at,
            net: amount,
            tax: Money::zero(amount.currency),
            gross: amount,
        })
    }
}

/// One account's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// The billing account.
    pub account_id: String,
    /// Its currency.
    pub currency: Currency,
    /// Bills posted, in posting order.
    pub bills: Vec<LedgerBill>,
    /// Every entry, in posting order.
    pub entries: Vec<LedgerEntry>,
    /// Every allocation, in order.
    pub allocations: Vec<Allocation>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(account_id: &str, currency: Currency) -> Ledger {
        Ledger {
            account_id: account_id.to_string(),
            currency,
            bills: Vec::new(),
            entries: Vec::new(),
            allocations: Vec::new(),
        }
    }

    fn zero(&self) -> Money {
        Money::zero(self.currency)
    }

    /// `bills − credit notes − payments + refunds` (negative: the account is in credit).
    pub fn balance(&self) -> Money {
        self.entries.iter().fold(self.zero(), |b, e| {
            let amount = match e.kind {
                EntryKind::Bill | EntryKind::Refund => e.amount.amount,
                EntryKind::CreditNote | EntryKind::Payment => -e.amount.amount,
            };
            Money::new(b.amount + amount, self.currency)
        })
    }

    /// Σ open on the bills.
    pub fn open_debt(&self) -> Money {
        Money::new(self.bills.iter().map(|b| b.open.amount).sum(), self.currency)
    }

    /// Σ credit not yet allocated (over-payments, credit notes beyond their bill).
    pub fn available_credit(&self) -> Money {
        Money::new(self.entries.iter().map(|e| e.unallocated.amount).sum(), self.currency)
    }

    /// A posted bill.
    pub fn bill(&self, bill_id: &str) -> Option<&LedgerBill> {
        self.bills.iter().find(|b| b.bill_id == bill_id)
    }

    /// An entry.
    pub fn entry(&self, id: &str) -> Option<&LedgerEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Bills with something open whose due date is before the local date `today`, oldest due first.
    pub fn overdue(&self, today: NaiveDate) -> Vec<&LedgerBill> {
        let mut v: Vec<&LedgerBill> =
            self.bills.iter().filter(|b| b.open.amount > Decimal::ZERO && b.due_date < today).collect();
        v.sort_by_key(|b| (b.due_date, b.issued_at));
        v
    }

    /// Whether an entry with this id was already posted: a replay if it is the same, else refused.
    fn replay(&self, e: &LedgerEntry) -> Result<Option<Posting>, BillingError> {
        match self.entry(&e.id) {
            None => Ok(None),
            Some(old)
                if old.kind == e.kind
                    && old.amount == e.amount
                    && old.bill_id == e.bill_id
                    && old.payment_id == e.payment_id =>
            {
                Ok(Some(Posting { entry_id: e.id.clone(), replayed: true, allocations: vec![], state_changes: vec![] }))
            }
            Some(_) => Err(BillingError::DuplicateEntry { id: e.id.clone() }),
        }
    }

    fn entry_of(&self, id: &str, kind: EntryKind, amount: Money, at: DateTime<Utc>) -> LedgerEntry {
        LedgerEntry { id: id.to_string(), kind, amount, at, bill_id: None, payment_id: None, unallocated: self.zero() }
    }

    /// Posts a bill with its total (validated or sent; see the module doc).
    pub fn post_bill(
        &mut self,
        bill_id: &str,
        total: Money,
        issued_at: DateTime<Utc>,
        due_date: NaiveDate,
    ) -> Result<Posting, BillingError> {
        same_currency(self.currency, total, &format!("bill {bill_id}"))?;
        exact(total, &format!("bill {bill_id}"))?;
        let mut e = self.entry_of(bill_id, EntryKind::Bill, total, issued_at);
        if let Some(p) = self.replay(&e)? {
            return Ok(p);
        }
        e.unallocated = if total.amount < Decimal::ZERO { neg(total) } else { self.zero() };
        let open = if total.amount > Decimal::ZERO { total } else { self.zero() };
        let bill = LedgerBill {
            bill_id: bill_id.to_string(),
            issued_at,
            due_date,
            amount: total,
            open,
            credited: self.zero(),
            credited_line_ids: BTreeSet::new(),
            state: if open.amount > Decimal::ZERO { BillState::Sent } else { BillState::Settled },
        };
        let mut next = self.clone();
        next.bills.push(bill);
        next.entries.push(e);
        let posting = next.settle(bill_id, None)?;
        *self = next;
        Ok(posting)
    }

    /// Posts a validated (or sent) bill.
    pub fn post(&mut self, bill: &Bill, issued_at: DateTime<Utc>) -> Result<Posting, BillingError> {
        if bill.state.is_draft() {
            return Err(BillingError::DraftBill { bill_id: bill.id.clone() });
        }
        self.post_bill(&bill.id, bill.total, issued_at, bill.due_date)
    }

    /// Records a payment, naming a bill or not (see the module doc for its allocation).
    pub fn record_payment(
        &mut self,
        id: &str,
        amount: Money,
        at: DateTime<Utc>,
        bill_id: Option<&str>,
    ) -> Result<Posting, BillingError> {
        positive(self.currency, amount, &format!("payment {id}"))?;
        let mut e = self.entry_of(id, EntryKind::Payment, amount, at);
        e.bill_id = bill_id.map(str::to_string);
        if let Some(p) = self.replay(&e)? {
            return Ok(p);
        }
        if let Some(b) = bill_id
            && self.bill(b).is_none()
        {
            return Err(BillingError::Unknown { id: format!("bill {b}") });
        }
        e.unallocated = amount;
        let mut next = self.clone();
        next.entries.push(e);
        let posting = next.settle(id, bill_id)?;
        *self = next;
        Ok(posting)
    }

    /// Records a credit note against its bill (see the module doc).
    pub fn record_credit_note(&mut self, note: &CreditNote) -> Result<Posting, BillingError> {
        let what = format!("credit note {}", note.id);
        positive(self.currency, note.gross, &what)?;
        let mut e = self.entry_of(&note.id, EntryKind::CreditNote, note.gross, note.issued_at);
        e.bill_id = Some(note.bill_id.clone());
        if let Some(p) = self.replay(&e)? {
            return Ok(p);
        }
        let Some(bi) = self.bills.iter().position(|b| b.bill_id == note.bill_id) else {
            return Err(BillingError::Unknown { id: format!("bill {}", note.bill_id) });
        };
        let bill = &self.bills[bi];
        if let Some(l) = note.line_ids.iter().find(|l| bill.credited_line_ids.contains(*l)) {
            return Err(BillingError::DuplicateLine { id: l.clone() });
        }
        let creditable = sub(bill.amount, bill.credited)?;
        if note.gross.amount > creditable.amount {
            let creditable = if creditable.amount < Decimal::ZERO { self.zero() } else { creditable };
            return Err(BillingError::CreditExceedsBill { bill_id: note.bill_id.clone(), creditable });
        }
        e.unallocated = note.gross;
        let mut next = self.clone();
        let b = &mut next.bills[bi];
        b.credited = add(b.credited, note.gross)?;
        b.credited_line_ids.extend(note.line_ids.iter().cloned());
        next.entries.push(e);
        let posting = next.settle(&note.id, Some(&note.bill_id))?;
        *self = next;
        Ok(posting)
    }

    /// Pays back credit not yet allocated: of the named payment, else the newest credits first.
    pub fn record_refund(
        &mut self,
        id: &str,
        amount: Money,
        at: DateTime<Utc>,
        payment_id: Option<&str>,
    ) -> Result<Posting, BillingError> {
        positive(self.currency, amount, &format!("refund {id}"))?;
        let mut e = self.entry_of(id, EntryKind::Refund, amount, at);
        e.payment_id = payment_id.map(str::to_string);
        if let Some(p) = self.replay(&e)? {
            return Ok(p);
        }
        let sources: Vec<usize> = match payment_id {
            Some(p) => {
                let i = self
                    .entries
                    .iter()
                    .position(|x| x.id == p && x.kind == EntryKind::Payment)
                    .ok_or_else(|| BillingError::Unknown { id: format!("payment {p}") })?;
                vec![i]
            }
            None => (0..self.entries.len()).rev().collect(),
        };
        let available = sum(self.currency, sources.iter().map(|&i| self.entries[i].unallocated))?;
        if amount.amount > available.amount {
            return Err(BillingError::RefundExceedsCredit { requested: amount, available });
        }
        let mut next = self.clone();
        let mut left = amount;
        let mut allocations = Vec::new();
        for i in sources {
            if left.amount.is_zero() {
                break;
            }
            let src = &mut next.entries[i];
            let take = if src.unallocated.amount < left.amount { src.unallocated } else { left };
            if take.amount.is_zero() {
                continue;
            }
            src.unallocated = sub(src.unallocated, take)?;
            left = sub(left, take)?;
            allocations.push(Allocation { from: src.id.clone(), to: id.to_string(), amount: take });
        }
        next.entries.push(e);
        next.allocations.extend(allocations.iter().cloned());
        *self = next;
        Ok(Posting { entry_id: id.to_string(), replayed: false, allocations, state_changes: vec![] })
    }

    /// Allocates credit to open bills: first `entry_id`'s credit to the bill it names, then every
    /// credit (oldest first) to the open bills (oldest first); then updates the bill states.
    fn settle(&mut self, entry_id: &str, named_bill: Option<&str>) -> Result<Posting, BillingError> {
        let before: Vec<BillState> = self.bills.iter().map(|b| b.state).collect();
        let mut allocations = Vec::new();
        if let (Some(bill), Some(ei)) = (named_bill, self.entries.iter().position(|e| e.id == entry_id))
            && let Some(bi) = self.bills.iter().position(|b| b.bill_id == bill)
        {
            self.allocate(ei, bi, &mut allocations)?;
        }
        let mut order: Vec<usize> = (0..self.bills.len()).collect();
        order.sort_by_key(|&i| (self.bills[i].issued_at, i));
        for bi in order {
            for ei in 0..self.entries.len() {
                if self.bills[bi].open.amount <= Decimal::ZERO {
                    break;
                }
                self.allocate(ei, bi, &mut allocations)?;
            }
        }
        let mut state_changes = Vec::new();
        for (b, from) in self.bills.iter_mut().zip(before) {
            let to = b.derived_state();
            if to != from {
                b.state = to;
                state_changes.push(StateChange { bill_id: b.bill_id.clone(), from, to });
            }
        }
        self.allocations.extend(allocations.iter().cloned());
        Ok(Posting { entry_id: entry_id.to_string(), replayed: false, allocations, state_changes })
    }

    fn allocate(&mut self, ei: usize, bi: usize, out: &mut Vec<Allocation>) -> Result<(), BillingError> {
        let (credit, open) = (self.entries[ei].unallocated, self.bills[bi].open);
        let take = if credit.amount < open.amount { credit } else { open };
        if take.amount <= Decimal::ZERO {
            return Ok(());
        }
        self.entries[ei].unallocated = sub(credit, take)?;
        self.bills[bi].open = sub(open, take)?;
        out.push(Allocation { from: self.entries[ei].id.clone(), to: self.bills[bi].bill_id.clone(), amount: take });
        Ok(())
    }

    /// Checks the ledger's invariants (see the module doc); the first broken one is described.
    pub fn check(&self) -> Result<(), String> {
        let c = self.currency;
        let alloc_to =
            |id: &str| Money::new(self.allocations.iter().filter(|a| a.to == id).map(|a| a.amount.amount).sum(), c);
        let alloc_from =
            |id: &str| Money::new(self.allocations.iter().filter(|a| a.from == id).map(|a| a.amount.amount).sum(), c);
        let balance = self.balance();
        let net = Money::new(self.open_debt().amount - self.available_credit().amount, c);
        if balance != net {
            return Err(format!("balance {balance} is not open debt less available credit {net}"));
        }
        if self.allocations.iter().any(|a| a.amount.amount <= Decimal::ZERO) {
            return Err("an allocation is not above zero".into());
        }
        for b in &self.bills {
            let owed = if b.amount.amount > Decimal::ZERO { b.amount } else { Money::zero(c) };
            if b.open.amount < Decimal::ZERO || b.open.amount > owed.amount {
                return Err(format!("bill {} has {} open of {}", b.bill_id, b.open, b.amount));
            }
            if Money::new(owed.amount - b.open.amount, c) != alloc_to(&b.bill_id) {
                return Err(format!("bill {}: allocations do not match what was paid", b.bill_id));
            }
            if b.state != b.derived_state() {
                return Err(format!("bill {} is {} with {} open", b.bill_id, b.state.as_str(), b.open));
            }
            if b.credited.amount > b.amount.amount.max(Decimal::ZERO) {
                return Err(format!("bill {} is credited more than it billed", b.bill_id));
            }
        }
        for e in &self.entries {
            match e.kind {
                EntryKind::Refund => {
                    if alloc_to(&e.id) != e.amount {
                        return Err(format!("refund {} is not covered by credit", e.id));
                    }
                }
                _ => {
                    let credit = e.credit_amount();
                    if e.unallocated.amount < Decimal::ZERO
                        || Money::new(credit.amount - e.unallocated.amount, c) != alloc_from(&e.id)
                    {
                        return Err(format!("credit {}: allocations do not match", e.id));
                    }
                }
            }
        }
        if self.open_debt().amount > Decimal::ZERO && self.available_credit().amount > Decimal::ZERO {
            return Err("open bills and unallocated credit at once".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::testing::*;
    use proptest::prelude::*;

    fn ledger() -> Ledger {
        Ledger::new("acct-1", Currency::new("EUR").unwrap())
    }

    fn t(day: u32) -> DateTime<Utc> {
        at(&format!("2026-03-{day:02}T10:00:00Z"))
    }

    fn state(l: &Ledger, bill: &str) -> BillState {
        l.bill(bill).unwrap().state
    }

    #[test]
    fn a_payment_goes_to_the_oldest_bill_first_and_settles_it() {
        let mut l = ledger();
        l.post_bill("b1", eur("30.00"), t(1), date("2026-03-15")).unwrap();
        l.post_bill("b2", eur("20.00"), t(2), date("2026-03-16")).unwrap();
        assert_eq!(l.balance(), eur("50.00"));
        // 40.00: 30.00 settles b1, 10.00 goes to b2.
        let p = l.record_payment("pay-1", eur("40.00"), t(3), None).unwrap();
        assert_eq!(
            p.allocations,
            [
                Allocation { from: "pay-1".into(), to: "b1".into(), amount: eur("30.00") },
                Allocation { from: "pay-1".into(), to: "b2".into(), amount: eur("10.00") },
            ]
        );
        assert_eq!(
            p.state_changes,
            [
                StateChange { bill_id: "b1".into(), from: BillState::Sent, to: BillState::Settled },
                StateChange { bill_id: "b2".into(), from: BillState::Sent, to: BillState::PartiallyPaid },
            ]
        );
        assert_eq!((l.balance(), l.bill("b2").unwrap().open), (eur("10.00"), eur("10.00")));
        l.check().unwrap();
    }

    #[test]
    fn a_payment_naming_a_bill_goes_there_first() {
        let mut l = ledger();
        l.post_bill("b1", eur("30.00"), t(1), date("2026-03-15")).unwrap();
        l.post_bill("b2", eur("20.00"), t(2), date("2026-03-16")).unwrap();
        // 25.00 for b2: 20.00 settles it, the 5.00 left goes to the oldest open bill.
        let p = l.record_payment("pay-1", eur("25.00"), t(3), Some("b2")).unwrap();
        assert_eq!(
            p.allocations.iter().map(|a| (a.to.as_str(), a.amount)).collect::<Vec<_>>(),
            [("b2", eur("20.00")), ("b1", eur("5.00"))]
        );
        assert_eq!((state(&l, "b1"), state(&l, "b2")), (BillState::PartiallyPaid, BillState::Settled));
        assert_eq!(
            l.record_payment("pay-2", eur("1.00"), t(3), Some("nope")),
            Err(BillingError::Unknown { id: "bill nope".into() })
        );
        l.check().unwrap();
    }

    #[test]
    fn an_over_payment_is_kept_as_credit_for_the_next_bill_or_a_refund() {
        let mut l = ledger();
        l.post_bill("b1", eur("30.00"), t(1), date("2026-03-15")).unwrap();
        // Pays 50.00: 30.00 settles b1, 20.00 stays as credit; the balance is −20.00.
        l.record_payment("pay-1", eur("50.00"), t(2), Some("b1")).unwrap();
        assert_eq!((l.balance(), l.available_credit()), (eur("-20.00"), eur("20.00")));
        assert_eq!(l.entry("pay-1").unwrap().unallocated, eur("20.00"));
        // The next bill of 12.00 is settled from the credit when posted; 8.00 credit remains.
        let p = l.post_bill("b2", eur("12.00"), t(20), date("2026-04-05")).unwrap();
        assert_eq!(p.allocations, [Allocation { from: "pay-1".into(), to: "b2".into(), amount: eur("12.00") }]);
        assert_eq!(state(&l, "b2"), BillState::Settled);
        assert_eq!(l.balance(), eur("-8.00"));
        // A refund pays back at most the credit: 10.00 is refused, 8.00 empties it.
        assert_eq!(
            l.record_refund("ref-1", eur("10.00"), t(21), Some("pay-1")),
            Err(BillingError::RefundExceedsCredit { requested: eur("10.00"), available: eur("8.00") })
        );
        l.record_refund("ref-1", eur("8.00"), t(21), Some("pay-1")).unwrap();
        assert_eq!((l.balance(), l.available_credit()), (eur("0.00"), eur("0.00")));
        // balance = bills − credit notes − payments + refunds = 30 + 12 − 50 + 8 = 0.
        l.check().unwrap();
    }

    #[test]
    fn a_credit_note_corrects_lines_of_a_bill_once() {
        use crate::billing::bill::{BillInput, OneTimeCharge, build_bill};
        let input: BillInput = serde_json::from_value(serde_json::json!({
            "accountId": "acct-1", "currency": "EUR",
            "period": {"start": "2026-02-01", "end": "2026-03-01"}, "timeZone": "UTC",
            "issuedAt": "2026-03-01T06:00:00Z", "paymentTermsDays": 14,
            "taxRates": [{"id": "std", "taxCategory": "standard", "rate": "20"}],
            "previousBalance": {"amount": "0", "currency": "EUR"}
        }))
        .unwrap();
        let mut input = input;
        for (id, price) in [("sim", "10.00"), ("router", "49.90")] {
            input.one_time.push(OneTimeCharge {
                charge_id: id.into(),
                product_id: "p".into(),
                description: id.into(),
                unit_price: eur(price),
                quantity: 1,
                tax_category: "standard".into(),
            });
        }
        let mut bill = build_bill(&input).unwrap();
        // A draft is recomputed, not credited.
        assert!(matches!(
            CreditNote::for_lines("cn-1", &bill, &["oneTime:sim"], "x", t(2)),
            Err(BillingError::DraftBill { .. })
        ));
        crate::billing::number::validate(&mut bill, &Default::default(), &Default::default()).unwrap();
        let mut l = ledger();
        l.post(&bill, t(1)).unwrap();
        assert_eq!(l.balance(), eur("71.88")); // 10.00 + 2.00 + 49.90 + 9.98
        // The router was never delivered: credit its line, 49.90 + 9.98 = 59.88.
        let cn = CreditNote::for_lines("cn-1", &bill, &["oneTime:router"], "not delivered", t(2)).unwrap();
        assert_eq!((cn.net, cn.tax, cn.gross), (eur("49.90"), eur("9.98"), eur("59.88")));
        let p = l.record_credit_note(&cn).unwrap();
        assert_eq!(p.state_changes[0].to, BillState::PartiallyPaid);
        assert_eq!(l.balance(), eur("12.00"));
        // Replaying it changes nothing; the same line again under another id is refused.
        assert!(l.record_credit_note(&cn).unwrap().replayed);
        let again = CreditNote::for_lines("cn-2", &bill, &["oneTime:router"], "again", t(3)).unwrap();
        assert_eq!(l.record_credit_note(&again), Err(BillingError::DuplicateLine { id: "oneTime:router".into() }));
        // Never more than the bill: 12.00 is left to credit.
        let big = CreditNote::for_amount("cn-3", &bill.id, eur("12.01"), "gesture", t(3)).unwrap();
        assert!(matches!(l.record_credit_note(&big), Err(BillingError::CreditExceedsBill { .. })));
        let gesture = CreditNote::for_amount("cn-3", &bill.id, eur("12.00"), "gesture", t(3)).unwrap();
        l.record_credit_note(&gesture).unwrap();
        assert_eq!((state(&l, &bill.id), l.balance()), (BillState::Settled, eur("0.00")));
        l.check().unwrap();
    }

    #[test]
    fn entries_replay_and_refuse_other_data_under_the_same_id() {
        let mut l = ledger();
        l.post_bill("b1", eur("30.00"), t(1), date("2026-03-15")).unwrap();
        assert!(l.post_bill("b1", eur("30.00"), t(1), date("2026-03-15")).unwrap().replayed);
        assert_eq!(
            l.post_bill("b1", eur("31.00"), t(1), date("2026-03-15")),
            Err(BillingError::DuplicateEntry { id: "b1".into() })
        );
        l.record_payment("pay-1", eur("10.00"), t(2), None).unwrap();
        let before = l.clone();
        assert!(l.record_payment("pay-1", eur("10.00"), t(2), None).unwrap().replayed);
        assert_eq!(l, before);
        assert!(l.record_payment("pay-1", eur("11.00"), t(2), None).is_err());
        assert!(matches!(
            l.record_payment("pay-2", usd("1.00"), t(2), None),
            Err(BillingError::CurrencyMismatch { .. })
        ));
        assert!(matches!(l.record_payment("pay-2", eur("0"), t(2), None), Err(BillingError::InvalidAmount { .. })));
        assert!(matches!(l.record_payment("pay-2", eur("0.001"), t(2), None), Err(BillingError::InvalidAmount { .. })));
        assert_eq!(l, before, "refused operations change nothing");
    }

    #[test]
    fn a_negative_bill_is_a_credit() {
        let mut l = ledger();
        l.post_bill("b1", eur("30.00"), t(1), date("2026-03-15")).unwrap();
        // A bill of proration credits only (−12.00) pays part of the older bill.
        let p = l.post_bill("b2", eur("-12.00"), t(2), date("2026-03-16")).unwrap();
        assert_eq!(p.allocations, [Allocation { from: "b2".into(), to: "b1".into(), amount: eur("12.00") }]);
        assert_eq!(
            (state(&l, "b1"), state(&l, "b2"), l.balance()),
            (BillState::PartiallyPaid, BillState::Settled, eur("18.00"))
        );
        l.check().unwrap();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Bill(i64),
        Pay(i64, Option<usize>),
        Credit(i64, usize),
        Refund(i64, Option<usize>),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (-2_000i64..20_000).prop_map(Op::Bill),
            (1i64..30_000, proptest::option::of(0usize..8)).prop_map(|(c, b)| Op::Pay(c, b)),
            (1i64..10_000, 0usize..8).prop_map(|(c, b)| Op::Credit(c, b)),
            (1i64..10_000, proptest::option::of(0usize..8)).prop_map(|(c, p)| Op::Refund(c, p)),
        ]
    }

    proptest! {
        #[test]
        fn the_balance_equation_holds_after_any_sequence(ops in proptest::collection::vec(arb_op(), 1..40)) {
            let mut l = ledger();
            let (mut bills, mut payments) = (Vec::<String>::new(), Vec::<String>::new());
            let [mut billed, mut credited, mut paid, mut refunded] = [Decimal::ZERO; 4];
            for (n, op) in ops.into_iter().enumerate() {
                let before = l.clone();
                let money = |c: i64| eur(&Decimal::new(c, 2).to_string());
                let result = match op {
                    Op::Bill(c) => {
                        let id = format!("b{n}");
                        let issued = t(1) + chrono::Duration::hours(n as i64);
                        let r = l.post_bill(&id, money(c), issued, date("2026-03-20"));
                        if r.is_ok() { bills.push(id); billed += Decimal::new(c, 2); }
                        r
                    }
                    Op::Pay(c, b) => {
                        let named = b.and_then(|i| bills.get(i)).map(String::as_str);
                        let id = format!("p{n}");
                        let r = l.record_payment(&id, money(c), t(2), named);
                        if r.is_ok() { payments.push(id); paid += Decimal::new(c, 2); }
                        r
                    }
                    Op::Credit(c, b) => match bills.get(b) {
                        Some(bill) => {
                            let cn = CreditNote::for_amount(&format!("c{n}"), bill, money(c), "x", t(3)).unwrap();
                            let r = l.record_credit_note(&cn);
                            if r.is_ok() { credited += Decimal::new(c, 2); }
                            r
                        }
                        None => continue,
                    },
                    Op::Refund(c, p) => {
                        let named = p.and_then(|i| payments.get(i)).map(String::as_str);
                        let r = l.record_refund(&format!("r{n}"), money(c), t(4), named);
                        if r.is_ok() { refunded += Decimal::new(c, 2); }
                        r
                    }
                };
                match result {
                    Ok(p) => {
                        for a in &p.allocations {
                            prop_assert!(a.amount.amount > Decimal::ZERO);
                        }
                    }
                    Err(_) => prop_assert_eq!(&l, &before, "a refused operation changed the ledger"),
                }
                prop_assert_eq!(l.balance().amount, billed - credited - paid + refunded);
                if let Err(e) = l.check() {
                    prop_assert!(false, "{}: {:#?}", e, l);
                }
                // Allocations never exceed what is owed.
                for b in &l.bills {
                    let to: Decimal = l.allocations.iter().filter(|a| a.to == b.bill_id).map(|a| a.amount.amount).sum();
                    prop_assert!(to <= b.amount.amount.max(Decimal::ZERO));
                }
                prop_assert!(l.available_credit().amount >= Decimal::ZERO && l.open_debt().amount >= Decimal::ZERO);
            }
            let json = serde_json::to_value(&l).unwrap();
            prop_assert_eq!(serde_json::from_value::<Ledger>(json).unwrap(), l);
        }
    }
}
