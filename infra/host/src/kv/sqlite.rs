//! Key-value store on the embedded SQLite database (table `kv`, one row per store label and key).
//! Compare-and-swap is a conditional `INSERT … ON CONFLICT DO NOTHING` (expecting absent) or
//! `UPDATE … WHERE version = ?` (expecting a version), whose changed-row count says who won.

use super::{KeyPage, KvError, KvResult, Versioned, parse_counter};
use crate::db::SqliteDb;
use rusqlite::{OptionalExtension as _, params};
use std::sync::Arc;

pub struct SqliteKv {
    db: Arc<SqliteDb>,
    label: String,
}

fn backend(e: rusqlite::Error) -> KvError {
    KvError::Backend(e.to_string())
}

const UPSERT: &str = "INSERT INTO kv (store, key, value, version) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (store, key) DO UPDATE SET value = excluded.value, version = excluded.version";

impl SqliteKv {
    pub fn new(db: Arc<SqliteDb>, label: &str) -> SqliteKv {
        SqliteKv { db, label: label.to_string() }
    }

    pub async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.db
            .read(|c| {
                c.prepare_cached("SELECT value FROM kv WHERE store = ?1 AND key = ?2")?
                    .query_row(params![self.label, key], |r| r.get(0))
                    .optional()
            })
            .map_err(backend)
    }

    pub async fn get_versioned(&self, key: &str) -> KvResult<Versioned> {
        let row: Option<(Vec<u8>, i64)> = self
            .db
            .read(|c| {
                c.prepare_cached("SELECT value, version FROM kv WHERE store = ?1 AND key = ?2")?
                    .query_row(params![self.label, key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(backend)?;
        Ok(match row {
            Some((value, version)) => Versioned { value: Some(value), version: version as u64 },
            None => Versioned { value: None, version: 0 },
        })
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        self.db
            .write_one(|c| {
                c.prepare_cached(UPSERT)?.execute(params![self.label, key, value, self.db.next_kv_version() as i64])
            })
            .map(drop)
            .map_err(backend)
    }

    pub async fn delete(&self, key: &str) -> KvResult<()> {
        self.delete_many(&[key.to_string()]).await
    }

    pub async fn exists(&self, key: &str) -> KvResult<bool> {
        self.db
            .read(|c| {
                c.prepare_cached("SELECT 1 FROM kv WHERE store = ?1 AND key = ?2")?.exists(params![self.label, key])
            })
            .map_err(backend)
    }

    pub async fn list_keys(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> KvResult<KeyPage> {
        // Start at the prefix or just after the cursor, whichever is further; stop at the first
        // key outside the prefix (keys are in byte order, so the prefix range is contiguous).
        let (from, inclusive) = match cursor {
            Some(c) if c >= prefix => (c, false),
            _ => (prefix, true),
        };
        let sql = if inclusive {
            "SELECT key FROM kv WHERE store = ?1 AND key >= ?2 ORDER BY key LIMIT ?3"
        } else {
            "SELECT key FROM kv WHERE store = ?1 AND key > ?2 ORDER BY key LIMIT ?3"
        };
        let mut keys: Vec<String> = self
            .db
            .read(|c| {
                c.prepare_cached(sql)?.query_map(params![self.label, from, (limit + 1) as i64], |r| r.get(0))?.collect()
            })
            .map_err(backend)?;
        let in_prefix = keys.iter().take_while(|k| k.starts_with(prefix)).count();
        let more = in_prefix > limit;
        keys.truncate(in_prefix.min(limit));
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    pub async fn swap(&self, key: &str, expected_version: u64, value: &[u8]) -> KvResult<bool> {
        self.db
            .write_one(|tx| {
                let version = self.db.next_kv_version() as i64;
                let changed = if expected_version == 0 {
                    tx.prepare_cached(
                        "INSERT INTO kv (store, key, value, version) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (store, key) DO NOTHING",
                    )?
                    .execute(params![self.label, key, value, version])?
                } else {
                    tx.prepare_cached(
                        "UPDATE kv SET value = ?3, version = ?4 WHERE store = ?1 AND key = ?2 AND version = ?5",
                    )?
                    .execute(params![self.label, key, value, version, expected_version as i64])?
                };
                Ok(changed == 1)
            })
            .map_err(backend)
    }

    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        let outcome = self.db.write(|tx| {
            let current: Option<Vec<u8>> = tx
                .prepare_cached("SELECT value FROM kv WHERE store = ?1 AND key = ?2")?
                .query_row(params![self.label, key], |r| r.get(0))
                .optional()?;
            let next = match parse_counter(current.as_deref()) {
                Ok(n) => match n.checked_add(delta) {
                    Some(next) => next,
                    None => return Ok(Err(KvError::Invalid("increment overflows a 64-bit integer".into()))),
                },
                Err(e) => return Ok(Err(e)),
            };
            tx.prepare_cached(UPSERT)?.execute(params![
                self.label,
                key,
                next.to_string().into_bytes(),
                self.db.next_kv_version() as i64
            ])?;
            Ok(Ok(next))
        });
        outcome.map_err(backend)?
    }

    pub async fn get_many(&self, keys: &[String]) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        self.db
            .read(|c| {
                // One read transaction for the batch, not one per key: every transaction start
                // takes and drops the WAL's shared lock with fcntl calls, which cost more than
                // the lookups themselves. The keys are also read from one snapshot.
                let tx = c.unchecked_transaction()?;
                let rows = {
                    let mut stmt = tx.prepare_cached("SELECT value FROM kv WHERE store = ?1 AND key = ?2")?;
                    keys.iter()
                        .map(|k| Ok((k.clone(), stmt.query_row(params![self.label, k], |r| r.get(0)).optional()?)))
                        .collect::<rusqlite::Result<Vec<_>>>()?
                };
                tx.commit()?;
                Ok(rows)
            })
            .map_err(backend)
    }

    pub async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> KvResult<()> {
        self.db
            .write(|tx| {
                let mut stmt = tx.prepare_cached(UPSERT)?;
                for (k, v) in entries {
                    stmt.execute(params![self.label, k, v, self.db.next_kv_version() as i64])?;
                }
                Ok(())
            })
            .map_err(backend)
    }

    pub async fn delete_many(&self, keys: &[String]) -> KvResult<()> {
        self.db
            .write(|tx| {
                // Remember the highest version that leaves the table, so that a restart never
                // hands out a version a deleted key once had (see `SqliteDb::open`).
                let mut floor = tx.prepare_cached(
                    "INSERT INTO kv_meta (name, value) SELECT 'version_floor', version FROM kv WHERE store = ?1 AND key = ?2
                     ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                )?;
                let mut stmt = tx.prepare_cached("DELETE FROM kv WHERE store = ?1 AND key = ?2")?;
                for k in keys {
                    floor.execute(params![self.label, k])?;
                    stmt.execute(params![self.label, k])?;
                }
                Ok(())
            })
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::SyncMode;

    #[tokio::test]
    async fn a_new_database_has_8_kib_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |path: &std::path::Path| -> i64 {
            rusqlite::Connection::open(path).unwrap().query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap()
        };
        let fresh = dir.path().join("new.sqlite");
        let kv = SqliteKv::new(Arc::new(SqliteDb::open(&fresh, SyncMode::Normal).unwrap()), "default");
        // A rated usage record (~1.2 KB) stays in its b-tree page: no overflow page of its own.
        kv.set("u", &[b'x'; 1500]).await.unwrap();
        assert_eq!(page_size(&fresh), 8192);
        let old = dir.path().join("old.sqlite");
        rusqlite::Connection::open(&old).unwrap().execute_batch("PRAGMA page_size = 4096; VACUUM;").unwrap();
        let kv_old = SqliteKv::new(Arc::new(SqliteDb::open(&old, SyncMode::Normal).unwrap()), "default");
        kv_old.set("u", &[b'x'; 1500]).await.unwrap();
        assert_eq!(page_size(&old), 4096, "a database keeps the page size it was created with");
        let overflow_pages = |path: &std::path::Path| -> i64 {
            rusqlite::Connection::open(path)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM dbstat WHERE pagetype = 'overflow'", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(overflow_pages(&fresh), 0);
        assert_eq!(overflow_pages(&old), 1, "at 4 KiB the same value spills into an overflow page");
    }

    #[tokio::test]
    async fn versions_are_never_reused_across_a_delete_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bss.sqlite");
        let kv = SqliteKv::new(Arc::new(SqliteDb::open(&path, SyncMode::Normal).unwrap()), "default");
        kv.set("a", b"1").await.unwrap();
        kv.set("b", b"1").await.unwrap();
        let highest = kv.get_versioned("b").await.unwrap().version;
        kv.delete("b").await.unwrap();
        drop(kv);
        let kv = SqliteKv::new(Arc::new(SqliteDb::open(&path, SyncMode::Normal).unwrap()), "default");
        kv.set("b", b"2").await.unwrap();
        let recreated = kv.get_versioned("b").await.unwrap().version;
        assert!(recreated > highest, "version {recreated} reused (deleted key had {highest})");
        // A swap against the version read before the delete must fail.
        assert!(!kv.swap("b", highest, b"stale").await.unwrap());
    }
}
