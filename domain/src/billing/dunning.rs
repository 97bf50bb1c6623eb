//! Dunning: what to do about bills left unpaid after their due date. A configurable policy of
//! steps by days past due (default: a reminder at due + 7 days, suspension at + 21, termination
//! at + 60); [`actions_due`] gives the actions due now that were not done yet. Pure: the
//! component runs it (e.g. daily), executes the actions (send a reminder, suspend or resume
//! the account's products through orders, terminate) and stores the actions done.
//! Tests: `cargo test -p bss-domain billing`.
//!
//! Rules:
//! - Days past due are counted in local dates of the account's time zone: a bill due on `D` is
//!   `n` days past due on `D + n`. Only bills with something open count ([`Ledger::overdue`]),
//!   and none if the overdue total is not above the policy's `minimumAmount`.
//! - Reminders are per bill: each overdue bill gets the latest reminder step it has reached,
//!   unless that or a later reminder was already sent (a late run does not send a burst).
//! - Suspension and termination are per account and follow the oldest overdue bill: suspension
//!   when it reaches the suspension step and the account is not suspended; termination when it
//!   reaches the termination step (it supersedes a suspension due at the same time).
//!   Termination is final: nothing is due afterwards.
//! - Paying (or crediting) the debt stops dunning: once no overdue bill has reached the
//!   suspension step, every suspension not yet lifted yields a resume action.
//! - Action ids are deterministic (`dunning:<billId>:<action>[:<days>]`), so running twice gives
//!   the same actions and an action done is never due again.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::BillingError;
use super::ledger::{Ledger, LedgerBill};
use crate::money::Money;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DunningActionKind {
    /// Tell the customer.
    Reminder,
    /// Suspend the account's products.
    Suspend,
    /// Terminate them (final).
    Terminate,
    /// Lift a suspension (the debt was paid).
    Resume,
}

impl DunningActionKind {
    fn as_str(self) -> &'static str {
        match self {
            DunningActionKind::Reminder => "reminder",
            DunningActionKind::Suspend => "suspend",
            DunningActionKind::Terminate => "terminate",
            DunningActionKind::Resume => "resume",
        }
    }
}

/// One step of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DunningStep {
    /// Days past the due date.
    pub after_days: u32,
    /// Reminder, suspend or terminate.
    pub action: DunningActionKind,
}

/// A dunning policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DunningPolicy {
    /// Steps (any number of reminders, at most one suspension and one termination).
    pub steps: Vec<DunningStep>,
    /// Overdue totals up to this amount are left alone (in the account's currency units).
    #[serde(default, with = "crate::json::decimal_str")]
    pub minimum_amount: Decimal,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        let step = |after_days, action| DunningStep { after_days, action };
        DunningPolicy {
            steps: vec![
                step(7, DunningActionKind::Reminder),
                step(21, DunningActionKind::Suspend),
                step(60, DunningActionKind::Terminate),
            ],
            minimum_amount: Decimal::ZERO,
        }
    }
}

impl DunningPolicy {
    /// Refuses a policy that cannot be followed: a resume step, two suspension or termination
    /// steps, the same reminder day twice, termination not after suspension, a negative minimum.
    pub fn check(&self) -> Result<(), BillingError> {
        let bad = |m: &str| Err(BillingError::InvalidConfig(format!("dunning policy: {m}")));
        let of = |k| self.steps.iter().filter(move |s| s.action == k);
        if of(DunningActionKind::Resume).next().is_some() {
            return bad("resume is not a step: it follows payment");
        }
        if of(DunningActionKind::Suspend).count() > 1 || of(DunningActionKind::Terminate).count() > 1 {
            return bad("at most one suspension and one termination step");
        }
        let days: BTreeSet<u32> = of(DunningActionKind::Reminder).map(|s| s.after_days).collect();
        if days.len() != of(DunningActionKind::Reminder).count() {
            return bad("two reminders on the same day");
        }
        if let (Some(s), Some(t)) = (self.step(DunningActionKind::Suspend), self.step(DunningActionKind::Terminate))
            && t.after_days <= s.after_days
        {
            return bad("termination must come after suspension");
        }
        if self.minimum_amount < Decimal::ZERO {
            return bad("the minimum amount must not be negative");
        }
        Ok(())
    }

    fn step(&self, kind: DunningActionKind) -> Option<DunningStep> {
        self.steps.iter().copied().find(|s| s.action == kind)
    }
}

/// An action due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DunningAction {
    /// `dunning:<billId>:<action>[:<days>]`.
    pub id: String,
    /// What to do.
    pub kind: DunningActionKind,
    /// The account.
    pub account_id: String,
    /// The bill that triggered it (for a resume: the bill whose suspension is lifted).
    pub bill_id: String,
    /// The step's days past due (none for a resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_days: Option<u32>,
    /// The local date it was due from.
    pub due_on: NaiveDate,
    /// What was overdue on the account then.
    pub overdue: Money,
}

fn action_id(bill_id: &str, kind: DunningActionKind, days: Option<u32>) -> String {
    match days {
        Some(d) => format!("dunning:{bill_id}:{}:{d}", kind.as_str()),
        None => format!("dunning:{bill_id}:{}", kind.as_str()),
    }
}

/// The actions due at `now` (in the account's time zone `tz`) for `ledger` under `policy`,
/// given the actions `already_done` (see the module doc), in the order to execute them.
pub fn actions_due(
    policy: &DunningPolicy,
    ledger: &Ledger,
    now: DateTime<Utc>,
    tz: Tz,
    already_done: &[DunningAction],
) -> Result<Vec<DunningAction>, BillingError> {
    policy.check()?;
    let today = now.with_timezone(&tz).date_naive();
    let done: BTreeSet<&str> = already_done.iter().map(|a| a.id.as_str()).collect();
    if already_done.iter().any(|a| a.kind == DunningActionKind::Terminate) {
        return Ok(Vec::new());
    }
    let mut overdue = ledger.overdue(today);
    let overdue_total = Money::new(overdue.iter().map(|b| b.open.amount).sum(), ledger.currency);
    if overdue_total.amount <= policy.minimum_amount {
        overdue.clear();
    }
    let age = |b: &LedgerBill| (today - b.due_date).num_days();
    let action = |b: &LedgerBill, kind, after_days: Option<u32>, due_on| DunningAction {
        id: action_id(&b.bill_id, kind, after_days),
        kind,
        account_id: ledger.account_id.clone(),
        bill_id: b.bill_id.clone(),
        after_days,
        due_on,
        overdue: overdue_total,
    };
    let mut out = Vec::new();

    // Reminders, per bill: the latest step reached, unless it or a later one was sent.
    let mut reminders: Vec<u32> =
        policy.steps.iter().filter(|s| s.action == DunningActionKind::Reminder).map(|s| s.after_days).collect();
    reminders.sort_unstable();
    for b in &overdue {
        let reached: Vec<u32> = reminders.iter().copied().filter(|d| age(b) >= i64::from(*d)).collect();
        if let Some(&last) = reached.last() {
            let sent_later = reminders
                .iter()
                .filter(|d| **d >= last)
                .any(|d| done.contains(action_id(&b.bill_id, DunningActionKind::Reminder, Some(*d)).as_str()));
            if !sent_later {
                out.push(action(
                    b,
                    DunningActionKind::Reminder,
                    Some(last),
                    b.due_date + chrono::Days::new(last.into()),
                ));
            }
        }
    }

    // Suspension and termination follow the oldest overdue bill.
    let lifted = |bill_id: &str| done.contains(action_id(bill_id, DunningActionKind::Resume, None).as_str());
    let suspensions: Vec<&DunningAction> =
        already_done.iter().filter(|a| a.kind == DunningActionKind::Suspend && !lifted(&a.bill_id)).collect();
    let reached = |step: Option<DunningStep>| -> Option<(&LedgerBill, DunningStep)> {
        let (b, s) = (*overdue.first()?, step?);
        (age(b) >= i64::from(s.after_days)).then_some((b, s))
    };
    let terminate = reached(policy.step(DunningActionKind::Terminate));
    let suspend = reached(policy.step(DunningActionKind::Suspend));
    if let Some((b, s)) = terminate {
        out.push(action(
            b,
            DunningActionKind::Terminate,
            Some(s.after_days),
            b.due_date + chrono::Days::new(s.after_days.into()),
        ));
    } else if let Some((b, s)) = suspend {
        let id = action_id(&b.bill_id, DunningActionKind::Suspend, Some(s.after_days));
        if suspensions.is_empty() && !done.contains(id.as_str()) {
            out.push(action(
                b,
                DunningActionKind::Suspend,
                Some(s.after_days),
                b.due_date + chrono::Days::new(s.after_days.into()),
            ));
        }
    } else {
        // Nothing overdue at the suspension step any more: lift the suspensions.
        for s in suspensions {
            out.push(DunningAction {
                id: action_id(&s.bill_id, DunningActionKind::Resume, None),
                kind: DunningActionKind::Resume,
                account_id: ledger.account_id.clone(),
                bill_id: s.bill_id.clone(),
                after_days: None,
                due_on: today,
                overdue: overdue_total,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::testing::*;
    use crate::money::Currency;
    use DunningActionKind::*;

    fn ledger() -> Ledger {
        let mut l = Ledger::new("acct-1", Currency::new("EUR").unwrap());
        l.post_bill("b1", eur("30.00"), at("2026-03-01T06:00:00Z"), date("2026-03-15")).unwrap();
        l
    }

    fn on(day: &str) -> DateTime<Utc> {
        at(&format!("{day}T12:00:00Z"))
    }

    fn kinds(a: &[DunningAction]) -> Vec<(DunningActionKind, &str)> {
        a.iter().map(|x| (x.kind, x.id.as_str())).collect()
    }

    fn due(l: &Ledger, day: &str, done: &[DunningAction]) -> Vec<DunningAction> {
        actions_due(&DunningPolicy::default(), l, on(day), Tz::UTC, done).unwrap()
    }

    #[test]
    fn the_default_policy_reminds_suspends_and_terminates() {
        let l = ledger();
        let mut done = Vec::new();
        // Due 15 March: nothing before the 22nd (due + 7).
        assert!(due(&l, "2026-03-21", &done).is_empty());
        let a = due(&l, "2026-03-22", &done);
        assert_eq!(kinds(&a), [(Reminder, "dunning:b1:reminder:7")]);
        assert_eq!((a[0].due_on, a[0].overdue), (date("2026-03-22"), eur("30.00")));
        done.extend(a);
        assert!(due(&l, "2026-04-04", &done).is_empty(), "a reminder is sent once");
        // Due + 21 = 5 April: suspension.
        let a = due(&l, "2026-04-05", &done);
        assert_eq!(kinds(&a), [(Suspend, "dunning:b1:suspend:21")]);
        done.extend(a);
        assert!(due(&l, "2026-05-13", &done).is_empty());
        // Due + 60 = 14 May: termination, and then nothing more.
        let a = due(&l, "2026-05-14", &done);
        assert_eq!(kinds(&a), [(Terminate, "dunning:b1:terminate:60")]);
        done.extend(a);
        assert!(due(&l, "2026-09-01", &done).is_empty());
    }

    #[test]
    fn paying_the_debt_stops_dunning_and_resumes_the_products() {
        let mut l = ledger();
        let mut done = due(&l, "2026-03-22", &[]);
        done.extend(due(&l, "2026-04-05", &done));
        assert_eq!(done.last().unwrap().kind, Suspend);
        // A partial payment does not help: still suspended, nothing new.
        l.record_payment("pay-1", eur("20.00"), on("2026-04-06"), None).unwrap();
        assert!(due(&l, "2026-04-07", &done).is_empty());
        // Paying the rest yields a resume, once.
        l.record_payment("pay-2", eur("10.00"), on("2026-04-08"), None).unwrap();
        let a = due(&l, "2026-04-08", &done);
        assert_eq!(kinds(&a), [(Resume, "dunning:b1:resume")]);
        done.extend(a);
        assert!(due(&l, "2026-06-01", &done).is_empty(), "no termination after payment");
    }

    #[test]
    fn a_late_run_sends_one_reminder_and_termination_supersedes_suspension() {
        let l = ledger();
        let policy = DunningPolicy {
            steps: vec![
                DunningStep { after_days: 7, action: Reminder },
                DunningStep { after_days: 14, action: Reminder },
                DunningStep { after_days: 21, action: Suspend },
                DunningStep { after_days: 60, action: Terminate },
            ],
            minimum_amount: Decimal::ZERO,
        };
        // First run at due + 15: only the second reminder.
        let a = actions_due(&policy, &l, on("2026-03-30"), Tz::UTC, &[]).unwrap();
        assert_eq!(kinds(&a), [(Reminder, "dunning:b1:reminder:14")]);
        // First run at due + 61: the reminder and the termination, no suspension.
        let a = actions_due(&policy, &l, on("2026-05-15"), Tz::UTC, &[]).unwrap();
        assert_eq!(kinds(&a), [(Reminder, "dunning:b1:reminder:14"), (Terminate, "dunning:b1:terminate:60")]);
    }

    #[test]
    fn days_are_local_and_small_debts_are_left_alone() {
        let l = ledger();
        // 21 March 23:30 UTC is already the 22nd in Paris (due + 7 there).
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let p = DunningPolicy::default();
        assert_eq!(actions_due(&p, &l, at("2026-03-21T23:30:00Z"), paris, &[]).unwrap().len(), 1);
        assert!(actions_due(&p, &l, at("2026-03-21T23:30:00Z"), Tz::UTC, &[]).unwrap().is_empty());
        let lenient = DunningPolicy { minimum_amount: d("30.00"), ..DunningPolicy::default() };
        assert!(actions_due(&lenient, &l, on("2026-05-01"), Tz::UTC, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_newer_overdue_bill_keeps_the_suspension_until_it_is_paid_too() {
        let mut l = ledger();
        l.post_bill("b2", eur("25.00"), at("2026-04-01T06:00:00Z"), date("2026-04-15")).unwrap();
        let mut done = due(&l, "2026-04-05", &[]);
        assert_eq!(kinds(&done), [(Reminder, "dunning:b1:reminder:7"), (Suspend, "dunning:b1:suspend:21")]);
        // b1 paid on 10 May; b2 is then 25 days past due: still past the suspension step.
        l.record_payment("pay-1", eur("30.00"), on("2026-05-10"), Some("b1")).unwrap();
        let a = due(&l, "2026-05-10", &done);
        assert_eq!(kinds(&a), [(Reminder, "dunning:b2:reminder:7")]);
        done.extend(a);
        l.record_payment("pay-2", eur("25.00"), on("2026-05-11"), None).unwrap();
        assert_eq!(kinds(&due(&l, "2026-05-11", &done)), [(Resume, "dunning:b1:resume")]);
    }

    #[test]
    fn policies_are_checked_and_serialize() {
        let p = DunningPolicy::default();
        p.check().unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["steps"][1], serde_json::json!({"afterDays": 21, "action": "suspend"}));
        assert_eq!(serde_json::from_value::<DunningPolicy>(json).unwrap(), p);
        let twice = DunningPolicy {
            steps: vec![DunningStep { after_days: 5, action: Suspend }, DunningStep { after_days: 9, action: Suspend }],
            minimum_amount: Decimal::ZERO,
        };
        assert!(twice.check().is_err());
        let backwards = DunningPolicy {
            steps: vec![
                DunningStep { after_days: 30, action: Suspend },
                DunningStep { after_days: 9, action: Terminate },
            ],
            minimum_amount: Decimal::ZERO,
        };
        assert!(actions_due(&backwards, &ledger(), on("2026-05-01"), Tz::UTC, &[]).is_err());
    }
}
