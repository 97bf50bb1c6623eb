//! End-to-end: the key-value store through real components over real HTTP, on the embedded
//! SQLite store and on a real Redis — plain operations, listing, batches, and compare-and-swap
//! under real concurrency. Run with `cargo test -p bss-host --test e2e_kv` (needs redis-server).

mod support;

use std::process::Command;
use std::sync::Arc;
use support::*;

/// Run `n` requests at once (each on its own connection) and collect the answers.
fn race(n: usize, f: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Vec<Answer> {
    let f = Arc::new(f);
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

/// Percent-encodes a query value (host-issued cursors carry a control character).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn check_store(host: &Host) {
    // Plain operations.
    let url = |p: &str| host.url(p);
    assert_eq!(send("PUT", &url("/kvtest/kv/alpha"), &[], Some(b"one")).status, 200);
    let a = get(&url("/kvtest/kv/alpha"));
    assert_eq!((a.status, a.body.as_str()), (200, "one"));
    assert_eq!(get(&url("/kvtest/kv/missing")).status, 404);
    assert_eq!(send("DELETE", &url("/kvtest/kv/alpha"), &[], None).status, 200);
    assert_eq!(get(&url("/kvtest/kv/alpha")).status, 404);

    // Listing by prefix, page by page.
    for i in 0..5 {
        assert_eq!(send("PUT", &url(&format!("/kvtest/kv/list-{i}")), &[], Some(b"x")).status, 200);
    }
    let page = get(&url("/kvtest/keys?prefix=list-")).json();
    let keys: Vec<&str> = page["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["list-0", "list-1", "list-2", "list-3", "list-4"]);

    // A long listing: the first page of a seek is small (a prefix usually holds few keys), the
    // pages after it long; together every key once, in order.
    for i in 0..150 {
        assert_eq!(send("PUT", &url(&format!("/kvtest/kv/page-{i:03}")), &[], Some(b"x")).status, 200);
    }
    let (mut listed, mut pages, mut cursor) = (Vec::<String>::new(), Vec::new(), String::new());
    loop {
        let page = get(&url(&format!("/kvtest/keys?prefix=page-&cursor={}", encode(&cursor)))).json();
        let keys = page["keys"].as_array().unwrap();
        pages.push(keys.len());
        listed.extend(keys.iter().map(|k| k.as_str().unwrap().to_string()));
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(listed, (0..150).map(|i| format!("page-{i:03}")).collect::<Vec<_>>());
    assert_eq!(pages, [64, 86], "a seek page, then a continuation");
    let all = get(&url("/kvtest/keys?prefix=page-&all=1")).json();
    assert_eq!(all["keys"].as_array().unwrap().len(), 150);

    // The Spin key-value interface sees the same store.
    assert_eq!(send("PUT", &url("/kvtest/spin/shared"), &[], Some(b"via-spin")).status, 200);
    let a = get(&url("/kvtest/kv/shared"));
    assert_eq!((a.status, a.body.as_str()), (200, "via-spin"));

    // 50 racing creates of one absent key: exactly one wins.
    let base = host.url("");
    let answers = race(50, move |i| {
        send("POST", &format!("{base}/kvtest/create/the-one"), &[], Some(format!("writer-{i}").as_bytes()))
    });
    assert_eq!(count(&answers, 201), 1, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(count(&answers, 409), 49);
    let winner = get(&url("/kvtest/kv/the-one")).body;
    assert!(winner.starts_with("writer-"), "{winner}");

    // 20 racing swaps from one version: exactly one wins, and its value is the one stored.
    assert_eq!(send("PUT", &url("/kvtest/kv/contended"), &[], Some(b"v0")).status, 200);
    let base = host.url("");
    let answers = race(20, move |i| {
        send("POST", &format!("{base}/kvtest/swap/contended?expect=v0"), &[], Some(format!("v1-{i}").as_bytes()))
    });
    assert_eq!(count(&answers, 200), 1, "{:?}", answers.iter().map(|a| (a.status, a.body.clone())).collect::<Vec<_>>());
    let stored = get(&url("/kvtest/kv/contended")).body;
    let winner = answers.iter().position(|a| a.status == 200).unwrap();
    assert_eq!(stored, format!("v1-{winner}"));

    // 16 clients x 25 compare-and-swap increments: none lost.
    let base = host.url("");
    let answers = race(16, move |_| {
        let agent = agent();
        let mut last = None;
        for _ in 0..25 {
            let a = send_with(&agent, "POST", &format!("{base}/kvtest/cas-incr/counter"), &[], None);
            assert_eq!(a.status, 200, "{}", a.body);
            last = Some(a);
        }
        last.unwrap()
    });
    assert_eq!(answers.len(), 16);
    assert_eq!(get(&url("/kvtest/kv/counter")).body, "400");

    // Atomic increments under the same load.
    let base = host.url("");
    race(16, move |_| {
        let agent = agent();
        for _ in 0..25 {
            assert_eq!(send_with(&agent, "POST", &format!("{base}/kvtest/incr/atomic?by=2"), &[], None).status, 200);
        }
        Answer { status: 200, body: String::new(), headers: vec![] }
    });
    assert_eq!(get(&url("/kvtest/kv/atomic")).body, "800");
}

#[test]
fn sqlite_store_operations_and_cas_races() {
    let (host, _dir) = Host::start(HostOptions::default());
    check_store(&host);
}

#[test]
fn redis_store_operations_and_cas_races() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rc = redis.runtime_config(dir.path());
    let (host, _data) = Host::start(HostOptions::default().arg("--runtime-config").arg(rc.to_str().unwrap()));
    check_store(&host);
}

#[test]
fn two_hosts_on_one_redis_share_state_and_cas_holds_across_them() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rc = redis.runtime_config(dir.path());
    let opts = HostOptions::default().arg("--runtime-config").arg(rc.to_str().unwrap());
    let (a, _da) = Host::start(opts.clone());
    let (b, _db) = Host::start(opts);
    assert_eq!(send("PUT", &a.url("/kvtest/kv/shared"), &[], Some(b"from-a")).status, 200);
    assert_eq!(get(&b.url("/kvtest/kv/shared")).body, "from-a");
    let urls = [a.url(""), b.url("")];
    let answers = race(40, move |i| send("POST", &format!("{}/kvtest/create/across", urls[i % 2]), &[], Some(b"x")));
    assert_eq!(count(&answers, 201), 1);
    let urls = [a.url(""), b.url("")];
    race(8, move |i| {
        let agent = agent();
        for _ in 0..25 {
            assert_eq!(
                send_with(&agent, "POST", &format!("{}/kvtest/cas-incr/across-counter", urls[i % 2]), &[], None).status,
                200
            );
        }
        Answer { status: 200, body: String::new(), headers: vec![] }
    });
    assert_eq!(get(&a.url("/kvtest/kv/across-counter")).body, "200");
}

#[test]
fn sqlite_data_survives_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_in(dir.path(), HostOptions::default());
    for i in 0..50 {
        assert_eq!(
            send("PUT", &host.url(&format!("/kvtest/kv/durable-{i}")), &[], Some(format!("{i}").as_bytes())).status,
            200
        );
    }
    host.kill9();
    let host = Host::start_in(dir.path(), HostOptions::default());
    for i in 0..50 {
        assert_eq!(get(&host.url(&format!("/kvtest/kv/durable-{i}"))).body, format!("{i}"));
    }
    // A second host on the same data folder is refused while the first runs.
    let out = run_to_exit(up_command(&test_manifest(), dir.path()).env("BSS_VAR_ADMIN_KEY", ADMIN_KEY));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another bss-host"));
}

#[test]
fn a_store_of_the_old_layout_is_rewritten_by_upgrade_store_and_keeps_every_key() {
    let dir = tempfile::tempdir().unwrap();
    // A data folder whose database was created before 2026-11-28 (key-value rows clustered).
    rusqlite::Connection::open(dir.path().join("bss.sqlite"))
        .unwrap()
        .execute_batch(bss_host::db::KV_TABLE_CLUSTERED)
        .unwrap();
    let host = Host::start_in(dir.path(), HostOptions::default());
    // Larger than a page: it spills to overflow pages in the old layout.
    let big = "b".repeat(9_000);
    for i in 0..40 {
        assert_eq!(
            send("PUT", &host.url(&format!("/kvtest/kv/old-{i}")), &[], Some(format!("{i}").as_bytes())).status,
            200
        );
    }
    assert_eq!(send("PUT", &host.url("/kvtest/kv/old-big"), &[], Some(big.as_bytes())).status, 200);
    for _ in 0..5 {
        assert_eq!(send("POST", &host.url("/kvtest/cas-incr/old-counter"), &[], None).status, 200);
    }
    assert!(host.log_text().contains("bss-host upgrade-store"), "the host says how to upgrade:\n{}", host.log_text());
    let upgrade =
        || run_to_exit(Command::new(env!("CARGO_BIN_EXE_bss-host")).arg("upgrade-store").arg("--data").arg(dir.path()));
    // Never under a running host.
    let refused = upgrade();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use by another bss-host"));
    assert!(host.terminate().success());

    let done = upgrade();
    let said = String::from_utf8_lossy(&done.stdout).to_string();
    assert!(done.status.success(), "{said}\n{}", String::from_utf8_lossy(&done.stderr));
    assert!(said.contains("rewritten with the current layout"), "{said}");
    let host = Host::start_in(dir.path(), HostOptions::default());
    for i in 0..40 {
        assert_eq!(get(&host.url(&format!("/kvtest/kv/old-{i}"))).body, format!("{i}"));
    }
    assert_eq!(get(&host.url("/kvtest/kv/old-big")).body, big);
    assert_eq!(get(&host.url("/kvtest/kv/old-counter")).body, "5");
    // Versions and compare-and-swap go on where they were.
    assert_eq!(send("POST", &host.url("/kvtest/cas-incr/old-counter"), &[], None).status, 200);
    assert_eq!(get(&host.url("/kvtest/kv/old-counter")).body, "6");
    assert_eq!(send("PUT", &host.url("/kvtest/kv/new"), &[], Some(b"after")).status, 200);
    assert_eq!(get(&host.url("/kvtest/kv/new")).body, "after");
    assert!(!host.log_text().contains("upgrade-store"), "{}", host.log_text());
    assert!(host.terminate().success());
    let again = upgrade();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
}
