//! Test harness shared by the end-to-end tests: builds the test components once, starts the real
//! `bss-host` binary on free ports with a fresh data folder, talks to it over real HTTP, and
//! starts a real `redis-server` when a test needs one. Nothing here is mocked.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

pub fn test_manifest() -> PathBuf {
    workspace_root().join("tests/spin.toml")
}

/// Build every component of the test manifest for wasm32-wasip2, once per test binary.
pub fn build_components() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_bss-host"))
            .args(["build", "--manifest"])
            .arg(test_manifest())
            .output()
            .expect("running bss-host build");
        assert!(
            out.status.success(),
            "building the test components failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Options of one host process.
#[derive(Clone, Debug)]
pub struct HostOptions {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub manifest: PathBuf,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions { args: Vec::new(), env: Vec::new(), manifest: test_manifest() }
    }
}

impl HostOptions {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A running `bss-host` process. Killed (SIGKILL) on drop.
pub struct Host {
    pub child: Child,
    pub url: String,
    pub admin_url: String,
    pub data: PathBuf,
    pub log: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Host {
    /// Start a host on a fresh data folder.
    pub fn start(opts: HostOptions) -> (Host, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = Host::start_in(dir.path(), opts);
        (host, dir)
    }

    /// Start a host on `data` (reused across restarts).
    pub fn start_in(data: &Path, opts: HostOptions) -> Host {
        build_components();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bss-host"));
        cmd.arg("up")
            .arg("--manifest")
            .arg(&opts.manifest)
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--no-build"])
            // Compiled components are shared by every test host: compiling is the slow part.
            .arg("--cache-dir")
            .arg(workspace_root().join("target/bss-test-cache"))
            .args(&opts.args)
            .env("BSS_VAR_ADMIN_KEY", ADMIN_KEY)
            .env("BSS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning bss-host");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut url = None;
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("bss-host: serving ") {
                    url = rest.split(" on ").nth(1).and_then(|s| s.split_whitespace().next()).map(str::to_string);
                }
                if let Some(rest) = line.trim().strip_prefix("admin: ") {
                    let admin = rest.split("/metrics").next().unwrap_or_default().to_string();
                    let _ = tx.send((url.clone().unwrap_or_default(), admin));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok((url, admin_url)) => Host { child, url, admin_url, data: data.to_path_buf(), log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bss-host did not start:\n{}", log.lock().unwrap().join("\n"));
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.admin_url)
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the process to exit on its own.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "bss-host did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bss-host up` on `manifest` and `data`, without build, admin port or fixed port: for tests of
/// start-up errors, run with [`run_to_exit`].
pub fn up_command(manifest: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bss-host"));
    cmd.args(["up", "--no-build", "--no-admin", "--listen", "127.0.0.1:0", "--manifest"])
        .arg(manifest)
        .arg("--data")
        .arg(data);
    cmd
}

/// Run a `bss-host` command that is expected to stop by itself (a start-up error); kill it and
/// fail the test if it is still running after 60 s, instead of hanging the suite.
pub fn run_to_exit(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning bss-host");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bss-host kept running; it was expected to stop with an error");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// An HTTP answer: status, headers we care about, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
}

/// Send a request; any status is an answer (ureq's error for 4xx/5xx is unwrapped).
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Answer {
    send_with(&agent(), method, url, headers, body)
}

pub fn send_with(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Answer {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let headers =
        resp.headers_names().into_iter().filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string()))).collect();
    let body = resp.into_string().unwrap_or_default();
    Answer { status, body, headers }
}

pub fn get(url: &str) -> Answer {
    send("GET", url, &[], None)
}

/// GET `url`'s body as bytes (a stored value in a binary form is not text): status and body.
pub fn get_bytes(url: &str) -> (u16, Vec<u8>) {
    let resp = match agent().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (status, body)
}

pub fn post_json(url: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Answer {
    let mut h = headers.to_vec();
    h.push(("Content-Type", "application/json"));
    send("POST", url, &h, Some(body.to_string().as_bytes()))
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Create a tenant through the admin API; returns (tenant id, API key).
pub fn create_tenant(host: &Host, name: &str) -> (String, String) {
    let bearer = format!("Bearer {ADMIN_KEY}");
    let a =
        post_json(&host.url("/admin/v1/tenants"), &[("Authorization", &bearer)], &serde_json::json!({"name": name}));
    assert_eq!(a.status, 201, "creating tenant: {}", a.body);
    let v = a.json();
    (v["id"].as_str().unwrap().to_string(), v["apiKey"].as_str().unwrap().to_string())
}

/// A free TCP port on loopback (for servers that cannot report the port they bound).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real `redis-server` on a free port, killed on drop.
pub struct Redis {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Start a server, failing with a clear message when `redis-server` is not installed. A port
    /// taken between choosing it and the server binding it is retried on another port.
    pub fn start() -> Redis {
        let mut last_failure = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir for redis-server");
            let port = free_port();
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    panic!("redis-server is needed by this test: apt-get install redis-server (.ci/run installs it)")
                }
                Err(e) => panic!("cannot start redis-server: {e}"),
            };
            let mut redis = Redis { child, url: format!("redis://127.0.0.1:{port}"), _dir: dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            last_failure = format!("redis-server on port {port} did not answer PING within 10 s");
            while Instant::now() < deadline {
                if let Ok(Some(status)) = redis.child.try_wait() {
                    last_failure = format!("redis-server on port {port} exited with {status}");
                    break;
                }
                if redis_pings(port) {
                    return redis;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start redis-server: {last_failure}");
    }

    /// A runtime config putting the default store and the queue on this server.
    pub fn runtime_config(&self, dir: &Path) -> PathBuf {
        let p = dir.join("runtime-config.toml");
        std::fs::write(
            &p,
            format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{0}\"\n\n[queue]\ntype = \"redis\"\nurl = \"{0}\"\n", self.url),
        )
        .unwrap();
        p
    }
}

/// Whether a Redis server answers PING on `port` (a bare TCP accept could be another process).
fn redis_pings(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tenant's client of one host: every call carries the tenant's API key; bodies are JSON
/// (`PATCH` as `application/merge-patch+json`). A path starting with `/` is absolute, any other
/// is relative to the client's base path.
#[derive(Clone, Debug)]
pub struct Client {
    root: String,
    base: String,
    pub auth: String,
}

impl Client {
    /// A new tenant on `host` and its client; relative paths go under `base`.
    pub fn new_tenant(host: &Host, name: &str, base: &str) -> Client {
        let (_, key) = create_tenant(host, name);
        Client { root: host.url(""), base: base.trim_end_matches('/').to_string(), auth: format!("Bearer {key}") }
    }

    /// The same tenant on another host (e.g. after a restart on another port).
    pub fn on(&self, host: &Host) -> Client {
        Client { root: host.url(""), ..self.clone() }
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.root)
        } else {
            format!("{}{}/{path}", self.root, self.base)
        }
    }

    /// Any call.
    pub fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Answer {
        let text = body.map(serde_json::Value::to_string);
        let content_type = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        let mut headers = vec![("Authorization", self.auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", content_type));
        }
        send(method, &self.url(path), &headers, text.as_deref().map(str::as_bytes))
    }

    pub fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: impl std::borrow::Borrow<serde_json::Value>) -> Answer {
        self.call("POST", path, Some(body.borrow()))
    }

    pub fn patch(&self, path: &str, body: impl std::borrow::Borrow<serde_json::Value>) -> Answer {
        self.call("PATCH", path, Some(body.borrow()))
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.call("DELETE", path, None)
    }

    /// POSTs and returns the created document; panics unless 201.
    #[track_caller]
    pub fn created(&self, path: &str, body: impl std::borrow::Borrow<serde_json::Value>) -> serde_json::Value {
        let a = self.post(path, body);
        assert_eq!(a.status, 201, "POST {path}: {}", a.body);
        a.json()
    }

    /// POSTs and returns the created document's id; panics unless 201.
    #[track_caller]
    pub fn create(&self, path: &str, body: impl std::borrow::Borrow<serde_json::Value>) -> String {
        self.created(path, body)["id"].as_str().expect("created document has an id").to_string()
    }

    /// `X-Total-Count` of a list (any query is kept; `limit=0` is added).
    #[track_caller]
    pub fn count(&self, path: &str) -> usize {
        let sep = if path.contains('?') { '&' } else { '?' };
        let a = self.get(&format!("{path}{sep}limit=0"));
        assert_eq!(a.status, 200, "{}", a.body);
        a.header("x-total-count").expect("X-Total-Count").parse().expect("a count")
    }

    /// Imports `infra/samples/catalog.json` through the catalog API.
    #[track_caller]
    pub fn import_sample_catalog(&self) {
        let sample = std::fs::read(workspace_root().join("infra/samples/catalog.json")).expect("sample catalog");
        let sample: serde_json::Value = serde_json::from_slice(&sample).expect("sample catalog is JSON");
        let a = self.post("/tmf-api/productCatalogManagement/v4/importCatalog", &sample);
        assert_eq!(a.status, 200, "importing the sample catalog: {}", a.body);
    }

    /// Corrects the sample Mobile M tariff's "International zone 1" rate to `per_minute` EUR
    /// (a tariff corrected in place, as before a rerating run).
    #[track_caller]
    pub fn set_international_rate(&self, per_minute: f64) {
        let path = "/tmf-api/productCatalogManagement/v4/tariff/tariff-mobile-m";
        let mut groups = self.get(path).json()["destinationGroups"].clone();
        for g in groups.as_array_mut().expect("destination groups") {
            if g["name"] == "International zone 1" {
                g["rate"]["value"] = serde_json::json!(per_minute);
            }
        }
        let p = self.patch(path, serde_json::json!({"destinationGroups": groups}));
        assert_eq!(p.status, 200, "{}", p.body);
    }
}

/// Asserts a TMF error body with `status` whose message contains every needle.
#[track_caller]
pub fn assert_error(a: &Answer, status: u16, needles: &[&str]) {
    assert_eq!(a.status, status, "expected {status}: {}", a.body);
    let body = a.json();
    assert_eq!(body["@type"], "Error", "{}", a.body);
    assert_eq!(body["status"], status.to_string(), "{}", a.body);
    let message = body["message"].as_str().unwrap_or_default();
    for n in needles {
        assert!(message.contains(n), "message {message:?} lacks {n:?}");
    }
}

/// The value of one series (`name{labels}`, as the host writes it) in a `/metrics` text, if
/// the text has it.
pub fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|n| n.parse().unwrap_or_else(|e| panic!("{series}: {n:?} is not a count: {e}")))
}

/// Messages a component published so far (`bss_queue_published_total{component=...}` on the
/// host's admin port).
/// Runs an operator's run command (`bss-host bill-run` or `dunning-run`, with `args` after it)
/// against `host` as `client`'s tenant, following the run every 0.2 s for at most 60 s; asserts
/// that it succeeded, and answers what it printed (its progress bar and its end).
pub fn run_command(host: &Host, client: &Client, command: &str, args: &[&str]) -> String {
    let key = client.auth.trim_start_matches("Bearer ").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_bss-host"))
        .args([command, "--url", &host.url(""), "--api-key", &key])
        .args(args)
        .args(["--interval-secs", "0.2", "--timeout-secs", "60"])
        .output()
        .expect("running bss-host");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bss-host {command} failed: {err}");
    err
}

pub fn published_by(host: &Host, component: &str) -> u64 {
    let text = get(&host.admin("/metrics")).body;
    metric_value(&text, &format!("bss_queue_published_total{{component=\"{component}\"}}")).unwrap_or(0)
}

/// A host of its own (fresh data folder) and one tenant's [`Client`] of it; derefs to the client.
pub struct TenantHost {
    pub host: Host,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl TenantHost {
    /// Starts a host and creates tenant `name`; relative paths go under `base`.
    pub fn start(name: &str, base: &str) -> TenantHost {
        let (host, dir) = Host::start(HostOptions::default());
        let client = Client::new_tenant(&host, name, base);
        TenantHost { host, client, _dir: dir }
    }
}

impl std::ops::Deref for TenantHost {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}
