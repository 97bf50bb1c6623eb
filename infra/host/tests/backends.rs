//! Conformance of the key-value and queue backends: every contract test runs once on embedded
//! SQLite and once on a real `redis-server`, through the public [`KvStore`] and [`Queue`] enums,
//! with real concurrency: several hosts racing on the same keys (on Redis, several connections;
//! on SQLite, several stores sharing one database, as the handlers of one host do).
//!
//! Every Redis test starts its own throw-away server on a free port; `redis-server` must be
//! installed (`apt-get install -y redis-server`). Without it those tests fail, they do not skip.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bss_host::db::{SqliteDb, SyncMode};
use bss_host::kv::redis::RedisKv;
use bss_host::kv::sqlite::SqliteKv;
use bss_host::kv::{KeyPage, KvError, KvStore};
use bss_host::queue::redis::RedisQueue;
use bss_host::queue::sqlite::SqliteQueue;
use bss_host::queue::{Delivery, DeliveryState, Depth, NewMessage, Outcome, Queue, QueueError, now_ms};
use tokio::sync::Barrier;

// ---------------------------------------------------------------------------------------------
// The backends
// ---------------------------------------------------------------------------------------------

/// One backend for one test, alive as long as the value: a fresh SQLite file, or a private
/// `redis-server`.
enum Backend {
    Sqlite { db: Arc<SqliteDb>, _dir: tempfile::TempDir },
    Redis(support::Redis),
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = SqliteDb::open(&dir.path().join("bss.db"), SyncMode::Normal).expect("open SQLite database");
        Backend::Sqlite { db: Arc::new(db), _dir: dir }
    }

    fn redis() -> Backend {
        Backend::Redis(support::Redis::start())
    }

    /// Store `label` as one more host sees it: its own connection on Redis, its own store value
    /// on the shared database on SQLite.
    async fn kv(&self, label: &str) -> KvStore {
        match self {
            Backend::Sqlite { db, .. } => KvStore::Sqlite(Arc::new(SqliteKv::new(db.clone(), label))),
            Backend::Redis(server) => {
                KvStore::Redis(Arc::new(RedisKv::connect(&server.url, label).await.expect("connect kv")))
            }
        }
    }

    /// A few independent hosts of store `label`.
    async fn kv_hosts(&self, label: &str, n: usize) -> Vec<KvStore> {
        let mut hosts = Vec::new();
        for _ in 0..n {
            hosts.push(self.kv(label).await);
        }
        hosts
    }

    /// The queue as one more host sees it.
    async fn queue(&self) -> Queue {
        match self {
            Backend::Sqlite { db, .. } => Queue::Sqlite(Arc::new(SqliteQueue::new(db.clone()))),
            Backend::Redis(server) => {
                Queue::Redis(Arc::new(RedisQueue::connect(&server.url).await.expect("connect queue")))
            }
        }
    }

    async fn queue_hosts(&self, n: usize) -> Vec<Queue> {
        let mut hosts = Vec::new();
        for _ in 0..n {
            hosts.push(self.queue().await);
        }
        hosts
    }
}

/// For each `check_x => sqlite_x, redis_x (workers = n);`, two `#[tokio::test]`s running
/// `check_x` on a fresh backend of each kind.
macro_rules! on_both_backends {
    ($($check:ident => $sqlite:ident, $redis:ident (workers = $workers:literal);)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
        async fn $sqlite() {
            let backend = Backend::sqlite();
            $check(&backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
        async fn $redis() {
            let backend = Backend::redis();
            $check(&backend).await;
        }
    )*};
}

on_both_backends! {
    check_kv_set_get_delete_exists_and_versions =>
        sqlite_kv_set_get_delete_exists_and_versions, redis_kv_set_get_delete_exists_and_versions (workers = 2);
    check_kv_increment_parses_like_the_contract =>
        sqlite_kv_increment_parses_like_the_contract, redis_kv_increment_parses_like_the_contract (workers = 2);
    check_kv_list_keys_pages_by_prefix_and_cursor =>
        sqlite_kv_list_keys_pages_by_prefix_and_cursor, redis_kv_list_keys_pages_by_prefix_and_cursor (workers = 2);
    check_kv_batches => sqlite_kv_batches, redis_kv_batches (workers = 2);
    check_kv_racing_creates_have_one_winner =>
        sqlite_kv_racing_creates_have_one_winner, redis_kv_racing_creates_have_one_winner (workers = 4);
    check_kv_cas_increment_loops_lose_nothing =>
        sqlite_kv_cas_increment_loops_lose_nothing, redis_kv_cas_increment_loops_lose_nothing (workers = 4);
    check_kv_racing_swaps_of_one_version_have_one_winner =>
        sqlite_kv_racing_swaps_of_one_version_have_one_winner,
        redis_kv_racing_swaps_of_one_version_have_one_winner (workers = 4);
    check_kv_concurrent_increments_are_exact =>
        sqlite_kv_concurrent_increments_are_exact, redis_kv_concurrent_increments_are_exact (workers = 4);
    check_queue_publish_is_idempotent_and_fans_out =>
        sqlite_queue_publish_is_idempotent_and_fans_out, redis_queue_publish_is_idempotent_and_fans_out (workers = 2);
    check_queue_leases_hide_deliveries_until_they_expire =>
        sqlite_queue_leases_hide_deliveries_until_they_expire,
        redis_queue_leases_hide_deliveries_until_they_expire (workers = 2);
    check_queue_failures_retry_at_the_given_time =>
        sqlite_queue_failures_retry_at_the_given_time, redis_queue_failures_retry_at_the_given_time (workers = 2);
    check_queue_dead_letters_and_replay =>
        sqlite_queue_dead_letters_and_replay, redis_queue_dead_letters_and_replay (workers = 2);
    check_queue_ordering_keys_hold_later_messages_back =>
        sqlite_queue_ordering_keys_hold_later_messages_back,
        redis_queue_ordering_keys_hold_later_messages_back (workers = 2);
    check_queue_concurrent_claimers_deliver_each_message_once =>
        sqlite_queue_concurrent_claimers_deliver_each_message_once,
        redis_queue_concurrent_claimers_deliver_each_message_once (workers = 4);
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// KV
// ---------------------------------------------------------------------------------------------

async fn check_kv_set_get_delete_exists_and_versions(backend: &Backend) {
    let kv = backend.kv("default").await;

    assert_eq!(kv.get("a").await.unwrap(), None);
    assert!(!kv.exists("a").await.unwrap());
    let absent = kv.get_versioned("a").await.unwrap();
    assert_eq!((absent.value, absent.version), (None, 0));

    kv.set("a", b"one").await.unwrap();
    assert_eq!(kv.get("a").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert!(kv.exists("a").await.unwrap());
    let v1 = kv.get_versioned("a").await.unwrap();
    assert_eq!(v1.value.as_deref(), Some(&b"one"[..]));
    assert!(v1.version >= 1);

    // Every kind of write bumps the version.
    kv.set("a", b"two").await.unwrap();
    let v2 = kv.get_versioned("a").await.unwrap().version;
    assert!(v2 > v1.version);
    assert!(!kv.swap("a", v1.version, b"stale").await.unwrap(), "swap of an old version must fail");
    assert!(kv.swap("a", v2, b"3").await.unwrap());
    let v3 = kv.get_versioned("a").await.unwrap().version;
    assert!(v3 > v2);
    assert_eq!(kv.increment("a", 4).await.unwrap(), 7);
    let v4 = kv.get_versioned("a").await.unwrap().version;
    assert!(v4 > v3);
    kv.set_many(&[("a".into(), b"x".to_vec())]).await.unwrap();
    let v5 = kv.get_versioned("a").await.unwrap().version;
    assert!(v5 > v4);

    // Empty and binary values survive the round trip.
    kv.set("empty", b"").await.unwrap();
    assert_eq!(kv.get("empty").await.unwrap(), Some(Vec::new()));
    let binary: Vec<u8> = (0..=255).collect();
    kv.set("bin", &binary).await.unwrap();
    assert_eq!(kv.get("bin").await.unwrap(), Some(binary));

    // Delete removes the value and its version; a re-created key never reuses an old version.
    kv.delete("a").await.unwrap();
    assert_eq!(kv.get("a").await.unwrap(), None);
    assert!(!kv.exists("a").await.unwrap());
    assert_eq!(kv.get_versioned("a").await.unwrap().version, 0);
    kv.delete("a").await.unwrap(); // deleting an absent key is fine
    assert!(!kv.swap("a", v5, b"ghost").await.unwrap(), "swap against a deleted version must fail");
    assert!(kv.swap("a", 0, b"again").await.unwrap());
    let again = kv.get_versioned("a").await.unwrap();
    assert_eq!(again.value.as_deref(), Some(&b"again"[..]));
    assert!(again.version > v5, "a re-created key must not reuse an earlier version (ABA)");
    assert!(!kv.swap("a", 0, b"dup").await.unwrap(), "create of a present key must fail");

    // Labels are separate stores on the same backend.
    let other = backend.kv("other").await;
    assert_eq!(other.get("a").await.unwrap(), None);
    other.set("a", b"mine").await.unwrap();
    assert_eq!(kv.get("a").await.unwrap().as_deref(), Some(&b"again"[..]));
    assert_eq!(other.list_keys("", None, 100).await.unwrap().keys, keys(&["a"]));
}

async fn check_kv_increment_parses_like_the_contract(backend: &Backend) {
    let kv = backend.kv("default").await;

    assert_eq!(kv.increment("n", 5).await.unwrap(), 5, "absent counts as zero");
    assert_eq!(kv.increment("n", -7).await.unwrap(), -2);
    assert_eq!(kv.get("n").await.unwrap().as_deref(), Some(&b"-2"[..]));

    kv.set("lenient", b" +007 ").await.unwrap();
    assert_eq!(kv.increment("lenient", 1).await.unwrap(), 8);

    kv.set("text", b"4x").await.unwrap();
    let before = kv.get_versioned("text").await.unwrap();
    assert!(matches!(kv.increment("text", 1).await, Err(KvError::NotAnInteger)));
    assert_eq!(kv.get_versioned("text").await.unwrap(), before, "a refused increment changes nothing");

    kv.set("big", i64::MAX.to_string().as_bytes()).await.unwrap();
    kv.set("big", format!(" {} ", i64::MAX).as_bytes()).await.unwrap();
    let before = kv.get_versioned("big").await.unwrap();
    assert!(kv.increment("big", 1).await.is_err(), "i64 overflow must be refused");
    assert_eq!(kv.get_versioned("big").await.unwrap(), before, "a refused increment changes nothing");
    assert_eq!(kv.increment("big", -1).await.unwrap(), i64::MAX - 1, "64-bit exact, not via doubles");

    kv.set("huge", b"99999999999999999999").await.unwrap();
    assert!(matches!(kv.increment("huge", 1).await, Err(KvError::NotAnInteger)));
}

async fn check_kv_list_keys_pages_by_prefix_and_cursor(backend: &Backend) {
    let kv = backend.kv("default").await;

    let mut expected: Vec<String> = (0..25).map(|i| format!("p/{i:03}")).collect();
    // Keys that sort last under the prefix: "~" is the last printable ASCII character, DEL the
    // last ASCII one (the bound of a prefix ending in it, 0x80, is not UTF-8); "é" is past ASCII.
    expected.extend(keys(&["p/~", "p/\u{7f}x", "p/é"]));
    for k in &expected {
        kv.set(k, b"x").await.unwrap();
    }
    for k in ["p", "o/1", "q/1", "p0", "é/1"] {
        kv.set(k, b"x").await.unwrap();
    }

    // Pages of 10 under "p/".
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = kv.list_keys("p/", cursor.as_deref(), 10).await.unwrap();
        pages += 1;
        assert!(page.keys.len() <= 10);
        seen.extend(page.keys.iter().cloned());
        match page.cursor {
            Some(c) => {
                assert_eq!(Some(&c), page.keys.last(), "cursor is the last key returned");
                cursor = Some(c);
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    // Exactly a page's worth leaves no cursor behind.
    let page = kv.list_keys("p/", Some("p/007"), 20).await.unwrap();
    assert_eq!(page.keys, expected[8..].to_vec());
    assert_eq!(page.cursor, None);

    // A cursor before the prefix starts at the prefix; one past it ends the listing.
    assert_eq!(kv.list_keys("p/", Some("a"), 2).await.unwrap().keys, keys(&["p/000", "p/001"]));
    assert_eq!(kv.list_keys("p/", Some("z"), 5).await.unwrap(), KeyPage { keys: vec![], cursor: None });
    assert_eq!(kv.list_keys("nothing/", None, 5).await.unwrap(), KeyPage { keys: vec![], cursor: None });
    // Prefixes that end other than with "/": in ASCII, and past it.
    assert_eq!(
        kv.list_keys("p/02", None, 10).await.unwrap().keys,
        keys(&["p/020", "p/021", "p/022", "p/023", "p/024"])
    );
    assert_eq!(kv.list_keys("p/~", None, 10).await.unwrap().keys, keys(&["p/~"]));
    assert_eq!(kv.list_keys("p/\u{7f}", None, 10).await.unwrap().keys, keys(&["p/\u{7f}x"]));
    assert_eq!(kv.list_keys("é", None, 10).await.unwrap().keys, keys(&["é/1"]));

    // Everything, in byte order.
    let mut all = expected.clone();
    all.extend(keys(&["p", "o/1", "q/1", "p0", "é/1"]));
    all.sort();
    assert_eq!(kv.list_keys("", None, 1000).await.unwrap().keys, all);
    assert_eq!(kv.list_keys("", None, 1000).await.unwrap().keys.last().map(String::as_str), Some("é/1"));

    // Deleted keys leave the index; swaps, increments and batches join it.
    kv.delete("p/000").await.unwrap();
    kv.delete_many(&keys(&["p/001", "p/002"])).await.unwrap();
    expected.drain(..3);
    assert!(kv.swap("p/100", 0, b"x").await.unwrap());
    kv.increment("p/101", 1).await.unwrap();
    kv.set_many(&[("p/102".into(), b"x".to_vec())]).await.unwrap();
    expected.extend(keys(&["p/100", "p/101", "p/102"]));
    expected.sort();
    assert_eq!(kv.list_keys("p/", None, 1000).await.unwrap().keys, expected);
}

async fn check_kv_batches(backend: &Backend) {
    let kv = backend.kv("default").await;

    let entries: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("k{i:02}"), format!("v{i}").into_bytes())).collect();
    kv.set_many(&entries).await.unwrap();
    kv.set_many(&[]).await.unwrap();
    assert_eq!(kv.get_many(&[]).await.unwrap(), vec![]);

    let got = kv.get_many(&keys(&["k00", "missing", "k49"])).await.unwrap();
    assert_eq!(
        got,
        vec![
            ("k00".to_string(), Some(b"v0".to_vec())),
            ("missing".to_string(), None),
            ("k49".to_string(), Some(b"v49".to_vec()))
        ]
    );
    let versions: HashSet<u64> =
        versions_of(&kv, &entries.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()).await.into_iter().collect();
    assert_eq!(versions.len(), 50, "each write of a batch gets its own version");
    assert!(!versions.contains(&0));

    kv.delete_many(&entries[..40].iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()).await.unwrap();
    kv.delete_many(&[]).await.unwrap();
    let left = kv.list_keys("", None, 1000).await.unwrap().keys;
    assert_eq!(left, entries[40..].iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
    assert_eq!(kv.get_many(&keys(&["k00", "k45"])).await.unwrap()[0].1, None);
}

async fn versions_of(kv: &KvStore, ks: &[String]) -> Vec<u64> {
    let mut out = Vec::new();
    for k in ks {
        out.push(kv.get_versioned(k).await.unwrap().version);
    }
    out
}

async fn check_kv_racing_creates_have_one_winner(backend: &Backend) {
    let hosts = backend.kv_hosts("default", 4).await;
    for round in 0..5 {
        let key = format!("order/{round}");
        let barrier = Arc::new(Barrier::new(64));
        let mut tasks = Vec::new();
        for t in 0..64usize {
            let kv = hosts[t % hosts.len()].clone();
            let (key, barrier) = (key.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                kv.swap(&key, 0, format!("task {t}").as_bytes()).await.unwrap().then_some(t)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "racing creates of {key}: winners {winners:?}");
        let stored = hosts[0].get(&key).await.unwrap().unwrap();
        assert_eq!(stored, format!("task {}", winners[0]).into_bytes());
    }
}

async fn check_kv_cas_increment_loops_lose_nothing(backend: &Backend) {
    let hosts = backend.kv_hosts("default", 4).await;
    let barrier = Arc::new(Barrier::new(32));
    let successes = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..32usize {
        let kv = hosts[t % hosts.len()].clone();
        let (barrier, successes) = (barrier.clone(), successes.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..50 {
                loop {
                    let current = kv.get_versioned("counter").await.unwrap();
                    let n: u64 = current.value.map(|v| String::from_utf8(v).unwrap().parse().unwrap()).unwrap_or(0);
                    if kv.swap("counter", current.version, (n + 1).to_string().as_bytes()).await.unwrap() {
                        successes.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(successes.load(Ordering::Relaxed), 1600);
    assert_eq!(hosts[0].get("counter").await.unwrap().as_deref(), Some(&b"1600"[..]));
}

async fn check_kv_racing_swaps_of_one_version_have_one_winner(backend: &Backend) {
    let hosts = backend.kv_hosts("default", 4).await;
    for round in 0..5 {
        hosts[0].set("balance", format!("round {round}").as_bytes()).await.unwrap();
        let version = hosts[0].get_versioned("balance").await.unwrap().version;
        let barrier = Arc::new(Barrier::new(32));
        let mut tasks = Vec::new();
        for t in 0..32usize {
            let kv = hosts[t % hosts.len()].clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                kv.swap("balance", version, format!("winner {t}").as_bytes()).await.unwrap().then_some(t)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let after = hosts[0].get_versioned("balance").await.unwrap();
        assert_eq!(after.value, Some(format!("winner {}", winners[0]).into_bytes()));
        assert!(after.version > version);
    }
}

async fn check_kv_concurrent_increments_are_exact(backend: &Backend) {
    let hosts = backend.kv_hosts("default", 4).await;
    let barrier = Arc::new(Barrier::new(16));
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let kv = hosts[t % hosts.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut seen = Vec::new();
            for _ in 0..100 {
                seen.push(kv.increment("hits", 1).await.unwrap());
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1600).collect::<Vec<i64>>(), "every increment saw its own value");
    assert_eq!(hosts[0].get("hits").await.unwrap().as_deref(), Some(&b"1600"[..]));
}

// ---------------------------------------------------------------------------------------------
// Redis only: connecting and labels
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connect_fails_fast_naming_the_url() {
    let url = format!("redis://127.0.0.1:{}/", support::free_port());
    let started = Instant::now();
    let err = match RedisKv::connect(&url, "default").await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => format!("{e:#}"),
    };
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(err.contains(&url), "error does not name the URL: {err}");
    let err = match RedisQueue::connect(&url).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&url), "error does not name the URL: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kv_label_with_a_colon_is_rejected() {
    let server = support::Redis::start();
    // Labels are part of the key names (`bss:kv:L:<key>`): a ':' would let two labels collide.
    assert!(RedisKv::connect(&server.url, "bad:label").await.is_err());
    assert!(RedisKv::connect(&server.url, "").await.is_err());
    assert!(RedisKv::connect(&server.url, "good").await.is_ok());
}

// ---------------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------------

fn msg(id: &str, ordering_key: Option<&str>) -> NewMessage {
    NewMessage {
        id: id.into(),
        subject: "order.created".into(),
        body: format!("body of {id}").into_bytes(),
        ordering_key: ordering_key.map(str::to_owned),
    }
}

const LONG: Duration = Duration::from_secs(60);

fn ids(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.message_id.as_str()).collect()
}

async fn check_queue_publish_is_idempotent_and_fans_out(backend: &Backend) {
    let q = backend.queue().await;
    let both = keys(&["billing", "usage"]);

    assert!(q.publish(&msg("m1", None), &both).await.unwrap());
    assert!(!q.publish(&msg("m1", None), &both).await.unwrap(), "second publish of an id is a no-op");
    let changed = NewMessage { body: b"other".to_vec(), ..msg("m1", None) };
    assert!(!q.publish(&changed, &keys(&["billing", "usage", "third"])).await.unwrap());
    assert_eq!(q.depth().await.unwrap(), Depth { pending: 2, dead: 0 });

    for consumer in ["billing", "usage"] {
        let got = q.claim(consumer, 10, LONG).await.unwrap();
        assert_eq!(got.len(), 1, "{consumer}");
        let d = &got[0];
        assert_eq!((d.consumer.as_str(), d.message_id.as_str(), d.attempt), (consumer, "m1", 1));
        assert_eq!((d.subject.as_str(), d.body.as_slice()), ("order.created", &b"body of m1"[..]));
        assert_eq!(d.ordering_key, None);
        assert!(d.published_at_ms.abs_diff(now_ms()) < 10_000);
        q.complete(d, &Outcome::Ack).await.unwrap();
        q.complete(d, &Outcome::Ack).await.unwrap(); // a second ack is a no-op
    }
    assert!(q.claim("third", 10, LONG).await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap(), Depth { pending: 0, dead: 0 });
    assert!(!q.publish(&msg("m1", None), &both).await.unwrap(), "an acknowledged id is still remembered");
    assert!(q.claim("billing", 10, LONG).await.unwrap().is_empty());

    // Duplicate consumer names fan out once. No consumer: the message is checked and dropped
    // without a write — not even its id is kept, so the same id published later to consumers
    // (after a manifest added one) is delivered.
    assert!(q.publish(&msg("m2", None), &keys(&["billing", "billing"])).await.unwrap());
    assert_eq!(q.claim("billing", 10, LONG).await.unwrap().len(), 1);
    assert!(q.publish(&msg("m3", None), &[]).await.unwrap());
    assert_eq!(q.depth().await.unwrap(), Depth { pending: 1, dead: 0 });
    assert!(q.publish(&msg("m3", None), &both).await.unwrap());
    assert!(!q.publish(&msg("m3", None), &both).await.unwrap());
    assert_eq!(q.depth().await.unwrap(), Depth { pending: 3, dead: 0 });
    assert_eq!(q.claim("billing", 0, LONG).await.unwrap(), vec![]);
}

async fn check_queue_leases_hide_deliveries_until_they_expire(backend: &Backend) {
    let hosts = backend.queue_hosts(2).await;
    let (a, b) = (&hosts[0], &hosts[1]);
    a.publish(&msg("m1", None), &keys(&["c"])).await.unwrap();
    assert!(a.next_due_ms("c").await.unwrap().unwrap() <= now_ms() + 5);

    let first = a.claim("c", 10, Duration::from_millis(1000)).await.unwrap();
    assert_eq!((ids(&first), first[0].attempt), (vec!["m1"], 1));
    assert!(b.claim("c", 10, LONG).await.unwrap().is_empty(), "a leased delivery is invisible");
    let due = a.next_due_ms("c").await.unwrap().unwrap();
    assert!(due > now_ms() && due <= now_ms() + 1000, "next due is the lease expiry");

    tokio::time::sleep(Duration::from_millis(1150)).await;
    let second = b.claim("c", 10, LONG).await.unwrap();
    assert_eq!((ids(&second), second[0].attempt), (vec!["m1"], 2), "an expired lease is handed out again");

    // The first host completes late: that changes nothing, whatever it reports.
    a.complete(&first[0], &Outcome::Failed { error: "late".into(), retry_at_ms: None }).await.unwrap();
    a.complete(&first[0], &Outcome::Failed { error: "late".into(), retry_at_ms: Some(0) }).await.unwrap();
    a.complete(&first[0], &Outcome::Ack).await.unwrap();
    assert_eq!(a.depth().await.unwrap(), Depth { pending: 1, dead: 0 });
    assert!(a.claim("c", 10, LONG).await.unwrap().is_empty(), "still leased by the second host");

    b.complete(&second[0], &Outcome::Ack).await.unwrap();
    assert_eq!(a.depth().await.unwrap(), Depth { pending: 0, dead: 0 });
    assert_eq!(a.next_due_ms("c").await.unwrap(), None);
}

async fn check_queue_failures_retry_at_the_given_time(backend: &Backend) {
    let q = backend.queue().await;
    q.publish(&msg("m1", None), &keys(&["c"])).await.unwrap();
    let d = q.claim("c", 10, LONG).await.unwrap().remove(0);

    let retry_at = now_ms() + 1000;
    q.complete(&d, &Outcome::Failed { error: "downstream 503".into(), retry_at_ms: Some(retry_at) }).await.unwrap();
    assert!(q.claim("c", 10, LONG).await.unwrap().is_empty(), "not due before retry_at");
    assert_eq!(q.next_due_ms("c").await.unwrap(), Some(retry_at));

    let listed = q.list(DeliveryState::Pending, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let info = &listed[0];
    assert_eq!((info.consumer.as_str(), info.message_id.as_str(), info.state), ("c", "m1", DeliveryState::Pending));
    assert_eq!((info.attempts, info.next_attempt_at_ms), (1, retry_at));
    assert_eq!(info.last_error.as_deref(), Some("downstream 503"));
    assert_eq!(info.body.as_deref(), Some("body of m1"));
    assert!(q.list(DeliveryState::Dead, 10).await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = q.claim("c", 10, LONG).await.unwrap();
    assert_eq!((ids(&again), again[0].attempt), (vec!["m1"], 2));
    // While leased, the admin view counts the failed attempt, and may count the running one
    // (SQLite does, Redis does not): `DeliveryInfo::attempts`.
    let attempts = q.list(DeliveryState::Pending, 10).await.unwrap()[0].attempts;
    assert!((1..=2).contains(&attempts), "attempts while the second lease runs: {attempts}");
    q.complete(&again[0], &Outcome::Ack).await.unwrap();
    assert!(q.list(DeliveryState::Pending, 10).await.unwrap().is_empty());
}

async fn check_queue_dead_letters_and_replay(backend: &Backend) {
    let q = backend.queue().await;
    q.publish(&msg("m1", None), &keys(&["c", "other"])).await.unwrap();
    let d = q.claim("c", 10, LONG).await.unwrap().remove(0);
    q.complete(&d, &Outcome::Failed { error: "poison".into(), retry_at_ms: None }).await.unwrap();

    assert!(q.claim("c", 10, LONG).await.unwrap().is_empty(), "a dead letter is not delivered");
    assert_eq!(q.depth().await.unwrap(), Depth { pending: 1, dead: 1 });
    assert_eq!(q.next_due_ms("c").await.unwrap(), None);
    let dead = q.list(DeliveryState::Dead, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].consumer.as_str(), dead[0].message_id.as_str()), ("c", "m1"));
    assert_eq!(
        (dead[0].state, dead[0].attempts, dead[0].last_error.as_deref()),
        (DeliveryState::Dead, 1, Some("poison"))
    );
    let pending = q.list(DeliveryState::Pending, 10).await.unwrap();
    assert_eq!(pending.iter().map(|i| i.consumer.as_str()).collect::<Vec<_>>(), vec!["other"]);

    assert!(matches!(q.replay("c", "nope").await, Err(QueueError::NotFound(_))));
    assert!(matches!(q.replay("other", "m1").await, Err(QueueError::NotFound(_))));
    q.replay("c", "m1").await.unwrap();
    assert!(matches!(q.replay("c", "m1").await, Err(QueueError::NotFound(_))), "replayed only once");
    assert_eq!(q.depth().await.unwrap(), Depth { pending: 2, dead: 0 });
    let back = q.claim("c", 10, LONG).await.unwrap();
    assert_eq!((ids(&back), back[0].attempt), (vec!["m1"], 1), "replay resets the attempts");
    assert_eq!(back[0].body, b"body of m1", "the dead letter kept its body");
    q.complete(&back[0], &Outcome::Ack).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), Depth { pending: 1, dead: 0 });
}

async fn check_queue_ordering_keys_hold_later_messages_back(backend: &Backend) {
    let q = backend.queue().await;
    let c = keys(&["c"]);
    q.publish(&msg("m1", Some("acct-1")), &c).await.unwrap();
    q.publish(&msg("m2", Some("acct-1")), &c).await.unwrap();
    q.publish(&msg("x1", None), &c).await.unwrap();
    q.publish(&msg("y1", Some("acct-2")), &c).await.unwrap();

    let got = q.claim("c", 10, LONG).await.unwrap();
    let mut got_ids = ids(&got);
    got_ids.sort_unstable();
    assert_eq!(got_ids, vec!["m1", "x1", "y1"], "only the head of each ordering key");
    assert_eq!(got.iter().find(|d| d.message_id == "m1").unwrap().ordering_key.as_deref(), Some("acct-1"));
    let m1 = got.iter().find(|d| d.message_id == "m1").unwrap().clone();
    assert!(q.claim("c", 10, LONG).await.unwrap().is_empty(), "m2 waits while m1 is leased");
    assert_eq!(q.depth().await.unwrap(), Depth { pending: 4, dead: 0 });
    let listed: Vec<String> =
        q.list(DeliveryState::Pending, 10).await.unwrap().into_iter().map(|i| i.message_id).collect();
    assert_eq!(listed, keys(&["m1", "m2", "x1", "y1"]), "admin list is in publish order");

    // m1 fails and waits for its retry: m2 still waits behind it.
    q.complete(&m1, &Outcome::Failed { error: "busy".into(), retry_at_ms: Some(now_ms() + 1000) }).await.unwrap();
    assert!(q.claim("c", 10, LONG).await.unwrap().is_empty(), "m2 waits while m1 is pending");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m1 = q.claim("c", 10, LONG).await.unwrap();
    assert_eq!((ids(&m1), m1[0].attempt), (vec!["m1"], 2));
    q.complete(&m1[0], &Outcome::Ack).await.unwrap();
    let m2 = q.claim("c", 10, LONG).await.unwrap();
    assert_eq!(ids(&m2), vec!["m2"], "m2 is claimable once m1 is acknowledged");

    // A dead head stops blocking its key.
    q.publish(&msg("m3", Some("acct-1")), &c).await.unwrap();
    q.publish(&msg("m4", Some("acct-1")), &c).await.unwrap();
    assert!(q.claim("c", 10, LONG).await.unwrap().is_empty());
    q.complete(&m2[0], &Outcome::Failed { error: "poison".into(), retry_at_ms: None }).await.unwrap();
    let m3 = q.claim("c", 10, LONG).await.unwrap();
    assert_eq!(ids(&m3), vec!["m3"], "m3 is claimable once m2 is dead");

    // A replayed dead letter rejoins its key behind what is already waiting.
    q.replay("c", "m2").await.unwrap();
    assert!(q.claim("c", 10, LONG).await.unwrap().is_empty(), "m3 is still leased");
    q.complete(&m3[0], &Outcome::Ack).await.unwrap();
    let m4 = q.claim("c", 10, LONG).await.unwrap();
    assert_eq!(ids(&m4), vec!["m4"]);
    q.complete(&m4[0], &Outcome::Ack).await.unwrap();
    let replayed = q.claim("c", 10, LONG).await.unwrap();
    assert_eq!((ids(&replayed), replayed[0].attempt), (vec!["m2"], 1));
    q.complete(&replayed[0], &Outcome::Ack).await.unwrap();

    // An ordering key is per consumer.
    q.publish(&msg("k1", Some("acct-9")), &keys(&["c", "d"])).await.unwrap();
    q.publish(&msg("k2", Some("acct-9")), &keys(&["c", "d"])).await.unwrap();
    let on_c = q.claim("c", 10, LONG).await.unwrap();
    let on_d = q.claim("d", 10, LONG).await.unwrap();
    assert_eq!((ids(&on_c), ids(&on_d)), (vec!["k1"], vec!["k1"]));
    q.complete(&on_d[0], &Outcome::Ack).await.unwrap();
    assert_eq!(ids(&q.claim("d", 10, LONG).await.unwrap()), vec!["k2"]);
    assert!(q.claim("c", 10, LONG).await.unwrap().is_empty());
}

async fn check_queue_concurrent_claimers_deliver_each_message_once(backend: &Backend) {
    const MESSAGES: usize = 200;
    let hosts = backend.queue_hosts(4).await;
    // Half the messages carry one of four ordering keys, which must be processed in publish order.
    let mut published_order: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..MESSAGES {
        let id = format!("m{i:03}");
        let key = (i % 2 == 0).then(|| format!("acct-{}", i % 8));
        if let Some(k) = &key {
            published_order.entry(k.clone()).or_default().push(id.clone());
        }
        assert!(hosts[i % 4].publish(&msg(&id, key.as_deref()), &keys(&["c"])).await.unwrap());
    }

    let delivered: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let acked = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(4));
    let mut tasks = Vec::new();
    for q in &hosts {
        let q = q.clone();
        let (delivered, acked, barrier) = (delivered.clone(), acked.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            while acked.load(Ordering::SeqCst) < MESSAGES {
                let batch = q.claim("c", 7, LONG).await.unwrap();
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                delivered.lock().unwrap().extend(batch.iter().cloned());
                for d in &batch {
                    q.complete(d, &Outcome::Ack).await.unwrap();
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await
    .expect("claimers did not finish within 60 s");

    let delivered = std::mem::take(&mut *delivered.lock().unwrap());
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for d in delivered.iter() {
        *counts.entry(d.message_id.as_str()).or_default() += 1;
        assert_eq!(d.attempt, 1, "{} was delivered again although no lease expired", d.message_id);
    }
    assert_eq!(counts.len(), MESSAGES, "every message delivered");
    assert!(counts.values().all(|&n| n == 1), "every message delivered exactly once");
    for (key, order) in &published_order {
        let seen: Vec<String> = delivered
            .iter()
            .filter(|d| d.ordering_key.as_deref() == Some(key.as_str()))
            .map(|d| d.message_id.clone())
            .collect();
        assert_eq!(&seen, order, "ordering key {key} was delivered out of order");
    }
    assert_eq!(hosts[0].depth().await.unwrap(), Depth { pending: 0, dead: 0 });
}
