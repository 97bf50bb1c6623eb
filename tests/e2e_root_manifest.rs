//! End-to-end: the README's first command on the application's own `spin.toml` — `bss-host build`
//! runs each component's build command on its own, as `up` and `spin build` do, and every
//! component then loads and answers. In a test binary of its own, so that its cargo builds do not
//! share the cores with the timing-sensitive tests of the others. Run with
//! `cargo test -p bss-host --test e2e_root_manifest`.

mod support;

use std::process::Command;
use support::*;

/// One component's build must not spoil another's `.wasm`: billing-worker's build once compiled
/// the billing library without its `component` feature, and cargo copied that build's 15 KB
/// cdylib over `billing.wasm`, which `up` then refused to serve ("exports neither
/// wasi:http/incoming-handler …"). The tests' own manifest builds every component in one cargo
/// command, so only the application's manifest shows it.
#[test]
fn the_application_manifest_builds_component_by_component_and_every_route_answers() {
    // The tests' components first (a host start builds them once per test binary): their one
    // cargo command builds billing with its HTTP export, which would repair a spoiled billing.wasm.
    build_components();
    let root = workspace_root().join("spin.toml");
    let built = Command::new(env!("CARGO_BIN_EXE_bss-host"))
        .args(["build", "--manifest"])
        .arg(&root)
        .output()
        .expect("running bss-host build");
    assert!(built.status.success(), "bss-host build failed:\n{}", String::from_utf8_lossy(&built.stderr));
    let (host, _dir) = Host::start(HostOptions { manifest: root, ..HostOptions::default() });
    // Each HTTP component's API, asked without credentials: its own 401 (not the host's 404 for a
    // route nobody serves, nor a 500 for a component that failed to load).
    for path in [
        "/tmf-api/productCatalogManagement/v4/productOffering",
        "/tmf-api/customerManagement/v4/customer",
        "/tmf-api/quoteManagement/v4/quote",
        "/tmf-api/productOrderingManagement/v4/productOrder",
        "/tmf-api/usageManagement/v4/usage",
        "/tmf-api/customerBillManagement/v4/customerBill",
        "/tmf-api/paymentManagement/v4/payment",
    ] {
        let a = get(&host.url(path));
        assert_eq!(a.status, 401, "{path}: {}", a.body);
    }
    // And with the admin key, a tenant is made (the tenants component, the store, the queue),
    // whose key the billing component accepts.
    let client = Client::new_tenant(&host, "Root manifest", "/tmf-api/customerBillManagement/v4");
    assert!(client.auth.starts_with("Bearer bss_"), "{}", client.auth);
    let bills = client.get("customerBill");
    assert_eq!(bills.status, 200, "{}", bills.body);
}
