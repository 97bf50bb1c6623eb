//! Rerating: the exact difference between a record's old and new charge, so a correction can be
//! billed (or credited) to the cent. Tests: `cargo test -p bss-domain rating`.

use serde::{Deserialize, Serialize};

use super::{Buckets, Name, PreparedTariff, RatedRecord, RatingContext, RatingError, UsageRecord};
use crate::money::Money;

/// New minus old charge of one record (negative: a credit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeDelta {
    /// The record.
    pub record_id: String,
    /// Tariff and version of the old charge.
    pub old_tariff: (Name, Name),
    /// Tariff and version of the new charge.
    pub new_tariff: (Name, Name),
    /// Difference before tax.
    pub net: Money,
    /// Difference of tax.
    pub tax: Money,
    /// Difference after tax.
    pub gross: Money,
}

/// `new - old` for one record, both in the same currency.
pub fn charge_delta(old: &RatedRecord, new: &RatedRecord) -> Result<ChargeDelta, RatingError> {
    if old.record_id != new.record_id {
        return Err(RatingError::NotComparable(format!(
            "record {} cannot be compared with record {}",
            old.record_id, new.record_id
        )));
    }
    let sub = |a: Money, b: Money| a.checked_sub(b).map_err(|e| RatingError::NotComparable(e.to_string()));
    Ok(ChargeDelta {
        record_id: new.record_id.clone(),
        old_tariff: (old.tariff_id.clone(), old.tariff_version.clone()),
        new_tariff: (new.tariff_id.clone(), new.tariff_version.clone()),
        net: sub(new.net, old.net)?,
        tax: sub(new.tax, old.tax)?,
        gross: sub(new.gross, old.gross)?,
    })
}

/// Rates `record` again with `tariff` (e.g. a corrected version) against `buckets` (the period's
/// state the rerun starts from, usually replayed from fresh buckets in record order) and gives
/// the new rating and its difference from `old`.
pub fn rerate(
    tariff: &PreparedTariff,
    ctx: &RatingContext,
    record: &UsageRecord,
    old: &RatedRecord,
    buckets: &mut Buckets,
) -> Result<(RatedRecord, ChargeDelta), RatingError> {
    let new = tariff.rate(record, ctx, buckets)?;
    let delta = charge_delta(old, &new)?;
    Ok((new, delta))
}
