//! End-to-end: the durable queue through real components — delivery, retry with backoff, dead
//! letters and replay, ordering keys, idempotent publish, and delivery after a `kill -9` of the
//! host, on the embedded SQLite queue and on Redis. Run with
//! `cargo test -p bss-host --test e2e_queue` (needs redis-server).

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn publish(host: &Host, body: serde_json::Value) -> String {
    let a = post_json(&host.url("/queuetest/publish"), &[], &body);
    assert_eq!(a.status, 202, "{}", a.body);
    a.json()["id"].as_str().unwrap().to_string()
}

fn delivery(host: &Host, id: &str) -> serde_json::Value {
    let a = get(&host.url(&format!("/queuetest/deliveries/{id}")));
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

fn wait_succeeded(host: &Host, id: &str) -> u64 {
    eventually(WAIT, &format!("message {id} to be handled"), || {
        let d = delivery(host, id);
        (d["succeeded"] == true).then(|| d["attempts"].as_u64().unwrap())
    })
}

fn dead_letters(host: &Host) -> Vec<serde_json::Value> {
    get(&host.admin("/admin/queue/dead")).json().as_array().unwrap().clone()
}

fn check_queue(host: &Host) {
    // Delivered once.
    let id = publish(host, json!({"subject": "test.plain", "body": {"n": 1}}));
    assert_eq!(wait_succeeded(host, &id), 1);

    // Fails twice, then succeeds on the third attempt (max_attempts = 3).
    let id = publish(host, json!({"subject": "test.flaky", "body": {"failTimes": 2}}));
    assert_eq!(wait_succeeded(host, &id), 3);

    // A trap counts as a failure like an error.
    let id = publish(host, json!({"subject": "test.trap", "body": {"trap": true}}));
    eventually(WAIT, "the trapping message to be dead-lettered", || {
        dead_letters(host).into_iter().find(|d| d["messageId"] == id.as_str())
    });

    // Always fails: dead-lettered after 3 attempts, with the reason; replay runs it again.
    let id = publish(host, json!({"subject": "test.doomed", "body": {"alwaysFail": true}}));
    let dead = eventually(WAIT, "the doomed message to be dead-lettered", || {
        dead_letters(host).into_iter().find(|d| d["messageId"] == id.as_str())
    });
    assert_eq!(dead["consumer"], "queueconsumer");
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["lastError"].as_str().unwrap().contains("planned failure")
            || dead["lastError"].as_str().unwrap().contains("always"),
        "{dead}"
    );
    assert_eq!(delivery(host, &id)["attempts"], 3);
    let r = send("POST", &host.admin(&format!("/admin/queue/dead/queueconsumer/{id}/replay")), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(WAIT, "the replayed message to fail three more times", || {
        (delivery(host, &id)["attempts"] == 6).then_some(())
    });
    eventually(WAIT, "the replayed message to be dead again", || {
        dead_letters(host).into_iter().find(|d| d["messageId"] == id.as_str())
    });
    let r = send("POST", &host.admin("/admin/queue/dead/queueconsumer/no-such-id/replay"), &[], None);
    assert_eq!(r.status, 404);

    // Ordering key: the first fails once, yet the others wait for it.
    let ids: Vec<String> = (0..4)
        .map(|i| {
            let body = if i == 0 { json!({"failTimes": 1}) } else { json!({"i": i}) };
            publish(host, json!({"subject": "test.ordered", "body": body, "orderingKey": "acct-42"}))
        })
        .collect();
    let order = eventually(WAIT, "all ordered messages", || {
        let v = get(&host.url("/queuetest/order/acct-42")).json();
        let list: Vec<String> = v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
        (list.len() == 4).then_some(list)
    });
    assert_eq!(order, ids);

    // Publishing an id twice stores it once.
    publish(host, json!({"subject": "test.once", "body": {}, "id": "fixed-id-1"}));
    publish(host, json!({"subject": "test.once", "body": {}, "id": "fixed-id-1"}));
    assert_eq!(wait_succeeded(host, "fixed-id-1"), 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(delivery(host, "fixed-id-1")["attempts"], 1);

    // Bad subjects are refused at publish time.
    let a = post_json(&host.url("/queuetest/publish"), &[], &json!({"subject": "bad subject", "body": {}}));
    assert_eq!(a.status, 400, "{}", a.body);
}

#[test]
fn sqlite_queue_delivers_retries_dead_letters_and_orders() {
    let (host, _dir) = Host::start(HostOptions::default());
    check_queue(&host);
}

#[test]
fn redis_queue_delivers_retries_dead_letters_and_orders() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rc = redis.runtime_config(dir.path());
    let (host, _data) = Host::start(HostOptions::default().arg("--runtime-config").arg(rc.to_str().unwrap()));
    check_queue(&host);
}

/// Publish while the consumer is busy, kill the host with SIGKILL, start it again on the same
/// data: every message is handled, none lost.
fn survives_kill_9(opts: HostOptions, data: &std::path::Path) {
    let opts = opts.arg("--handler-timeout-ms").arg("2000");
    let host = Host::start_in(data, opts.clone());
    let ids: Vec<String> =
        (0..30).map(|i| publish(&host, json!({"subject": "test.crash", "body": {"sleepMs": 200, "i": i}}))).collect();
    host.kill9();
    let host = Host::start_in(data, opts);
    for id in &ids {
        assert!(wait_succeeded(&host, id) >= 1);
    }
}

#[test]
fn sqlite_queue_delivers_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    survives_kill_9(HostOptions::default(), dir.path());
}

#[test]
fn redis_queue_delivers_after_kill_9() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rc = redis.runtime_config(dir.path());
    let data = tempfile::tempdir().unwrap();
    survives_kill_9(HostOptions::default().arg("--runtime-config").arg(rc.to_str().unwrap()), data.path());
}

#[test]
fn sigterm_lets_deliveries_in_progress_finish() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_in(dir.path(), HostOptions::default());
    let id = publish(&host, json!({"subject": "test.slow", "body": {"sleepMs": 1500}}));
    // The consumer counts the attempt when it starts: wait until it is running, then stop.
    eventually(WAIT, "the slow delivery to start", || (delivery(&host, &id)["attempts"] == 1).then_some(()));
    let status = host.terminate();
    assert!(status.success(), "{status:?}");
    // It finished during the drain: after a restart it is done and was never handed out again.
    let host = Host::start_in(dir.path(), HostOptions::default());
    let d = delivery(&host, &id);
    assert_eq!(d["succeeded"], true, "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    assert!(get(&host.admin("/admin/queue/pending")).json().as_array().unwrap().is_empty());
}
