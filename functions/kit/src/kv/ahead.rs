//! [`ReadAhead`]: a [`KvBackend`] that answers reads from values read ahead in batch calls, so
//! that code reading key by key (a bill's gathering: a dozen keys an account) costs a few
//! `get_many` calls for a whole batch of accounts instead of a call a key. Tested natively with
//! `cargo test -p bss-kit kv::ahead`.
//!
//! A value read ahead answers the first read of its key only, and any write to the key — or a
//! compare-and-swap read of it — forgets it first: a read after one's own write sees the write,
//! and a read-modify-write never decides on a value read ahead. A value read ahead is as old as
//! its batch call: read ahead only what a read that much older serves as well.

use super::{BATCH_MAX, KeyPage, KeyValues, KvBackend, KvError};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

/// Most values held at once: keys read ahead past it are left to be read when asked.
pub const AHEAD_KEYS_MAX: usize = 20_000;

/// A backend `B` with values read ahead (see the module doc).
#[derive(Debug)]
pub struct ReadAhead<B> {
    inner: B,
    /// Key → value (`None`: absent), read ahead and not read yet.
    held: RefCell<HashMap<String, Option<Vec<u8>>>>,
    /// Keys read that were not held (read from `inner` one call at a time or in a batch).
    missed: Cell<usize>,
}

impl<B: KvBackend> ReadAhead<B> {
    /// Nothing read ahead yet.
    pub fn new(inner: B) -> Self {
        ReadAhead { inner, held: RefCell::new(HashMap::new()), missed: Cell::new(0) }
    }

    /// Reads `keys` ahead (those not held already, each once), in calls of at most
    /// [`BATCH_MAX`] keys; past [`AHEAD_KEYS_MAX`] held, the rest are not read ahead.
    pub fn fetch(&self, keys: &[String]) -> Result<(), KvError> {
        let wanted: Vec<String> = {
            let held = self.held.borrow();
            let room = AHEAD_KEYS_MAX.saturating_sub(held.len());
            let mut seen = HashSet::with_capacity(keys.len());
            keys.iter().filter(|k| !held.contains_key(*k) && seen.insert(k.as_str())).take(room).cloned().collect()
        };
        for chunk in wanted.chunks(BATCH_MAX) {
            let values = self.inner.get_many(chunk)?;
            self.held.borrow_mut().extend(values);
        }
        Ok(())
    }

    /// `f` of the value held for `key`, left held for its read: `None` when `key` is not read
    /// ahead; `f(None)` when it was read ahead and is absent.
    pub fn peek<T>(&self, key: &str, f: impl FnOnce(Option<&[u8]>) -> T) -> Option<T> {
        self.held.borrow().get(key).map(|v| f(v.as_deref()))
    }

    /// How many values are held.
    pub fn held(&self) -> usize {
        self.held.borrow().len()
    }

    /// How many keys were read that were not held: what reading ahead missed.
    pub fn missed(&self) -> usize {
        self.missed.get()
    }

    fn forget(&self, key: &str) {
        self.held.borrow_mut().remove(key);
    }
}

impl<B: KvBackend> KvBackend for ReadAhead<B> {
    type Cas = B::Cas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let held = self.held.borrow_mut().remove(key);
        match held {
            Some(v) => Ok(v),
            None => {
                self.missed.set(self.missed.get() + 1);
                self.inner.get(key)
            }
        }
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.forget(key);
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.forget(key);
        self.inner.delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool, KvError> {
        match self.peek(key, |v| v.is_some()) {
            Some(found) => Ok(found),
            None => self.inner.exists(key),
        }
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        self.inner.list_keys(cursor)
    }
    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        let mut found: HashMap<&str, Option<Vec<u8>>> = HashMap::new();
        let mut rest = Vec::new();
        {
            let mut held = self.held.borrow_mut();
            for k in keys {
                match held.remove(k) {
                    Some(v) => {
                        found.insert(k, v);
                    }
                    None => rest.push(k.clone()),
                }
            }
        }
        if rest.is_empty() {
            return Ok(keys.iter().map(|k| (k.clone(), found.remove(k.as_str()).flatten())).collect());
        }
        self.missed.set(self.missed.get() + rest.len());
        let mut read: HashMap<String, Option<Vec<u8>>> = self.inner.get_many(&rest)?.into_iter().collect();
        Ok(keys
            .iter()
            .map(|k| {
                let v = found.remove(k.as_str()).or_else(|| read.remove(k)).flatten();
                (k.clone(), v)
            })
            .collect())
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        items.iter().for_each(|(k, _)| self.forget(k));
        self.inner.set_many(items)
    }
    fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        keys.iter().for_each(|k| self.forget(k));
        self.inner.delete_many(keys)
    }
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        self.forget(key);
        self.inner.cas_read(key)
    }
    fn cas_write(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError> {
        self.inner.cas_write(cas, value)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.forget(key);
        self.inner.increment(key, delta)
    }
    fn backoff(&self, attempt: u32) {
        self.inner.backoff(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;

    /// A backend counting the calls that reach it.
    struct Counting<'a> {
        kv: &'a MemKv,
        calls: Cell<usize>,
    }

    impl KvBackend for Counting<'_> {
        type Cas = <MemKv as KvBackend>::Cas;
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            self.calls.set(self.calls.get() + 1);
            self.kv.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
            self.kv.set(key, value)
        }
        fn delete(&self, key: &str) -> Result<(), KvError> {
            self.kv.delete(key)
        }
        fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
            self.kv.list_keys(cursor)
        }
        fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
            self.calls.set(self.calls.get() + 1);
            self.kv.get_many(keys)
        }
        fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
            self.calls.set(self.calls.get() + 1);
            self.kv.cas_read(key)
        }
        fn cas_write(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError> {
            self.kv.cas_write(cas, value)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
            self.kv.increment(key, delta)
        }
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_value_read_ahead_answers_its_first_read_and_a_write_or_a_cas_forgets_it() {
        let kv = MemKv::default();
        for k in ["a", "b", "c", "d"] {
            kv.set(k, k.as_bytes()).unwrap();
        }
        let counting = Counting { kv: &kv, calls: Cell::new(0) };
        let ahead = ReadAhead::new(&counting);
        // "x" is absent: read ahead as absent. A key asked twice is read once.
        ahead.fetch(&keys(&["a", "b", "c", "d", "x", "a"])).unwrap();
        assert_eq!((counting.calls.get(), ahead.held()), (1, 5), "one batch call");
        assert_eq!(ahead.peek("a", |v| v.map(<[u8]>::to_vec)), Some(Some(b"a".to_vec())));
        assert_eq!(ahead.peek("x", |v| v.is_none()), Some(true));
        assert_eq!(ahead.peek("y", |v| v.is_none()), None, "not read ahead");
        // Answered from what was read ahead, in order, with what was not read from the store.
        kv.set("e", b"e").unwrap();
        let got = ahead.get_many(&keys(&["b", "e", "x"])).unwrap();
        assert_eq!(got, vec![("b".into(), Some(b"b".to_vec())), ("e".into(), Some(b"e".to_vec())), ("x".into(), None)]);
        assert_eq!(ahead.get("a").unwrap(), Some(b"a".to_vec()));
        assert_eq!((counting.calls.get(), ahead.missed()), (2, 1), "only e was read");
        // Once read, a key is read from the store again: a change made meanwhile shows.
        kv.set("a", b"a2").unwrap();
        assert_eq!(ahead.get("a").unwrap(), Some(b"a2".to_vec()));
        // A write through it forgets the value read ahead; so does a CAS read (which reads the
        // store, so that the swap decides on the current value).
        ahead.set("c", b"c2").unwrap();
        assert_eq!(ahead.get("c").unwrap(), Some(b"c2".to_vec()));
        kv.set("d", b"d2").unwrap();
        let (cas, current) = ahead.cas_read("d").unwrap();
        assert_eq!(current, Some(b"d2".to_vec()));
        assert!(ahead.cas_write(cas, b"d3").unwrap());
        assert_eq!(ahead.get("d").unwrap(), Some(b"d3".to_vec()));
        assert_eq!(ahead.held(), 0);
    }

    #[test]
    fn no_more_than_the_limit_is_held() {
        let kv = MemKv::default();
        let ahead = ReadAhead::new(&kv);
        let many: Vec<String> = (0..AHEAD_KEYS_MAX + 10).map(|n| format!("k{n}")).collect();
        ahead.fetch(&many).unwrap();
        assert_eq!(ahead.held(), AHEAD_KEYS_MAX);
        ahead.fetch(&keys(&["more"])).unwrap();
        assert_eq!(ahead.held(), AHEAD_KEYS_MAX);
        assert_eq!(ahead.get("more").unwrap(), None, "read from the store when asked");
    }
}
