//! Where the usage component keeps a tenant's usage data (raw keys under `t/<tenantId>/`; the
//! layout is described in the usage component's `model` module). Shared because billing reads
//! the product indexes, the totals and the pending corrections the usage component writes.
//!
//! What rating rewrites for a product on every batch — its allowance buckets, its totals and its
//! record index — lives under one prefix, `usageProduct/<product>/`, so that one batch's writes
//! for a product land in one b-tree page of the store rather than three (usage ingestion +26%).
//! Before 2026-11-26 they were `usageState/…`, `usageTotals/…` and `usageByProduct/…`: values are
//! only written at the current keys, and read at the legacy ones while the current are absent
//! ([`get_many`], [`record_ids`]), so a store written before keeps its buckets, totals and records.

use bss_kit::ApiError;
use bss_kit::kv::{KvBackend, Store};
use std::collections::{BTreeSet, HashMap};

/// Raw keys of one tenant's usage data.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of `tenant`.
    pub fn new(tenant: &str) -> Keys {
        Keys { prefix: format!("t/{tenant}/") }
    }
    /// `usage/<id>`.
    pub fn usage(&self, id: &str) -> String {
        [&self.prefix, "usage/", id].concat()
    }
    /// The prefix of every usage record.
    pub fn usage_prefix(&self) -> String {
        format!("{}usage/", self.prefix)
    }
    /// `usageHeld/<id>`.
    pub fn held(&self, id: &str) -> String {
        format!("{}usageHeld/{id}", self.prefix)
    }
    /// The prefix of the held index.
    pub fn held_prefix(&self) -> String {
        format!("{}usageHeld/", self.prefix)
    }
    /// `usageProduct/<product>/records/<period>/<id>`.
    pub fn by_product(&self, product: &str, period: &str, id: &str) -> String {
        [&self.prefix, "usageProduct/", product, "/records/", period, "/", id].concat()
    }
    /// The prefix of a product's records (of one period, if given).
    pub fn by_product_prefix(&self, product: &str, period: Option<&str>) -> String {
        match period {
            Some(p) => format!("{}usageProduct/{product}/records/{p}/", self.prefix),
            None => format!("{}usageProduct/{product}/records/", self.prefix),
        }
    }
    /// `usageProduct/<owner>/state/<period>` (the owner: a product, or `pool.<account>` for
    /// allowances shared across a hierarchy).
    pub fn state(&self, owner: &str, period: &str) -> String {
        [&self.prefix, "usageProduct/", owner, "/state/", period].concat()
    }
    /// `usageProduct/<product>/totals/<period>`: [`bss_domain::usage::UsageTotals`], read by billing.
    pub fn totals(&self, product: &str, period: &str) -> String {
        [&self.prefix, "usageProduct/", product, "/totals/", period].concat()
    }
    /// `usageAccount/<account>`.
    pub fn account(&self, account: &str) -> String {
        [&self.prefix, "usageAccount/", account].concat()
    }
    /// `usageLease/<shard>`.
    pub fn lease(&self, shard: u32) -> String {
        format!("{}usageLease/{shard}", self.prefix)
    }
    /// `usageCorrection/<run>/<id>`.
    pub fn correction(&self, run: &str, id: &str) -> String {
        format!("{}usageCorrection/{run}/{id}", self.prefix)
    }
    /// `usageCorrectionByAccount/<account>/<run>/<id>`.
    pub fn correction_by_account(&self, account: &str, run: &str, id: &str) -> String {
        format!("{}usageCorrectionByAccount/{account}/{run}/{id}", self.prefix)
    }
    /// The prefix of an account's pending corrections (billing).
    pub fn correction_by_account_prefix(&self, account: &str) -> String {
        format!("{}usageCorrectionByAccount/{account}/", self.prefix)
    }
    /// The key (or key prefix) `key` had before the product keys were grouped under
    /// `usageProduct/<product>/`; `None` for a key that did not move.
    pub fn legacy(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("usageProduct/")?;
        let (owner, rest) = rest.split_once('/')?;
        let (kind, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let old = match kind {
            "state" => "usageState",
            "totals" => "usageTotals",
            "records" => "usageByProduct",
            _ => return None,
        };
        Some(format!("{}{old}/{owner}/{tail}", self.prefix))
    }
    /// The prefix of a run's corrections.
    pub fn correction_prefix(&self, run: &str) -> String {
        format!("{}usageCorrection/{run}/", self.prefix)
    }
}

/// Values of `keys` (any number, read [`bss_kit::kv::BATCH_MAX`] at a time), by key; absent
/// keys are left out.
pub fn read_many<B: KvBackend>(kv: &B, keys: &[String]) -> Result<HashMap<String, Vec<u8>>, ApiError> {
    let mut out = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(bss_kit::kv::BATCH_MAX) {
        for (k, v) in kv.get_many(chunk)? {
            if let Some(v) = v {
                out.insert(k, v);
            }
        }
    }
    Ok(out)
}

/// [`read_many`], where a key absent at its current place is read at its legacy one
/// ([`Keys::legacy`]).
pub fn get_many<B: KvBackend>(kv: &B, layout: &Keys, keys: &[String]) -> Result<HashMap<String, Vec<u8>>, ApiError> {
    let mut out = read_many(kv, keys)?;
    let (current, legacy): (Vec<&String>, Vec<String>) =
        keys.iter().filter(|k| !out.contains_key(*k)).filter_map(|k| Some((k, layout.legacy(k)?))).unzip();
    let mut found = read_many(kv, &legacy)?;
    for (k, old) in current.into_iter().zip(&legacy) {
        if let Some(v) = found.remove(old) {
            out.insert(k.clone(), v);
        }
    }
    Ok(out)
}

/// The value of one key, read at its legacy place while absent at its current one.
pub fn get<B: KvBackend>(kv: &B, layout: &Keys, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    Ok(get_many(kv, layout, &[key.to_string()])?.remove(key))
}

/// The ids of a product's records of one period (sorted, at most `max`): its index at the
/// current place and at the legacy one (a period that spans the change has entries in both).
pub fn record_ids<B: KvBackend>(
    store: &Store<B>,
    layout: &Keys,
    product: &str,
    period: &str,
    max: usize,
) -> Result<Vec<String>, ApiError> {
    let mut ids = BTreeSet::new();
    let current = layout.by_product_prefix(product, Some(period));
    for prefix in std::iter::once(current.clone()).chain(layout.legacy(&current)) {
        for key in store.list_keys(&prefix, max)? {
            ids.insert(key[prefix.len()..].to_string());
        }
    }
    Ok(ids.into_iter().take(max).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_kit::kv::MemKv;

    #[test]
    fn values_written_before_the_product_keys_moved_are_read_until_rewritten() {
        let layout = Keys::new("t1");
        assert_eq!(layout.legacy(&layout.state("p1", "2026-10-01")).unwrap(), "t/t1/usageState/p1/2026-10-01");
        assert_eq!(
            layout.legacy(&layout.state("pool.a1", "2026-10-01")).unwrap(),
            "t/t1/usageState/pool.a1/2026-10-01"
        );
        assert_eq!(layout.legacy(&layout.totals("p1", "2026-10-01")).unwrap(), "t/t1/usageTotals/p1/2026-10-01");
        assert_eq!(
            layout.legacy(&layout.by_product_prefix("p1", Some("2026-10-01"))).unwrap(),
            "t/t1/usageByProduct/p1/2026-10-01/"
        );
        assert_eq!(layout.legacy(&layout.usage("u1")), None);
        assert_eq!(layout.legacy(&layout.account("a1")), None);

        let store = Store::new(MemKv::new());
        let kv = store.backend();
        // Written before: buckets and totals of p1, two records; after: p2's buckets, a third record.
        kv.set("t/t1/usageState/p1/2026-10-01", b"old-state").unwrap();
        kv.set("t/t1/usageTotals/p1/2026-10-01", b"old-totals").unwrap();
        kv.set("t/t1/usageByProduct/p1/2026-10-01/u1", b"").unwrap();
        kv.set("t/t1/usageByProduct/p1/2026-10-01/u2", b"").unwrap();
        kv.set(&layout.state("p2", "2026-10-01"), b"new-state").unwrap();
        kv.set(&layout.by_product("p1", "2026-10-01", "u3"), b"").unwrap();
        let keys =
            [layout.state("p1", "2026-10-01"), layout.state("p2", "2026-10-01"), layout.totals("p3", "2026-10-01")];
        let got = get_many(kv, &layout, &keys).unwrap();
        assert_eq!(got.get(&keys[0]).map(Vec::as_slice), Some(&b"old-state"[..]));
        assert_eq!(got.get(&keys[1]).map(Vec::as_slice), Some(&b"new-state"[..]));
        assert!(!got.contains_key(&keys[2]));
        assert_eq!(record_ids(&store, &layout, "p1", "2026-10-01", 10).unwrap(), vec!["u1", "u2", "u3"]);
        // Once rewritten at the current key, the legacy value is no longer read.
        kv.set(&layout.totals("p1", "2026-10-01"), b"new-totals").unwrap();
        assert_eq!(get(kv, &layout, &layout.totals("p1", "2026-10-01")).unwrap().unwrap(), b"new-totals");
        // Another tenant's legacy keys are never read.
        assert!(get(kv, &Keys::new("t2"), &Keys::new("t2").state("p1", "2026-10-01")).unwrap().is_none());
    }
}
