//! The quote lifecycle (TMF648 `state`), as a closed transition table.
//!
//! ```text
//! inProgress ──approve──▶ approved ──accept──▶ accepted
//!     │  └────────────reject / cancel───────────▶ rejected / cancelled
//!     └─────────────reject / cancel (also from approved)
//! ```
//!
//! `accepted`, `rejected` and `cancelled` are final: nothing leaves them. A quote is accepted
//! only once approved, before its `validFor.endDateTime`, and only when it names a customer (a
//! prospect's quote must first be given one) — [`check_acceptance`]. Its items (and so its
//! prices) change only while `inProgress` ([`QuoteState::items_editable`]).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `state` of a quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum QuoteState {
    /// Created and priced; items may still change.
    InProgress,
    /// An agent approved it; the customer may accept it.
    Approved,
    /// The customer accepted it; a product order exists for it.
    Accepted,
    /// Refused (by the agent or the customer).
    Rejected,
    /// Withdrawn.
    Cancelled,
}

/// Every allowed change of state (staying put is not a transition).
pub const TRANSITIONS: &[(QuoteState, QuoteState)] = &[
    (QuoteState::InProgress, QuoteState::Approved),
    (QuoteState::InProgress, QuoteState::Rejected),
    (QuoteState::InProgress, QuoteState::Cancelled),
    (QuoteState::Approved, QuoteState::Accepted),
    (QuoteState::Approved, QuoteState::Rejected),
    (QuoteState::Approved, QuoteState::Cancelled),
];

impl QuoteState {
    /// Every state.
    pub const ALL: [QuoteState; 5] = [
        QuoteState::InProgress,
        QuoteState::Approved,
        QuoteState::Accepted,
        QuoteState::Rejected,
        QuoteState::Cancelled,
    ];

    /// The JSON value.
    pub fn as_str(self) -> &'static str {
        match self {
            QuoteState::InProgress => "inProgress",
            QuoteState::Approved => "approved",
            QuoteState::Accepted => "accepted",
            QuoteState::Rejected => "rejected",
            QuoteState::Cancelled => "cancelled",
        }
    }

    /// The state of a JSON value.
    pub fn parse(s: &str) -> Option<QuoteState> {
        QuoteState::ALL.into_iter().find(|q| q.as_str() == s)
    }

    /// Whether nothing can follow.
    pub fn is_final(self) -> bool {
        matches!(self, QuoteState::Accepted | QuoteState::Rejected | QuoteState::Cancelled)
    }

    /// Whether the quote may go from `self` to `next` (a transition of [`TRANSITIONS`]).
    pub fn can_become(self, next: QuoteState) -> bool {
        TRANSITIONS.contains(&(self, next))
    }

    /// Whether items (and so prices) may change.
    pub fn items_editable(self) -> bool {
        self == QuoteState::InProgress
    }

    /// The next state, or why not.
    pub fn transition(self, next: QuoteState) -> Result<QuoteState, String> {
        if self.can_become(next) {
            return Ok(next);
        }
        let allowed: Vec<&str> = TRANSITIONS.iter().filter(|(f, _)| *f == self).map(|(_, t)| t.as_str()).collect();
        Err(if allowed.is_empty() {
            format!("a quote that is {} cannot change state any more", self.as_str())
        } else {
            format!("a quote cannot go from {} to {} (allowed: {})", self.as_str(), next.as_str(), allowed.join(", "))
        })
    }
}

impl fmt::Display for QuoteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a quote cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAcceptable {
    /// Already accepted (a retry finds the order instead).
    AlreadyAccepted,
    /// Not in `approved`.
    WrongState(QuoteState),
    /// Past `validFor.endDateTime`.
    Expired(DateTime<Utc>),
    /// The quote names a prospect, not a customer.
    Prospect,
}

impl fmt::Display for NotAcceptable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAcceptable::AlreadyAccepted => f.write_str("the quote is already accepted"),
            NotAcceptable::WrongState(s) => {
                write!(f, "a quote that is {s} cannot be accepted; it must be approved first")
            }
            NotAcceptable::Expired(at) => write!(
                f,
                "the quote expired on {} (validFor.endDateTime) and can no longer be accepted",
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            NotAcceptable::Prospect => f.write_str(
                "the quote is for a prospect: name the customer first (PATCH relatedParty), which checks it again",
            ),
        }
    }
}

/// Whether a quote in `state`, valid until `valid_until`, for a customer (`has_customer`) may
/// be accepted at `now`.
pub fn check_acceptance(
    state: QuoteState,
    valid_until: Option<DateTime<Utc>>,
    has_customer: bool,
    now: DateTime<Utc>,
) -> Result<(), NotAcceptable> {
    match state {
        QuoteState::Accepted => return Err(NotAcceptable::AlreadyAccepted),
        QuoteState::Approved => {}
        other => return Err(NotAcceptable::WrongState(other)),
    }
    if let Some(end) = valid_until
        && now >= end
    {
        return Err(NotAcceptable::Expired(end));
    }
    if !has_customer {
        return Err(NotAcceptable::Prospect);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_table() {
        use QuoteState::*;
        assert!(InProgress.can_become(Approved));
        assert!(Approved.can_become(Accepted));
        assert!(!InProgress.can_become(Accepted), "acceptance needs an approval first");
        assert!(!Accepted.can_become(Cancelled));
        assert!(!Approved.can_become(InProgress));
        assert_eq!(Rejected.transition(Approved).unwrap_err(), "a quote that is rejected cannot change state any more");
        assert!(InProgress.transition(Accepted).unwrap_err().contains("allowed: approved, rejected, cancelled"));
        for s in QuoteState::ALL {
            assert_eq!(QuoteState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(QuoteState::parse("Accepted"), None);
    }

    #[test]
    fn acceptance_rules() {
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let later = "2026-07-01T00:00:00Z".parse().unwrap();
        use QuoteState::*;
        assert_eq!(check_acceptance(Approved, Some(later), true, now), Ok(()));
        assert_eq!(check_acceptance(Approved, Some(now), true, now), Err(NotAcceptable::Expired(now)));
        assert!(NotAcceptable::Expired(now).to_string().contains("2026-06-01T00:00:00Z"));
        assert_eq!(check_acceptance(Approved, None, false, now), Err(NotAcceptable::Prospect));
        assert_eq!(check_acceptance(InProgress, None, true, now), Err(NotAcceptable::WrongState(InProgress)));
        assert_eq!(check_acceptance(Accepted, None, true, now), Err(NotAcceptable::AlreadyAccepted));
    }

    fn state() -> impl Strategy<Value = QuoteState> {
        prop::sample::select(QuoteState::ALL.to_vec())
    }

    proptest! {
        /// Whatever is asked, in whatever order, only the table's transitions happen: final
        /// states are never left, and `accepted` is only reached through `approved`.
        #[test]
        fn no_illegal_transition_is_reachable(requests in prop::collection::vec(state(), 0..40)) {
            let mut current = QuoteState::InProgress;
            let mut path = vec![current];
            for next in requests {
                match current.transition(next) {
                    Ok(s) => {
                        prop_assert!(TRANSITIONS.contains(&(current, s)));
                        prop_assert!(!current.is_final());
                        current = s;
                        path.push(s);
                    }
                    Err(_) => prop_assert!(current.is_final() || !TRANSITIONS.contains(&(current, next))),
                }
            }
            if let Some(i) = path.iter().position(|s| *s == QuoteState::Accepted) {
                prop_assert_eq!(path[i - 1], QuoteState::Approved);
                prop_assert_eq!(i, path.len() - 1, "nothing follows accepted");
            }
            prop_assert!(path.iter().filter(|s| s.is_final()).count() <= 1);
        }
    }
}
