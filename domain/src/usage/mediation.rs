//! Mediation's bookkeeping rules, pure: a record's TMF635 status, its fingerprint (what "the same
//! payload" means), how a record id already seen is treated (exactly once), the shard that
//! serialises the state a record touches, and the per-batch report. The usage component applies
//! them; tests: `cargo test -p bss-domain usage`.
//!
//! Exactly once, by record id:
//! - never seen, or seen but only held (`rejected`/`recycled`: not rated, so a corrected
//!   re-submission is welcome) → rate it;
//! - seen and rated (any later status) with the same fingerprint → a duplicate: acknowledged,
//!   not rated again;
//! - seen and rated with another fingerprint → a conflict: refused and reported, the stored
//!   record is kept.
//!
//! The fingerprint covers the normalised record (so `0612…` and `+33612…` are the same payload),
//! is stable across releases (FNV-1a 64 over a fixed field order, not a serde layout) and is
//! compared, never used as an id.

use serde::{Deserialize, Serialize};

use crate::rating::UsageRecord;

/// TMF635 usage statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UsageStatus {
    /// Taken in, not yet looked at.
    Received,
    /// Malformed or refused: needs a correction and a re-submission.
    Rejected,
    /// Valid but not rateable yet (unknown subscriber, no tariff, no prepaid money): held, tried
    /// again by a recycle run.
    Recycled,
    /// Guided to its product and tariff.
    Guided,
    /// Rated.
    Rated,
    /// Rated again after a tariff correction.
    Rerated,
    /// On a bill.
    Billed,
}

impl UsageStatus {
    /// The TMF name.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Received => "received",
            UsageStatus::Rejected => "rejected",
            UsageStatus::Recycled => "recycled",
            UsageStatus::Guided => "guided",
            UsageStatus::Rated => "rated",
            UsageStatus::Rerated => "rerated",
            UsageStatus::Billed => "billed",
        }
    }

    /// Every status.
    pub const ALL: [UsageStatus; 7] = [
        UsageStatus::Received,
        UsageStatus::Rejected,
        UsageStatus::Recycled,
        UsageStatus::Guided,
        UsageStatus::Rated,
        UsageStatus::Rerated,
        UsageStatus::Billed,
    ];

    /// Parses a TMF name.
    pub fn parse(s: &str) -> Option<UsageStatus> {
        UsageStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Held for a correction or a recycle run (not charged).
    pub fn is_held(self) -> bool {
        matches!(self, UsageStatus::Rejected | UsageStatus::Recycled | UsageStatus::Received)
    }
}

/// What to do with a record whose id may have been seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Rate it.
    New,
    /// Same id and payload already rated: acknowledge, do not rate.
    Duplicate,
    /// Same id, another payload, already rated: refuse and report.
    Conflict {
        /// The stored record's fingerprint.
        stored_fingerprint: String,
    },
}

/// Classifies a record against what is stored under its id.
pub fn classify(stored: Option<(UsageStatus, &str)>, fingerprint: &str) -> Seen {
    match stored {
        None => Seen::New,
        Some((status, _)) if status.is_held() => Seen::New,
        Some((_, fp)) if fp == fingerprint => Seen::Duplicate,
        Some((_, fp)) => Seen::Conflict { stored_fingerprint: fp.to_string() },
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // A field separator no field contains, so ("ab","c") and ("a","bc") differ.
    h ^= 0x1f;
    h.wrapping_mul(FNV_PRIME)
}

/// The fingerprint of a normalised record: 16 lower-case hex digits.
pub fn fingerprint(r: &UsageRecord) -> String {
    let mut h = FNV_OFFSET;
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let direction = r.direction.map(|d| format!("{d:?}")).unwrap_or_default();
    for field in [
        r.record_id.as_str(),
        r.subscriber.as_str(),
        r.service.as_str(),
        &r.start.timestamp_millis().to_string(),
        &r.quantity.to_string(),
        &opt(&r.called_number),
        &opt(&r.apn),
        &opt(&r.visited_network),
        if r.on_net { "1" } else { "0" },
        &direction,
        &opt(&r.carrier),
    ] {
        h = fnv(h, field.as_bytes());
    }
    format!("{h:016x}")
}

/// The fingerprint of a payload that could not be normalised (its raw JSON text).
pub fn raw_fingerprint(raw_json: &str) -> String {
    format!("{:016x}", fnv(FNV_OFFSET, raw_json.as_bytes()))
}

/// The shard (of `shards`) that serialises the rating state of an account: every record of one
/// billing account (its buckets, balance and credit) is rated under the same shard's lease.
pub fn shard_of(account_id: &str, shards: u32) -> u32 {
    let h = fnv(FNV_OFFSET, account_id.as_bytes());
    (h % u64::from(shards.max(1))) as u32
}

/// One record the batch did not rate, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordOutcome {
    /// Position in the batch (0-based).
    pub index: usize,
    /// The record id, if it had one.
    pub record_id: Option<String>,
    /// `duplicate`, `conflict`, `rejected` or `recycled`.
    pub outcome: String,
    /// Why, naming the field where there is one.
    pub reason: String,
}

/// The answer to a batch: counts and the records not rated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    /// Records in the batch.
    pub received: usize,
    /// Rated now.
    pub accepted: usize,
    /// Already rated with the same payload (acknowledged, not rated again).
    pub duplicates: usize,
    /// Already rated with another payload (refused).
    pub conflicts: usize,
    /// Malformed or refused (kept as `rejected` when they had a usable id).
    pub rejected: usize,
    /// Held for recycling.
    pub recycled: usize,
    /// One entry per record not accepted, in batch order.
    pub records: Vec<RecordOutcome>,
}

impl BatchReport {
    /// Notes a record not accepted.
    pub fn note(&mut self, index: usize, record_id: Option<&str>, outcome: &str, reason: impl Into<String>) {
        match outcome {
            "duplicate" => self.duplicates += 1,
            "conflict" => self.conflicts += 1,
            "recycled" => self.recycled += 1,
            _ => self.rejected += 1,
        }
        self.records.push(RecordOutcome {
            index,
            record_id: record_id.map(str::to_string),
            outcome: outcome.to_string(),
            reason: reason.into(),
        });
    }

    /// Every record is counted exactly once.
    pub fn is_balanced(&self) -> bool {
        self.accepted + self.duplicates + self.conflicts + self.rejected + self.recycled == self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rating::Service;
    use proptest::prelude::*;

    fn rec(id: &str, secs: u64) -> UsageRecord {
        UsageRecord {
            record_id: id.into(),
            subscriber: "+33611111111".into(),
            service: Service::Voice,
            start: "2026-11-02T10:00:00Z".parse().unwrap(),
            quantity: secs,
            called_number: Some("+33622222222".into()),
            apn: None,
            visited_network: None,
            on_net: false,
            direction: None,
            carrier: None,
        }
    }

    #[test]
    fn held_records_may_be_resubmitted_rated_ones_are_duplicates_or_conflicts() {
        let fp = fingerprint(&rec("r1", 60));
        assert_eq!(classify(None, &fp), Seen::New);
        assert_eq!(classify(Some((UsageStatus::Rejected, "other")), &fp), Seen::New);
        assert_eq!(classify(Some((UsageStatus::Recycled, &fp)), &fp), Seen::New);
        for s in [UsageStatus::Rated, UsageStatus::Rerated, UsageStatus::Billed, UsageStatus::Guided] {
            assert_eq!(classify(Some((s, &fp)), &fp), Seen::Duplicate);
            assert!(matches!(classify(Some((s, "0000000000000000")), &fp), Seen::Conflict { .. }));
        }
    }

    #[test]
    fn fingerprints_are_stable_and_see_every_field() {
        // Pinned: a release that changes it would turn every resent record into a conflict.
        assert_eq!(fingerprint(&rec("r1", 60)), fingerprint(&rec("r1", 60)));
        assert_eq!(fingerprint(&rec("r1", 60)).len(), 16);
        assert_ne!(fingerprint(&rec("r1", 60)), fingerprint(&rec("r1", 61)));
        let mut other = rec("r1", 60);
        other.on_net = true;
        assert_ne!(fingerprint(&rec("r1", 60)), fingerprint(&other));
        assert_ne!(raw_fingerprint("ab"), raw_fingerprint("ba"));
        for s in ["received", "rejected", "recycled", "guided", "rated", "rerated", "billed"] {
            assert_eq!(UsageStatus::parse(s).unwrap().as_str(), s);
        }
    }

    proptest! {
        #[test]
        fn rating_decisions_charge_a_record_id_once(ids in proptest::collection::vec(0u8..20, 1..200)) {
            // Replaying any sequence of submissions against the store the rules build: each id
            // is rated once, whatever the repetitions.
            let mut stored: std::collections::HashMap<String, String> = Default::default();
            let mut rated = std::collections::HashMap::<String, u32>::new();
            for id in ids {
                let r = rec(&format!("r{id}"), 60);
                let fp = fingerprint(&r);
                let seen = classify(stored.get(&r.record_id).map(|f| (UsageStatus::Rated, f.as_str())), &fp);
                if seen == Seen::New {
                    *rated.entry(r.record_id.clone()).or_default() += 1;
                    stored.insert(r.record_id.clone(), fp);
                }
            }
            prop_assert!(rated.values().all(|n| *n == 1));
        }

        #[test]
        fn shards_are_in_range_and_stable(account in "[a-z0-9-]{1,40}", shards in 1u32..64) {
            let s = shard_of(&account, shards);
            prop_assert!(s < shards);
            prop_assert_eq!(s, shard_of(&account, shards));
        }
    }

    #[test]
    fn a_report_counts_every_record_once() {
        let mut r = BatchReport { received: 5, accepted: 1, ..Default::default() };
        r.note(1, Some("a"), "duplicate", "already rated");
        r.note(2, Some("b"), "conflict", "other payload");
        r.note(3, None, "rejected", "recordId: missing");
        r.note(4, Some("d"), "recycled", "subscriber unknown");
        assert!(r.is_balanced());
        assert_eq!((r.duplicates, r.conflicts, r.rejected, r.recycled), (1, 1, 1, 1));
    }
}
