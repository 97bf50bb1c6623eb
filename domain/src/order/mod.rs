//! Product orders (TMF622) and the product inventory (TMF637), as pure functions: the state
//! machines of orders, items, fulfilment tasks and cancellations ([`state`]), orchestration —
//! decomposition into fulfilment tasks, dependencies, results, rollback, cancellation,
//! aggregation ([`fulfilment`]) — inventory product transitions and the charges that start
//! billing ([`inventory`]), and proration of the first recurring period ([`proration`]).
//! Tests: `cargo test -p bss-domain order` (a property test drives random event sequences through
//! the orchestration and checks that no illegal transition is ever recorded).

pub mod fulfilment;
pub mod inventory;
pub mod proration;
pub mod state;

pub use fulfilment::{Dispatch, OrderError, SpecRef, TaskResult};
pub use state::{CancelState, ItemState, OrderState, TaskState};
