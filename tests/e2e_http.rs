//! End-to-end: the HTTP trigger of bss-host over real HTTP — routing, the host's limits (413,
//! 503, 504), traps, variables, outbound HTTP allow-list, a WASIp3 component, metrics and
//! graceful shutdown. Run with `cargo test -p bss-host --test e2e_http`.

mod support;

use std::io::{Read as _, Write as _};
use std::time::Duration;
use support::*;

#[test]
fn routes_to_components_and_answers_404_for_unknown_paths() {
    let (host, _dir) = Host::start(HostOptions::default());
    let a = get(&host.url("/kvtest/roundtrip/k1"));
    assert_eq!(a.status, 200, "{}", a.body);
    let a = get(&host.url("/no/such/route"));
    assert_eq!(a.status, 404);
    let e = a.json();
    assert_eq!(e["@type"], "Error");
    assert_eq!(e["status"], "404");
    assert!(e["message"].as_str().unwrap().contains("/no/such/route"));
    // `/kvtest` itself falls under the `/kvtest/...` wildcard; `/kvtestx` does not.
    assert_eq!(get(&host.url("/kvtestx")).status, 404);
}

/// A component's router (`bss_kit::http::Router`, which keeps only the routes that can match
/// the request) still answers as spin-sdk's: a static route beside wildcard siblings, a wildcard
/// taking the rest of the path, a path's `any` route (405) or the catch-all for other methods,
/// `HEAD` by the `GET` route (spin-sdk's router answered it with the catch-all), and the
/// component's own 404 for what no route serves.
#[test]
fn a_components_router_picks_the_route_the_method_and_the_fallback() {
    let (host, _dir) = Host::start(HostOptions::default());
    assert_eq!(send("PUT", &host.url("/kvtest/kv/a/b"), &[], Some(b"v")).status, 200);
    let keys = get(&host.url("/kvtest/keys"));
    assert_eq!(keys.status, 200, "{}", keys.body);
    assert!(keys.body.contains("a/b"), "{}", keys.body);
    let value = get(&host.url("/kvtest/kv/a/b"));
    assert_eq!((value.status, value.body.as_str()), (200, "v"));
    let missing = get(&host.url("/kvtest/kv/a/c"));
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("no key"), "the wildcard route answers, not the fallback: {}", missing.body);
    // A method no route of the path has: a component's `any` route for the path answers it (405
    // in the notes component), else its catch-all (`/*`, kvtest's 404) — spin-sdk's order.
    let patch = send("PATCH", &host.url("/kvtest/kv/a/b"), &[], Some(b"w"));
    assert_eq!(patch.status, 404);
    assert!(patch.body.contains("no route for PATCH"), "{}", patch.body);
    assert_eq!(send("PUT", &host.url("/tmf-api/notes/v4/note/n1"), &[], Some(b"{}")).status, 405);
    let head = send("HEAD", &host.url("/kvtest/kv/a/b"), &[], None);
    assert_eq!((head.status, head.body.as_str()), (200, ""), "HEAD is served by the GET route, without the body");
    assert_eq!(send("HEAD", &host.url("/kvtest/kv/a/c"), &[], None).status, 404);
    let none = get(&host.url("/kvtest/nothing/here"));
    assert_eq!(none.status, 404);
    assert!(
        none.json()["message"].as_str().unwrap().contains("no route for GET /kvtest/nothing/here"),
        "{}",
        none.body
    );
}

#[test]
fn a_body_over_the_limit_is_refused_with_413() {
    let (host, _dir) = Host::start(HostOptions::default().arg("--body-max-bytes").arg("1024"));
    let small = send("POST", &host.url("/misbehave/echo"), &[], Some(&[b'x'; 1000]));
    assert_eq!(small.status, 200, "{}", small.body);
    let big = send("POST", &host.url("/misbehave/echo"), &[], Some(&[b'x'; 4096]));
    assert_eq!(big.status, 413);
    assert!(big.json()["message"].as_str().unwrap().contains("1024"));

    // Without Content-Length (chunked), the limit still holds while streaming.
    let addr = host.url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let chunk = "x".repeat(900);
    let req = format!(
        "POST /misbehave/echo HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{0:x}\r\n{1}\r\n{0:x}\r\n{1}\r\n0\r\n\r\n",
        chunk.len(),
        chunk
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
}

#[test]
fn a_runaway_component_is_stopped_with_504_and_the_host_keeps_serving() {
    let (host, _dir) = Host::start(HostOptions::default().arg("--request-timeout-ms").arg("500"));
    let t = std::time::Instant::now();
    let a = get(&host.url("/misbehave/spin"));
    assert_eq!(a.status, 504, "{}", a.body);
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_eq!(a.json()["code"], "TIMEOUT");
    // The spinning guest must not have taken a worker thread with it.
    assert_eq!(get(&host.url("/kvtest/roundtrip/after")).status, 200);
}

#[test]
fn past_the_in_flight_limit_requests_get_503_with_retry_after() {
    let (host, _dir) = Host::start(HostOptions::default().arg("--in-flight-max").arg("2"));
    let url = host.url("/misbehave/sleep?ms=1500");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || get(&url).status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let a = get(&host.url("/kvtest/roundtrip/x"));
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.header("retry-after"), Some("1"));
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(get(&host.url("/kvtest/roundtrip/x")).status, 200);
}

#[test]
fn a_trapping_component_answers_500_without_internals() {
    let (host, _dir) = Host::start(HostOptions::default());
    let a = get(&host.url("/misbehave/panic"));
    assert_eq!(a.status, 500);
    let e = a.json();
    assert_eq!(e["message"], "internal error");
    assert!(!a.body.contains("panicked") && !a.body.contains("wasm"), "{}", a.body);
    assert_eq!(get(&host.url("/kvtest/roundtrip/x")).status, 200);
}

/// An instance that answered cleanly takes the next request, up to `--instance-reuse-max`
/// requests; one that trapped, ran out of time, grew its memory past what the pool resets in
/// place or returned without setting its response is dropped, and the next request gets a fresh
/// one. (misbehave's `/misbehave/instance` counts the requests its instance has begun.)
#[test]
fn an_instance_is_reused_only_after_a_clean_answer() {
    let (host, _dir) =
        Host::start(HostOptions::default().arg("--instance-reuse-max").arg("3").arg("--request-timeout-ms").arg("500"));
    let seen = || {
        let a = get(&host.url("/misbehave/instance"));
        assert_eq!(a.status, 200, "{}", a.body);
        a.body.trim_start_matches("request ").trim_end_matches(" of this instance").parse::<u32>().unwrap()
    };
    assert_eq!([seen(), seen(), seen()], [1, 2, 3]);
    assert_eq!(seen(), 1, "an instance answers at most --instance-reuse-max requests");

    assert_eq!(get(&host.url("/misbehave/panic")).status, 500);
    assert_eq!(seen(), 1, "an instance that trapped is not reused");

    assert_eq!(get(&host.url("/misbehave/alloc?mb=32")).status, 200);
    assert_eq!(seen(), 1, "an instance whose memory grew past 16 MiB is not reused");

    assert_eq!(get(&host.url("/misbehave/spin")).status, 504);
    assert_eq!(seen(), 1, "an instance stopped at its time limit is not reused");

    // A guest that keeps its response outparam: the host answers 500 at once, and drops the
    // instance. (Kept alive, the outparam would hold the response open until the host's own
    // deadline, 1.5 s here, and the answer would be 504.)
    let t = std::time::Instant::now();
    let a = get(&host.url("/misbehave/forget-response"));
    assert_eq!((a.status, a.json()["code"].as_str()), (500, Some("INTERNAL")), "{}", a.body);
    assert!(t.elapsed() < Duration::from_millis(1400), "took {:?}", t.elapsed());
    assert_eq!(seen(), 1, "an instance that left a resource behind is not reused");
    assert_eq!(seen(), 2);
}

/// A reused instance gets the whole time limit again for each request: two 400 ms requests on
/// one instance under a 700 ms limit both answer, though together they outlast it.
#[test]
fn a_reused_instance_gets_a_fresh_time_limit_per_request() {
    let (host, _dir) = Host::start(
        HostOptions::default().arg("--instance-reuse-max").arg("10").arg("--request-timeout-ms").arg("700"),
    );
    for _ in 0..2 {
        let a = get(&host.url("/misbehave/sleep?ms=400"));
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(get(&host.url("/misbehave/instance")).body, "request 3 of this instance");
}

/// By default every request gets a fresh instance, as in Spin.
#[test]
fn by_default_every_request_gets_a_fresh_instance() {
    let (host, _dir) = Host::start(HostOptions::default());
    for _ in 0..3 {
        assert_eq!(get(&host.url("/misbehave/instance")).body, "request 1 of this instance");
    }
}

#[test]
fn variables_come_from_the_manifest_and_the_environment() {
    let (host, _dir) = Host::start(HostOptions::default().env("BSS_VAR_GREETING", "hi from env"));
    let a = get(&host.url("/misbehave/var/greeting"));
    assert_eq!((a.status, a.body.as_str()), (200, "hi from env"));
    let a = get(&host.url("/misbehave/var/undeclared"));
    assert_eq!(a.status, 404, "{}", a.body);

    let (host, _dir) = Host::start(HostOptions::default());
    let a = get(&host.url("/misbehave/var/greeting"));
    assert_eq!((a.status, a.body.as_str()), (200, "hello from variables"));
}

#[test]
fn a_required_variable_without_value_stops_the_host_with_its_name() {
    build_components();
    let dir = tempfile::tempdir().unwrap();
    let out = run_to_exit(up_command(&test_manifest(), dir.path()).env_remove("BSS_VAR_ADMIN_KEY"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BSS_VAR_ADMIN_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A one-shot HTTP server on loopback answering `body` to whatever comes.
fn upstream(body: &'static str) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = s.write_all(resp.as_bytes());
        }
    });
    (port, t)
}

#[test]
fn outbound_http_only_reaches_allowed_hosts() {
    let (host, _dir) = Host::start(HostOptions::default());
    // `http://127.0.0.1:*` is named exactly in the manifest: allowed although it is loopback.
    let (port, t) = upstream("pong");
    let a = get(&host.url(&format!("/misbehave/fetch?url=http://127.0.0.1:{port}/ping")));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("pong"), "{}", a.body);
    t.join().unwrap();
    // `localhost` is not in the list: refused before any connection is made.
    let (port, _t) = upstream("never");
    let a = get(&host.url(&format!("/misbehave/fetch?url=http://localhost:{port}/ping")));
    assert_eq!(a.status, 502, "{}", a.body);
    assert!(a.body.to_lowercase().contains("denied"), "{}", a.body);
    // Neither is any other host.
    let a = get(&host.url("/misbehave/fetch?url=https://api.partner.test/x"));
    assert_eq!(a.status, 502, "{}", a.body);
}

#[test]
fn serves_a_wasip3_component_next_to_wasip2_ones() {
    let (host, _dir) = Host::start(HostOptions::default());
    let first = get(&host.url("/p3/hello"));
    assert_eq!(first.status, 200, "{}", first.body);
    let second = get(&host.url("/p3/hello"));
    assert_eq!(second.status, 200);
    assert_ne!(first.body, second.body, "the key-value counter should have moved");
}

#[test]
fn metrics_count_requests_on_the_admin_port() {
    let (host, _dir) = Host::start(HostOptions::default());
    for _ in 0..3 {
        assert_eq!(get(&host.url("/kvtest/roundtrip/m")).status, 200);
    }
    let m = get(&host.admin("/metrics"));
    assert_eq!(m.status, 200);
    let line = m
        .body
        .lines()
        .find(|l| {
            l.starts_with("bss_http_requests_total{")
                && l.contains("component=\"kvtest\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("{}", m.body));
    assert!(line.ends_with(" 3"), "{line}");
    assert!(m.body.contains("bss_instantiate_duration_seconds"));
    assert!(m.body.contains("bss_queue_pending"));
    // Each round-trip reads back the value it just wrote: the first read goes to the store and
    // caches the key (writes only refresh cached keys), the next two are answered by the cache.
    let series = |name: &str| metric_value(&m.body, name).unwrap_or_else(|| panic!("no {name} in {}", m.body));
    let hits = series("bss_kv_cache_lookups_total{store=\"default\",outcome=\"hit\"}");
    assert!(hits >= 2, "{hits} cache hits");
    // What the store's write-back buffer holds: a number, at most its 256 MiB limit.
    let buffered = series("bss_kv_write_buffer_bytes{store=\"default\"}");
    assert!(buffered <= 256 << 20, "{buffered}");
    // The request log has one line per request with component, status and latency, written out
    // within the log's flush interval.
    eventually(Duration::from_secs(2), "the request's log line", || {
        host.log_text()
            .lines()
            .any(|l| l.contains("component=kvtest") && l.contains("status=200") && l.contains("latency_us="))
            .then_some(())
    });
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let (host, _dir) = Host::start(HostOptions::default());
    let url = host.url("/misbehave/sleep?ms=1500");
    let slow = std::thread::spawn(move || get(&url).status);
    std::thread::sleep(Duration::from_millis(400));
    let status = host.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(slow.join().unwrap(), 200);
}

#[test]
fn a_manifest_error_names_the_file_the_component_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"nope\"\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"\n",
    )
    .unwrap();
    let out = run_to_exit(&mut up_command(&manifest, &dir.path().join("data")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("spin.toml") && err.contains("(c) route") && err.contains("nope"), "{err}");
}
