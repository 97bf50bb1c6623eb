//! [`MemKv`]: an in-memory [`KvBackend`] with the same contract as the host's stores (versioned
//! values, exact compare-and-swap, byte-ordered listing with the last key as cursor — or, when
//! asked, Spin's listing that refuses cursors), plus fault injection (lost CAS races), so the
//! kit's logic over key-value storage (CAS retry loops, idempotency claims, tenancy) is
//! unit-tested natively. The real stores are exercised by the end-to-end tests through bss-host.

use super::{KeyPage, KvBackend, KvError};
use std::cell::RefCell;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
struct MemInner {
    map: BTreeMap<String, (u64, Vec<u8>)>,
    next_version: u64,
    lose_next_cas: u32,
    page_size: usize,
    spin_like_listing: bool,
}

/// An in-memory [`KvBackend`] with the platform's semantics, for native tests.
#[derive(Debug, Default)]
pub struct MemKv {
    inner: RefCell<MemInner>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `n` CAS writes lose, as if another writer got there first.
    pub fn lose_next_cas(&self, n: u32) {
        self.inner.borrow_mut().lose_next_cas = n;
    }

    /// Sets the `list_keys` page size (default 1000).
    pub fn set_page_size(&self, n: usize) {
        self.inner.borrow_mut().page_size = n;
    }

    /// Lists like Spin's wasi:keyvalue: any cursor is an error, and all keys come in one page in
    /// no particular order (here: descending).
    pub fn list_like_spin(&self) {
        self.inner.borrow_mut().spin_like_listing = true;
    }

    /// All keys.
    pub fn keys(&self) -> Vec<String> {
        self.inner.borrow().map.keys().cloned().collect()
    }

    fn write(&self, key: &str, value: &[u8]) {
        let mut i = self.inner.borrow_mut();
        i.next_version += 1;
        let v = i.next_version;
        i.map.insert(key.into(), (v, value.to_vec()));
    }
}

impl KvBackend for MemKv {
    type Cas = (String, u64);

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.inner.borrow().map.get(key).map(|(_, v)| v.clone()))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.write(key, value);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.borrow_mut().map.remove(key);
        Ok(())
    }

    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let i = self.inner.borrow();
        if i.spin_like_listing {
            if cursor.is_some() {
                return Err(KvError("list_keys: cursor not supported".into()));
            }
            return Ok(KeyPage { keys: i.map.keys().rev().cloned().collect(), cursor: None });
        }
        let page = if i.page_size == 0 { 1000 } else { i.page_size };
        let mut keys: Vec<String> = match cursor {
            Some(c) => i
                .map
                .range::<str, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .map(|(k, _)| k.clone())
                .take(page + 1)
                .collect(),
            None => i.map.keys().take(page + 1).cloned().collect(),
        };
        let more = keys.len() > page;
        keys.truncate(page);
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        let i = self.inner.borrow();
        let (version, value) = match i.map.get(key) {
            Some((v, bytes)) => (*v, Some(bytes.clone())),
            None => (0, None),
        };
        Ok(((key.to_string(), version), value))
    }

    fn cas_write(&self, (key, version): Self::Cas, value: &[u8]) -> Result<bool, KvError> {
        {
            let mut i = self.inner.borrow_mut();
            if i.lose_next_cas > 0 {
                i.lose_next_cas -= 1;
                return Ok(false);
            }
            let current = i.map.get(&key).map(|(v, _)| *v).unwrap_or(0);
            if current != version {
                return Ok(false);
            }
        }
        self.write(&key, value);
        Ok(true)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let current = match self.get(key)? {
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| KvError(format!("{key} is not a decimal counter")))?,
            None => 0,
        };
        let new = current.checked_add(delta).ok_or_else(|| KvError("counter overflow".into()))?;
        self.write(key, new.to_string().as_bytes());
        Ok(new)
    }

    fn backoff(&self, _attempt: u32) {}
}
