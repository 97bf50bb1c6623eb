//! End-to-end: what the function kit gives every function, through the real `tenants` function
//! and the `notes` test resource — tenant API keys (issue, revoke), tenant isolation,
//! `Idempotency-Key` under 50 concurrent duplicates, TMF list paging/fields/filters and error
//! bodies. Run with `cargo test -p bss-host --test e2e_tenants`.

mod support;

use serde_json::json;
use std::sync::{Arc, Barrier};
use support::*;

const NOTES: &str = "/tmf-api/notes/v4/note";

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn tenant_admin_needs_the_admin_key() {
    let (host, _dir) = Host::start(HostOptions::default());
    let url = host.url("/admin/v1/tenants");
    assert_eq!(post_json(&url, &[], &json!({"name": "x"})).status, 401);
    assert_eq!(post_json(&url, &[("Authorization", "Bearer wrong")], &json!({"name": "x"})).status, 401);
    let a = post_json(&url, &[("Authorization", &bearer(ADMIN_KEY))], &json!({"nom": "x"}));
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.json()["@type"], "Error");
    let (id, key) = create_tenant(&host, "Operator A");
    assert!(key.starts_with("bss_"));
    let who = send("GET", &host.url("/admin/v1/whoami"), &[("Authorization", &bearer(&key))], None);
    assert_eq!(who.status, 200, "{}", who.body);
    assert_eq!(who.json()["tenantId"], id.as_str());
}

#[test]
fn keys_can_be_issued_and_revoked() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (id, first) = create_tenant(&host, "Operator B");
    let admin = bearer(ADMIN_KEY);
    let a = post_json(&host.url(&format!("/admin/v1/tenants/{id}/apiKeys")), &[("Authorization", &admin)], &json!({}));
    assert_eq!(a.status, 201, "{}", a.body);
    let second = a.json()["apiKey"].as_str().unwrap().to_string();
    let key_id = a.json()["keyId"].as_str().unwrap().to_string();
    let whoami = |k: &str| send("GET", &host.url("/admin/v1/whoami"), &[("Authorization", &bearer(k))], None).status;
    assert_eq!(whoami(&second), 200);
    let listed = send("GET", &host.url(&format!("/admin/v1/tenants/{id}/apiKeys")), &[("Authorization", &admin)], None);
    assert_eq!(listed.status, 200);
    assert!(!listed.body.contains(&second), "secrets must never be listed");
    let del = send(
        "DELETE",
        &host.url(&format!("/admin/v1/tenants/{id}/apiKeys/{key_id}")),
        &[("Authorization", &admin)],
        None,
    );
    assert_eq!(del.status, 204, "{}", del.body);
    assert_eq!(whoami(&second), 401);
    assert_eq!(whoami(&first), 200);
}

#[test]
fn a_tenant_never_sees_another_tenants_data() {
    tenants_are_isolated(HostOptions::default());
}

/// The same with instances reused: one instance answers tenant A's requests and then tenant B's.
#[test]
fn a_tenant_never_sees_another_tenants_data_through_a_reused_instance() {
    tenants_are_isolated(HostOptions::default().arg("--instance-reuse-max").arg("1000"));
}

fn tenants_are_isolated(opts: HostOptions) {
    let (host, _dir) = Host::start(opts);
    let (_, a_key) = create_tenant(&host, "A");
    let (_, b_key) = create_tenant(&host, "B");
    let created = post_json(
        &host.url(NOTES),
        &[("Authorization", &bearer(&a_key))],
        &json!({"text": "secret of A", "author": "alice"}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let path = format!("{NOTES}/{id}");
    assert_eq!(send("GET", &host.url(&path), &[("Authorization", &bearer(&a_key))], None).status, 200);
    assert_eq!(send("GET", &host.url(&path), &[("Authorization", &bearer(&b_key))], None).status, 404);
    let list_b = send("GET", &host.url(NOTES), &[("Authorization", &bearer(&b_key))], None);
    assert_eq!(list_b.header("x-total-count"), Some("0"));
    let patch = send(
        "PATCH",
        &host.url(&path),
        &[("Authorization", &bearer(&b_key)), ("Content-Type", "application/merge-patch+json")],
        Some(br#"{"text":"pwned"}"#),
    );
    assert_eq!(patch.status, 404);
    assert_eq!(send("DELETE", &host.url(&path), &[("Authorization", &bearer(&b_key))], None).status, 404);
    let still = send("GET", &host.url(&path), &[("Authorization", &bearer(&a_key))], None);
    assert_eq!(still.json()["text"], "secret of A");
    assert_eq!(send("GET", &host.url(NOTES), &[], None).status, 401);
}

#[test]
fn fifty_concurrent_duplicates_make_one_resource() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (_, key) = create_tenant(&host, "C");
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (url, auth, barrier) = (host.url(NOTES), bearer(&key), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                post_json(
                    &url,
                    &[("Authorization", &auth), ("Idempotency-Key", "order-123")],
                    &json!({"text": "once", "author": "bob"}),
                )
            })
        })
        .collect();
    let answers: Vec<Answer> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let created: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    assert!(!created.is_empty());
    assert!(
        answers.iter().all(|a| a.status == 201 || a.status == 409),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let ids: std::collections::HashSet<String> =
        created.iter().map(|a| a.json()["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1, "every 201 must carry the same resource");
    let list = send("GET", &host.url(NOTES), &[("Authorization", &bearer(&key))], None);
    assert_eq!(list.header("x-total-count"), Some("1"), "{}", list.body);

    // Later: the same key and body replays the first answer; another body is refused.
    let again = post_json(
        &host.url(NOTES),
        &[("Authorization", &bearer(&key)), ("Idempotency-Key", "order-123")],
        &json!({"text": "once", "author": "bob"}),
    );
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["id"].as_str().unwrap(), ids.iter().next().unwrap());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = post_json(
        &host.url(NOTES),
        &[("Authorization", &bearer(&key)), ("Idempotency-Key", "order-123")],
        &json!({"text": "twice", "author": "bob"}),
    );
    assert!(other.status == 422 || other.status == 409, "{}", other.body);
    assert_eq!(
        send("GET", &host.url(NOTES), &[("Authorization", &bearer(&key))], None).header("x-total-count"),
        Some("1")
    );
}

#[test]
fn lists_page_filter_and_select_fields_the_tmf_way() {
    let (host, _dir) = Host::start(HostOptions::default());
    let (_, key) = create_tenant(&host, "D");
    let auth = bearer(&key);
    for (i, author) in ["ann", "ben", "ann", "cid", "ann"].iter().enumerate() {
        let a = post_json(
            &host.url(NOTES),
            &[("Authorization", &auth)],
            &json!({"text": format!("note {i}"), "author": author}),
        );
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let page = send("GET", &host.url(&format!("{NOTES}?offset=1&limit=2")), &[("Authorization", &auth)], None);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-total-count"), Some("5"));
    assert_eq!(page.header("x-result-count"), Some("2"));
    assert_eq!(page.json().as_array().unwrap().len(), 2);

    let anns = send("GET", &host.url(&format!("{NOTES}?author=ann")), &[("Authorization", &auth)], None);
    assert_eq!(anns.header("x-total-count"), Some("3"));
    assert!(anns.json().as_array().unwrap().iter().all(|n| n["author"] == "ann"));

    let slim = send("GET", &host.url(&format!("{NOTES}?fields=author&limit=1")), &[("Authorization", &auth)], None);
    let first = &slim.json()[0];
    assert!(first.get("author").is_some() && first.get("id").is_some() && first.get("href").is_some());
    assert!(first.get("text").is_none(), "{first}");

    let bad = send("GET", &host.url(&format!("{NOTES}?limit=lots")), &[("Authorization", &auth)], None);
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"].as_str().unwrap().contains("limit"));

    let malformed = send(
        "POST",
        &host.url(NOTES),
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(b"{\"text\": "),
    );
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["@type"], "Error");
    // Nothing was created by the bad request.
    let all = send("GET", &host.url(NOTES), &[("Authorization", &auth)], None);
    assert_eq!(all.header("x-total-count"), Some("5"));
}
