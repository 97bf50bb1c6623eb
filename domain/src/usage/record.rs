//! The stored form of a usage record: what the usage component keeps under `usage/<recordId>`
//! (its status, its normalised record and its rating) and billing reads. Stored in the compact
//! form of [`crate::stored`]; documents stored as JSON before it read the same.

use serde::{Deserialize, Serialize};

use crate::rating::{RatedRecord, RawUsage, UsageRecord};
use crate::usage::mediation::UsageStatus;

/// A stored usage record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDoc {
    /// The record id.
    pub id: String,
    /// Status.
    pub status: UsageStatus,
    /// Fingerprint of the payload (see `bss_domain::usage::mediation`).
    pub fingerprint: String,
    /// As received (kept for held records, to correct and re-submit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawUsage>,
    /// Normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<UsageRecord>,
    /// Why it is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The product it was guided to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// The account billed (or the partner's settlement account, wholesale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The wholesale partner (partyRole id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    /// Start of the bill period (local date of the account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// The rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rated: Option<RatedRecord>,
    /// The rating it replaced (rerated records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<RatedRecord>,
    /// Tax rate in percent of the rating, if taxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_percent: Option<String>,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// When it was last rated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rated_at: Option<String>,
}
