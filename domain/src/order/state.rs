//! The state machines of a product order (TMF622), its items, its fulfilment tasks and a
//! cancellation request. Every change of state goes through `can_become`; an illegal transition
//! is an error naming it, never a silent change.

use std::fmt;

macro_rules! states {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every state.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The TMF name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a TMF name.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states!(
    /// The state of a product order.
    OrderState {
        Acknowledged = "acknowledged",
        Rejected = "rejected",
        Pending = "pending",
        Held = "held",
        InProgress = "inProgress",
        Completed = "completed",
        Failed = "failed",
        Partial = "partial",
        AssessingCancellation = "assessingCancellation",
        PendingCancellation = "pendingCancellation",
        Cancelled = "cancelled",
    }
);

states!(
    /// The state of a product order item.
    ItemState {
        Acknowledged = "acknowledged",
        Pending = "pending",
        InProgress = "inProgress",
        Completed = "completed",
        Failed = "failed",
        PendingCancellation = "pendingCancellation",
        Cancelled = "cancelled",
    }
);

states!(
    /// The state of a fulfilment task sent to the OSS.
    TaskState {
        Planned = "planned",
        InProgress = "inProgress",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

states!(
    /// The state of a cancelProductOrder request.
    CancelState {
        Acknowledged = "acknowledged",
        InProgress = "inProgress",
        Done = "done",
        TerminatedWithError = "terminatedWithError",
    }
);

impl OrderState {
    /// No transition leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Rejected | Self::Completed | Self::Failed | Self::Partial | Self::Cancelled)
    }

    /// Whether `self → next` is a legal transition.
    ///
    /// Held and pending orders may still finish: work already handed to the network completes
    /// while the order is held; holding only stops new work from being sent.
    pub fn can_become(self, next: OrderState) -> bool {
        use OrderState::*;
        match self {
            Acknowledged => matches!(next, Rejected | Pending | Held | InProgress | AssessingCancellation),
            Pending | Held => {
                matches!(next, Pending | Held | InProgress | Completed | Failed | Partial | AssessingCancellation)
                    && next != self
            }
            InProgress => matches!(next, Pending | Held | Completed | Failed | Partial | AssessingCancellation),
            AssessingCancellation => matches!(next, PendingCancellation),
            PendingCancellation => matches!(next, Cancelled),
            Rejected | Completed | Failed | Partial | Cancelled => false,
        }
    }

    /// States an agent may set with PATCH (the others come from fulfilment and cancellation).
    pub fn settable_by_agent(self) -> bool {
        matches!(self, Self::Held | Self::Pending | Self::InProgress)
    }
}

impl ItemState {
    /// Completed, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Whether `self → next` is a legal transition. A completed item only moves on to be
    /// compensated (pendingCancellation → cancelled, or failed when compensation failed).
    pub fn can_become(self, next: ItemState) -> bool {
        use ItemState::*;
        match self {
            Acknowledged => matches!(next, Pending | InProgress | Completed | Cancelled),
            Pending => matches!(next, InProgress | Completed | Cancelled),
            InProgress => matches!(next, Completed | Failed | Cancelled),
            Completed => matches!(next, PendingCancellation),
            PendingCancellation => matches!(next, Cancelled | Failed),
            Failed | Cancelled => false,
        }
    }
}

impl TaskState {
    /// Whether `self → next` is a legal transition: planned → inProgress | cancelled;
    /// inProgress → completed | failed | cancelled.
    pub fn can_become(self, next: TaskState) -> bool {
        match self {
            TaskState::Planned => matches!(next, TaskState::InProgress | TaskState::Cancelled),
            TaskState::InProgress => matches!(next, TaskState::Completed | TaskState::Failed | TaskState::Cancelled),
            _ => false,
        }
    }
}

impl CancelState {
    /// Whether `self → next` is a legal transition.
    pub fn can_become(self, next: CancelState) -> bool {
        use CancelState::*;
        match self {
            Acknowledged => matches!(next, InProgress | Done | TerminatedWithError),
            InProgress => matches!(next, Done | TerminatedWithError),
            Done | TerminatedWithError => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_finals_are_absorbing() {
        for s in OrderState::ALL {
            assert_eq!(OrderState::parse(s.as_str()), Some(*s));
            if s.is_final() {
                assert!(OrderState::ALL.iter().all(|n| !s.can_become(*n)), "{s} is final");
            }
            assert!(!s.can_become(*s), "{s} → {s} is not a transition");
        }
        for s in ItemState::ALL {
            assert_eq!(ItemState::parse(s.as_str()), Some(*s));
        }
        assert!(!OrderState::Acknowledged.can_become(OrderState::Completed));
        assert!(!OrderState::InProgress.can_become(OrderState::Cancelled));
        assert!(OrderState::AssessingCancellation.can_become(OrderState::PendingCancellation));
        assert!(!CancelState::Done.can_become(CancelState::InProgress));
    }
}
