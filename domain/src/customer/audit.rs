//! The audit trail: who changed what and when, for parties, customers, accounts and partners.
//!
//! - [`diff`] compares two JSON documents and lists the leaves that differ as JSON Pointer paths
//!   (`/contactMedium/0/characteristic/emailAddress`) with their old and new value (`null` for
//!   absent). Objects are compared member by member, arrays element by element (an element added
//!   or removed at the end is one change), anything else as a whole. `lastUpdate` is left out: the
//!   record's `at` says when. At most [`MAX_CHANGES`] changes are kept per record (`truncated`
//!   says when more were cut).
//! - [`AuditRecord`] is what is stored; its key ([`record_key`]) is `<resourceId>:<at in ms,
//!   zero-padded>-<nonce>`, so listing a resource's records in key order is time order. A record
//!   is written ahead of its change ([`PENDING`]) and confirmed after it ([`RECORDED`]), so a
//!   stopped function never loses one.
//! - [`scrub_personal`] replaces every old/new value of a record with [`ERASED_VALUE`], except under
//!   the non-personal attributes of [`super::party::KEPT_ON_ERASURE`] and `status`: used when a
//!   person is erased, since a trail that keeps the erased name would defeat the erasure.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::party::KEPT_ON_ERASURE;

/// Most changes kept in one record.
pub const MAX_CHANGES: usize = 500;
/// What an erased personal value becomes in the trail.
pub const ERASED_VALUE: &str = "[erased]";

/// One changed leaf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// JSON Pointer of the attribute.
    pub path: String,
    /// Before (`null`: absent).
    pub old: Value,
    /// After (`null`: absent).
    pub new: Value,
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// The caller's tenant.
    pub tenant_id: String,
    /// The API key used.
    pub key_id: String,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Record id (also its key, see [`record_key`]).
    pub id: String,
    /// `AuditRecord`.
    #[serde(rename = "@type")]
    pub type_name: String,
    /// `Individual`, `Customer`, `BillingAccount`...
    pub resource_type: String,
    /// The changed resource.
    pub resource_id: String,
    /// create | patch | move | erase | delete.
    pub action: String,
    /// Who.
    pub actor: Actor,
    /// When (RFC 3339 UTC).
    pub at: String,
    /// The resource's stored version after the change (0 after a delete).
    pub resource_version: u64,
    /// What changed.
    pub changes: Vec<Change>,
    /// Whether changes beyond [`MAX_CHANGES`] were cut.
    #[serde(default)]
    pub truncated: bool,
    /// [`PENDING`] when written ahead of the change, [`RECORDED`] once the change is stored.
    pub state: String,
    /// `lastUpdate` of the document the change started from (`None` for a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub based_on: Option<String>,
}

/// A record written ahead of its change: the change may or may not have been stored (the
/// function stopped before confirming it).
pub const PENDING: &str = "pending";
/// A record whose change is stored.
pub const RECORDED: &str = "recorded";

/// A short fingerprint (FNV-1a, 8 hex digits) of a document's text: with its `lastUpdate` it
/// names one write, so the record written ahead and its confirmation share a key.
pub fn fingerprint(text: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The key of a record: `<resourceId>:<atMs, 15 digits>-<nonce>` (time-ordered per resource).
pub fn record_key(resource_id: &str, at_ms: u64, nonce: &str) -> String {
    format!("{resource_id}:{at_ms:015}-{nonce}")
}

/// The changes between two documents (see the module doc); `None` is an absent document.
pub fn diff(old: Option<&Value>, new: Option<&Value>) -> (Vec<Change>, bool) {
    let empty = Value::Object(Map::new());
    let mut out = Vec::new();
    let mut truncated = false;
    walk(old.unwrap_or(&empty), new.unwrap_or(&empty), &mut String::new(), &mut out, &mut truncated, true);
    (out, truncated)
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn push(out: &mut Vec<Change>, truncated: &mut bool, path: &str, old: &Value, new: &Value) {
    if out.len() >= MAX_CHANGES {
        *truncated = true;
        return;
    }
    out.push(Change { path: path.to_string(), old: old.clone(), new: new.clone() });
}

fn walk(old: &Value, new: &Value, path: &mut String, out: &mut Vec<Change>, truncated: &mut bool, top: bool) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
            keys.sort();
            for k in keys {
                if top && k == "lastUpdate" {
                    continue;
                }
                let len = path.len();
                path.push('/');
                path.push_str(&escape(k));
                let (x, y) = (a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null));
                walk(x, y, path, out, truncated, false);
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                walk(a.get(i).unwrap_or(&Value::Null), b.get(i).unwrap_or(&Value::Null), path, out, truncated, false);
                path.truncate(len);
            }
        }
        _ => push(out, truncated, path, old, new),
    }
}

/// Replaces the personal values of a record with [`ERASED_VALUE`]; whether anything changed.
pub fn scrub_personal(record: &mut AuditRecord) -> bool {
    scrub_where(record, |top| !(KEPT_ON_ERASURE.contains(&top) || top == "status"))
}

/// Replaces the values under the top-level `attributes` only (e.g. a customer's `name` when its
/// person is erased); whether anything changed.
pub fn scrub_attributes(record: &mut AuditRecord, attributes: &[&str]) -> bool {
    scrub_where(record, |top| attributes.contains(&top))
}

fn scrub_where(record: &mut AuditRecord, personal: impl Fn(&str) -> bool) -> bool {
    let mut changed = false;
    for c in &mut record.changes {
        let top = c.path.trim_start_matches('/').split('/').next().unwrap_or("");
        if !personal(top) {
            continue;
        }
        for v in [&mut c.old, &mut c.new] {
            if !v.is_null() && v.as_str() != Some(ERASED_VALUE) {
                *v = Value::String(ERASED_VALUE.into());
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(|c| c.path.as_str()).collect()
    }

    #[test]
    fn diff_lists_changed_leaves() {
        let old = json!({"id": "1", "name": "a", "lastUpdate": "t1", "contactMedium": [{"mediumType": "email", "characteristic": {"emailAddress": "a@b.co"}}],
                         "gone": true, "x/y": 1});
        let new = json!({"id": "1", "name": "b", "lastUpdate": "t2", "contactMedium": [{"mediumType": "email", "characteristic": {"emailAddress": "c@d.co"}}, {"mediumType": "phone"}],
                         "added": {"k": 1}, "x/y": 2});
        let (changes, truncated) = diff(Some(&old), Some(&new));
        assert!(!truncated);
        assert_eq!(
            paths(&changes),
            ["/added", "/contactMedium/0/characteristic/emailAddress", "/contactMedium/1", "/gone", "/name", "/x~1y"]
        );
        assert_eq!(
            changes[1],
            Change {
                path: "/contactMedium/0/characteristic/emailAddress".into(),
                old: json!("a@b.co"),
                new: json!("c@d.co")
            }
        );
        assert_eq!(changes[3].new, Value::Null);
        assert_eq!(changes[0].old, Value::Null);
        assert!(diff(Some(&old), Some(&old)).0.is_empty());
    }

    #[test]
    fn create_and_delete_are_whole_documents() {
        let doc = json!({"id": "1", "name": "a"});
        let (c, _) = diff(None, Some(&doc));
        assert_eq!(paths(&c), ["/id", "/name"]);
        let (c, _) = diff(Some(&doc), None);
        assert_eq!(c[1], Change { path: "/name".into(), old: json!("a"), new: Value::Null });
    }

    #[test]
    fn diff_is_bounded() {
        let old = json!({"a": (0..MAX_CHANGES + 10).collect::<Vec<_>>()});
        let (c, truncated) = diff(Some(&old), None);
        assert_eq!((c.len(), truncated), (1, false));
        let new = json!({"a": (1..MAX_CHANGES + 11).collect::<Vec<_>>()});
        let (c, truncated) = diff(Some(&old), Some(&new));
        assert_eq!((c.len(), truncated), (MAX_CHANGES, true));
    }

    #[test]
    fn keys_order_by_time() {
        assert!(record_key("r", 999, "z") < record_key("r", 1000, "a"));
        assert_eq!(record_key("r", 5, "n"), "r:000000000000005-n");
        assert_eq!(fingerprint("abc"), fingerprint("abc"));
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
        assert_eq!(fingerprint("").len(), 8);
    }

    #[test]
    fn scrubbing_removes_personal_values_only() {
        let (changes, _) = diff(
            Some(
                &json!({"id": "p", "givenName": "Ada", "status": "validated", "contactMedium": [{"characteristic": {"emailAddress": "a@b.co"}}]}),
            ),
            Some(&json!({"id": "p", "givenName": "Eve", "status": "active", "contactMedium": []})),
        );
        let mut r = AuditRecord {
            id: "k".into(),
            type_name: "AuditRecord".into(),
            resource_type: "Individual".into(),
            resource_id: "p".into(),
            action: "patch".into(),
            actor: Actor { tenant_id: "t".into(), key_id: "k".into() },
            at: "now".into(),
            resource_version: 2,
            changes,
            truncated: false,
            state: RECORDED.into(),
            based_on: None,
        };
        assert!(scrub_personal(&mut r));
        let text = serde_json::to_string(&r).unwrap();
        for personal in ["Ada", "Eve", "a@b.co"] {
            assert!(!text.contains(personal), "{text}");
        }
        assert!(text.contains("validated"), "status is not personal: {text}");
        assert!(!scrub_personal(&mut r), "scrubbing twice changes nothing");
        let (changes, _) = diff(None, Some(&json!({"name": "Ada", "creditLimit": {"unit": "EUR", "value": 1}})));
        r.changes = changes;
        assert!(scrub_attributes(&mut r, &["name"]));
        assert_eq!(r.changes[0].new, json!({"unit": "EUR", "value": 1}));
        assert_eq!(r.changes[1].new, json!(ERASED_VALUE));
    }
}
