//! What the usage component stores, under the tenant's prefix `t/<tenantId>/`, and how a stored
//! record reads as a TMF635 `Usage`. Raw keys (not the kit's versioned documents): records are
//! written a thousand at a time with one `set_many`, under the lease of their account's shard.
//! What rating writes for every record — the record, its product's buckets and totals — is in the
//! compact binary form of `bss_domain::stored` (a third to a fifth of its JSON, and far cheaper
//! to write and read); values stored as JSON before it read the same.
//!
//! - `usage/<recordId>` → [`UsageDoc`]: the record, its status and its rating (the dedup key);
//! - `usageHeld/<recordId>` → `""`: index of held records (rejected, recycled);
//! - `usageProduct/<productId>/records/<periodStart>/<recordId>` → `""`: a product's records per
//!   bill period, in id order (rerating and billing read it);
//! - `usageProduct/<productId>/state/<periodStart>` → [`PeriodState`]: allowance buckets per
//!   tariff (owner `pool.<accountId>` for allowances shared across a hierarchy);
//! - `usageProduct/<productId>/totals/<periodStart>` → the period's usage totals for billing
//!   (a product's keys share a prefix so that a batch rewrites one page of the store for them;
//!   `bss_commerce::usage_keys` reads values written under the earlier `usageState/`,
//!   `usageTotals/` and `usageByProduct/` keys);
//! - `usageAccount/<accountId>` → [`AccountState`]: prepaid balance and postpaid credit (JSON);
//! - `usageLease/<shard>`: the lease that serialises the state of the accounts of a shard;
//! - `usageCorrection/<runId>/<recordId>` → a rerating difference, and the same document under
//!   `usageCorrectionByAccount/<accountId>/<runId>/<recordId>`, which billing reads and clears.

use bss_domain::rating::Buckets;
use bss_domain::stored::{Compact, ReadError, Reader, Writer};
use bss_domain::usage::mediation::UsageStatus;
use bss_domain::usage::{Balance, CreditLimit};
use bss_kit::kv::valid_segment;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The API base path.
pub const BASE: &str = "/tmf-api/usageManagement/v4";

pub use bss_domain::usage::UsageDoc;

/// The allowance buckets of one product and bill period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeriodState {
    /// Buckets by tariff (a product may have several usage tariffs: voice, data…).
    pub buckets: Vec<Buckets>,
    /// Records rated in the period.
    pub records: u64,
}

/// Stored in the compact form (`bss_domain::stored`): it is rewritten with every record rated.
impl Compact for PeriodState {
    fn write(&self, w: &mut Writer) {
        self.buckets.write(w);
        w.u64(self.records);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(PeriodState { buckets: Vec::read(r)?, records: r.u64()? })
    }
}

/// The money state of an account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountState {
    /// Prepaid money (prepaid accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
    /// Postpaid spend against the credit limit, in the current bill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<CreditState>,
}

/// Credit use in one bill period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditState {
    /// Start of the period.
    pub period: String,
    /// Spend and notifications.
    pub limit: CreditLimit,
}

pub use bss_commerce::usage_keys::Keys;

/// Whether a record id can be stored (1 to 128 of `[A-Za-z0-9._:-]`).
pub fn storable_id(id: &str) -> bool {
    valid_segment(id)
}

fn money(m: &bss_domain::money::Money) -> Value {
    json!({"unit": m.currency.code(), "value": m.amount})
}

/// The TMF635 `Usage` view of a stored record.
pub fn render(doc: &UsageDoc) -> Value {
    let mut v = json!({
        "id": doc.id,
        "href": format!("{BASE}/usage/{}", doc.id),
        "@type": "Usage",
        "status": doc.status.as_str(),
        "receivedDate": doc.received_at,
    });
    let mut chars = Vec::new();
    if let Some(r) = &doc.record {
        v["usageDate"] = json!(r.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        v["usageType"] = json!(r.service.as_str());
        let quantity_name = match r.service.dimension() {
            bss_domain::catalog::tariff::Dimension::Time => "durationSecs",
            bss_domain::catalog::tariff::Dimension::Data => "volumeBytes",
            _ => "events",
        };
        chars.push(json!({"name": "subscriber", "value": r.subscriber}));
        chars.push(json!({"name": quantity_name, "value": r.quantity}));
        for (name, val) in [
            ("calledNumber", &r.called_number),
            ("apn", &r.apn),
            ("visitedNetwork", &r.visited_network),
            ("carrier", &r.carrier),
        ] {
            if let Some(x) = val {
                chars.push(json!({"name": name, "value": x}));
            }
        }
        if r.on_net {
            chars.push(json!({"name": "onNet", "value": true}));
        }
        if let Some(d) = r.direction {
            chars.push(json!({"name": "direction", "value": d}));
        }
    } else if let Some(raw) = &doc.raw {
        v["usageDate"] = json!(raw.start_time);
        v["usageType"] = json!(raw.service);
        if let Ok(Value::Object(m)) = serde_json::to_value(raw) {
            chars.extend(m.into_iter().filter(|(k, _)| k != "recordId").map(|(k, x)| json!({"name": k, "value": x})));
        }
    }
    v["usageCharacteristic"] = Value::Array(chars);
    if let Some(c) = &doc.customer_id {
        v["relatedParty"] = json!([{"id": c, "role": "customer", "@referredType": "Customer"}]);
    }
    if let Some(p) = &doc.partner_id {
        v["relatedParty"] = json!([{"id": p, "role": "partner", "@referredType": "PartyRole"}]);
    }
    if let Some(a) = &doc.account_id {
        v["billingAccount"] = json!({"id": a});
    }
    if let Some(p) = &doc.product_id {
        v["product"] = json!({"id": p});
    }
    if let Some(p) = &doc.period {
        v["billingPeriod"] = json!({"startDate": p});
    }
    if let Some(reason) = &doc.reason {
        v["statusReason"] = json!(reason);
    }
    if let Some(r) = &doc.rated {
        v["ratedProductUsage"] = json!([{
            "isBilled": doc.status == UsageStatus::Billed,
            "ratingDate": doc.rated_at,
            "ratingAmountType": "total",
            "usageRatingTag": if doc.partner_id.is_some() { "wholesale" } else { "usage" },
            "taxExcludedRatingAmount": money(&r.net),
            "taxIncludedRatingAmount": money(&r.gross),
            "taxAmount": money(&r.tax),
            "taxRate": doc.tax_percent,
            "productRef": doc.product_id.as_ref().map(|p| json!({"id": p})),
        }]);
        v["rating"] = json!({
            "tariff": {"id": r.tariff_id.as_str(), "version": r.tariff_version.as_str()},
            "measuredBaseUnits": r.measured_base_units,
            "chargedBaseUnits": r.charged_base_units,
            "allowanceBaseUnits": r.allowance_base_units,
            "overageBaseUnits": r.overage_base_units,
            "blockedBaseUnits": r.blocked_base_units,
            "steps": r.steps,
        });
    }
    if let Some(p) = &doc.previous {
        v["previousRating"] = json!({
            "tariff": {"id": p.tariff_id.as_str(), "version": p.tariff_version.as_str()},
            "taxExcludedRatingAmount": money(&p.net),
            "taxIncludedRatingAmount": money(&p.gross),
        });
    }
    v
}
