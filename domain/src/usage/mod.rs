//! Usage intake and prepaid/postpaid money, pure (no I/O, no clock: `now` is always given):
//! mediation batches (CSV and JSON, [`csv`]) read into [`RawUsage`](crate::rating::RawUsage)
//! records for [`normalise`](fn@crate::rating::normalise), and balances ([`balance`]): prepaid
//! money with online charging (reserve, commit, release) and postpaid credit limits with
//! notification thresholds. Tests: `cargo test -p bss-domain usage`.

pub mod balance;
pub mod csv;
pub mod mediation;
pub mod record;
pub mod totals;

pub use self::balance::{Balance, BalanceError, Committed, CreditLimit, Grant, Reservation};
pub use self::csv::{CsvError, CsvProblem, parse_csv, parse_json_batch, raw_from_json};
pub use self::record::UsageDoc;
pub use self::totals::{ServiceTotal, UsageTotals};
