//! `Idempotency-Key` for creating POSTs: the same key and the same request replay the first
//! answer; the effect happens once.
//!
//! Protocol ([`idempotent`]):
//! 1. No `Idempotency-Key` header: the handler just runs. A key must be 1 to [`MAX_KEY_LEN`] (255)
//!    printable ASCII characters, else 400.
//! 2. The request's fingerprint is SHA-256(method, path, body) ([`fingerprint`]).
//! 3. The record `<scope>/idem/<key>` (scope = `t/<tenantId>` for tenant calls) is claimed with a
//!    CAS create holding `{"state": "inProgress", fingerprint, createdAt, createdAtMs}`. What is
//!    found there decides ([`decide`], a pure function of the stored record and fingerprint):
//!    - nothing: claim it and run the handler;
//!    - `done` with the same fingerprint: replay the stored answer (status, body, `Content-Type`,
//!      `Location`) with the header `Idempotent-Replayed: true`; the handler does not run;
//!    - any record with another fingerprint: 422 (`IDEMPOTENCY_KEY_REUSED`) — the key was used for
//!      a different request;
//!    - `inProgress` with the same fingerprint: 409 (`IDEMPOTENCY_IN_PROGRESS`), so N concurrent
//!      duplicates produce one effect and N-1 conflicts (retry later to get the replay);
//!    - `inProgress` older than [`STALE_AFTER_MS`] (the first attempt died — trapped or timed out;
//!      this is longer than the host's request time limit): taken over with a CAS swap, as if new.
//! 4. The winner runs the handler. A 5xx answer is not stored: the claim is deleted so the client
//!    can retry with the same key. Any other answer (2xx, 3xx, 4xx) is stored as
//!    `{"state": "done", fingerprint, status, body, contentType, location, createdAt}`.
//!
//! Records are not expired (wasi:keyvalue has no TTL); they are small.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::ids::{now_ms, now_rfc3339};
use crate::kv::KvBackend;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The header added to replayed answers.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;
/// Age after which an unfinished claim is considered abandoned.
pub const STALE_AFTER_MS: u64 = 60_000;
/// Attempts to claim before giving up with 409.
const CLAIM_ATTEMPTS: u32 = 8;

/// The stored state of one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum IdemRecord {
    /// A request holds the key and is running.
    #[serde(rename = "inProgress", rename_all = "camelCase")]
    InProgress {
        /// Fingerprint of the request.
        fingerprint: String,
        /// When it was claimed (RFC 3339).
        created_at: String,
        /// When it was claimed (ms since the epoch).
        created_at_ms: u64,
    },
    /// The request finished; its answer.
    #[serde(rename = "done", rename_all = "camelCase")]
    Done {
        /// Fingerprint of the request.
        fingerprint: String,
        /// Status answered.
        status: u16,
        /// Body answered (UTF-8; JSON for BSS functions).
        body: String,
        /// `Content-Type` answered.
        content_type: Option<String>,
        /// `Location` answered.
        location: Option<String>,
        /// When it was claimed (RFC 3339).
        created_at: String,
    },
}

/// What to do with a request, given what is stored under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing stored: claim the key (CAS create) and run.
    Claim,
    /// An abandoned claim: take it over (CAS swap) and run.
    TakeOver,
    /// Same request done before: answer this.
    Replay(Reply),
    /// Same request still running: 409.
    InProgress,
    /// The key was used for another request: 422.
    Mismatch,
}

/// The pure decision of the protocol (see the module doc).
pub fn decide(stored: Option<&IdemRecord>, fingerprint: &str, now_ms: u64) -> Decision {
    match stored {
        None => Decision::Claim,
        Some(IdemRecord::InProgress { fingerprint: f, .. } | IdemRecord::Done { fingerprint: f, .. })
            if f != fingerprint =>
        {
            Decision::Mismatch
        }
        Some(IdemRecord::InProgress { created_at_ms, .. }) => {
            if now_ms.saturating_sub(*created_at_ms) > STALE_AFTER_MS {
                Decision::TakeOver
            } else {
                Decision::InProgress
            }
        }
        Some(IdemRecord::Done { status, body, content_type, location, .. }) => {
            let mut reply = Reply::new(*status, body.as_bytes().to_vec());
            if let Some(ct) = content_type {
                reply = reply.with_header("content-type", ct.clone());
            }
            if let Some(l) = location {
                reply = reply.with_header("location", l.clone());
            }
            Decision::Replay(reply.with_header(REPLAYED_HEADER, "true"))
        }
    }
}

/// SHA-256 (hex) of method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.to_ascii_uppercase().as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// Checks a key: 1 to 255 printable ASCII characters.
pub fn validate_key(key: &str) -> Result<&str, ApiError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(ApiError::bad_request("Idempotency-Key must not be empty").with_code("INVALID_IDEMPOTENCY_KEY"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key is {} characters long; at most {MAX_KEY_LEN} are allowed",
            key.len()
        ))
        .with_code("INVALID_IDEMPOTENCY_KEY"));
    }
    if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(
            ApiError::bad_request("Idempotency-Key must be printable ASCII").with_code("INVALID_IDEMPOTENCY_KEY")
        );
    }
    Ok(key)
}

/// The key prefix of a tenant's idempotency records.
pub fn tenant_scope(tenant_id: &str) -> String {
    format!("t/{tenant_id}")
}

/// Runs `handler` under the request's `Idempotency-Key` (if any), in `scope` (see the module
/// doc). Errors of the handler are answered (and stored) like any reply; `Err` is only returned
/// for the protocol's own refusals (400, 409, 422) and store failures.
pub fn idempotent<B, F>(kv: &B, scope: &str, ctx: &Ctx, handler: F) -> Result<Reply, ApiError>
where
    B: KvBackend,
    F: FnOnce() -> Result<Reply, ApiError>,
{
    let Some(raw) = ctx.header(HEADER) else {
        return handler();
    };
    let key = validate_key(raw)?;
    let store_key = format!("{scope}/idem/{key}");
    let fp = fingerprint(&ctx.method, &ctx.path, &ctx.body);
    let created_at = now_rfc3339();
    let claim =
        IdemRecord::InProgress { fingerprint: fp.clone(), created_at: created_at.clone(), created_at_ms: now_ms() };
    let claim_bytes = serde_json::to_vec(&claim).map_err(|e| ApiError::internal(e.to_string()))?;

    let mut claimed = false;
    for attempt in 1..=CLAIM_ATTEMPTS {
        let (cas, current) = kv.cas_read(&store_key)?;
        let stored = match current {
            Some(bytes) => Some(
                serde_json::from_slice::<IdemRecord>(&bytes)
                    .map_err(|e| ApiError::internal(format!("{store_key} holds an unreadable record: {e}")))?,
            ),
            None => None,
        };
        match decide(stored.as_ref(), &fp, now_ms()) {
            Decision::Claim | Decision::TakeOver => {
                if kv.cas_write(cas, &claim_bytes)? {
                    claimed = true;
                    break;
                }
                kv.backoff(attempt);
            }
            Decision::Replay(reply) => return Ok(reply),
            Decision::InProgress => return Err(in_progress()),
            Decision::Mismatch => {
                return Err(ApiError::unprocessable(
                    "this Idempotency-Key was already used for a different request (other method, path or body)",
                )
                .with_code("IDEMPOTENCY_KEY_REUSED"));
            }
        }
    }
    if !claimed {
        return Err(in_progress());
    }

    let reply = handler().unwrap_or_else(ApiError::into_reply);
    if reply.status >= 500 {
        if let Err(e) = kv.delete(&store_key) {
            eprintln!("bss: releasing idempotency claim {store_key}: {e}");
        }
        return Ok(reply);
    }
    let done = IdemRecord::Done {
        fingerprint: fp,
        status: reply.status,
        body: String::from_utf8_lossy(&reply.body).into_owned(),
        content_type: reply.header("content-type").map(str::to_string),
        location: reply.header("location").map(str::to_string),
        created_at,
    };
    match serde_json::to_vec(&done) {
        Ok(bytes) => {
            if let Err(e) = kv.set(&store_key, &bytes) {
                eprintln!("bss: storing idempotent answer {store_key}: {e}");
            }
        }
        Err(e) => eprintln!("bss: encoding idempotent answer {store_key}: {e}"),
    }
    Ok(reply)
}

fn in_progress() -> ApiError {
    ApiError::conflict("a request with this Idempotency-Key is still in progress; retry later")
        .with_code("IDEMPOTENCY_IN_PROGRESS")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;
    use std::cell::Cell;

    fn in_progress_rec(fp: &str, at: u64) -> IdemRecord {
        IdemRecord::InProgress { fingerprint: fp.into(), created_at: "t".into(), created_at_ms: at }
    }

    fn done_rec(fp: &str) -> IdemRecord {
        IdemRecord::Done {
            fingerprint: fp.into(),
            status: 201,
            body: r#"{"id":"1"}"#.into(),
            content_type: Some("application/json".into()),
            location: Some("/x/1".into()),
            created_at: "t".into(),
        }
    }

    #[test]
    fn decision_table() {
        let now = 1_000_000;
        assert_eq!(decide(None, "a", now), Decision::Claim);
        assert_eq!(decide(Some(&in_progress_rec("a", now - 10)), "a", now), Decision::InProgress);
        assert_eq!(decide(Some(&in_progress_rec("a", now - STALE_AFTER_MS - 1)), "a", now), Decision::TakeOver);
        assert_eq!(decide(Some(&in_progress_rec("b", now)), "a", now), Decision::Mismatch);
        assert_eq!(decide(Some(&in_progress_rec("b", 0)), "a", now), Decision::Mismatch);
        assert_eq!(decide(Some(&done_rec("b")), "a", now), Decision::Mismatch);
        let Decision::Replay(r) = decide(Some(&done_rec("a")), "a", now) else { panic!("expected a replay") };
        assert_eq!(r.status, 201);
        assert_eq!(r.body, br#"{"id":"1"}"#);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("location"), Some("/x/1"));
        assert_eq!(r.header("idempotent-replayed"), Some("true"));
        // A clock that went backwards never makes a claim stale.
        assert_eq!(decide(Some(&in_progress_rec("a", now + 5)), "a", now), Decision::InProgress);
    }

    #[test]
    fn records_have_the_documented_shape() {
        let v = serde_json::to_value(in_progress_rec("f", 5)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"state": "inProgress", "fingerprint": "f", "createdAt": "t", "createdAtMs": 5})
        );
        let v = serde_json::to_value(done_rec("f")).unwrap();
        assert_eq!(v["state"], "done");
        assert_eq!(v["contentType"], "application/json");
    }

    #[test]
    fn fingerprints_cover_method_path_and_body() {
        let f = fingerprint("POST", "/a", b"{}");
        assert_eq!(f.len(), 64);
        assert_eq!(f, fingerprint("post", "/a", b"{}"));
        assert_ne!(f, fingerprint("PUT", "/a", b"{}"));
        assert_ne!(f, fingerprint("POST", "/b", b"{}"));
        assert_ne!(f, fingerprint("POST", "/a", b"{ }"));
    }

    #[test]
    fn key_validation() {
        assert_eq!(validate_key(" abc-123 ").unwrap(), "abc-123");
        assert!(validate_key(&"k".repeat(255)).is_ok());
        for bad in ["", "  ", &"k".repeat(256), "caf\u{e9}", "a\tb"] {
            assert_eq!(validate_key(bad).unwrap_err().status, 400, "{bad:?}");
        }
    }

    fn post(key: Option<&str>, body: &str) -> Ctx {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(k) = key {
            headers.push(("Idempotency-Key", k));
        }
        Ctx::new("POST", "/things", &headers, body)
    }

    #[test]
    fn flow_runs_once_and_replays() {
        let kv = MemKv::new();
        let runs = Cell::new(0);
        let handler = || {
            runs.set(runs.get() + 1);
            Ok(Reply::json(201, &serde_json::json!({"n": runs.get()}))?.with_header("location", "/things/1"))
        };
        let first = idempotent(&kv, "t/a", &post(Some("k1"), "{}"), handler).unwrap();
        assert_eq!(first.status, 201);
        assert_eq!(first.header("idempotent-replayed"), None);
        let again = idempotent(&kv, "t/a", &post(Some("k1"), "{}"), handler).unwrap();
        assert_eq!(runs.get(), 1);
        assert_eq!((again.status, &again.body), (201, &first.body));
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.header("location"), Some("/things/1"));
        // Same key, other body.
        let e = idempotent(&kv, "t/a", &post(Some("k1"), r#"{"x":1}"#), handler).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "IDEMPOTENCY_KEY_REUSED"));
        // Same key in another scope (tenant) is independent.
        idempotent(&kv, "t/b", &post(Some("k1"), r#"{"x":1}"#), handler).unwrap();
        assert_eq!(runs.get(), 2);
        // No key: runs every time.
        idempotent(&kv, "t/a", &post(None, "{}"), handler).unwrap();
        idempotent(&kv, "t/a", &post(None, "{}"), handler).unwrap();
        assert_eq!(runs.get(), 4);
        assert!(kv.keys().contains(&"t/a/idem/k1".to_string()));
    }

    #[test]
    fn duplicate_while_in_progress_is_409() {
        let kv = MemKv::new();
        let outer = idempotent(&kv, "t/a", &post(Some("k"), "{}"), || {
            let inner = idempotent(&kv, "t/a", &post(Some("k"), "{}"), || Ok(Reply::no_content()));
            let e = inner.unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (409, "IDEMPOTENCY_IN_PROGRESS"));
            Ok(Reply::text(201, "made"))
        });
        assert_eq!(outer.unwrap().status, 201);
    }

    #[test]
    fn server_errors_release_the_claim_and_client_errors_are_stored() {
        let kv = MemKv::new();
        let r = idempotent(&kv, "t/a", &post(Some("k"), "{}"), || Err(ApiError::internal("boom"))).unwrap();
        assert_eq!(r.status, 500);
        assert!(kv.keys().is_empty());
        let r = idempotent(&kv, "t/a", &post(Some("k"), "{}"), || Ok(Reply::text(201, "ok"))).unwrap();
        assert_eq!(r.status, 201);

        let r = idempotent(&kv, "t/a", &post(Some("k2"), "{}"), || Err(ApiError::unprocessable("no"))).unwrap();
        assert_eq!(r.status, 422);
        let r = idempotent(&kv, "t/a", &post(Some("k2"), "{}"), || Ok(Reply::text(201, "ok"))).unwrap();
        assert_eq!((r.status, r.header("idempotent-replayed")), (422, Some("true")));
    }

    #[test]
    fn stale_claims_are_taken_over() {
        let kv = MemKv::new();
        let fp = fingerprint("POST", "/things", b"{}");
        let stale = in_progress_rec(&fp, now_ms() - STALE_AFTER_MS - 1000);
        kv.set("t/a/idem/k", &serde_json::to_vec(&stale).unwrap()).unwrap();
        let r = idempotent(&kv, "t/a", &post(Some("k"), "{}"), || Ok(Reply::text(201, "ok"))).unwrap();
        assert_eq!(r.status, 201);
        let fresh = in_progress_rec(&fp, now_ms());
        kv.set("t/a/idem/k3", &serde_json::to_vec(&fresh).unwrap()).unwrap();
        assert_eq!(
            idempotent(&kv, "t/a", &post(Some("k3"), "{}"), || Ok(Reply::no_content())).unwrap_err().status,
            409
        );
    }

    #[test]
    fn lost_claim_race_sees_the_winner() {
        let kv = MemKv::new();
        // Every claim attempt loses: the request gives up with 409 and never runs.
        kv.lose_next_cas(CLAIM_ATTEMPTS);
        let r = idempotent(&kv, "t/a", &post(Some("k"), "{}"), || panic!("must not run"));
        assert_eq!(r.unwrap_err().status, 409);
    }

    #[test]
    fn bad_keys_are_400() {
        let kv = MemKv::new();
        let long = "x".repeat(256);
        let e = idempotent(&kv, "t/a", &post(Some(&long), "{}"), || Ok(Reply::no_content())).unwrap_err();
        assert_eq!(e.status, 400);
    }
}
