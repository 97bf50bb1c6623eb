//! `tc-notes`: test component with a small TMF-style `Note` resource written entirely with
//! `bss-kit`, to prove the kit end to end. Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p tc-notes`; driven by the end-to-end tests
//! (route table in `tests/components/README.md`).
//!
//! Every route needs a tenant key (`Authorization: Bearer bss_...`, else 401); notes are stored
//! at `t/<tenantId>/note/<id>`, so another tenant's note is a 404.
//! - `POST /tmf-api/notes/v4/note` `{"text", "author"?, "@type"?: "Note"}` → 201 with `Location`,
//!   `ETag` and `{id, href, @type: "Note", text, author, createdAt, version: 1}`; honours
//!   `Idempotency-Key`; publishes `notes.noteCreated`.
//! - `GET /tmf-api/notes/v4/note` → TMF list (`offset`, `limit`, `fields`, filters, `sort`).
//! - `GET /tmf-api/notes/v4/note/{id}` → 200 with `ETag` / 404.
//! - `PATCH /tmf-api/notes/v4/note/{id}` (merge-patch of `text`/`author`; `If-Match: "<version>"`
//!   optional, 412 on mismatch) → 200, version + 1, `lastUpdate`; publishes `notes.noteUpdated`.
//! - `DELETE /tmf-api/notes/v4/note/{id}` → 204 / 404; publishes `notes.noteDeleted`.
//!
//! Event publishing failures are logged, not answered: the note is stored by then.

use bss_kit::auth::{Tenant, authenticate_tenant};
use bss_kit::events::publish_event;
use bss_kit::http::Router;
use bss_kit::http::{Ctx, Reply, handler, method_not_allowed, not_found, param};
use bss_kit::idempotency::{idempotent, tenant_scope};
use bss_kit::ids::{new_id, now_rfc3339};
use bss_kit::json::merge_patch;
use bss_kit::kv::Store;
use bss_kit::list::ListQuery;
use bss_kit::wasi_kv::{WasiKv, open_store};
use bss_kit::{ApiError, Versioned};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spin_sdk::http::{Params, Request, Response};

bss_kit::export_http!(route);

const BASE: &str = "/tmf-api/notes/v4/note";
const ITEM: &str = "/tmf-api/notes/v4/note/:id";
const COLLECTION: &str = "note";
const DOMAIN: &str = "notes";
const MAX_TEXT: usize = 10_000;
const MAX_LISTED: usize = 10_000;

fn route(req: Request) -> Response {
    let mut r = Router::for_request(&req);
    r.post(BASE, handler(create));
    r.get(BASE, handler(list));
    r.get(ITEM, handler(get));
    r.patch(ITEM, handler(patch));
    r.delete(ITEM, handler(delete));
    r.any(BASE, method_not_allowed);
    r.any(ITEM, method_not_allowed);
    r.any("/*", not_found);
    r.handle(req)
}

/// The stored note.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Note {
    id: String,
    text: String,
    author: Option<String>,
    created_at: String,
    last_update: Option<String>,
}

/// The body of a create.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    text: String,
    author: Option<String>,
    #[serde(rename = "@type")]
    kind: Option<String>,
}

/// What a merge patch may change.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Editable {
    text: String,
    author: Option<String>,
}

fn href(id: &str) -> String {
    format!("{BASE}/{id}")
}

fn repr(doc: &Versioned<Note>) -> Value {
    let n = &doc.data;
    let mut v = json!({
        "id": n.id, "href": href(&n.id), "@type": "Note", "text": n.text, "author": n.author,
        "createdAt": n.created_at, "version": doc.version,
    });
    if let Some(at) = &n.last_update {
        v["lastUpdate"] = json!(at);
    }
    v
}

fn validate(e: &Editable) -> Result<(), ApiError> {
    if e.text.trim().is_empty() {
        return Err(ApiError::unprocessable("text must not be empty"));
    }
    if e.text.chars().count() > MAX_TEXT {
        return Err(ApiError::unprocessable(format!("text must be at most {MAX_TEXT} characters")));
    }
    Ok(())
}

fn etag(doc: &Versioned<Note>) -> String {
    format!("\"{}\"", doc.version)
}

fn note_reply(status: u16, doc: &Versioned<Note>) -> Result<Reply, ApiError> {
    Ok(Reply::json(status, &repr(doc))?.with_header("etag", etag(doc)))
}

fn emit(event_type: &str, tenant: &Tenant, payload: &Value) {
    if let Err(e) = publish_event(DOMAIN, event_type, &tenant.tenant_id, payload) {
        eprintln!("notes: publishing {event_type} failed: {e}");
    }
}

fn authenticated(ctx: &Ctx) -> Result<(Store<WasiKv>, Tenant), ApiError> {
    let store = open_store()?;
    let tenant = authenticate_tenant(&store, ctx)?;
    Ok((store, tenant))
}

fn create(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    let (store, tenant) = authenticated(ctx)?;
    idempotent(store.backend(), &tenant_scope(&tenant.tenant_id), ctx, || {
        let body: NewNote = ctx.json()?;
        if body.kind.as_deref().is_some_and(|k| k != "Note") {
            return Err(ApiError::unprocessable("@type must be Note"));
        }
        let editable = Editable { text: body.text, author: body.author };
        validate(&editable)?;
        let note = Note {
            id: new_id(),
            text: editable.text,
            author: editable.author,
            created_at: now_rfc3339(),
            last_update: None,
        };
        let doc = store.tenant(&tenant.tenant_id).create(COLLECTION, &note.id.clone(), note)?;
        emit("noteCreated", &tenant, &repr(&doc));
        Ok(note_reply(201, &doc)?.with_header("location", href(&doc.data.id)))
    })
}

fn list(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    let (store, tenant) = authenticated(ctx)?;
    let query = ListQuery::parse(&ctx.query)?;
    let notes = store.tenant(&tenant.tenant_id).list::<Note>(COLLECTION, MAX_LISTED)?;
    query.apply(notes.iter().map(repr).collect()).into_reply()
}

fn not_found_note(id: &str) -> ApiError {
    ApiError::not_found(format!("note {id} does not exist"))
}

fn get(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let (store, tenant) = authenticated(ctx)?;
    let id = param(params, "id")?;
    let doc = store.tenant(&tenant.tenant_id).get::<Note>(COLLECTION, &id)?.ok_or_else(|| not_found_note(&id))?;
    note_reply(200, &doc)
}

/// Checks `If-Match` (`"3"`, `W/"3"`, `3` or `*`) against the current version.
fn check_if_match(if_match: Option<&str>, doc: &Versioned<Note>) -> Result<(), ApiError> {
    let Some(h) = if_match else { return Ok(()) };
    let matches = h
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == doc.version.to_string());
    if matches {
        Ok(())
    } else {
        Err(ApiError::precondition_failed(format!("the note is at version {}, not {h}", doc.version)))
    }
}

fn patch(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let (store, tenant) = authenticated(ctx)?;
    let id = param(params, "id")?;
    let patch: Value = ctx.json()?;
    let Value::Object(members) = &patch else {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    };
    let mut edits = serde_json::Map::new();
    for (k, v) in members {
        match k.as_str() {
            "text" | "author" => {
                edits.insert(k.clone(), v.clone());
            }
            "id" | "href" | "@type" | "createdAt" | "lastUpdate" | "version" => {} // checked below
            other => return Err(ApiError::bad_request(format!("unknown attribute {other}"))),
        }
    }
    let edits = Value::Object(edits);
    let if_match = ctx.header("if-match");
    let updated = store
        .tenant(&tenant.tenant_id)
        .update(COLLECTION, &id, |cur: &Versioned<Note>| {
            check_if_match(if_match, cur)?;
            let current = repr(cur);
            for (k, v) in members {
                if !matches!(k.as_str(), "text" | "author") && current.get(k) != Some(v) {
                    return Err(ApiError::bad_request(format!("attribute {k} cannot be changed")));
                }
            }
            let mut editable =
                serde_json::to_value(Editable { text: cur.data.text.clone(), author: cur.data.author.clone() })
                    .map_err(|e| ApiError::internal(e.to_string()))?;
            merge_patch(&mut editable, &edits);
            let editable: Editable = serde_json::from_value(editable)
                .map_err(|e| ApiError::unprocessable(format!("the patched note is invalid: {e}")))?;
            validate(&editable)?;
            Ok(Note {
                text: editable.text,
                author: editable.author,
                last_update: Some(now_rfc3339()),
                ..cur.data.clone()
            })
        })
        .map_err(|e| match e {
            bss_kit::StoreError::NotFound(_) => not_found_note(&id),
            other => other.into(),
        })?;
    emit("noteUpdated", &tenant, &repr(&updated));
    note_reply(200, &updated)
}

fn delete(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let (store, tenant) = authenticated(ctx)?;
    let id = param(params, "id")?;
    if !store.tenant(&tenant.tenant_id).delete(COLLECTION, &id)? {
        return Err(not_found_note(&id));
    }
    emit("noteDeleted", &tenant, &json!({"id": id, "href": href(&id), "@type": "Note"}));
    Ok(Reply::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(version: u64) -> Versioned<Note> {
        let note = Note { id: "n1".into(), text: "t".into(), author: None, created_at: "c".into(), last_update: None };
        Versioned { version, data: note }
    }

    #[test]
    fn if_match_accepts_strong_weak_bare_and_star() {
        for h in [None, Some("\"3\""), Some("W/\"3\""), Some("3"), Some("*"), Some("\"1\", \"3\"")] {
            assert!(check_if_match(h, &doc(3)).is_ok(), "{h:?}");
        }
        assert_eq!(check_if_match(Some("\"2\""), &doc(3)).unwrap_err().status, 412);
    }

    #[test]
    fn representation_is_tmf_shaped() {
        let v = repr(&doc(2));
        assert_eq!(v["@type"], "Note");
        assert_eq!(v["href"], "/tmf-api/notes/v4/note/n1");
        assert_eq!(v["version"], 2);
        assert!(v.get("lastUpdate").is_none());
    }
}
