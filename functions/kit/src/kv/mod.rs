//! Typed key-value access with optimistic concurrency, over any [`KvBackend`].
//!
//! - [`KvBackend`] is the raw store: get/set/delete, ordered `list_keys` pages, batches,
//!   compare-and-swap and increment. [`crate::wasi_kv::WasiKv`] implements it on
//!   `wasi:keyvalue@0.2.0-draft2`; [`MemKv`] in memory for native tests.
//! - [`Store`] stores serde types as [`Versioned`] documents `{"version": n, "data": {...}}`.
//!   `create` is a CAS on "absent" (fails with [`StoreError::AlreadyExists`]); `update` is a CAS
//!   retry loop (at most [`MAX_CAS_ATTEMPTS`] attempts with a small randomised backoff, then
//!   [`StoreError::Conflict`]); every write bumps `version`, which callers can expose as an ETag.
//! - [`TenantStore`] scopes every key to one tenant: `t/<tenantId>/<collection>/<id>`. Ids and
//!   collection names are 1 to 128 characters of `[A-Za-z0-9._:-]`, so one tenant's prefix can
//!   never reach another's keys.
//! - `list` seeks to a prefix by passing it as the first `list_keys` cursor (keys come in
//!   ascending byte order), keeps only keys with the prefix and stops at the first key past it;
//!   values are then read with batched `get_many` calls of at most [`BATCH_MAX`] keys. On a
//!   backend that refuses such a cursor (Spin answers "cursor not supported") it scans every key
//!   instead — correct, but O(store size).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::ApiError;

/// Attempts of a CAS retry loop before giving up with a conflict.
pub const MAX_CAS_ATTEMPTS: u32 = 32;
/// Keys in one batch call (the platform limit).
pub const BATCH_MAX: usize = 1000;
/// Longest id or collection segment.
pub const MAX_SEGMENT_LEN: usize = 128;

/// A store failure (the backend's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key-value store: {}", self.0)
    }
}

impl std::error::Error for KvError {}

/// Keys and their values (absent: `None`), as `get_many` answers.
pub type KeyValues = Vec<(String, Option<Vec<u8>>)>;

/// One page of `list_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// Keys in ascending byte order.
    pub keys: Vec<String>,
    /// Where the next page starts (`None`: no more keys).
    pub cursor: Option<String>,
}

/// The raw key-value store, in the shape of `wasi:keyvalue@0.2.0-draft2`.
pub trait KvBackend {
    /// A compare-and-swap handle: remembers the version read by [`KvBackend::cas_read`].
    type Cas;

    /// The value of `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key` unconditionally.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Deletes `key` (no error if absent).
    fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Whether `key` exists.
    fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.get(key)?.is_some())
    }
    /// Keys strictly greater than `cursor`, ascending, one page.
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError>;
    /// Values of several keys (at most [`BATCH_MAX`]).
    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        keys.iter().map(|k| Ok((k.clone(), self.get(k)?))).collect()
    }
    /// Sets several keys (not atomically).
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        items.iter().try_for_each(|(k, v)| self.set(k, v))
    }
    /// Deletes several keys (not atomically).
    fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        keys.iter().try_for_each(|k| self.delete(k))
    }
    /// Starts a CAS: the current value and a handle remembering its version.
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError>;
    /// Writes `value` if nothing wrote the key since the read: `Ok(true)` won, `Ok(false)` lost.
    fn cas_write(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError>;
    /// Atomically adds `delta` to the decimal counter at `key` (absent = 0); the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Pause before retry number `attempt` (1-based) of a lost CAS.
    fn backoff(&self, attempt: u32) {
        let base_us = 100u64 << attempt.min(5);
        let jitter_us = u64::from(u16::from_le_bytes(crate::ids::random_bytes::<2>())) % base_us.max(1);
        std::thread::sleep(std::time::Duration::from_micros(base_us + jitter_us));
    }
}

impl<B: KvBackend + ?Sized> KvBackend for &B {
    type Cas = B::Cas;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        (**self).set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        (**self).delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool, KvError> {
        (**self).exists(key)
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        (**self).list_keys(cursor)
    }
    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        (**self).get_many(keys)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        (**self).set_many(items)
    }
    fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        (**self).delete_many(keys)
    }
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        (**self).cas_read(key)
    }
    fn cas_write(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError> {
        (**self).cas_write(cas, value)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        (**self).increment(key, delta)
    }
    fn backoff(&self, attempt: u32) {
        (**self).backoff(attempt)
    }
}

/// A stored document and its version (1 on create, +1 on every write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Bumped by every write.
    pub version: u64,
    /// The document.
    pub data: T,
}

/// Why a typed store operation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    /// No document at the key.
    NotFound(String),
    /// `create` found a document.
    AlreadyExists(String),
    /// `update` kept losing the race.
    Conflict(String),
    /// The `update` closure refused the change.
    Rejected(ApiError),
    /// The backend failed.
    Backend(KvError),
    /// A stored value is not the expected document.
    Corrupt {
        /// The key.
        key: String,
        /// What serde said.
        detail: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(k) => write!(f, "{k} not found"),
            StoreError::AlreadyExists(k) => write!(f, "{k} already exists"),
            StoreError::Conflict(k) => write!(f, "{k}: too many concurrent updates"),
            StoreError::Rejected(e) => write!(f, "{e}"),
            StoreError::Backend(e) => write!(f, "{e}"),
            StoreError::Corrupt { key, detail } => write!(f, "{key} holds an unreadable document: {detail}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        StoreError::Backend(e)
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::not_found("the resource does not exist"),
            StoreError::AlreadyExists(_) => {
                ApiError::conflict("the resource already exists").with_code("ALREADY_EXISTS")
            }
            StoreError::Conflict(_) => {
                ApiError::conflict("the resource is being changed concurrently; retry").with_code("CONCURRENT_UPDATE")
            }
            StoreError::Rejected(e) => e,
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// Whether `s` is a valid id or collection segment.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A stored document (`key`'s value `bytes`) as its typed [`Versioned`] form.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<Versioned<T>, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.into(), detail: e.to_string() })
}

fn encode<T: Serialize>(key: &str, doc: &Versioned<T>) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(doc).map_err(|e| StoreError::Corrupt { key: key.into(), detail: e.to_string() })
}

/// Typed documents over a backend.
#[derive(Debug)]
pub struct Store<B> {
    kv: B,
    max_attempts: u32,
}

impl<B: KvBackend> Store<B> {
    /// A store over `kv` with [`MAX_CAS_ATTEMPTS`].
    pub fn new(kv: B) -> Self {
        Self { kv, max_attempts: MAX_CAS_ATTEMPTS }
    }

    /// Changes the number of CAS attempts (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The raw backend.
    pub fn backend(&self) -> &B {
        &self.kv
    }

    /// Scopes the store to a tenant.
    pub fn tenant(&self, tenant_id: &str) -> TenantStore<'_, B> {
        TenantStore { store: self, tenant_id: tenant_id.to_string() }
    }

    /// The document at `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError> {
        self.kv.get(key)?.map(|b| decode(key, &b)).transpose()
    }

    /// Creates the document at `key` (version 1); [`StoreError::AlreadyExists`] if one is there.
    pub fn create<T: Serialize>(&self, key: &str, data: T) -> Result<Versioned<T>, StoreError> {
        let doc = Versioned { version: 1, data };
        let bytes = encode(key, &doc)?;
        for attempt in 1..=self.max_attempts {
            let (cas, current) = self.kv.cas_read(key)?;
            if current.is_some() {
                return Err(StoreError::AlreadyExists(key.into()));
            }
            if self.kv.cas_write(cas, &bytes)? {
                return Ok(doc);
            }
            self.kv.backoff(attempt);
        }
        Err(StoreError::Conflict(key.into()))
    }

    /// Replaces the document at `key` with `change(current)`, retrying on concurrent writes. The
    /// closure may run several times; an error from it aborts with [`StoreError::Rejected`].
    pub fn update<T, F>(&self, key: &str, mut change: F) -> Result<Versioned<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&Versioned<T>) -> Result<T, ApiError>,
    {
        for attempt in 1..=self.max_attempts {
            let (cas, current) = self.kv.cas_read(key)?;
            let current: Versioned<T> = decode(key, &current.ok_or_else(|| StoreError::NotFound(key.into()))?)?;
            let data = change(&current).map_err(StoreError::Rejected)?;
            let doc = Versioned { version: current.version + 1, data };
            if self.kv.cas_write(cas, &encode(key, &doc)?)? {
                return Ok(doc);
            }
            self.kv.backoff(attempt);
        }
        Err(StoreError::Conflict(key.into()))
    }

    /// Changes the document at `key` with `change`, starting from `absent()` when there is none
    /// (created at version 1): one compare-and-swap per attempt, retried on concurrent writes.
    /// The closure may run several times; an error from it aborts with [`StoreError::Rejected`].
    pub fn upsert<T, F>(&self, key: &str, absent: impl Fn() -> T, mut change: F) -> Result<Versioned<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T) -> Result<(), ApiError>,
    {
        for attempt in 1..=self.max_attempts {
            let (cas, current) = self.kv.cas_read(key)?;
            let (version, mut data) = match current {
                Some(bytes) => decode::<T>(key, &bytes).map(|d| (d.version, d.data))?,
                None => (0, absent()),
            };
            change(&mut data).map_err(StoreError::Rejected)?;
            let doc = Versioned { version: version + 1, data };
            if self.kv.cas_write(cas, &encode(key, &doc)?)? {
                return Ok(doc);
            }
            self.kv.backoff(attempt);
        }
        Err(StoreError::Conflict(key.into()))
    }

    /// Replaces the document at `key` with `data` only if it is still at `known_version`: one
    /// compare-and-swap, and only the stored version is parsed, not the document. `None` when the
    /// document moved on, is gone or a concurrent write won the swap — the caller then falls back to
    /// [`Store::update`]. For a caller that holds the current document already (it just wrote it).
    pub fn replace_if_version<T: Serialize>(
        &self,
        key: &str,
        known_version: u64,
        data: T,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        /// The version of a stored document; serde skips the document itself without building it.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u64,
        }
        let (cas, current) = self.kv.cas_read(key)?;
        let Some(bytes) = current else { return Ok(None) };
        let stored: VersionOnly = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt { key: key.into(), detail: e.to_string() })?;
        if stored.version != known_version {
            return Ok(None);
        }
        let doc = Versioned { version: known_version + 1, data };
        Ok(self.kv.cas_write(cas, &encode(key, &doc)?)?.then_some(doc))
    }

    /// Writes `data` whether or not a document exists (version = previous + 1, or 1).
    pub fn put<T: Serialize + DeserializeOwned>(&self, key: &str, data: T) -> Result<Versioned<T>, StoreError> {
        let value =
            serde_json::to_value(&data).map_err(|e| StoreError::Corrupt { key: key.into(), detail: e.to_string() })?;
        for attempt in 1..=self.max_attempts {
            let (cas, current) = self.kv.cas_read(key)?;
            let version = match current {
                Some(b) => decode::<serde_json::Value>(key, &b).map(|d| d.version).unwrap_or(0) + 1,
                None => 1,
            };
            let bytes = encode(key, &Versioned { version, data: &value })?;
            if self.kv.cas_write(cas, &bytes)? {
                return Ok(Versioned { version, data });
            }
            self.kv.backoff(attempt);
        }
        Err(StoreError::Conflict(key.into()))
    }

    /// Deletes `key`; whether a document was there.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.kv.exists(key)?;
        if existed {
            self.kv.delete(key)?;
        }
        Ok(existed)
    }

    /// Up to `max` keys starting with `prefix`, ascending.
    ///
    /// Seeks by passing `prefix` as the first cursor (bss-host). A backend that refuses a cursor
    /// it did not hand out (Spin's wasi:keyvalue answers "cursor not supported") is scanned from
    /// the start instead, without assuming any key order.
    pub fn list_keys(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        self.list_keys_after(prefix, None, max)
    }

    /// Up to `max` keys starting with `prefix` and greater than `after` (none: from the first),
    /// ascending: one page of a listing too long to hold at once, the next page starting after
    /// the last key of this one. On a backend that cannot seek, each page scans every key.
    pub fn list_keys_after(&self, prefix: &str, after: Option<&str>, max: usize) -> Result<Vec<String>, StoreError> {
        let start = match after {
            Some(a) if a > prefix => a,
            _ => prefix,
        };
        let first = match self.kv.list_keys(Some(start)) {
            Ok(page) => page,
            Err(e) => {
                eprintln!("bss: list_keys cannot seek ({e}); scanning every key");
                return self.scan_keys(prefix, start, max);
            }
        };
        let mut out = Vec::new();
        let mut cursor = Some(start.to_string());
        let mut next_page = Some(first);
        'pages: while out.len() < max {
            let page = match next_page.take() {
                Some(p) => p,
                None => self.kv.list_keys(cursor.as_deref())?,
            };
            for key in page.keys {
                if key.starts_with(prefix) {
                    if key.as_str() > start {
                        out.push(key);
                        if out.len() >= max {
                            break 'pages;
                        }
                    }
                } else if key.as_str() > prefix {
                    break 'pages;
                }
            }
            match page.cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Every key from the start (following the backend's own cursors), filtered to those with
    /// `prefix` greater than `after`, sorted.
    fn scan_keys(&self, prefix: &str, after: &str, max: usize) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.kv.list_keys(cursor.as_deref())?;
            out.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix) && k.as_str() > after));
            // Holds the smallest `max` keys so far, not every key of the store.
            if out.len() > max.saturating_mul(2).max(1024) {
                out.sort_unstable();
                out.truncate(max);
            }
            match page.cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => break,
            }
        }
        out.sort();
        out.truncate(max);
        Ok(out)
    }

    /// Up to `max` documents whose keys start with `prefix`, in key order. Unreadable documents
    /// are logged and skipped; documents deleted while listing are left out.
    pub fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<Vec<(String, Versioned<T>)>, StoreError> {
        self.get_docs(&self.list_keys(prefix, max)?)
    }

    /// The documents at `keys` (any number, read [`BATCH_MAX`] at a time), in the order of
    /// `keys`. Absent keys are left out; unreadable documents are logged and skipped.
    pub fn get_docs<T: DeserializeOwned>(&self, keys: &[String]) -> Result<Vec<(String, Versioned<T>)>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_MAX) {
            for (key, value) in self.kv.get_many(chunk)? {
                let Some(bytes) = value else { continue };
                match decode(&key, &bytes) {
                    Ok(doc) => out.push((key, doc)),
                    Err(e) => eprintln!("bss: skipping {e}"),
                }
            }
        }
        Ok(out)
    }
}

/// A [`Store`] scoped to one tenant: keys `t/<tenantId>/<collection>/<id>`.
#[derive(Debug)]
pub struct TenantStore<'a, B> {
    store: &'a Store<B>,
    tenant_id: String,
}

impl<B: KvBackend> TenantStore<'_, B> {
    /// The tenant.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The key prefix of a collection: `t/<tenantId>/<collection>/`.
    pub fn prefix(&self, collection: &str) -> Option<String> {
        self.join(collection, "")
    }

    /// The store key of a document; `None` if the tenant, collection or id is not a valid segment.
    pub fn key(&self, collection: &str, id: &str) -> Option<String> {
        valid_segment(id).then(|| self.join(collection, id)).flatten()
    }

    /// `t/<tenantId>/<collection>/<rest>`, built with `concat` rather than `format!` (a batch of
    /// usage builds thousands of keys); `None` if the tenant or collection is not a valid segment.
    fn join(&self, collection: &str, rest: &str) -> Option<String> {
        (valid_segment(&self.tenant_id) && valid_segment(collection))
            .then(|| ["t/", &self.tenant_id, "/", collection, "/", rest].concat())
    }

    fn key_or(&self, collection: &str, id: &str, e: StoreError) -> Result<String, StoreError> {
        self.key(collection, id).ok_or(e)
    }

    /// The document, if any (an invalid id has none).
    pub fn get<T: DeserializeOwned>(&self, collection: &str, id: &str) -> Result<Option<Versioned<T>>, StoreError> {
        match self.key(collection, id) {
            Some(k) => self.store.get(&k),
            None => Ok(None),
        }
    }

    /// Creates a document; [`StoreError::AlreadyExists`] if the id is taken.
    pub fn create<T: Serialize>(&self, collection: &str, id: &str, data: T) -> Result<Versioned<T>, StoreError> {
        let bad = StoreError::Rejected(ApiError::bad_request(format!("invalid id {id:?}")));
        self.store.create(&self.key_or(collection, id, bad)?, data)
    }

    /// Updates a document with a CAS retry loop; [`StoreError::NotFound`] if absent.
    pub fn update<T, F>(&self, collection: &str, id: &str, change: F) -> Result<Versioned<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&Versioned<T>) -> Result<T, ApiError>,
    {
        let key = self.key_or(collection, id, StoreError::NotFound(id.into()))?;
        self.store.update(&key, change)
    }

    /// [`Store::upsert`] of a document of the tenant.
    pub fn upsert<T, F>(
        &self,
        collection: &str,
        id: &str,
        absent: impl Fn() -> T,
        change: F,
    ) -> Result<Versioned<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T) -> Result<(), ApiError>,
    {
        let bad = StoreError::Rejected(ApiError::bad_request(format!("invalid id {id:?}")));
        self.store.upsert(&self.key_or(collection, id, bad)?, absent, change)
    }

    /// [`Store::replace_if_version`] of a document of the tenant.
    pub fn replace_if_version<T: Serialize>(
        &self,
        collection: &str,
        id: &str,
        known_version: u64,
        data: T,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let key = self.key_or(collection, id, StoreError::NotFound(id.into()))?;
        self.store.replace_if_version(&key, known_version, data)
    }

    /// Writes a document unconditionally.
    pub fn put<T: Serialize + DeserializeOwned>(
        &self,
        collection: &str,
        id: &str,
        data: T,
    ) -> Result<Versioned<T>, StoreError> {
        let bad = StoreError::Rejected(ApiError::bad_request(format!("invalid id {id:?}")));
        self.store.put(&self.key_or(collection, id, bad)?, data)
    }

    /// Deletes a document; whether it existed.
    pub fn delete(&self, collection: &str, id: &str) -> Result<bool, StoreError> {
        match self.key(collection, id) {
            Some(k) => self.store.delete(&k),
            None => Ok(false),
        }
    }

    /// The documents of a collection with these ids (absent ones left out), in the order of `ids`.
    pub fn get_docs<T: DeserializeOwned>(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<Versioned<T>>, StoreError> {
        let keys: Vec<String> = ids.iter().filter_map(|id| self.key(collection, id)).collect();
        Ok(self.store.get_docs(&keys)?.into_iter().map(|(_, d)| d).collect())
    }

    /// Up to `max` documents of a collection, by id.
    pub fn list<T: DeserializeOwned>(&self, collection: &str, max: usize) -> Result<Vec<Versioned<T>>, StoreError> {
        let prefix = self
            .prefix(collection)
            .ok_or_else(|| StoreError::Rejected(ApiError::internal(format!("invalid collection {collection:?}"))))?;
        Ok(self.store.list(&prefix, max)?.into_iter().map(|(_, d)| d).collect())
    }
}

pub mod ahead;
mod mem;
pub use ahead::ReadAhead;
pub use mem::MemKv;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Doc {
        n: u32,
    }

    #[test]
    fn create_get_update_delete() {
        let store = Store::new(MemKv::new());
        let t = store.tenant("t1");
        assert_eq!(t.get::<Doc>("docs", "a").unwrap(), None);
        let d = t.create("docs", "a", Doc { n: 1 }).unwrap();
        assert_eq!(d.version, 1);
        assert!(matches!(t.create("docs", "a", Doc { n: 2 }), Err(StoreError::AlreadyExists(_))));
        let d = t.update("docs", "a", |cur: &Versioned<Doc>| Ok(Doc { n: cur.data.n + 10 })).unwrap();
        assert_eq!(d, Versioned { version: 2, data: Doc { n: 11 } });
        assert_eq!(t.get::<Doc>("docs", "a").unwrap().unwrap().data.n, 11);
        let raw: serde_json::Value =
            serde_json::from_slice(&store.backend().get("t/t1/docs/a").unwrap().unwrap()).unwrap();
        assert_eq!(raw, json!({"version": 2, "data": {"n": 11}}));
        assert!(t.delete("docs", "a").unwrap());
        assert!(!t.delete("docs", "a").unwrap());
        assert!(matches!(t.update("docs", "a", |c: &Versioned<Doc>| Ok(c.data.clone())), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn upsert_creates_then_changes_and_a_refusal_writes_nothing() {
        let store = Store::new(MemKv::new());
        let t = store.tenant("t1");
        let add = |n: u32| {
            move |d: &mut Doc| -> Result<(), ApiError> {
                d.n += n;
                Ok(())
            }
        };
        assert_eq!(
            t.upsert("docs", "a", || Doc { n: 100 }, add(1)).unwrap(),
            Versioned { version: 1, data: Doc { n: 101 } }
        );
        assert_eq!(
            t.upsert("docs", "a", || Doc { n: 100 }, add(2)).unwrap(),
            Versioned { version: 2, data: Doc { n: 103 } }
        );
        let refused = t.upsert("docs", "a", || Doc { n: 0 }, |_: &mut Doc| Err(ApiError::conflict("no")));
        assert!(matches!(refused, Err(StoreError::Rejected(_))));
        assert_eq!(t.get::<Doc>("docs", "a").unwrap().unwrap(), Versioned { version: 2, data: Doc { n: 103 } });
        assert!(matches!(t.upsert("docs", "a/b", || Doc { n: 0 }, add(1)), Err(StoreError::Rejected(_))));
    }

    #[test]
    fn update_retries_lost_races_then_gives_up() {
        let store = Store::new(MemKv::new());
        store.create("k", Doc { n: 0 }).unwrap();
        store.backend().lose_next_cas(5);
        let mut calls = 0;
        let d = store
            .update("k", |c: &Versioned<Doc>| {
                calls += 1;
                Ok(Doc { n: c.data.n + 1 })
            })
            .unwrap();
        assert_eq!((calls, d.data.n, d.version), (6, 1, 2));

        store.backend().lose_next_cas(MAX_CAS_ATTEMPTS);
        let r = store.update("k", |c: &Versioned<Doc>| Ok(c.data.clone()));
        assert!(matches!(r, Err(StoreError::Conflict(_))));
        let e: ApiError = r.unwrap_err().into();
        assert_eq!(e.status, 409);
    }

    #[test]
    fn update_closure_can_refuse() {
        let store = Store::new(MemKv::new());
        store.create("k", Doc { n: 0 }).unwrap();
        let r = store.update("k", |_: &Versioned<Doc>| Err(ApiError::precondition_failed("version mismatch")));
        let e: ApiError = r.unwrap_err().into();
        assert_eq!(e.status, 412);
        assert_eq!(store.get::<Doc>("k").unwrap().unwrap().version, 1);
    }

    #[test]
    fn create_lost_race_reports_existing() {
        let kv = MemKv::new();
        let store = Store::new(&kv);
        // The CAS loses once; on re-read the key is present (the other writer created it).
        let (cas, _) = kv.cas_read("k").unwrap();
        kv.set("k", br#"{"version":1,"data":{"n":9}}"#).unwrap();
        assert!(!kv.cas_write(cas, b"x").unwrap());
        assert!(matches!(store.create("k", Doc { n: 1 }), Err(StoreError::AlreadyExists(_))));
    }

    #[test]
    fn put_bumps_version() {
        let store = Store::new(MemKv::new());
        assert_eq!(store.put("k", Doc { n: 1 }).unwrap().version, 1);
        assert_eq!(store.put("k", Doc { n: 2 }).unwrap().version, 2);
        assert_eq!(store.get::<Doc>("k").unwrap().unwrap(), Versioned { version: 2, data: Doc { n: 2 } });
    }

    #[test]
    fn tenants_are_isolated_and_ids_validated() {
        let store = Store::new(MemKv::new());
        store.tenant("a").create("docs", "1", Doc { n: 1 }).unwrap();
        assert_eq!(store.tenant("b").get::<Doc>("docs", "1").unwrap(), None);
        assert!(store.tenant("b").list::<Doc>("docs", 100).unwrap().is_empty());
        // Ids that could escape the prefix are refused / never found.
        for id in ["", "../a", "a/b", "x y", &"x".repeat(129)] {
            assert_eq!(store.tenant("a").get::<Doc>("docs", id).unwrap(), None, "{id}");
            assert!(store.tenant("a").create("docs", id, Doc { n: 1 }).is_err(), "{id}");
        }
        assert_eq!(store.tenant("a/docs").key("docs", "1"), None);
        assert_eq!(store.tenant("a").key("docs", "1").as_deref(), Some("t/a/docs/1"));
    }

    #[test]
    fn list_seeks_to_prefix_across_pages() {
        let kv = MemKv::new();
        kv.set_page_size(3);
        let store = Store::new(&kv);
        for (t, c, n) in [("a", "docs", 5), ("a", "docsx", 2), ("a", "other", 2), ("b", "docs", 4)] {
            for i in 0..n {
                store.tenant(t).create(c, &format!("{i:03}"), Doc { n: i }).unwrap();
            }
        }
        kv.set("t/a/docs/zzz", b"not json").unwrap();
        kv.set("a-before", b"1").unwrap();
        let docs = store.tenant("a").list::<Doc>("docs", 100).unwrap();
        assert_eq!(docs.iter().map(|d| d.data.n).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(store.tenant("a").list::<Doc>("docs", 2).unwrap().len(), 2);
        assert_eq!(store.tenant("b").list::<Doc>("docs", 100).unwrap().len(), 4);
        assert_eq!(store.list_keys("t/a/docs/", 100).unwrap().len(), 6);
        assert_eq!(store.list_keys("t/c/", 100).unwrap().len(), 0);
    }

    #[test]
    fn list_falls_back_to_a_scan_where_cursors_are_refused() {
        let kv = MemKv::new();
        let store = Store::new(&kv);
        for id in ["b", "a", "c"] {
            store.tenant("t").create("docs", id, Doc { n: 1 }).unwrap();
        }
        store.tenant("u").create("docs", "z", Doc { n: 1 }).unwrap();
        kv.list_like_spin();
        assert_eq!(store.list_keys("t/t/docs/", 100).unwrap(), ["t/t/docs/a", "t/t/docs/b", "t/t/docs/c"]);
        assert_eq!(store.list_keys("t/t/docs/", 2).unwrap(), ["t/t/docs/a", "t/t/docs/b"]);
        assert_eq!(store.tenant("u").list::<Doc>("docs", 100).unwrap().len(), 1);
    }

    #[test]
    fn a_long_listing_pages_after_the_last_key_seeking_or_scanning() {
        for spin_like in [false, true] {
            let kv = MemKv::new();
            kv.set_page_size(7);
            let store = Store::new(&kv);
            for i in (0..2_500).rev() {
                kv.set(&format!("t/a/acct/{i:05}"), b"1").unwrap();
            }
            kv.set("t/a/acctx", b"1").unwrap();
            kv.set("t/b/acct/00000", b"1").unwrap();
            if spin_like {
                kv.list_like_spin();
            }
            let (mut all, mut after, mut pages) = (Vec::new(), None::<String>, 0);
            loop {
                let page = store.list_keys_after("t/a/acct/", after.as_deref(), 1_000).unwrap();
                assert!(page.len() <= 1_000);
                all.extend(page.iter().cloned());
                pages += 1;
                match page.last() {
                    Some(last) if page.len() == 1_000 => after = Some(last.clone()),
                    _ => break,
                }
            }
            let want: Vec<String> = (0..2_500).map(|i| format!("t/a/acct/{i:05}")).collect();
            assert_eq!((all, pages), (want, 3), "spin-like: {spin_like}");
            // A key before the prefix as `after` starts from the first key.
            assert_eq!(
                store.list_keys_after("t/a/acct/", Some("t/a/"), 2).unwrap(),
                ["t/a/acct/00000", "t/a/acct/00001"]
            );
            assert!(store.list_keys_after("t/a/acct/", Some("t/a/acct/02499"), 10).unwrap().is_empty());
        }
    }

    #[test]
    fn mem_kv_semantics() {
        let kv = MemKv::new();
        assert_eq!(kv.increment("c", 5).unwrap(), 5);
        assert_eq!(kv.increment("c", -2).unwrap(), 3);
        assert_eq!(kv.get("c").unwrap().unwrap(), b"3");
        kv.set("s", b"x").unwrap();
        assert!(kv.increment("s", 1).is_err());
        // absent -> absent CAS: the first create wins, the second loses.
        let (c1, v1) = kv.cas_read("n").unwrap();
        let (c2, _) = kv.cas_read("n").unwrap();
        assert_eq!(v1, None);
        assert!(kv.cas_write(c1, b"1").unwrap());
        assert!(!kv.cas_write(c2, b"2").unwrap());
        assert_eq!(kv.get("n").unwrap().unwrap(), b"1");
    }
}
