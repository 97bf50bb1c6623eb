//! Short exclusive leases on a key: the lock that lets a component read and write a group of
//! documents with plain batch calls (`get_many`/`set_many`) instead of one compare-and-swap per
//! document. Tests: `cargo test -p bss-kit lease`.
//!
//! A lease is a small document `{"owner": "<random>", "expiresAtMs": n}` taken with
//! compare-and-swap (absent, released or expired → ours) and given back with compare-and-swap
//! (only if still ours). Why a lease and not a lock: a holder that crashes (a killed instance, a
//! host `kill -9`) never releases, so every lease expires by itself after `ttl_ms`.
//!
//! The rule callers keep: `ttl_ms` is longer than anything the holder does under the lease
//! (one batch of a few reads and one atomic `set_many`) and longer than the host's request
//! timeout, so a holder cannot still be writing when its lease is taken over; and every write
//! under a lease is a single `set_many` (atomic on SQLite and Redis), so a crash leaves either
//! all of it or none.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::kv::KvBackend;

/// Longest a caller waits for a lease before answering 503.
pub const WAIT_MAX_MS: u64 = 20_000;
/// Most compare-and-swap attempts while waiting.
pub const ATTEMPTS_MAX: u32 = 20_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseDoc {
    owner: String,
    expires_at_ms: u64,
}

/// A lease held on `key`; give it back with [`release`].
#[derive(Debug)]
pub struct Lease {
    key: String,
    owner: String,
}

impl Lease {
    /// The leased key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn busy(key: &str) -> ApiError {
    ApiError::service_unavailable("the store is busy; retry the request", format!("lease {key} not acquired in time"))
}

/// Takes the lease on `key` for `ttl_ms`, waiting (with backoff) while another holder has it,
/// at most [`WAIT_MAX_MS`] by `now_ms`; then 503.
pub fn acquire<B: KvBackend>(kv: &B, key: &str, ttl_ms: u64, now_ms: &dyn Fn() -> u64) -> Result<Lease, ApiError> {
    let started = now_ms();
    for attempt in 1..=ATTEMPTS_MAX {
        if let Some(lease) = try_acquire(kv, key, ttl_ms, now_ms)? {
            return Ok(lease);
        }
        if now_ms().saturating_sub(started) > WAIT_MAX_MS {
            break;
        }
        kv.backoff(attempt.min(4));
    }
    Err(busy(key))
}

/// Takes the lease on `key` for `ttl_ms` if nobody holds it (one attempt, no wait): `None` when
/// another holder has it, or took it between our read and our write.
pub fn try_acquire<B: KvBackend>(
    kv: &B,
    key: &str,
    ttl_ms: u64,
    now_ms: &dyn Fn() -> u64,
) -> Result<Option<Lease>, ApiError> {
    let (cas, current) = kv.cas_read(key)?;
    let now = now_ms();
    let free = match current.as_deref().map(serde_json::from_slice::<LeaseDoc>) {
        None => true,
        Some(Ok(doc)) => doc.expires_at_ms <= now,
        // Not a lease document: never ours to overwrite.
        Some(Err(_)) => return Err(ApiError::internal(format!("{key} does not hold a lease"))),
    };
    if !free {
        return Ok(None);
    }
    let owner = crate::ids::new_id();
    let doc = LeaseDoc { owner: owner.clone(), expires_at_ms: now + ttl_ms };
    let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(kv.cas_write(cas, &bytes)?.then(|| Lease { key: key.to_string(), owner }))
}

/// Gives the lease back (marks it expired) if it is still ours; a lease taken over after expiry
/// is left to its new holder. Whether it was still ours.
pub fn release<B: KvBackend>(kv: &B, lease: Lease) -> Result<bool, ApiError> {
    let (cas, current) = kv.cas_read(&lease.key)?;
    let ours = current
        .as_deref()
        .and_then(|b| serde_json::from_slice::<LeaseDoc>(b).ok())
        .is_some_and(|d| d.owner == lease.owner);
    if !ours {
        return Ok(false);
    }
    let doc = LeaseDoc { owner: String::new(), expires_at_ms: 0 };
    let bytes = serde_json::to_vec(&doc).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(kv.cas_write(cas, &bytes)?)
}

/// Runs `f` under the lease on `key` and releases it afterwards, whatever `f` answered.
pub fn with_lease<B: KvBackend, T>(
    kv: &B,
    key: &str,
    ttl_ms: u64,
    now_ms: &dyn Fn() -> u64,
    f: impl FnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let lease = acquire(kv, key, ttl_ms, now_ms)?;
    let out = f();
    let released = release(kv, lease);
    let out = out?;
    released?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;
    use std::cell::Cell;

    #[test]
    fn a_held_lease_excludes_others_until_released_or_expired() {
        let kv = MemKv::new();
        let clock = Cell::new(1_000u64);
        let now = || clock.get();
        let a = acquire(&kv, "l", 60_000, &now).unwrap();
        // A waiter whose clock moves 1 s per look gives up past WAIT_MAX_MS with a 503.
        let tick = || {
            clock.set(clock.get() + 1_000);
            clock.get()
        };
        let e = acquire(&kv, "l", 60_000, &tick).unwrap_err();
        assert_eq!(e.status, 503);
        assert!(clock.get() < 1_000 + 60_000, "the lease was still valid while the waiter gave up");
        assert!(release(&kv, a).unwrap());
        let b = acquire(&kv, "l", 100, &now).unwrap();
        // Past its expiry the lease is free again, and the old holder cannot release its successor's.
        clock.set(clock.get() + 101);
        let c = acquire(&kv, "l", 100, &now).unwrap();
        assert!(!release(&kv, b).unwrap(), "an expired holder must not release its successor's lease");
        assert!(release(&kv, c).unwrap());
    }

    #[test]
    fn try_acquire_takes_a_free_lease_and_never_waits_for_a_held_one() {
        let kv = MemKv::new();
        let now = || 1_000u64;
        let a = try_acquire(&kv, "l", 60_000, &now).unwrap().expect("free");
        assert!(try_acquire(&kv, "l", 60_000, &now).unwrap().is_none(), "held");
        assert!(release(&kv, a).unwrap());
        let b = try_acquire(&kv, "l", 60_000, &now).unwrap().expect("released");
        assert!(release(&kv, b).unwrap());
        kv.set("x", b"not a lease").unwrap();
        assert_eq!(try_acquire(&kv, "x", 60_000, &now).unwrap_err().status, 500);
    }

    #[test]
    fn with_lease_releases_after_an_error() {
        let kv = MemKv::new();
        let now = || 10u64;
        let r: Result<(), ApiError> = with_lease(&kv, "l", 1_000, &now, || Err(ApiError::bad_request("no")));
        assert_eq!(r.unwrap_err().status, 400);
        // Released: taken again at once.
        with_lease(&kv, "l", 1_000, &now, || Ok(())).unwrap();
    }
}
