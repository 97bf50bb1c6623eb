//! [`KvBackend`] on the portable `wasi:keyvalue@0.2.0-draft2` interfaces (store, atomics, batch)
//! that spin-sdk 5.2 binds. Natively these imports are stubs: only wasm32 code may call them.

use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};

use crate::error::ApiError;
use crate::kv::{KeyPage, KeyValues, KvBackend, KvError, Store};

/// The store label every function opens.
pub const DEFAULT_STORE: &str = "default";

/// An open `wasi:keyvalue` bucket.
pub struct WasiKv {
    bucket: store::Bucket,
}

fn kv_err(e: store::Error) -> KvError {
    KvError(match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(s) => s,
    })
}

impl WasiKv {
    /// Opens the bucket `name`.
    pub fn open(name: &str) -> Result<Self, KvError> {
        store::open(name).map(|bucket| Self { bucket }).map_err(kv_err)
    }

    /// The raw bucket.
    pub fn bucket(&self) -> &store::Bucket {
        &self.bucket
    }
}

/// The typed store over the `default` bucket; failing to open it is a 500.
pub fn open_store() -> Result<Store<WasiKv>, ApiError> {
    Ok(Store::new(WasiKv::open(DEFAULT_STORE)?))
}

impl KvBackend for WasiKv {
    type Cas = atomics::Cas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.bucket.get(key).map_err(kv_err)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.bucket.set(key, value).map_err(kv_err)
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.bucket.delete(key).map_err(kv_err)
    }

    fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.bucket.exists(key).map_err(kv_err)
    }

    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let r = self.bucket.list_keys(cursor).map_err(kv_err)?;
        Ok(KeyPage { keys: r.keys, cursor: r.cursor })
    }

    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        batch::get_many(&self.bucket, keys).map_err(kv_err)
    }

    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        batch::set_many(&self.bucket, items).map_err(kv_err)
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        batch::delete_many(&self.bucket, keys).map_err(kv_err)
    }

    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        let cas = atomics::Cas::new(&self.bucket, key).map_err(kv_err)?;
        let current = cas.current().map_err(kv_err)?;
        Ok((cas, current))
    }

    fn cas_write(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError> {
        match atomics::swap(cas, value) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(kv_err(e)),
        }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(&self.bucket, key, delta).map_err(kv_err)
    }
}
