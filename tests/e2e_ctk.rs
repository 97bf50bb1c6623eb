//! The TM Forum conformance kits against the real host: starts bss-host with the test app, creates
//! a tenant (and, for TMF637, products) and runs `ctk/run <kit> <base> -H "Authorization: Bearer
//! <key>"`, which must end with `N passed, 0 failed`. Run with `cargo test -p bss-host --test e2e_ctk`.
//!
//! The kits live beside the repository (`../shared/ctk`, `/work/shared/ctk`, or `$BSS_CTK_DIR`);
//! they run on node (newman is installed by the kit's runner on first use), so this test needs
//! `node` and `npm`.

mod support;

use std::path::PathBuf;
use std::process::Command;
use support::*;

/// Where the kits are: `$BSS_CTK_DIR`, else `../shared/ctk` beside the repository, else the
/// project machines' shared folder `/work/shared/ctk` (a clean clone elsewhere still finds it).
fn ctk_runner() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("BSS_CTK_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![workspace_root().join("../shared/ctk"), PathBuf::from("/work/shared/ctk")],
    };
    candidates.iter().map(|d| d.join("run")).find(|run| run.exists()).unwrap_or_else(|| {
        panic!("the TM Forum conformance kits are not in {candidates:?} (set BSS_CTK_DIR to the folder holding `run`)")
    })
}

/// Runs one kit against `base` and asserts that it ends `N passed, 0 failed` with N at least
/// `passed_min` (a kit that silently ran nothing must not pass).
fn assert_kit_passes(kit: &str, base: &str, key: &str, passed_min: u32) {
    let out = Command::new("python3")
        .arg(ctk_runner())
        .args([kit, base, "-H", &format!("Authorization: Bearer {key}")])
        .output()
        .expect("running the conformance kit (python3)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().to_string();
    let text = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && last.ends_with(" passed, 0 failed"), "{kit} kit failed: {last}\n{text}");
    println!("{kit}: {last}");
    let passed: u32 = last.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(passed >= passed_min, "the {kit} kit ran too few assertions: {last}");
}

#[test]
fn tmf620_product_catalog_conformance_kit_passes() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (_, key) = create_tenant(&host, "CTK");
    let base = host.url("/tmf-api/productCatalogManagement/v4/");
    assert_kit_passes("tmf620", &base, &key, 101);
}

#[test]
fn tmf637_product_inventory_conformance_kit_passes() {
    let (host, _dir) = Host::start(HostOptions::default());
    let api = Client::new_tenant(&host, "CTK inventory", "/tmf-api/productInventory/v4");
    api.import_sample_catalog();
    let party =
        api.create("/tmf-api/party/v4/individual", serde_json::json!({"givenName": "Grace", "familyName": "Hopper"}));
    let customer = api.create(
        "/tmf-api/customerManagement/v4/customer",
        serde_json::json!({"name": "Grace Hopper", "engagedParty": {"id": party, "@referredType": "Individual"}}),
    );
    let account = api.create(
        "/tmf-api/accountManagement/v4/billingAccount",
        serde_json::json!({"name": "Home", "billCycleDay": 1, "timeZone": "UTC", "currency": "EUR", "billDelivery": "email",
               "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}]}),
    );
    // The kit only reads: two products, one placed through the real order flow, one migrated in.
    let order = api.create(
        "/tmf-api/productOrderingManagement/v4/productOrder",
        serde_json::json!({"relatedParty": [{"id": customer, "role": "customer"}], "billingAccount": {"id": account},
               "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "mobile-m"}}]}),
    );
    eventually(std::time::Duration::from_secs(45), "the ordered product", || {
        (api.get(&format!("product/{order}-1")).status == 200).then_some(())
    });
    api.create(
        "product",
        serde_json::json!({"name": "Fibre 1G (migrated)", "status": "active", "productOffering": {"id": "fibre-1g"},
               "relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
               "billingAccount": {"id": account}, "productCharacteristic": [{"name": "lineId", "value": "LEGACY-1"}]}),
    );
    let key = api.auth.trim_start_matches("Bearer ").to_string();
    assert_kit_passes("tmf637", &host.url("/tmf-api/productInventory/v4/"), &key, 11);
}
