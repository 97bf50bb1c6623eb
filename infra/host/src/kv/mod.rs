//! The key-value store behind every KV interface the host offers its guests.
//!
//! One [`KvStore`] per store label (`default`, or others named in `runtime-config.toml`), each
//! on one backend: embedded SQLite (the default) or Redis (several hosts). Every value carries a
//! version that any write bumps, which is what makes compare-and-swap exact on both backends: a
//! swap succeeds only if the key's version is still the one the caller read (0 = absent), so
//! two racing creates or two racing swaps of one version can never both win.

pub mod cache;
pub mod redis;
pub mod sqlite;
pub mod writeback;

use std::sync::Arc;

/// Longest key the host accepts (bytes). Spin's limit is 255; ours leaves room for tenant prefixes.
pub const KEY_LEN_MAX: usize = 1024;
/// Largest value the host accepts (bytes).
pub const VALUE_LEN_MAX: usize = 8 << 20;
/// Keys returned by one `list_keys` page.
pub const LIST_PAGE_MAX: usize = 1000;
/// Keys in one batch call.
pub const BATCH_MAX: usize = 1000;

/// What can go wrong in the store. `Invalid` is the caller's fault; `Backend` is not.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the value at this key is not an integer")]
    NotAnInteger,
    #[error("backend error: {0}")]
    Backend(String),
}

pub type KvResult<T> = Result<T, KvError>;

/// A value with the version it was read at. `version == 0` means the key is absent. Versions
/// of a key only grow and are never reused, not even after a delete and a re-create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Option<Vec<u8>>,
    pub version: u64,
}

/// One page of keys, in ascending byte order, with the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

/// A store: one label on one backend. Cheap to clone.
#[derive(Clone)]
pub enum KvStore {
    Sqlite(Arc<sqlite::SqliteKv>),
    Redis(Arc<redis::RedisKv>),
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvStore::Sqlite(_) => f.write_str("KvStore::Sqlite"),
            KvStore::Redis(_) => f.write_str("KvStore::Redis"),
        }
    }
}

pub fn check_key(key: &str) -> KvResult<()> {
    if key.is_empty() || key.len() > KEY_LEN_MAX {
        return Err(KvError::Invalid(format!("key length must be 1..={KEY_LEN_MAX} bytes, got {}", key.len())));
    }
    Ok(())
}

pub fn check_value(value: &[u8]) -> KvResult<()> {
    if value.len() > VALUE_LEN_MAX {
        return Err(KvError::Invalid(format!("value of {} bytes exceeds {VALUE_LEN_MAX}", value.len())));
    }
    Ok(())
}

fn check_batch(n: usize) -> KvResult<()> {
    if n > BATCH_MAX {
        return Err(KvError::Invalid(format!("batch of {n} keys exceeds {BATCH_MAX}")));
    }
    Ok(())
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            KvStore::Sqlite($b) => $e,
            KvStore::Redis($b) => $e,
        }
    };
}

impl KvStore {
    pub async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        check_key(key)?;
        dispatch!(self, b => b.get(key).await)
    }

    /// The value and its version, read together.
    pub async fn get_versioned(&self, key: &str) -> KvResult<Versioned> {
        check_key(key)?;
        dispatch!(self, b => b.get_versioned(key).await)
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        check_key(key)?;
        check_value(value)?;
        dispatch!(self, b => b.set(key, value).await)
    }

    pub async fn delete(&self, key: &str) -> KvResult<()> {
        check_key(key)?;
        dispatch!(self, b => b.delete(key).await)
    }

    pub async fn exists(&self, key: &str) -> KvResult<bool> {
        check_key(key)?;
        dispatch!(self, b => b.exists(key).await)
    }

    /// Keys greater than `cursor` (all keys when `None`), ascending, at most `limit` of them
    /// (capped at [`LIST_PAGE_MAX`]); `cursor` of the answer is set when more may follow.
    pub async fn list_keys(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> KvResult<KeyPage> {
        let limit = limit.clamp(1, LIST_PAGE_MAX);
        dispatch!(self, b => b.list_keys(prefix, cursor, limit).await)
    }

    /// Write `value` only if the key's version is still `expected_version` (0 = still absent).
    /// Returns `false`, changing nothing, when another write got there first.
    pub async fn swap(&self, key: &str, expected_version: u64, value: &[u8]) -> KvResult<bool> {
        check_key(key)?;
        check_value(value)?;
        dispatch!(self, b => b.swap(key, expected_version, value).await)
    }

    /// Atomically add `delta` to the integer stored at `key` (decimal ASCII; absent = 0) and
    /// return the new value.
    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        check_key(key)?;
        dispatch!(self, b => b.increment(key, delta).await)
    }

    pub async fn get_many(&self, keys: &[String]) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        dispatch!(self, b => b.get_many(keys).await)
    }

    pub async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> KvResult<()> {
        check_batch(entries.len())?;
        for (k, v) in entries {
            check_key(k)?;
            check_value(v)?;
        }
        dispatch!(self, b => b.set_many(entries).await)
    }

    pub async fn delete_many(&self, keys: &[String]) -> KvResult<()> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        dispatch!(self, b => b.delete_many(keys).await)
    }
}

/// The value of a future that never waits: the embedded store's calls do their work when first
/// polled, so tools and tests call them without an executor. Panics if the future waits (a
/// Redis store's would).
pub fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a KV call of bss-host waited"),
    }
}

/// Parse a stored counter for `increment`. Absent counts as zero.
pub(crate) fn parse_counter(value: Option<&[u8]>) -> KvResult<i64> {
    match value {
        None => Ok(0),
        Some(bytes) => {
            std::str::from_utf8(bytes).ok().and_then(|s| s.trim().parse::<i64>().ok()).ok_or(KvError::NotAnInteger)
        }
    }
}

/// The smallest byte string greater than every string that starts with `prefix`, if any: the
/// upper bound of a prefix listing on both backends.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        let end = prefix_successor("t/a/".as_bytes()).unwrap();
        for key in ["t/a/", "t/a/x", "t/a/\u{7f}", "t/a/é", "t/a/\u{10ffff}"] {
            assert!(key.as_bytes() < end.as_slice(), "{key:?}");
        }
        assert!("t/a0".as_bytes() >= end.as_slice());
    }

    #[test]
    fn counters_parse_or_refuse() {
        assert_eq!(parse_counter(None).unwrap(), 0);
        assert_eq!(parse_counter(Some(b"-42")).unwrap(), -42);
        assert!(matches!(parse_counter(Some(b"4x")), Err(KvError::NotAnInteger)));
    }

    #[test]
    fn limits_are_enforced() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(KEY_LEN_MAX + 1)).is_err());
        assert!(check_key("ok").is_ok());
        assert!(check_value(&vec![0; VALUE_LEN_MAX + 1]).is_err());
    }
}
