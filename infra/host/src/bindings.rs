//! The host side of the guest interfaces: Spin key-value (v2 and v3), Spin variables,
//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch) and `bss:messaging` (producer import,
//! handler export). All of them are thin: they check the caller's rights and hand over to
//! [`crate::kv`] and [`crate::queue`].

use crate::kv::{KvError, KvStore, Versioned};
use crate::queue::{NewMessage, QueueError};
use crate::state::HostState;
use wasmtime::component::{Accessor, FutureReader, HasSelf, Resource, StreamReader};

wasmtime::component::bindgen!({
    path: [
        "../../wit/deps/spin@2.0.0",
        "../../wit/deps/spin-key-value@3.0.0",
        "../../wit/deps/keyvalue@0.2.0-draft2",
        "../../wit/messaging",
        "../../wit/host",
    ],
    world: "bss:host/platform",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "fermyon:spin/key-value.store": crate::bindings::KvHandle,
        "spin:key-value/key-value.store": crate::bindings::KvHandle,
        "wasi:keyvalue/store.bucket": crate::bindings::KvHandle,
        "wasi:keyvalue/atomics.cas": crate::bindings::CasHandle,
    },
});

use bss::messaging::producer;
use bss::messaging::types as mtypes;
use fermyon::spin::key_value as kv2;
use fermyon::spin::variables as vars2;
use spin::key_value::key_value as kv3;
use wasi::keyvalue::atomics as watomics;
use wasi::keyvalue::batch as wbatch;
use wasi::keyvalue::store as wkv;

/// An open store (a `bucket` in wasi:keyvalue).
pub struct KvHandle {
    store: KvStore,
}

/// A compare-and-swap in progress: the key and the version its value was read at.
pub struct CasHandle {
    store: KvStore,
    key: String,
    current: Versioned,
}

/// Link every interface of this module into `linker`; `spin:key-value@3.0.0` (whose functions
/// are WIT `async`) only on a concurrent engine.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>, concurrent: bool) -> wasmtime::Result<()> {
    kv2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    vars2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    if concurrent {
        kv3::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    }
    wkv::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    watomics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    wbatch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    producer::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    mtypes::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// Why a store cannot be opened.
enum OpenError {
    NoSuchStore,
    AccessDenied,
}

impl HostState {
    fn open_store(&mut self, label: &str) -> Result<KvStore, OpenError> {
        let label = if label.is_empty() { "default" } else { label };
        if !self.component.kv_labels.iter().any(|l| l == label) {
            return Err(OpenError::AccessDenied);
        }
        self.app.kv.get(label).cloned().ok_or(OpenError::NoSuchStore)
    }

    fn store_of(&self, h: &Resource<KvHandle>) -> wasmtime::Result<KvStore> {
        Ok(self.table.get(h)?.store.clone())
    }
}

fn log_backend(e: &KvError) {
    if let KvError::Backend(msg) = e {
        tracing::error!("key-value backend error: {msg}");
    }
}

// ------------------------------------------------------------ fermyon:spin/key-value@2.0.0

fn kv2_err(e: KvError) -> kv2::Error {
    log_backend(&e);
    kv2::Error::Other(e.to_string())
}

impl kv2::Host for HostState {}

impl kv2::HostStore for HostState {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<KvHandle>, kv2::Error>> {
        Ok(match self.open_store(&label) {
            Ok(store) => Ok(self.table.push(KvHandle { store })?),
            Err(OpenError::AccessDenied) => Err(kv2::Error::AccessDenied),
            Err(OpenError::NoSuchStore) => Err(kv2::Error::NoSuchStore),
        })
    }

    async fn get(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv2::Error>> {
        Ok(self.store_of(&h)?.get(&key).await.map_err(kv2_err))
    }

    async fn set(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv2::Error>> {
        Ok(self.store_of(&h)?.set(&key, &value).await.map_err(kv2_err))
    }

    async fn delete(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<(), kv2::Error>> {
        Ok(self.store_of(&h)?.delete(&key).await.map_err(kv2_err))
    }

    async fn exists(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<bool, kv2::Error>> {
        Ok(self.store_of(&h)?.exists(&key).await.map_err(kv2_err))
    }

    async fn get_keys(&mut self, h: Resource<KvHandle>) -> wasmtime::Result<Result<Vec<String>, kv2::Error>> {
        Ok(all_keys(&self.store_of(&h)?).await.map_err(kv2_err))
    }

    async fn drop(&mut self, h: Resource<KvHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

/// Keys of the first page of a listing that seeks (see `list_keys`).
pub const SEEK_PAGE_KEYS: usize = 64;
/// Marks a cursor handed out by this host. A seek to a key that itself starts with U+0001 would
/// read as a continuation: the project's keys never do (they start with a letter).
const CONTINUATION: char = '\u{1}';

/// One page of wasi:keyvalue `list-keys`: keys in ascending byte order, after the cursor. A
/// cursor this host handed out continues a listing ([`LIST_PAGE_MAX`](crate::kv::LIST_PAGE_MAX)
/// keys a page); any other string is a seek (bss-host's extension: the kit seeks to a prefix)
/// and its first page is [`SEEK_PAGE_KEYS`] keys, because a prefix usually holds few keys and
/// every key of a page is read from the store and copied into the guest.
pub async fn list_page(store: &KvStore, cursor: Option<&str>) -> Result<crate::kv::KeyPage, KvError> {
    let (from, limit) = match cursor {
        Some(c) if c.starts_with(CONTINUATION) => (Some(&c[CONTINUATION.len_utf8()..]), crate::kv::LIST_PAGE_MAX),
        other => (other, SEEK_PAGE_KEYS),
    };
    let mut page = store.list_keys("", from, limit).await?;
    page.cursor = page.cursor.map(|c| format!("{CONTINUATION}{c}"));
    Ok(page)
}

/// Every key of a store, page by page. Spin's `get-keys` has no paging; it is bounded by
/// [`ALL_KEYS_MAX`] so one call cannot exhaust the host.
async fn all_keys(store: &KvStore) -> Result<Vec<String>, KvError> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list_keys("", cursor.as_deref(), crate::kv::LIST_PAGE_MAX).await?;
        keys.extend(page.keys);
        if keys.len() > ALL_KEYS_MAX {
            return Err(KvError::Invalid(format!(
                "store holds more than {ALL_KEYS_MAX} keys; use wasi:keyvalue list-keys"
            )));
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(keys),
        }
    }
}

/// Most keys a non-paged key listing returns.
const ALL_KEYS_MAX: usize = 100_000;

// ------------------------------------------------------------ fermyon:spin/variables@2.0.0

impl vars2::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, vars2::Error>> {
        if !crate::variables::Variables::declares(&self.app.manifest, &self.component.id, &name) {
            return Ok(Err(vars2::Error::Undefined(format!(
                "no variable {name:?} for component {}",
                self.component.id
            ))));
        }
        Ok(match self.app.variables.get(&self.component.id, &name) {
            Some(v) => Ok(v.to_string()),
            None => Err(vars2::Error::Undefined(format!("variable {name:?} has no value"))),
        })
    }
}

// ------------------------------------------------------------ spin:key-value@3.0.0 (WASIp3)

fn kv3_err(e: KvError) -> kv3::Error {
    log_backend(&e);
    kv3::Error::Other(e.to_string())
}

impl kv3::Host for HostState {}

impl kv3::HostStore for HostState {
    async fn drop(&mut self, h: Resource<KvHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

fn store_in<T>(acc: &Accessor<T, HasSelf<HostState>>, h: &Resource<KvHandle>) -> wasmtime::Result<KvStore> {
    acc.with(|mut a| a.get().store_of(h))
}

impl<T> kv3::HostStoreWithStore<T> for HasSelf<HostState> {
    async fn open(acc: &Accessor<T, Self>, label: String) -> wasmtime::Result<Result<Resource<KvHandle>, kv3::Error>> {
        acc.with(|mut a| {
            let state = a.get();
            Ok(match state.open_store(&label) {
                Ok(store) => Ok(state.table.push(KvHandle { store })?),
                Err(OpenError::AccessDenied) => Err(kv3::Error::AccessDenied),
                Err(OpenError::NoSuchStore) => Err(kv3::Error::NoSuchStore),
            })
        })
    }

    async fn get(
        acc: &Accessor<T, Self>,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv3::Error>> {
        Ok(store_in(acc, &h)?.get(&key).await.map_err(kv3_err))
    }

    async fn set(
        acc: &Accessor<T, Self>,
        h: Resource<KvHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv3::Error>> {
        Ok(store_in(acc, &h)?.set(&key, &value).await.map_err(kv3_err))
    }

    async fn delete(
        acc: &Accessor<T, Self>,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv3::Error>> {
        Ok(store_in(acc, &h)?.delete(&key).await.map_err(kv3_err))
    }

    async fn exists(
        acc: &Accessor<T, Self>,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv3::Error>> {
        Ok(store_in(acc, &h)?.exists(&key).await.map_err(kv3_err))
    }

    async fn get_keys(
        acc: &Accessor<T, Self>,
        h: Resource<KvHandle>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), kv3::Error>>)> {
        let store = store_in(acc, &h)?;
        let (keys, result) = match all_keys(&store).await {
            Ok(keys) => (keys, Ok(())),
            Err(e) => (Vec::new(), Err(kv3_err(e))),
        };
        acc.with(|mut a| {
            let s = StreamReader::new(&mut a, keys)?;
            let f = FutureReader::new(&mut a, async move { wasmtime::error::Ok(result) })?;
            Ok((s, f))
        })
    }
}

// ------------------------------------------------------------ wasi:keyvalue@0.2.0-draft2

fn wkv_err(e: KvError) -> wkv::Error {
    log_backend(&e);
    match e {
        KvError::Backend(_) => wkv::Error::Other("key-value backend unavailable".into()),
        other => wkv::Error::Other(other.to_string()),
    }
}

impl wkv::Host for HostState {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<KvHandle>, wkv::Error>> {
        Ok(match self.open_store(&identifier) {
            Ok(store) => Ok(self.table.push(KvHandle { store })?),
            Err(OpenError::AccessDenied) => Err(wkv::Error::AccessDenied),
            Err(OpenError::NoSuchStore) => Err(wkv::Error::NoSuchStore),
        })
    }
}

impl wkv::HostBucket for HostState {
    async fn get(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wkv::Error>> {
        Ok(self.store_of(&h)?.get(&key).await.map_err(wkv_err))
    }

    async fn set(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        Ok(self.store_of(&h)?.set(&key, &value).await.map_err(wkv_err))
    }

    async fn delete(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<(), wkv::Error>> {
        Ok(self.store_of(&h)?.delete(&key).await.map_err(wkv_err))
    }

    async fn exists(&mut self, h: Resource<KvHandle>, key: String) -> wasmtime::Result<Result<bool, wkv::Error>> {
        Ok(self.store_of(&h)?.exists(&key).await.map_err(wkv_err))
    }

    /// See [`list_page`].
    async fn list_keys(
        &mut self,
        h: Resource<KvHandle>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wkv::KeyResponse, wkv::Error>> {
        let page = list_page(&self.store_of(&h)?, cursor.as_deref()).await;
        Ok(page.map(|p| wkv::KeyResponse { keys: p.keys, cursor: p.cursor }).map_err(wkv_err))
    }

    async fn drop(&mut self, h: Resource<KvHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl watomics::Host for HostState {
    async fn increment(
        &mut self,
        h: Resource<KvHandle>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wkv::Error>> {
        Ok(self.store_of(&h)?.increment(&key, delta).await.map_err(wkv_err))
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), watomics::CasError>> {
        let CasHandle { store, key, current } = self.table.delete(cas)?;
        match store.swap(&key, current.version, &value).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // Hand back a fresh handle at the latest version, as the interface requires.
                let fresh = match store.get_versioned(&key).await {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(watomics::CasError::StoreError(wkv_err(e)))),
                };
                let h = self.table.push(CasHandle { store, key, current: fresh })?;
                Ok(Err(watomics::CasError::CasFailed(h)))
            }
            Err(e) => Ok(Err(watomics::CasError::StoreError(wkv_err(e)))),
        }
    }
}

impl watomics::HostCas for HostState {
    async fn new(
        &mut self,
        bucket: Resource<KvHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasHandle>, wkv::Error>> {
        let store = self.store_of(&bucket)?;
        let current = match store.get_versioned(&key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(wkv_err(e))),
        };
        Ok(Ok(self.table.push(CasHandle { store, key, current })?))
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<Result<Option<Vec<u8>>, wkv::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.value.clone()))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl wbatch::Host for HostState {
    async fn get_many(
        &mut self,
        h: Resource<KvHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wkv::Error>> {
        Ok(self.store_of(&h)?.get_many(&keys).await.map_err(wkv_err))
    }

    async fn set_many(
        &mut self,
        h: Resource<KvHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        Ok(self.store_of(&h)?.set_many(&key_values).await.map_err(wkv_err))
    }

    async fn delete_many(
        &mut self,
        h: Resource<KvHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wkv::Error>> {
        Ok(self.store_of(&h)?.delete_many(&keys).await.map_err(wkv_err))
    }
}

// ------------------------------------------------------------ bss:messaging@0.1.0

impl mtypes::Host for HostState {}

impl producer::Host for HostState {
    async fn publish(
        &mut self,
        msg: mtypes::OutgoingMessage,
    ) -> wasmtime::Result<Result<String, mtypes::PublishError>> {
        let id = msg.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let new = NewMessage { id: id.clone(), subject: msg.subject, body: msg.body, ordering_key: msg.ordering_key };
        let consumers = self.app.manifest.consumers_of(&new.subject);
        match self.app.queue.publish(&new, &consumers).await {
            Ok(_) => {
                for c in &consumers {
                    if let Some(n) = self.app.wake.get(c) {
                        n.notify_one();
                    }
                }
                self.app.metrics.published(&self.component.id);
                Ok(Ok(id))
            }
            Err(QueueError::Invalid(why)) => Ok(Err(mtypes::PublishError::Invalid(why))),
            Err(e) => {
                tracing::error!(component = %self.component.id, "publish failed: {e}");
                Ok(Err(mtypes::PublishError::Unavailable("queue backend unavailable".into())))
            }
        }
    }
}
