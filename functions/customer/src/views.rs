//! The routes beyond CRUD: erasure, the audit trail, account hierarchies and the single view.

use bss_domain::customer::account::{hierarchy_attributes, ref_ids, related_party_ids};
use bss_domain::customer::check_text;
use bss_domain::customer::hierarchy::Forest;
use bss_domain::customer::party::{erase_individual, is_erased, pseudonym, pseudonymise_refs};
use bss_kit::ApiError;
use bss_kit::http::{Ctx, Reply, param};
use bss_kit::ids::now_rfc3339;
use bss_kit::kv::KvBackend;
use bss_kit::resource::{Env, Kind, emit, list_reply, with_env};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use spin_sdk::http::Params;
use std::collections::BTreeMap;

use crate::rules::{AUDIT, MAX_AUDIT_READ, Rules, forest, hierarchy_error, problem, scrub_trail, visible_records};
use crate::{ACCOUNT_KINDS, CUSTOMER, CUSTOMER_KIND, INDIVIDUAL, ORGANIZATION, PARTY, PARTY_ROLE};

/// Collection of the erasure records.
pub const ERASURES: &str = "erasureRecord";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseRequest {
    reason: String,
}

fn doc_id(doc: &Value) -> String {
    doc.get("id").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// `POST /tmf-api/party/v4/individual/{id}/erase {"reason"}` → 200 with the erasure record.
pub fn erase(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let id = param(params, "id")?;
    with_env(ctx, |env| {
        let req: EraseRequest = ctx.json()?;
        check_text("reason", &req.reason).map_err(problem)?;
        let (record, changes) = erase_person(env, &id, &req.reason)?;
        for change in &changes {
            emit(env.tenant, change);
        }
        Reply::json(200, &record)
    })
}

/// The erasure (see the crate doc for the order of its steps); the record and the writes made.
pub fn erase_person<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    reason: &str,
) -> Result<(Value, Vec<bss_kit::resource::Change>), ApiError> {
    let people = env.resources(INDIVIDUAL);
    let current = people.get(id)?;
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let erasing = Rules { erasing: true };
    // Documents that point at the person: customers it is engaged as (their `name` is the
    // person's too) and accounts naming it as a related party. Their references keep the id and
    // lose the name; their trails are scrubbed under those attributes.
    let mut linked: Vec<(Kind, String, &[&str])> = Vec::new();
    for c in env.resources(CUSTOMER_KIND).all()? {
        if ref_ids(&c, "engagedParty").iter().any(|p| p == id) {
            linked.push((CUSTOMER_KIND, doc_id(&c), &["name", "engagedParty"]));
        }
    }
    for kind in ACCOUNT_KINDS {
        for a in env.resources(kind).all()? {
            if related_party_ids(&a).iter().any(|p| p == id) {
                linked.push((kind, doc_id(&a), &["relatedParty"]));
            }
        }
    }
    let scrub_all = |env: &Env<'_, B>| -> Result<usize, ApiError> {
        let mut n = scrub_trail(env, id, None)?;
        for (_, lid, attributes) in &linked {
            n += scrub_trail(env, lid, Some(attributes))?;
        }
        Ok(n)
    };
    if is_erased(&current.data) {
        // A retry after a crash: finish the scrubbing, then refuse.
        scrub_all(env)?;
        return Err(ApiError::conflict(format!("individual {id} has already been erased")));
    }
    let (_, erased_attributes) = erase_individual(&current.data).map_err(problem)?;
    let name = pseudonym(id);
    let mut record = json!({
        "id": id, "href": format!("{PARTY}/{ERASURES}/{id}"), "@type": "ErasureRecord",
        "party": {"id": id, "href": INDIVIDUAL.href(id), "@referredType": "Individual"},
        "reason": reason,
        "requestedBy": {"tenantId": env.tenant.tenant_id, "keyId": env.tenant.key_id},
        "erasedAt": now_rfc3339(),
        "pseudonym": name,
        "erasedAttributes": erased_attributes,
        "pseudonymisedReferences": linked.iter().map(|(k, lid, _)| json!({"id": lid, "@referredType": k.type_name})).collect::<Vec<_>>(),
        "kept": "the party id, its links from customers and accounts, and the records the law requires (invoices)",
    });
    // 1. The record first: an erasure is never done unrecorded.
    docs.put(ERASURES, id, record.clone())?;
    // 2. The person, then the documents that point at it.
    let mut changes =
        vec![people.modify(env, &erasing, id, |cur| erase_individual(cur).map(|(d, _)| d).map_err(problem))?];
    for (kind, lid, _) in &linked {
        let next = |cur: &Value| {
            let mut next = pseudonymise_refs(cur, id, &name, &["engagedParty", "relatedParty"]);
            if kind.collection == "customer" {
                next["name"] = json!(name);
            }
            Ok(next)
        };
        let current = env.resources(*kind).get(lid)?.data;
        if next(&current)? != current {
            changes.push(env.resources(*kind).modify(env, &erasing, lid, next)?);
        }
    }
    // 3. The personal values already in the audit trail.
    let scrubbed = scrub_all(env)?;
    record["auditRecordsScrubbed"] = json!(scrubbed);
    docs.put(ERASURES, id, record.clone())?;
    Ok((record, changes))
}

/// `GET /tmf-api/party/v4/erasureRecord`.
pub fn list_erasures(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    with_env(ctx, |env| {
        let docs = env.store.tenant(&env.tenant.tenant_id).list::<Value>(ERASURES, MAX_AUDIT_READ)?;
        list_reply(ctx, docs.into_iter().map(|d| d.data).collect())
    })
}

/// `GET /tmf-api/party/v4/erasureRecord/{id}`.
pub fn get_erasure(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let id = param(params, "id")?;
    with_env(ctx, |env| {
        let doc = env.store.tenant(&env.tenant.tenant_id).get::<Value>(ERASURES, &id)?;
        let doc = doc.ok_or_else(|| ApiError::not_found(format!("erasureRecord {id} does not exist")))?;
        Reply::json(200, &doc.data)
    })
}

/// `GET /tmf-api/customerManagement/v4/auditRecord[?resourceId=...]`: oldest first per resource.
pub fn list_audit(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    with_env(ctx, |env| {
        let tenant = &env.tenant.tenant_id;
        let resource = ctx.query_param("resourceId").filter(|r| !r.contains(',') && bss_kit::kv::valid_segment(r));
        // One resource's records are a key range: read only those.
        let prefix = match &resource {
            Some(r) => format!("t/{tenant}/{AUDIT}/{r}:"),
            None => format!("t/{tenant}/{AUDIT}/"),
        };
        let docs = env.store.list::<Value>(&prefix, MAX_AUDIT_READ)?;
        list_reply(ctx, visible_records(docs.into_iter().map(|(_, d)| d.data).collect()))
    })
}

/// `GET /tmf-api/customerManagement/v4/auditRecord/{id}`.
pub fn get_audit(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let id = param(params, "id")?;
    with_env(ctx, |env| {
        let doc = env.store.tenant(&env.tenant.tenant_id).get::<Value>(AUDIT, &id)?;
        let doc = doc.ok_or_else(|| ApiError::not_found(format!("auditRecord {id} does not exist")))?;
        Reply::json(200, &doc.data)
    })
}

fn summary(kind: &Kind, doc: &Value) -> Value {
    let mut r = kind.reference(doc);
    let (_, roll_up) = hierarchy_attributes(doc);
    r["billRollUp"] = json!(roll_up);
    r
}

/// The tree below `root` (nested `children`), each node with its paying account; and the path from
/// `root`'s parent up to the top.
pub fn tree<B: KvBackend>(env: &Env<'_, B>, kind: Kind, root: &str) -> Result<Value, ApiError> {
    let (f, docs): (Forest, Vec<Value>) = forest(env, kind)?;
    let by_id: BTreeMap<&str, &Value> =
        docs.iter().filter_map(|d| d.get("id").and_then(Value::as_str).map(|i| (i, d))).collect();
    let node = |id: &str| -> Result<Value, ApiError> {
        let doc = by_id.get(id).copied().unwrap_or(&Value::Null);
        let mut n = summary(&kind, doc);
        n["payingAccount"] = json!({"id": f.payer_of(id).map_err(hierarchy_error)?});
        Ok(n)
    };
    let placed = f.subtree(root).map_err(hierarchy_error)?;
    // Build bottom-up: deepest first, each node collects its finished children.
    let mut built: BTreeMap<String, Value> = BTreeMap::new();
    for p in placed.iter().rev() {
        let mut n = node(&p.id)?;
        let children: Vec<Value> = f.children(&p.id).into_iter().filter_map(|c| built.remove(&c)).collect::<Vec<_>>();
        n["children"] = Value::Array(children);
        built.insert(p.id.clone(), n);
    }
    let path = f.path_to_root(root).map_err(hierarchy_error)?;
    let ancestors: Vec<Value> =
        path.iter().skip(1).map(|a| summary(&kind, by_id.get(a.as_str()).copied().unwrap_or(&Value::Null))).collect();
    Ok(json!({
        "@type": "AccountHierarchy",
        "account": kind.reference(by_id.get(root).copied().unwrap_or(&Value::Null)),
        "pathToRoot": ancestors,
        "size": placed.len(),
        "tree": built.remove(root).unwrap_or(Value::Null),
    }))
}

/// `GET /tmf-api/accountManagement/v4/{type}/{id}/hierarchy`.
pub fn hierarchy(kind: Kind, ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let id = param(params, "id")?;
    with_env(ctx, |env| {
        env.resources(kind).get(&id)?;
        Reply::json(200, &tree(env, kind, &id)?)
    })
}

/// `GET /tmf-api/customerManagement/v4/customer/{id}/view`.
pub fn customer_view(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let id = param(params, "id")?;
    with_env(ctx, |env| Reply::json(200, &single_view(env, &id)?))
}

/// The single view of a customer (see the crate doc).
pub fn single_view<B: KvBackend>(env: &Env<'_, B>, id: &str) -> Result<Value, ApiError> {
    let customer = env.resources(CUSTOMER_KIND).get(id)?.data;
    let party_id = ref_ids(&customer, "engagedParty").into_iter().next().unwrap_or_default();
    let party_kind = match customer.pointer("/engagedParty/@referredType").and_then(Value::as_str) {
        Some("Organization") => ORGANIZATION,
        _ => INDIVIDUAL,
    };
    let party = env.resources(party_kind).find(&party_id)?.map(|d| d.data);
    let listed: Vec<String> = ref_ids(&customer, "account");
    let mut accounts = Vec::new();
    for kind in ACCOUNT_KINDS {
        let docs = env.resources(kind).all()?;
        let owned: Vec<&str> = docs
            .iter()
            .filter(|a| {
                let aid = a.get("id").and_then(Value::as_str).unwrap_or_default();
                listed.iter().any(|l| l == aid)
                    || related_party_ids(a).iter().any(|p| *p == id || (!party_id.is_empty() && *p == party_id))
            })
            .filter_map(|a| a.get("id").and_then(Value::as_str))
            .collect();
        // An owned account inside the tree of another owned account is shown in that tree only.
        let mut roots: Vec<&str> = Vec::new();
        let by_id: Map<String, Value> = docs
            .iter()
            .filter_map(|d| d.get("id").and_then(Value::as_str).map(|i| (i.to_string(), d.clone())))
            .collect();
        for a in &owned {
            let mut cur = by_id.get(*a).and_then(|d| hierarchy_attributes(d).0);
            let mut inside = false;
            let mut steps = 0;
            while let Some(p) = cur {
                if owned.contains(&p.as_str()) {
                    inside = true;
                    break;
                }
                steps += 1;
                if steps > bss_domain::customer::hierarchy::MAX_DEPTH {
                    break;
                }
                cur = by_id.get(&p).and_then(|d| hierarchy_attributes(d).0);
            }
            if !inside {
                roots.push(a);
            }
        }
        for r in roots {
            accounts.push(tree(env, kind, r)?);
        }
    }
    let partner_roles: Vec<Value> = if party_id.is_empty() {
        Vec::new()
    } else {
        env.resources(PARTY_ROLE)
            .all()?
            .into_iter()
            .filter(|r| ref_ids(r, "engagedParty").contains(&party_id))
            .collect()
    };
    // The party can be the customer of the operator more than once (e.g. a person with a private
    // and a business contract): every such customer, this one included.
    let customers: Vec<Value> = if party_id.is_empty() {
        Vec::new()
    } else {
        env.resources(CUSTOMER_KIND)
            .all()?
            .into_iter()
            .filter(|c| ref_ids(c, "engagedParty").contains(&party_id))
            .map(|c| CUSTOMER_KIND.reference(&c))
            .collect()
    };
    // What the customer holds (TMF637) and has ordered (TMF622), from the collections the order
    // side writes; an order is summarised (its tracking view is the order itself).
    let of_customer = |doc: &Value| bss_commerce::inventory::customer_of(doc).as_deref() == Some(id);
    let products: Vec<Value> =
        bss_commerce::pricing::customer_products(env, id)?.into_iter().filter(of_customer).collect();
    let orders: Vec<Value> = env
        .resources(bss_commerce::order::ORDER)
        .all()?
        .into_iter()
        .filter(of_customer)
        .map(|o| {
            let mut summary = bss_commerce::order::ORDER.reference(&o);
            for f in ["state", "orderDate", "completionDate"] {
                if let Some(v) = o.get(f) {
                    summary[f] = v.clone();
                }
            }
            summary
        })
        .collect();
    Ok(json!({
        "@type": "CustomerView",
        "href": format!("{CUSTOMER}/customer/{id}/view"),
        "customer": customer,
        "engagedParty": party,
        "partyCustomers": customers,
        "accounts": accounts,
        "partnerRoles": partner_roles,
        "products": products,
        "productOrders": orders,
    }))
}
