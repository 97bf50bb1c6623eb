//! End-to-end tests of the customer component over real HTTP against the real `bss-host`:
//! parties, customers, accounts and their hierarchies, partners, the single view, erasure and
//! the audit trail — and bad input everywhere (a 4xx TMF error body naming the problem, and
//! nothing stored, checked by listing afterwards). Run with
//! `cargo test -p bss-host --test e2e_customer`.

mod support;

use serde_json::{Value, json};
use support::*;

const PARTY: &str = "/tmf-api/party/v4";
const CM: &str = "/tmf-api/customerManagement/v4";
const AM: &str = "/tmf-api/accountManagement/v4";
const PRM: &str = "/tmf-api/partyRoleManagement/v4";

fn ada() -> Value {
    json!({
        "givenName": "Ada", "familyName": "Lovelace", "birthDate": "1815-12-10",
        "contactMedium": [
            {"mediumType": "email", "preferred": true, "characteristic": {"emailAddress": "ada@example.org"}},
            {"mediumType": "phone", "characteristic": {"phoneNumber": "+44 20 7946 0958"}},
            {"mediumType": "postalAddress", "characteristic": {"street1": "12 St James's Square", "city": "London", "postCode": "SW1Y 4JH", "country": "GB"}}
        ],
        "individualIdentification": [{"identificationType": "passport", "identificationId": "P1234567", "issuingAuthority": "HMPO"}],
        "partyCharacteristic": [{"name": "preferredLanguage", "value": "en"}],
        "favouriteMachine": "Analytical Engine"
    })
}

fn billing(owner: &str, referred: &str, extra: Value) -> Value {
    let mut b = json!({
        "name": "account", "billCycleDay": 5, "timeZone": "Europe/London", "currency": "GBP",
        "paymentMethod": {"id": "pm-1"}, "billDelivery": "email",
        "relatedParty": [{"id": owner, "role": "owner", "@referredType": referred}]
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[test]
fn parties_are_created_read_listed_changed_and_deleted() {
    let (host, _dir) = Host::start(HostOptions::default());
    let api = Client::new_tenant(&host, "Operator", "");
    let people = format!("{PARTY}/individual");

    let a = api.post(&people, ada());
    assert_eq!(a.status, 201, "{}", a.body);
    let doc = a.json();
    let id = doc["id"].as_str().unwrap().to_string();
    assert_eq!(doc["href"], format!("{people}/{id}"));
    assert_eq!(doc["@type"], "Individual");
    assert_eq!(doc["favouriteMachine"], "Analytical Engine", "unknown attributes are kept");
    assert!(doc["lastUpdate"].is_string());
    assert_eq!(a.header("location"), Some(format!("{people}/{id}").as_str()));
    assert!(a.header("etag").is_some());

    // Idempotency-Key: the same request replays the first answer; the person is created once.
    let idem = |body: &Value| {
        send(
            "POST",
            &host.url(&people),
            &[
                ("Authorization", api.auth.as_str()),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "signup-42"),
            ],
            Some(body.to_string().as_bytes()),
        )
    };
    let first = idem(&json!({"fullName": "Once Only"}));
    assert_eq!(first.status, 201, "{}", first.body);
    let again = idem(&json!({"fullName": "Once Only"}));
    assert_eq!((again.status, again.json()["id"].clone()), (201, first.json()["id"].clone()));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_error(&idem(&json!({"fullName": "Someone Else"})), 422, &["Idempotency-Key"]);
    assert_eq!(api.count(&format!("{people}?fullName=Once%20Only")), 1);

    let got = api.get(&format!("{people}/{id}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["contactMedium"][0]["characteristic"]["emailAddress"], "ada@example.org");

    let org = api.create(
        &format!("{PARTY}/organization"),
        json!({"name": "Example Ltd", "organizationIdentification": [{"identificationType": "companyNumber", "identificationId": "01234567"}],
               "contactMedium": [{"mediumType": "email", "characteristic": {"emailAddress": "billing@example.co.uk"}}]}),
    );
    assert_eq!(api.get(&format!("{PARTY}/organization/{org}")).json()["name"], "Example Ltd");

    api.create(&people, json!({"fullName": "Charles Babbage"}));
    let list = api.get(&format!("{people}?familyName=Lovelace&fields=givenName"));
    assert_eq!(list.header("x-total-count"), Some("1"));
    assert_eq!(
        list.json()[0],
        json!({"id": id, "href": format!("{people}/{id}"), "@type": "Individual", "givenName": "Ada"})
    );

    let p = api.patch(&format!("{people}/{id}"), json!({"givenName": "Augusta Ada", "birthDate": null}));
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.json()["givenName"], "Augusta Ada");
    assert!(p.json().get("birthDate").is_none());

    // Another tenant sees nothing.
    let other = Client::new_tenant(&host, "Other operator", "");
    assert_eq!(other.get(&format!("{people}/{id}")).status, 404);
    assert_eq!(other.count(&people), 0);
    // No key: 401.
    assert_eq!(send("GET", &host.url(&people), &[], None).status, 401);

    // Every write publishes its event (counted by the host per publishing component).
    let published = || -> u64 {
        let m = get(&host.admin("/metrics")).body;
        m.lines()
            .filter(|l| l.contains("queue_published") && l.contains("component=\"customer\"") && !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    };
    let before = published();
    assert!(before >= 5, "creates and patches published events: {before}");
    assert_eq!(api.delete(&format!("{people}/{id}")).status, 204);
    assert_eq!(published(), before + 1, "the delete published one event");
    assert_error(&api.get(&format!("{people}/{id}")), 404, &[&id]);
    assert_eq!(api.count(&people), 2);
}

#[test]
fn bad_parties_are_refused_and_nothing_is_stored() {
    let (host, _dir) = Host::start(HostOptions::default());
    let api = Client::new_tenant(&host, "Operator", "");
    let people = format!("{PARTY}/individual");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = ada();
        f(&mut d);
        d
    };
    let cases: Vec<(Value, u16, Vec<&str>)> = vec![
        (json!({"givenName": "Ada"}), 400, vec!["givenName and familyName, or fullName"]),
        (with(&|d| d["givenName"] = json!(42)), 400, vec!["givenName", "invalid type"]),
        (
            with(&|d| d["contactMedium"][0]["characteristic"]["emailAddress"] = json!("ada-at-example")),
            422,
            vec!["contactMedium[0].characteristic.emailAddress"],
        ),
        (
            with(&|d| d["contactMedium"][1]["characteristic"]["phoneNumber"] = json!("call me")),
            422,
            vec!["contactMedium[1].characteristic.phoneNumber"],
        ),
        (
            with(&|d| d["contactMedium"][2]["characteristic"] = json!({"street1": "x", "city": "y", "country": "GB"})),
            400,
            vec!["postCode"],
        ),
        (
            with(&|d| d["contactMedium"][0]["mediumType"] = json!("carrierPigeon")),
            422,
            vec!["contactMedium[0].mediumType"],
        ),
        (with(&|d| d["contactMedium"] = json!("ada@example.org")), 400, vec!["contactMedium"]),
        (
            with(&|d| d["individualIdentification"][0] = json!({"identificationType": "passport"})),
            400,
            vec!["identificationId"],
        ),
        (with(&|d| d["birthDate"] = json!("3000-01-01")), 422, vec!["birthDate"]),
        (with(&|d| d["status"] = json!("erased")), 422, vec!["status"]),
        (with(&|d| d["id"] = json!("chosen-by-client")), 400, vec!["id"]),
    ];
    for (body, status, needles) in cases {
        assert_error(&api.post(&people, body), status, &needles);
    }
    assert_error(
        &api.post(&format!("{PARTY}/organization"), json!({"organizationIdentification": []})),
        400,
        &["name or tradingName"],
    );
    let bad_json = send(
        "POST",
        &host.url(&people),
        &[("Authorization", api.auth.as_str()), ("Content-Type", "application/json")],
        Some(b"{\"givenName\": "),
    );
    assert_error(&bad_json, 400, &["not valid JSON"]);
    assert_eq!(api.count(&people), 0, "nothing stored");
    assert_eq!(api.count(&format!("{PARTY}/organization")), 0, "nothing stored");

    // A patch that breaks a rule changes nothing.
    let id = api.create(&people, ada());
    let path = format!("{people}/{id}");
    assert_error(
        &api.patch(
            &path,
            json!({"contactMedium": [{"mediumType": "email", "characteristic": {"emailAddress": "nope"}}]}),
        ),
        422,
        &["emailAddress"],
    );
    assert_error(&api.patch(&path, json!({"fullName": null, "familyName": null})), 400, &["fullName"]);
    assert_error(&api.patch(&path, json!({"id": "other"})), 400, &["id"]);
    assert_eq!(api.get(&path).json()["contactMedium"][0]["characteristic"]["emailAddress"], "ada@example.org");
    assert_error(&api.patch(&format!("{people}/missing"), json!({"givenName": "X"})), 404, &["missing"]);
}

#[test]
fn customers_link_parties_with_status_and_credit_profile() {
    let (host, _dir) = Host::start(HostOptions::default());
    let api = Client::new_tenant(&host, "Operator", "");
    let customers = format!("{CM}/customer");
    let person = api.create(&format!("{PARTY}/individual"), ada());
    let org = api.create(&format!("{PARTY}/organization"), json!({"name": "Example Ltd"}));
    let account = api.create(&format!("{AM}/billingAccount"), billing(&person, "Individual", json!({})));

    let body = json!({
        "name": "Ada Lovelace", "engagedParty": {"id": person, "@referredType": "Individual"},
        "creditProfile": [{"creditProfileDate": "2025-01-01T00:00:00Z", "creditRiskRating": 2, "creditScore": 780}],
        "creditLimit": {"unit": "GBP", "value": 250.50}, "account": [{"id": account, "@referredType": "BillingAccount"}],
        "marketSegment": "residential"
    });
    let a = api.post(&customers, body.clone());
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json()["id"].as_str().unwrap().to_string();
    assert_eq!(a.json()["status"], "initialized");
    let path = format!("{customers}/{id}");
    api.create(&customers, json!({"name": "Example", "engagedParty": {"id": org, "@referredType": "Organization"}}));

    // Status: initialized → active → suspended → active → closed; closed is final.
    for s in ["active", "suspended", "active", "closed"] {
        let p = api.patch(&path, json!({"status": s}));
        assert_eq!(p.status, 200, "{s}: {}", p.body);
    }
    assert_error(&api.patch(&path, json!({"status": "active"})), 422, &["cannot go from closed to active"]);
    assert_eq!(api.get(&path).json()["status"], "closed");

    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = body.clone();
        f(&mut d);
        d
    };
    let cases: Vec<(Value, u16, Vec<&str>)> = vec![
        (with(&|d| drop(d.as_object_mut().unwrap().remove("name"))), 400, vec!["name"]),
        (with(&|d| drop(d.as_object_mut().unwrap().remove("engagedParty"))), 400, vec!["engagedParty"]),
        (
            with(&|d| d["engagedParty"]["id"] = json!("no-such-party")),
            422,
            vec!["engagedParty.id", "no-such-party", "does not exist"],
        ),
        (
            with(&|d| d["engagedParty"]["@referredType"] = json!("Organization")),
            422,
            vec!["engagedParty.id", "organization"],
        ),
        (with(&|d| d["engagedParty"]["@referredType"] = json!("Robot")), 422, vec!["@referredType"]),
        (with(&|d| d["status"] = json!("vip")), 422, vec!["status"]),
        (
            with(&|d| d["creditProfile"][0]["creditRiskRating"] = json!(11)),
            422,
            vec!["creditProfile[0].creditRiskRating"],
        ),
        (
            with(&|d| d["creditProfile"][0]["creditRiskRating"] = json!("high")),
            400,
            vec!["creditProfile[0].creditRiskRating"],
        ),
        (with(&|d| d["creditLimit"] = json!({"unit": "GBP", "value": -5})), 422, vec!["creditLimit.value"]),
        (with(&|d| d["account"] = json!([{"id": "ghost"}])), 422, vec!["account[0].id", "ghost"]),
    ];
    for (b, status, needles) in cases {
        assert_error(&api.post(&customers, b), status, &needles);
    }
    assert_eq!(api.count(&customers), 2, "nothing stored");

    // A party a customer is engaged with cannot be deleted.
    assert_error(&api.delete(&format!("{PARTY}/organization/{org}")), 409, &["customer"]);
    assert_eq!(api.get(&format!("{PARTY}/organization/{org}")).status, 200);
}

#[test]
fn account_hierarchies_move_in_one_call_and_never_cycle() {
    let (host, _dir) = Host::start(HostOptions::default());
    let api = Client::new_tenant(&host, "Operator", "");
    let accounts = format!("{AM}/billingAccount");
    let org = api.create(&format!("{PARTY}/organization"), json!({"name": "Big Corp"}));
    let customer = api.create(
        &format!("{CM}/customer"),
        json!({"name": "Big Corp", "engagedParty": {"id": org, "@referredType": "Organization"}}),
    );
    let acc = |name: &str, parent: Option<&str>, roll_up: bool| {
        let mut extra = json!({"name": name, "billRollUp": roll_up});
        if let Some(p) = parent {
            extra["parentAccount"] = json!({"id": p});
        }
        api.create(&accounts, billing(&customer, "Customer", extra))
    };
    let a = acc("A head office", None, false);
    let b = acc("B region", Some(&a), true);
    let c = acc("C site", Some(&b), true);
    let d = acc("D other group", None, false);
    let e = acc("E pays its own", Some(&b), false);

    let h = api.get(&format!("{accounts}/{a}/hierarchy"));
    assert_eq!(h.status, 200, "{}", h.body);
    let h = h.json();
    assert_eq!(h["size"], 4);
    assert_eq!(h["tree"]["id"], a.as_str());
    let b_node = &h["tree"]["children"][0];
    assert_eq!(b_node["id"], b.as_str());
    assert_eq!(b_node["payingAccount"]["id"], a.as_str(), "B rolls up to A");
    let kids: Vec<&Value> = b_node["children"].as_array().unwrap().iter().collect();
    let paying = |id: &str| kids.iter().find(|k| k["id"] == id).unwrap()["payingAccount"]["id"].clone();
    assert_eq!(paying(&c), json!(a), "C rolls up through B to A");
    assert_eq!(paying(&e), json!(e), "E pays for itself");
    let hc = api.get(&format!("{accounts}/{c}/hierarchy")).json();
    assert_eq!(
        hc["pathToRoot"].as_array().unwrap().iter().map(|x| x["id"].clone()).collect::<Vec<_>>(),
        [json!(b), json!(a)]
    );

    // A cycle is refused with the chain named, and nothing changes.
    let refused = api.patch(&format!("{accounts}/{a}"), json!({"parentAccount": {"id": c}}));
    assert_error(&refused, 422, &[&format!("moving {a} under {c} would make a cycle: {c} → {b} → {a}")]);
    assert!(api.get(&format!("{accounts}/{a}")).json().get("parentAccount").is_none());
    assert_error(&api.patch(&format!("{accounts}/{a}"), json!({"parentAccount": {"id": a}})), 422, &["cycle"]);

    // Moving a subtree is one call: B (with C and E) goes under D.
    let moved = api.patch(&format!("{accounts}/{b}"), json!({"parentAccount": {"id": d}}));
    assert_eq!(moved.status, 200, "{}", moved.body);
    let hd = api.get(&format!("{accounts}/{d}/hierarchy")).json();
    assert_eq!(hd["size"], 4);
    let hc = api.get(&format!("{accounts}/{c}/hierarchy")).json();
    assert_eq!(hc["pathToRoot"][1]["id"], d.as_str());
    assert_eq!(hc["tree"]["payingAccount"]["id"], d.as_str());
    assert_eq!(api.get(&format!("{accounts}/{a}/hierarchy")).json()["size"], 1);
    // Detach with null: B becomes a root and pays for C.
    assert_eq!(api.patch(&format!("{accounts}/{b}"), json!({"parentAccount": null})).status, 200);
    assert_eq!(api.get(&format!("{accounts}/{c}/hierarchy")).json()["tree"]["payingAccount"]["id"], b.as_str());

    // The parent must exist and be a billing account too.
    let party_account = api.create(
        &format!("{AM}/partyAccount"),
        json!({"name": "P", "relatedParty": [{"id": org, "role": "owner", "@referredType": "Organization"}]}),
    );
    let party_accounts = format!("{AM}/partyAccount");
    assert_eq!(api.get(&format!("{party_accounts}/{party_account}")).json()["@type"], "PartyAccount");
    assert_error(&api.post(&party_accounts, json!({"name": "nobody's"})), 400, &["relatedParty"]);
    assert_error(
        &api.post(&party_accounts, json!({"name": "P", "relatedParty": [{"id": org, "role": "owner", "@referredType": "Organization"}], "currency": "??"})),
        422,
        &["currency"],
    );
    assert_eq!(api.count(&party_accounts), 1, "nothing stored");
    assert_error(
        &api.patch(&format!("{accounts}/{b}"), json!({"parentAccount": {"id": party_account}})),
        422,
        &["parentAccount.id", "billingAccount"],
    );
    assert_error(
        &api.patch(&format!("{accounts}/{b}"), json!({"parentAccount": {"id": "nowhere"}})),
        422,
        &["parentAccount.id", "nowhere"],
    );
    // An account with children cannot be deleted; a leaf can.
    assert_error(&api.delete(&format!("{accounts}/{b}")), 409, &["child"]);
    assert_eq!(api.delete(&format!("{accounts}/{e}")).status, 204);
    // A customer its accounts name cannot be deleted either.
    assert_error(&api.delete(&format!("{CM}/customer/{customer}")), 409, &["billingAccount", "related party"]);

    // Concurrent moves that together would close a loop: never both stay. (Both orders of
    // outcome occur in practice: one refused by its check (422), or undone after it (409).)
    for round in 0..6 {
        let x = acc(&format!("x{round}"), None, false);
        let y = acc(&format!("y{round}"), None, false);
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let api = &api;
            let (ax, ay) = (format!("{accounts}/{x}"), format!("{accounts}/{y}"));
            let (bx, by) = (json!({"parentAccount": {"id": y}}), json!({"parentAccount": {"id": x}}));
            let one = s.spawn(move || api.patch(&ax, bx).status);
            let two = s.spawn(move || api.patch(&ay, by).status);
            vec![one.join().unwrap(), two.join().unwrap()]
        });
        assert!(statuses.iter().all(|s| [200, 409, 422].contains(s)), "{statuses:?}");
        assert!(statuses.iter().filter(|s| **s == 200).count() <= 1, "both moves answered 200: {statuses:?}");
        let parent =
            |id: &str| api.get(&format!("{accounts}/{id}")).json()["parentAccount"]["id"].as_str().map(str::to_string);
        let (px, py) = (parent(&x), parent(&y));
        assert!(
            !(px.as_deref() == Some(y.as_str()) && py.as_deref() == Some(x.as_str())),
            "a cycle stayed in round {round}"
        );
        for id in [&x, &y] {
            assert_eq!(api.get(&format!("{accounts}/{id}/hierarchy")).status, 200);
        }
    }

    // Bad accounts: each a TMF error, nothing stored.
    let before = api.count(&accounts);
    let with = |extra: Value| billing(&customer, "Customer", extra);
    let cases: Vec<(Value, u16, Vec<&str>)> = vec![
        (with(json!({"billCycleDay": 31})), 422, vec!["billCycleDay"]),
        (with(json!({"billCycleDay": "5"})), 400, vec!["billCycleDay"]),
        (with(json!({"timeZone": "Mars/Olympus_Mons"})), 422, vec!["timeZone"]),
        (with(json!({"currency": "pounds"})), 422, vec!["currency"]),
        (with(json!({"billDelivery": "fax"})), 422, vec!["billDelivery"]),
        (with(json!({"billRollUp": "yes"})), 400, vec!["billRollUp"]),
        (
            with(json!({"relatedParty": [{"id": "ghost", "role": "owner", "@referredType": "Customer"}]})),
            422,
            vec!["relatedParty[0].id", "ghost"],
        ),
        (with(json!({"parentAccount": {"id": "ghost"}})), 422, vec!["parentAccount.id"]),
        (
            json!({"name": "no cycle day", "timeZone": "UTC", "currency": "EUR", "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}]}),
            400,
            vec!["billCycleDay"],
        ),
    ];
    for (b, status, needles) in cases {
        assert_error(&api.post(&accounts, b), status, &needles);
    }
    assert_eq!(api.count(&accounts), before, "nothing stored");
}

#[test]
fn partners_have_settlement_accounts_and_revenue_share() {
    let (host, _dir) = Host::start(HostOptions::default());
    let api = Client::new_tenant(&host, "Operator", "");
    let roles = format!("{PRM}/partyRole");
    let settlements = format!("{AM}/settlementAccount");
    let mvno = api.create(&format!("{PARTY}/organization"), json!({"name": "Virtual Mobile Ltd"}));
    let person = api.create(&format!("{PARTY}/individual"), json!({"fullName": "Sam Trader"}));
    let settlement = api.create(
        &settlements,
        json!({"name": "VM settlement", "currency": "EUR", "settlementPeriod": "month",
               "relatedParty": [{"id": mvno, "role": "partner", "@referredType": "Organization"}]}),
    );
    let body = json!({
        "role": "mvno", "name": "Virtual Mobile as MVNO",
        "engagedParty": {"id": mvno, "@referredType": "Organization"},
        "account": [{"id": settlement, "@referredType": "SettlementAccount"}],
        "revenueShare": {"basis": "wholesale", "percentage": 12.5, "ratePerUnit": {"unit": "EUR", "value": "0.0015"},
                         "settlementPeriod": "month", "currency": "EUR"}
    });
    let a = api.post(&roles, body.clone());
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["revenueShare"]["percentage"], json!(12.5));
    let id = a.json()["id"].as_str().unwrap().to_string();
    assert_eq!(api.count(&format!("{roles}?role=mvno")), 1);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = body.clone();
        f(&mut d);
        d
    };
    let billing_id = api.create(&format!("{AM}/billingAccount"), billing(&mvno, "Organization", json!({})));
    let cases: Vec<(Value, u16, Vec<&str>)> = vec![
        (with(&|d| d["role"] = json!("friend")), 422, vec!["role"]),
        (
            with(&|d| d["engagedParty"] = json!({"id": person, "@referredType": "Individual"})),
            422,
            vec!["Organization"],
        ),
        (with(&|d| d["engagedParty"]["id"] = json!("ghost")), 422, vec!["engagedParty.id", "ghost"]),
        (with(&|d| d["account"] = json!([{"id": billing_id}])), 422, vec!["account[0].id", "settlementAccount"]),
        (with(&|d| d["account"] = json!([])), 400, vec!["account"]),
        (with(&|d| d["revenueShare"]["percentage"] = json!(150)), 422, vec!["revenueShare.percentage"]),
        (with(&|d| d["revenueShare"]["percentage"] = json!("a lot")), 422, vec!["revenueShare.percentage"]),
        (with(&|d| d["revenueShare"]["basis"] = json!("vibes")), 422, vec!["revenueShare.basis"]),
        (with(&|d| d["revenueShare"]["ratePerUnit"]["unit"] = json!("USD")), 422, vec!["ratePerUnit.unit"]),
        (with(&|d| d["revenueShare"]["settlementPeriod"] = json!(12)), 400, vec!["revenueShare.settlementPeriod"]),
        (with(&|d| drop(d.as_object_mut().unwrap().remove("revenueShare"))), 400, vec!["revenueShare"]),
    ];
    for (b, status, needles) in cases {
        assert_error(&api.post(&roles, b), status, &needles);
    }
    assert_eq!(api.count(&roles), 1, "nothing stored");

    // A settlement account belongs to an organization; its period is month or quarter.
    let bad_owner = json!({"name": "x", "currency": "EUR", "settlementPeriod": "month",
                           "relatedParty": [{"id": person, "role": "partner", "@referredType": "Individual"}]});
    assert_error(&api.post(&settlements, bad_owner), 422, &["Organization"]);
    let bad_period = json!({"name": "x", "currency": "EUR", "settlementPeriod": "fortnight",
                            "relatedParty": [{"id": mvno, "role": "partner", "@referredType": "Organization"}]});
    assert_error(&api.post(&settlements, bad_period), 422, &["settlementPeriod"]);
    assert_eq!(api.count(&settlements), 1, "nothing stored");
    // The settlement account a partner uses cannot be deleted.
    assert_error(&api.delete(&format!("{settlements}/{settlement}")), 409, &["partyRole", &id]);
}

#[test]
fn single_view_and_audit_trail() {
    let (host, _dir) = Host::start(HostOptions::default());
    let api = Client::new_tenant(&host, "Operator", "");
    let org = api.create(&format!("{PARTY}/organization"), json!({"name": "Retail Partner plc"}));
    let customer = api.create(
        &format!("{CM}/customer"),
        json!({"name": "Retail Partner", "engagedParty": {"id": org, "@referredType": "Organization"}}),
    );
    let accounts = format!("{AM}/billingAccount");
    let top = api.create(&accounts, billing(&customer, "Customer", json!({"name": "top"})));
    let child = api.create(
        &accounts,
        billing(&org, "Organization", json!({"name": "child", "parentAccount": {"id": top}, "billRollUp": true})),
    );
    let settlement = api.create(
        &format!("{AM}/settlementAccount"),
        json!({"name": "s", "currency": "EUR", "settlementPeriod": "quarter", "relatedParty": [{"id": org, "role": "partner", "@referredType": "Organization"}]}),
    );
    api.create(
        &format!("{PRM}/partyRole"),
        json!({"role": "reseller", "engagedParty": {"id": org, "@referredType": "Organization"}, "account": [{"id": settlement}],
               "revenueShare": {"basis": "retail", "percentage": "7.5", "settlementPeriod": "quarter", "currency": "EUR"}}),
    );
    let other = api.create(&format!("{PARTY}/organization"), json!({"name": "Unrelated"}));
    let unrelated_customer = api.create(
        &format!("{CM}/customer"),
        json!({"name": "Unrelated", "engagedParty": {"id": other, "@referredType": "Organization"}}),
    );
    api.create(&accounts, billing(&unrelated_customer, "Customer", json!({"name": "not theirs"})));

    let v = api.get(&format!("{CM}/customer/{customer}/view"));
    assert_eq!(v.status, 200, "{}", v.body);
    let v = v.json();
    assert_eq!(v["customer"]["id"], customer.as_str());
    assert_eq!(v["engagedParty"]["name"], "Retail Partner plc");
    let trees = v["accounts"].as_array().unwrap();
    let billing_tree = trees.iter().find(|t| t["account"]["@referredType"] == "BillingAccount").unwrap();
    assert_eq!(billing_tree["tree"]["id"], top.as_str(), "the child is shown inside its parent's tree");
    assert_eq!(billing_tree["tree"]["children"][0]["id"], child.as_str());
    assert_eq!(trees.iter().filter(|t| t["account"]["@referredType"] == "BillingAccount").count(), 1);
    assert!(trees.iter().any(|t| t["account"]["id"] == settlement.as_str()));
    assert!(!v.to_string().contains("not theirs"));
    assert_eq!(v["partnerRoles"][0]["role"], "reseller");
    let party_customers: Vec<Value> = v["partyCustomers"].as_array().unwrap().iter().map(|c| c["id"].clone()).collect();
    assert_eq!(party_customers, [json!(customer)]);
    assert_error(&api.get(&format!("{CM}/customer/ghost/view")), 404, &["ghost"]);

    // Audit: every change, with who, when and what.
    let path = format!("{CM}/customer/{customer}");
    assert_eq!(api.patch(&path, json!({"status": "active", "marketSegment": "enterprise"})).status, 200);
    assert_eq!(api.patch(&format!("{accounts}/{child}"), json!({"parentAccount": null})).status, 200);
    let trail = api.get(&format!("{CM}/auditRecord?resourceId={customer}"));
    assert_eq!(trail.status, 200, "{}", trail.body);
    assert_eq!(trail.header("x-total-count"), Some("2"));
    let trail = trail.json();
    assert_eq!(trail[0]["action"], "create");
    assert_eq!(trail[1]["action"], "patch", "newest last");
    assert_eq!(trail[1]["resourceType"], "Customer");
    assert!(trail[1]["actor"]["tenantId"].is_string() && trail[1]["actor"]["keyId"].is_string());
    assert!(trail[1]["at"].is_string());
    let changes = trail[1]["changes"].as_array().unwrap();
    assert!(changes.contains(&json!({"path": "/status", "old": "initialized", "new": "active"})), "{changes:?}");
    assert!(changes.contains(&json!({"path": "/marketSegment", "old": null, "new": "enterprise"})), "{changes:?}");
    let moves = api.get(&format!("{CM}/auditRecord?resourceId={child}&action=move")).json();
    assert_eq!(moves[0]["changes"][0], json!({"path": "/parentAccount", "old": {"id": top}, "new": null}));
    assert!(trail.as_array().unwrap().iter().all(|r| r["state"] == "recorded"), "{trail}");
    // Concurrent changes: one record per change that was stored, none left pending by the
    // attempts that lost a compare-and-swap.
    let stored: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let (api, path) = (&api, &path);
                s.spawn(move || api.patch(path, json!({"marketSegment": format!("segment-{i}")})).status)
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).filter(|s| *s == 200).count()
    });
    assert!(stored >= 1);
    let trail = api.get(&format!("{CM}/auditRecord?resourceId={customer}&limit=1000")).json();
    let trail = trail.as_array().unwrap();
    assert_eq!(trail.len(), 2 + stored, "{trail:?}");
    assert!(trail.iter().all(|r| r["state"] == "recorded"), "{trail:?}");
    // Records are in time order (milliseconds: two writes within one may list either way).
    let mut versions: Vec<u64> = trail.iter().map(|r| r["resourceVersion"].as_u64().unwrap()).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=2 + stored as u64).collect::<Vec<_>>(), "one record per stored version");
    let path = &path;
    // Refused changes leave no record.
    assert_error(&api.patch(path, json!({"status": "initialized"})), 422, &["status"]);
    assert_eq!(api.count(&format!("{CM}/auditRecord?resourceId={customer}")), 2 + stored);
    // Deletes are recorded too.
    assert_eq!(api.delete(&format!("{accounts}/{child}")).status, 204);
    assert_eq!(api.count(&format!("{CM}/auditRecord?resourceId={child}&action=delete")), 1);
}

#[test]
fn erasing_a_person_pseudonymises_and_records_it() {
    let (host, _dir) = Host::start(HostOptions::default());
    let api = Client::new_tenant(&host, "Operator", "");
    let people = format!("{PARTY}/individual");
    let person = api.create(&people, ada());
    let customer = api.create(
        &format!("{CM}/customer"),
        json!({"name": "Ada Lovelace", "engagedParty": {"id": person, "name": "Ada Lovelace", "@referredType": "Individual"}}),
    );
    let account = api.create(
        &format!("{AM}/billingAccount"),
        billing(
            &customer,
            "Customer",
            json!({"name": "Main account", "relatedParty": [
            {"id": customer, "role": "owner", "@referredType": "Customer"},
            {"id": person, "name": "Ada Lovelace", "role": "contact", "@referredType": "Individual"}]}),
        ),
    );
    assert_eq!(api.patch(&format!("{people}/{person}"), json!({"familyName": "King"})).status, 200);

    assert_error(&api.post(&format!("{people}/{person}/erase"), json!({})), 400, &["reason"]);
    assert_error(&api.post(&format!("{people}/{person}/erase"), json!({"reason": " "})), 422, &["reason"]);
    assert_error(&api.post(&format!("{people}/ghost/erase"), json!({"reason": "request"})), 404, &["ghost"]);

    let e = api.post(&format!("{people}/{person}/erase"), json!({"reason": "GDPR art. 17 request of 2026-11-01"}));
    assert_eq!(e.status, 200, "{}", e.body);
    let record = e.json();
    assert_eq!(record["@type"], "ErasureRecord");
    assert_eq!(record["party"]["id"], person.as_str());
    assert!(record["erasedAttributes"].as_array().unwrap().contains(&json!("contactMedium")));
    assert!(record["requestedBy"]["keyId"].is_string());

    // The person keeps its id, everything personal is gone.
    let erased = api.get(&format!("{people}/{person}"));
    assert_eq!(erased.status, 200);
    let text = erased.body.clone();
    for personal in ["Ada", "Lovelace", "King", "1815", "ada@example.org", "7946", "London", "P1234567", "Analytical"] {
        assert!(!text.contains(personal), "{personal} is still in {text}");
    }
    let erased = erased.json();
    assert_eq!(erased["status"], "erased");
    assert!(erased["fullName"].as_str().unwrap().starts_with("erased-"));
    // Customers and accounts still resolve; the customer's name is pseudonymised.
    let c = api.get(&format!("{CM}/customer/{customer}")).json();
    assert_eq!(c["engagedParty"]["id"], person.as_str());
    assert_eq!(c["name"], erased["fullName"]);
    let acc = api.get(&format!("{AM}/billingAccount/{account}"));
    assert_eq!(acc.status, 200);
    assert_eq!(acc.json()["relatedParty"][1]["id"], person.as_str(), "the account still points at the person");
    assert!(!acc.body.contains("Lovelace"), "{}", acc.body);
    assert!(!c.to_string().contains("Lovelace"), "{c}");
    // The audit trail no longer holds the personal values.
    for rid in [&person, &customer, &account] {
        let trail = api.get(&format!("{CM}/auditRecord?resourceId={rid}"));
        assert_eq!(trail.status, 200);
        for personal in ["Ada", "Lovelace", "King", "ada@example.org", "P1234567"] {
            assert!(!trail.body.contains(personal), "{personal} is still in the trail of {rid}: {}", trail.body);
        }
    }
    let person_trail = api.get(&format!("{CM}/auditRecord?resourceId={person}")).json();
    assert_eq!(person_trail.as_array().unwrap().last().unwrap()["action"], "erase");
    // Further changes are refused; the erasure is listed.
    assert_error(&api.patch(&format!("{people}/{person}"), json!({"givenName": "Ada"})), 409, &["erased"]);
    assert_error(
        &api.post(&format!("{people}/{person}/erase"), json!({"reason": "again"})),
        409,
        &["already been erased"],
    );
    let list = api.get(&format!("{PARTY}/erasureRecord"));
    assert_eq!(list.header("x-total-count"), Some("1"));
    assert_eq!(list.json()[0]["reason"], "GDPR art. 17 request of 2026-11-01");
    assert_eq!(api.get(&format!("{PARTY}/erasureRecord/{person}")).json()["party"]["id"], person.as_str());
}
