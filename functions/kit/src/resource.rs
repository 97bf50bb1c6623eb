//! TMF resources stored as their JSON documents: the create / get / list / patch / delete every
//! TM Forum API shares, written once.
//!
//! A [`Kind`] names a resource (`productOffering` under `/tmf-api/productCatalogManagement/v4`).
//! Documents live at `t/<tenant>/<collection>/<id>` as [`Versioned`] JSON values, so attributes the
//! component does not model are kept as the client sent them. What differs per resource — the
//! validation of a new or changed document, what forbids a delete, what to do after a change
//! (audit) — comes from the component's [`Hooks`].
//!
//! Server-owned attributes (stamped by [`stamp_new`] and [`apply_patch`]):
//! - `id` is assigned by the server; a create that sends one is refused (400) except through
//!   [`Resources::upsert`] (imports keep their ids).
//! - `href` is `<base>/<collection>/<id>`; `@type` defaults to the kind's type name.
//! - `lastUpdate` is the time of the last write (RFC 3339 UTC, milliseconds); it strictly
//!   increases from one version of a document to the next ([`later_than`]).
//! - A PATCH may not change `id` or `href` (400); it is an RFC 7386 merge patch; a `null` `@type`
//!   restores the default.
//!
//! Each write returns a [`Change`] (before and after documents); [`emit`] publishes the TMF
//! event for it (`<Type>CreateEvent`, `<Type>AttributeValueChangeEvent` — plus
//! `<Type>StateChangeEvent` when `lifecycleStatus`, `status` or `state` changed — and
//! `<Type>DeleteEvent`) with the payload `{"<collection>": document}`.
//!
//! The operations take a [`Store`] over any backend, so they run natively in tests against
//! [`crate::kv::MemKv`]; only [`emit`] needs the component's imports.

use bss_domain::json::type_name as json_type;
use serde_json::{Map, Value, json};

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::ids::{new_id, now_rfc3339};
use crate::json::merge_patch;
use crate::kv::{KvBackend, Store, StoreError, TenantStore, Versioned};
use crate::list::ListQuery;

/// Most documents of one collection a list (or a referential check) reads.
pub const MAX_LISTED: usize = 10_000;

/// Attributes whose change is a state change (a `StateChangeEvent` besides the value change).
pub const STATE_ATTRIBUTES: &[&str] = &["lifecycleStatus", "status", "state"];

/// A resource type of a TMF API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// KV collection and path segment (`productOffering`).
    pub collection: &'static str,
    /// Default `@type` and event name stem (`ProductOffering`).
    pub type_name: &'static str,
    /// API base path without a trailing slash (`/tmf-api/productCatalogManagement/v4`).
    pub base_path: &'static str,
    /// Event domain: the first segment of the event subject (`catalog`).
    pub domain: &'static str,
}

impl Kind {
    /// The collection path (`/tmf-api/.../productOffering`).
    pub fn path(&self) -> String {
        format!("{}/{}", self.base_path, self.collection)
    }

    /// The route of one item, for spin-sdk's router (`/tmf-api/.../productOffering/:id`).
    pub fn item_route(&self) -> String {
        format!("{}/{}/:id", self.base_path, self.collection)
    }

    /// A document's `href`.
    pub fn href(&self, id: &str) -> String {
        format!("{}/{}/{id}", self.base_path, self.collection)
    }

    /// A reference to a document: `{id, href, @referredType}` (plus `name` when it has one).
    pub fn reference(&self, doc: &Value) -> Value {
        let id = doc.get("id").cloned().unwrap_or(Value::Null);
        let mut out = json!({"id": id, "href": id.as_str().map(|i| self.href(i)), "@referredType": self.type_name});
        if let Some(name) = doc.get("name") {
            out["name"] = name.clone();
        }
        out
    }
}

/// What a write did: the document before and after (`None` for absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The resource type.
    pub kind: Kind,
    /// The document before the write (`None` on create).
    pub before: Option<Value>,
    /// The document after the write (`None` on delete).
    pub after: Option<Value>,
    /// The stored version after the write (`0` on delete).
    pub version: u64,
    /// `after` as the write serialised it for the store, when the write kept it: [`emit`]
    /// reuses it rather than serialising the document once more (a bill is about 6 KB, and that
    /// second serialisation was about 3% of a bill run's CPU). Set only where `after` is set,
    /// from the same value, and never changed after: `after` is not changed once a write made it.
    after_json: Option<StoredJson>,
}

/// A document [`Resources::create_serialized`] created: its id, version and JSON text as stored.
#[derive(Debug)]
pub struct Created {
    /// The resource type.
    pub kind: Kind,
    /// The document's id.
    pub id: String,
    /// The stored version (`1`).
    pub version: u64,
    json: StoredJson,
}

impl Created {
    /// The document's JSON text.
    pub fn json(&self) -> &serde_json::value::RawValue {
        &self.json.0
    }

    /// The document's JSON text, moved out.
    pub fn into_json(self) -> Box<serde_json::value::RawValue> {
        self.json.0
    }

    /// Publishes `<Type>CreateEvent` with the payload `{collection: document}`, as [`emit`] does
    /// for a [`Change`] that created a document.
    pub fn emit(&self, tenant: &Tenant) {
        let created = [format!("{}CreateEvent", self.kind.type_name)];
        let payload =
            serde_json::value::to_raw_value(&std::collections::BTreeMap::from([(self.kind.collection, &*self.json.0)]));
        publish_all(tenant, self.kind, &self.id, &created, payload);
    }
}

/// A document's server-owned attributes around its body (see [`Resources::create_serialized`]).
#[derive(serde::Serialize)]
struct Stamped<'a, T> {
    id: &'a str,
    href: String,
    #[serde(rename = "@type")]
    type_name: &'static str,
    #[serde(rename = "lastUpdate")]
    last_update: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// A document's JSON text as a write stored it.
#[derive(Debug, Clone)]
struct StoredJson(Box<serde_json::value::RawValue>);

impl PartialEq for StoredJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// `doc` serialised once, for the store and for the write's events.
fn stored_json(kind: &Kind, id: &str, doc: &Value) -> Result<Box<serde_json::value::RawValue>, ApiError> {
    serde_json::value::to_raw_value(doc)
        .map_err(|e| ApiError::internal(format!("serialising {} {id}: {e}", kind.collection)))
}

impl Change {
    /// A change known from outside a write (a document found stored, answered as the write of an
    /// earlier attempt).
    pub fn new(kind: Kind, before: Option<Value>, after: Option<Value>, version: u64) -> Change {
        Change { kind, before, after, version, after_json: None }
    }

    /// `created`, `updated` or `deleted`.
    pub fn action(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, _) => "created",
            (Some(_), Some(_)) => "updated",
            (Some(_), None) => "deleted",
        }
    }

    /// The document's id.
    pub fn id(&self) -> &str {
        self.after.as_ref().or(self.before.as_ref()).and_then(|d| d.get("id")).and_then(Value::as_str).unwrap_or("")
    }

    /// The state attributes whose value differs between before and after.
    pub fn state_changed(&self) -> bool {
        let (Some(before), Some(after)) = (&self.before, &self.after) else { return false };
        STATE_ATTRIBUTES.iter().any(|a| before.get(a) != after.get(a))
    }

    /// The TMF event types of the change, in publishing order.
    pub fn event_types(&self) -> Vec<String> {
        let t = self.kind.type_name;
        match self.action() {
            "created" => vec![format!("{t}CreateEvent")],
            "deleted" => vec![format!("{t}DeleteEvent")],
            _ if self.state_changed() => vec![format!("{t}AttributeValueChangeEvent"), format!("{t}StateChangeEvent")],
            _ => vec![format!("{t}AttributeValueChangeEvent")],
        }
    }
}

/// What a component decides per resource. Every hook has a permissive default.
pub trait Hooks<B: KvBackend> {
    /// Checks — and may normalise (defaults, canonical forms) — a document about to be stored.
    /// `before` is the stored document on a patch and `None` on a create or an upsert of a new id.
    /// An error refuses the write; nothing is stored.
    fn validate(
        &self,
        _env: &Env<'_, B>,
        _kind: &Kind,
        _before: Option<&Value>,
        next: Value,
    ) -> Result<Value, ApiError> {
        Ok(next)
    }

    /// Refuses a delete (e.g. 409 while other documents refer to this one).
    fn before_delete(&self, _env: &Env<'_, B>, _kind: &Kind, _doc: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// Runs after a write is stored (audit trails, denormalised indexes). An error is answered,
    /// but the write stays: hooks must be idempotent, as a client's retry may run them again.
    fn after_write(&self, _env: &Env<'_, B>, _change: &Change) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Hooks that accept everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl<B: KvBackend> Hooks<B> for NoHooks {}

/// The caller's view of the store: the tenant and its documents.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a, B> {
    /// The whole store (tenant-scope it with [`Env::resources`]).
    pub store: &'a Store<B>,
    /// The authenticated caller.
    pub tenant: &'a Tenant,
}

impl<'a, B: KvBackend> Env<'a, B> {
    /// An environment for `tenant`.
    pub fn new(store: &'a Store<B>, tenant: &'a Tenant) -> Self {
        Self { store, tenant }
    }

    /// The tenant's documents of `kind`.
    pub fn resources(&self, kind: Kind) -> Resources<'a, B> {
        Resources { docs: self.store.tenant(&self.tenant.tenant_id), kind }
    }
}

/// The documents of one kind for one tenant.
#[derive(Debug)]
pub struct Resources<'a, B> {
    docs: TenantStore<'a, B>,
    kind: Kind,
}

fn store_error(kind: &Kind, id: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => not_found(kind, id),
        other => other.into(),
    }
}

/// The 404 of a missing document.
pub fn not_found(kind: &Kind, id: &str) -> ApiError {
    ApiError::not_found(format!("{} {id} does not exist", kind.collection))
}

impl<B: KvBackend> Resources<'_, B> {
    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The document, if any.
    pub fn find(&self, id: &str) -> Result<Option<Versioned<Value>>, ApiError> {
        Ok(self.docs.get(self.kind.collection, id)?)
    }

    /// The document; 404 naming it if absent.
    pub fn get(&self, id: &str) -> Result<Versioned<Value>, ApiError> {
        self.find(id)?.ok_or_else(|| not_found(&self.kind, id))
    }

    /// Every document of the kind (at most [`MAX_LISTED`]), in id order.
    pub fn all(&self) -> Result<Vec<Value>, ApiError> {
        Ok(self.docs.list::<Value>(self.kind.collection, MAX_LISTED)?.into_iter().map(|d| d.data).collect())
    }

    /// Creates a document from a client's body: stamps it ([`stamp_new`]), validates it, stores it.
    pub fn create<H: Hooks<B>>(&self, env: &Env<'_, B>, hooks: &H, body: Value) -> Result<Change, ApiError> {
        self.create_with_id(env, hooks, &new_id(), body)
    }

    /// [`Resources::create`] under an id the server chose (e.g. derived from another document, so
    /// that a retried step creates the document once): 409 if a document already has that id.
    pub fn create_with_id<H: Hooks<B>>(
        &self,
        env: &Env<'_, B>,
        hooks: &H,
        id: &str,
        body: Value,
    ) -> Result<Change, ApiError> {
        let id = id.to_string();
        let doc = stamp_new(&self.kind, body, &id, &now_rfc3339())?;
        let doc = hooks.validate(env, &self.kind, None, doc)?;
        let json = stored_json(&self.kind, &id, &doc)?;
        let stored = self.docs.create(self.kind.collection, &id, &*json).map_err(|e| self.create_error(&id, e))?;
        let change = Change {
            kind: self.kind,
            before: None,
            after: Some(doc),
            version: stored.version,
            after_json: Some(StoredJson(json)),
        };
        hooks.after_write(env, &change)?;
        Ok(change)
    }

    /// [`Resources::create_with_id`] of a document the server builds as a typed value, written
    /// as that value serialises: no JSON tree is built, serialised and dropped on the way (for a
    /// bill run's bill that was a tenth of the run's CPU). `body` serialises as a JSON object
    /// without `id`, `href`, `@type` or `lastUpdate`, which are stamped around it as
    /// [`stamp_new`] stamps them. No hooks run (the server's own documents only); 409
    /// `ALREADY_EXISTS` if a document has that id.
    pub fn create_serialized<T: serde::Serialize>(&self, id: &str, body: &T) -> Result<Created, ApiError> {
        let now = now_rfc3339();
        let stamped = Stamped { id, href: self.kind.href(id), type_name: self.kind.type_name, last_update: &now, body };
        let json = serde_json::value::to_raw_value(&stamped)
            .map_err(|e| ApiError::internal(format!("serialising {} {id}: {e}", self.kind.collection)))?;
        debug_assert!(json.get().starts_with('{'), "a resource document is a JSON object");
        let stored = self.docs.create(self.kind.collection, id, &*json).map_err(|e| self.create_error(id, e))?;
        Ok(Created { kind: self.kind, id: id.to_string(), version: stored.version, json: StoredJson(json) })
    }

    /// The error of a create refused by the store.
    fn create_error(&self, id: &str, e: StoreError) -> ApiError {
        match e {
            StoreError::AlreadyExists(_) => {
                ApiError::conflict(format!("{} {id} already exists", self.kind.collection)).with_code("ALREADY_EXISTS")
            }
            other => store_error(&self.kind, id, other),
        }
    }

    /// Writes a document under its own `id` (imports): created if new, replaced otherwise.
    /// Validated like a create (`before` is the stored document, if any).
    pub fn upsert<H: Hooks<B>>(&self, env: &Env<'_, B>, hooks: &H, body: Value) -> Result<Change, ApiError> {
        let id = match body.get("id") {
            Some(Value::String(id)) if crate::kv::valid_segment(id) => id.clone(),
            _ => {
                return Err(ApiError::unprocessable(format!(
                    "a {} to import needs an id of 1 to 128 characters [A-Za-z0-9._:-]",
                    self.kind.collection
                )));
            }
        };
        let before = self.find(&id)?.map(|d| d.data);
        let mut body = body;
        if let Value::Object(map) = &mut body {
            map.remove("id");
        }
        let mut doc = stamp_new(&self.kind, body, &id, &now_rfc3339())?;
        if let Some(b) = &before
            && same_ignoring_last_update(b, &doc)
        {
            // Re-importing an unchanged document must change nothing, not even lastUpdate.
            doc = b.clone();
        }
        let doc = hooks.validate(env, &self.kind, before.as_ref(), doc)?;
        if before.as_ref() == Some(&doc) {
            let version = self.find(&id)?.map(|d| d.version).unwrap_or(0);
            return Ok(Change::new(self.kind, before.clone(), before, version));
        }
        let stored = self.docs.put(self.kind.collection, &id, doc).map_err(|e| store_error(&self.kind, &id, e))?;
        let change = Change::new(self.kind, before, Some(stored.data), stored.version);
        hooks.after_write(env, &change)?;
        Ok(change)
    }

    /// Applies a merge patch ([`apply_patch`]) with a CAS retry loop. `if_match` (a stored
    /// version, from `If-Match`) refuses the patch with 412 when the document moved on.
    pub fn patch<H: Hooks<B>>(
        &self,
        env: &Env<'_, B>,
        hooks: &H,
        id: &str,
        patch: &Value,
        if_match: Option<u64>,
    ) -> Result<Change, ApiError> {
        self.rewrite(env, hooks, id, |current| {
            if let Some(expected) = if_match
                && expected != current.version
            {
                return Err(ApiError::precondition_failed(format!(
                    "{} {id} is at version {}, not {expected}",
                    self.kind.collection, current.version
                )));
            }
            apply_patch(&self.kind, &current.data, patch, &now_rfc3339())
        })
    }

    /// Replaces a document by a function of it (server-side actions such as a state transition or
    /// a price change), validated like a patch.
    pub fn modify<H, F>(&self, env: &Env<'_, B>, hooks: &H, id: &str, mut change: F) -> Result<Change, ApiError>
    where
        H: Hooks<B>,
        F: FnMut(&Value) -> Result<Value, ApiError>,
    {
        self.rewrite(env, hooks, id, |current| {
            let mut next = change(&current.data)?;
            restamp(&self.kind, &mut next, id, &now_rfc3339());
            Ok(next)
        })
    }

    /// [`Resources::modify`] of a document the caller holds at a known version (typically one it
    /// has just written): when the store still has that version, the change is applied to
    /// `known` and swapped in without reading the stored document back; otherwise it runs as
    /// [`Resources::modify`] on the stored document.
    pub fn modify_known<H, F>(
        &self,
        env: &Env<'_, B>,
        hooks: &H,
        id: &str,
        known: Versioned<Value>,
        mut change: F,
    ) -> Result<Change, ApiError>
    where
        H: Hooks<B>,
        F: FnMut(&Value) -> Result<Value, ApiError>,
    {
        let mut stamped = |current: &Value| {
            let mut next = change(current)?;
            restamp(&self.kind, &mut next, id, &now_rfc3339());
            Ok(next)
        };
        // A change refused on the held copy is judged again on the stored document (the copy may
        // be stale); refusals are rare, so that read costs nothing in the usual case.
        let Ok(candidate) = self.candidate(env, hooks, &known, |k| stamped(&k.data)) else {
            return self.rewrite(env, hooks, id, |current| stamped(&current.data));
        };
        let json = stored_json(&self.kind, id, &candidate)?;
        match self.docs.replace_if_version(self.kind.collection, id, known.version, &*json) {
            Ok(Some(stored)) => {
                let change = Change {
                    kind: self.kind,
                    before: Some(known.data),
                    after: Some(candidate),
                    version: stored.version,
                    after_json: Some(StoredJson(json)),
                };
                hooks.after_write(env, &change)?;
                Ok(change)
            }
            Ok(None) => self.rewrite(env, hooks, id, |current| stamped(&current.data)),
            Err(e) => Err(store_error(&self.kind, id, e)),
        }
    }

    /// The CAS loop of every change to a stored document: `next` (run again on each attempt),
    /// validation, write, then [`Hooks::after_write`] once the write won.
    fn rewrite<H, F>(&self, env: &Env<'_, B>, hooks: &H, id: &str, mut next: F) -> Result<Change, ApiError>
    where
        H: Hooks<B>,
        F: FnMut(&Versioned<Value>) -> Result<Value, ApiError>,
    {
        let mut before = None;
        let stored = self
            .docs
            .update::<Value, _>(self.kind.collection, id, |current| {
                let validated = self.candidate(env, hooks, current, &mut next)?;
                before = Some(current.data.clone());
                Ok(validated)
            })
            .map_err(|e| store_error(&self.kind, id, e))?;
        let change = Change::new(self.kind, before, Some(stored.data), stored.version);
        hooks.after_write(env, &change)?;
        Ok(change)
    }

    /// The document a change writes over `current`: `next` of it, its `lastUpdate` kept later
    /// than the stored one, validated by the hooks.
    fn candidate<H, F>(
        &self,
        env: &Env<'_, B>,
        hooks: &H,
        current: &Versioned<Value>,
        next: F,
    ) -> Result<Value, ApiError>
    where
        H: Hooks<B>,
        F: FnOnce(&Versioned<Value>) -> Result<Value, ApiError>,
    {
        let mut candidate = next(current)?;
        if let (Some(prev), Some(Value::String(at))) = (last_update(&current.data), candidate.get("lastUpdate")) {
            let at = later_than(prev, at);
            candidate["lastUpdate"] = json!(at);
        }
        hooks.validate(env, &self.kind, Some(&current.data), candidate)
    }

    /// Deletes a document after [`Hooks::before_delete`] agreed; 404 if absent.
    pub fn delete<H: Hooks<B>>(&self, env: &Env<'_, B>, hooks: &H, id: &str) -> Result<Change, ApiError> {
        let doc = self.get(id)?;
        hooks.before_delete(env, &self.kind, &doc.data)?;
        if !self.docs.delete(self.kind.collection, id)? {
            return Err(not_found(&self.kind, id));
        }
        let change = Change::new(self.kind, Some(doc.data), None, 0);
        hooks.after_write(env, &change)?;
        Ok(change)
    }
}

fn last_update(doc: &Value) -> Option<&str> {
    doc.get("lastUpdate").and_then(Value::as_str)
}

/// `at`, or one millisecond after `previous` when `at` is not later: a document's `lastUpdate`
/// strictly increases from version to version, so records keyed by it (audit trails) keep the
/// order of the writes even when two land in the same millisecond.
pub fn later_than(previous: &str, at: &str) -> String {
    use chrono::{DateTime, SecondsFormat, TimeDelta};
    match (DateTime::parse_from_rfc3339(previous), DateTime::parse_from_rfc3339(at)) {
        (Ok(p), Ok(a)) if a <= p => {
            (p + TimeDelta::milliseconds(1)).to_utc().to_rfc3339_opts(SecondsFormat::Millis, true)
        }
        _ => at.to_string(),
    }
}

fn same_ignoring_last_update(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Value::Object(m) = &mut v {
            m.remove("lastUpdate");
        }
        v
    };
    strip(a) == strip(b)
}

fn as_object(body: Value, what: &str) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(format!("{what} must be a JSON object, not {}", json_type(&other)))
            .with_code("INVALID_BODY")),
    }
}

fn restamp(kind: &Kind, doc: &mut Value, id: &str, now: &str) {
    if let Value::Object(m) = doc {
        m.insert("id".into(), json!(id));
        m.insert("href".into(), json!(kind.href(id)));
        if !matches!(m.get("@type"), Some(Value::String(_))) {
            m.insert("@type".into(), json!(kind.type_name));
        }
        m.insert("lastUpdate".into(), json!(now));
    }
}

/// A new document from a create body: refuses a client `id`/`href` and sets `id`, `href`,
/// `@type` (if absent) and `lastUpdate`.
pub fn stamp_new(kind: &Kind, body: Value, id: &str, now: &str) -> Result<Value, ApiError> {
    let map = as_object(body, "the body")?;
    for server_owned in ["id", "href"] {
        if map.get(server_owned).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request(format!(
                "{server_owned} is assigned by the server; leave it out of a create"
            ))
            .with_code("SERVER_OWNED_ATTRIBUTE"));
        }
    }
    let mut doc = Value::Object(map);
    restamp(kind, &mut doc, id, now);
    Ok(doc)
}

/// The document after a merge patch: `id`/`href` may not change (400), the rest merges
/// (RFC 7386), `lastUpdate` is set.
pub fn apply_patch(kind: &Kind, current: &Value, patch: &Value, now: &str) -> Result<Value, ApiError> {
    let Value::Object(p) = patch else {
        return Err(ApiError::bad_request(format!("a merge patch must be a JSON object, not {}", json_type(patch)))
            .with_code("INVALID_BODY"));
    };
    for server_owned in ["id", "href"] {
        if let Some(v) = p.get(server_owned)
            && current.get(server_owned) != Some(v)
        {
            return Err(
                ApiError::bad_request(format!("{server_owned} cannot be changed")).with_code("SERVER_OWNED_ATTRIBUTE")
            );
        }
    }
    let id = current.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut next = current.clone();
    merge_patch(&mut next, patch);
    restamp(kind, &mut next, &id, now);
    Ok(next)
}

/// The version named by `If-Match: "<n>"` (or `W/"<n>"`); `None` without the header or for `*`.
pub fn if_match(ctx: &Ctx) -> Result<Option<u64>, ApiError> {
    let Some(raw) = ctx.header("if-match") else { return Ok(None) };
    let raw = raw.trim();
    if raw == "*" {
        return Ok(None);
    }
    let tag = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    tag.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("If-Match must be an ETag this API issued (\"<n>\"), not {raw}")))
}

/// The `ETag` of a stored version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// 200 with the document after a change (and its `ETag`).
pub fn ok_reply(change: &Change) -> Result<Reply, ApiError> {
    let doc = change.after.as_ref().ok_or_else(|| ApiError::internal("replying with a deleted document"))?;
    Ok(Reply::json(200, doc)?.with_header("etag", etag(change.version)))
}

/// 201 with the created document, `Location` and `ETag`.
pub fn created_reply(change: &Change) -> Result<Reply, ApiError> {
    let mut reply = ok_reply(change)?;
    reply.status = 201;
    Ok(reply.with_header("location", change.kind.href(change.id())))
}

/// 200 with a stored document and its `ETag`.
pub fn doc_reply(doc: &Versioned<Value>) -> Result<Reply, ApiError> {
    Ok(Reply::json(200, &doc.data)?.with_header("etag", etag(doc.version)))
}

/// The TMF list answer for `docs` under the request's query (`fields`, paging, filters, sort).
pub fn list_reply(ctx: &Ctx, docs: Vec<Value>) -> Result<Reply, ApiError> {
    ListQuery::parse(&ctx.query)?.apply(docs).into_reply()
}

/// The generic routes of a kind, callable without a server: each is a plain function of the
/// store, the caller and the request.
pub mod routes {
    use super::*;

    /// `POST <collection>`: 201 with the document.
    pub fn create<B: KvBackend, H: Hooks<B>>(
        env: &Env<'_, B>,
        hooks: &H,
        kind: Kind,
        ctx: &Ctx,
    ) -> Result<(Reply, Change), ApiError> {
        let body: Value = ctx.json()?;
        let change = env.resources(kind).create(env, hooks, body)?;
        Ok((created_reply(&change)?, change))
    }

    /// `GET <collection>`: the TMF list.
    pub fn list<B: KvBackend>(env: &Env<'_, B>, kind: Kind, ctx: &Ctx) -> Result<Reply, ApiError> {
        list_reply(ctx, env.resources(kind).all()?)
    }

    /// `GET <collection>/{id}`: the document (a `fields` selection applies) or 404.
    pub fn get<B: KvBackend>(env: &Env<'_, B>, kind: Kind, ctx: &Ctx, id: &str) -> Result<Reply, ApiError> {
        let doc = env.resources(kind).get(id)?;
        let query = ListQuery::parse(&ctx.query)?;
        Ok(Reply::json(200, &query.project(doc.data))?.with_header("etag", etag(doc.version)))
    }

    /// `PATCH <collection>/{id}`: merge patch, 200 with the document.
    pub fn patch<B: KvBackend, H: Hooks<B>>(
        env: &Env<'_, B>,
        hooks: &H,
        kind: Kind,
        ctx: &Ctx,
        id: &str,
    ) -> Result<(Reply, Change), ApiError> {
        let patch: Value = ctx.json()?;
        let change = env.resources(kind).patch(env, hooks, id, &patch, if_match(ctx)?)?;
        Ok((ok_reply(&change)?, change))
    }

    /// `DELETE <collection>/{id}`: 204.
    pub fn delete<B: KvBackend, H: Hooks<B>>(
        env: &Env<'_, B>,
        hooks: &H,
        kind: Kind,
        id: &str,
    ) -> Result<(Reply, Change), ApiError> {
        let change = env.resources(kind).delete(env, hooks, id)?;
        Ok((Reply::no_content(), change))
    }
}

/// Publishes the TMF events of a change. The write is stored by then, so a publishing failure is
/// logged rather than answered (the client's retry would repeat a write that succeeded).
pub fn emit(tenant: &Tenant, change: &Change) {
    if let Some(payload) = event_payload(change).transpose() {
        publish_all(tenant, change.kind, change.id(), &change.event_types(), payload);
    }
}

/// Publishes the events `event_types` of the document `id` with one payload (keyed by the id, so
/// a document's events stay in order); a failure is logged, not answered (the write stands).
fn publish_all(
    tenant: &Tenant,
    kind: Kind,
    id: &str,
    event_types: &[String],
    payload: Result<Box<serde_json::value::RawValue>, serde_json::Error>,
) {
    let payload = match payload {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bss: serialising the events of {} {id}: {e}", kind.collection);
            return;
        }
    };
    for event_type in event_types {
        if let Err(e) =
            crate::events::publish_event_keyed(kind.domain, event_type, &tenant.tenant_id, &payload, Some(id))
        {
            eprintln!("bss: publishing {event_type} for {} {id}: {e}", kind.collection);
        }
    }
}

/// `{collection: document}`, the payload of every event of `change` (`None`: no document),
/// serialised once for all of them (a bill run emits three events per bill; copying and
/// re-serialising the bill for each was a twelfth of its CPU), from the JSON the write stored
/// when the change kept it.
fn event_payload(change: &Change) -> Result<Option<Box<serde_json::value::RawValue>>, serde_json::Error> {
    use serde_json::value::to_raw_value;
    let collection = change.kind.collection;
    match (&change.after_json, change.after.as_ref().or(change.before.as_ref())) {
        (Some(json), _) => to_raw_value(&std::collections::BTreeMap::from([(collection, &*json.0)])).map(Some),
        (None, Some(doc)) => to_raw_value(&std::collections::BTreeMap::from([(collection, doc)])).map(Some),
        (None, None) => Ok(None),
    }
}

/// Runs `f` for the authenticated tenant of the request, with the component's store (wasm).
pub fn with_env<T>(
    ctx: &Ctx,
    f: impl FnOnce(&Env<'_, crate::wasi_kv::WasiKv>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let store = crate::wasi_kv::open_store()?;
    let tenant = crate::auth::authenticate_tenant(&store, ctx)?;
    f(&Env::new(&store, &tenant))
}

/// Registers the five TMF routes of `kind` on a spin-sdk router: `POST`/`GET` on the collection
/// (the create honours `Idempotency-Key`), `GET`/`PATCH`/`DELETE` on an item, 405 for other
/// methods. Every write publishes its events ([`emit`]).
pub fn register<H>(router: &mut crate::http::Router, kind: Kind, hooks: H)
where
    H: Hooks<crate::wasi_kv::WasiKv> + Clone + 'static,
{
    use crate::http::{handler, method_not_allowed, param};
    let (path, item) = (kind.path(), kind.item_route());
    let h = hooks.clone();
    router.post(
        &path,
        handler(move |ctx, _| {
            with_env(ctx, |env| {
                let scope = crate::idempotency::tenant_scope(&env.tenant.tenant_id);
                crate::idempotency::idempotent(env.store.backend(), &scope, ctx, || {
                    let (reply, change) = routes::create(env, &h, kind, ctx)?;
                    emit(env.tenant, &change);
                    Ok(reply)
                })
            })
        }),
    );
    router.get(&path, handler(move |ctx, _| with_env(ctx, |env| routes::list(env, kind, ctx))));
    router.get(&item, handler(move |ctx, p| with_env(ctx, |env| routes::get(env, kind, ctx, &param(p, "id")?))));
    let h = hooks.clone();
    router.patch(
        &item,
        handler(move |ctx, p| {
            with_env(ctx, |env| {
                let (reply, change) = routes::patch(env, &h, kind, ctx, &param(p, "id")?)?;
                emit(env.tenant, &change);
                Ok(reply)
            })
        }),
    );
    router.delete(
        &item,
        handler(move |ctx, p| {
            with_env(ctx, |env| {
                let (reply, change) = routes::delete(env, &hooks, kind, &param(p, "id")?)?;
                emit(env.tenant, &change);
                Ok(reply)
            })
        }),
    );
    router.any(&path, method_not_allowed);
    router.any(&item, method_not_allowed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;

    const OFFER: Kind = Kind {
        collection: "productOffering",
        type_name: "ProductOffering",
        base_path: "/tmf-api/productCatalogManagement/v4",
        domain: "catalog",
    };

    fn tenant() -> Tenant {
        Tenant { tenant_id: "t1".into(), key_id: "k1".into() }
    }

    /// Names must be present and non-empty; `price` may not be negative.
    struct NameRequired;

    impl<B: KvBackend> Hooks<B> for NameRequired {
        fn validate(&self, _: &Env<'_, B>, _: &Kind, _: Option<&Value>, next: Value) -> Result<Value, ApiError> {
            match next.get("name") {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(next),
                _ => Err(ApiError::unprocessable("name is mandatory")),
            }
        }
        fn before_delete(&self, _: &Env<'_, B>, _: &Kind, doc: &Value) -> Result<(), ApiError> {
            if doc["lifecycleStatus"] == "active" {
                return Err(ApiError::conflict("an active offering cannot be deleted"));
            }
            Ok(())
        }
    }

    #[test]
    fn a_serialized_create_stores_and_announces_what_a_create_of_its_json_would() {
        #[derive(serde::Serialize)]
        struct Offer<'a> {
            name: &'a str,
            #[serde(rename = "lifecycleStatus")]
            status: &'a str,
            price: Option<u32>,
        }
        let store = Store::new(MemKv::default());
        let t = tenant();
        let env = Env::new(&store, &t);
        let docs = env.resources(OFFER);
        let body = Offer { name: "Mobile S", status: "active", price: None };
        crate::events::native::take_published();
        let typed = docs.create_serialized("po-typed", &body).unwrap();
        typed.emit(&t);
        let tree = docs.create_with_id(&env, &NoHooks, "po-tree", serde_json::to_value(&body).unwrap()).unwrap();
        emit(&t, &tree);
        let (typed_doc, tree_doc) = (docs.get("po-typed").unwrap(), docs.get("po-tree").unwrap());
        assert_eq!((typed.version, typed_doc.version), (1, 1));
        assert_eq!(serde_json::from_str::<Value>(typed.json().get()).unwrap(), typed_doc.data);
        // The same document but for the id, the href and the time of the write.
        let comparable = |mut d: Value, id: &str| {
            assert_eq!(d["id"], id);
            assert_eq!(d["href"], OFFER.href(id));
            assert!(d["lastUpdate"].as_str().unwrap().ends_with('Z'));
            for server_owned in ["id", "href", "lastUpdate"] {
                d.as_object_mut().unwrap().remove(server_owned);
            }
            d
        };
        assert_eq!(comparable(typed_doc.data, "po-typed"), comparable(tree_doc.data, "po-tree"));
        let events = crate::events::native::take_published();
        assert_eq!(events.len(), 2);
        let payloads: Vec<Value> = events
            .iter()
            .map(|(_, subject, body)| {
                assert_eq!(subject, "catalog.ProductOfferingCreateEvent");
                let event: Value = serde_json::from_slice(body).unwrap();
                event["event"]["productOffering"].clone()
            })
            .collect();
        assert_eq!(payloads[0], serde_json::from_str::<Value>(typed.json().get()).unwrap());
        assert_eq!(payloads[1], tree.after.unwrap());
        // A second create of the id is refused and changes nothing.
        let e = docs
            .create_serialized("po-typed", &Offer { name: "Other", status: "retired", price: Some(1) })
            .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (409, "ALREADY_EXISTS"));
        assert_eq!(docs.get("po-typed").unwrap().data["name"], "Mobile S");
        assert!(crate::events::native::take_published().is_empty());
    }

    #[test]
    fn create_stamps_and_validates() {
        let store = Store::new(MemKv::default());
        let t = tenant();
        let env = Env::new(&store, &t);
        let docs = env.resources(OFFER);
        let c = docs.create(&env, &NameRequired, json!({"name": "Mobile S"})).unwrap();
        let doc = c.after.clone().unwrap();
        let id = c.id().to_string();
        assert_eq!(doc["href"], format!("/tmf-api/productCatalogManagement/v4/productOffering/{id}"));
        assert_eq!(doc["@type"], "ProductOffering");
        assert!(doc["lastUpdate"].as_str().unwrap().ends_with('Z'));
        assert_eq!(c.event_types(), vec!["ProductOfferingCreateEvent"]);
        assert_eq!(docs.get(&id).unwrap().data, doc);

        let e = docs.create(&env, &NameRequired, json!({"name": " "})).unwrap_err();
        assert_eq!(e.status, 422);
        let e = docs.create(&env, &NameRequired, json!({"id": "x", "name": "n"})).unwrap_err();
        assert_eq!(e.status, 400);
        let e = docs.create(&env, &NameRequired, json!([1])).unwrap_err();
        assert_eq!(e.status, 400);
        docs.create_with_id(&env, &NameRequired, "po-fixed", json!({"name": "B"})).unwrap();
        let e = docs.create_with_id(&env, &NameRequired, "po-fixed", json!({"name": "C"})).unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(docs.get("po-fixed").unwrap().data["name"], "B");
        docs.delete(&env, &NameRequired, "po-fixed").unwrap();
        assert_eq!(docs.all().unwrap().len(), 1, "refused creates store nothing");
    }

    #[test]
    fn patch_merges_keeps_ids_and_checks_versions() {
        let store = Store::new(MemKv::default());
        let t = tenant();
        let env = Env::new(&store, &t);
        let docs = env.resources(OFFER);
        let id = docs.create(&env, &NameRequired, json!({"name": "A", "lifecycleStatus": "inDesign", "x": 1})).unwrap();
        let id = id.id().to_string();

        let c =
            docs.patch(&env, &NameRequired, &id, &json!({"lifecycleStatus": "active", "x": null}), Some(1)).unwrap();
        let after = c.after.clone().unwrap();
        assert_eq!(after["lifecycleStatus"], "active");
        assert!(after.get("x").is_none());
        assert_eq!(c.version, 2);
        assert_eq!(
            c.event_types(),
            vec!["ProductOfferingAttributeValueChangeEvent", "ProductOfferingStateChangeEvent"]
        );

        assert_eq!(docs.patch(&env, &NameRequired, &id, &json!({"name": "B"}), Some(1)).unwrap_err().status, 412);
        assert_eq!(docs.patch(&env, &NameRequired, &id, &json!({"id": "other"}), None).unwrap_err().status, 400);
        assert_eq!(docs.patch(&env, &NameRequired, &id, &json!({"name": null}), None).unwrap_err().status, 422);
        assert_eq!(docs.patch(&env, &NameRequired, "nope", &json!({"name": "B"}), None).unwrap_err().status, 404);
        assert_eq!(docs.get(&id).unwrap().data, after, "refused patches change nothing");

        assert_eq!(docs.delete(&env, &NameRequired, &id).unwrap_err().status, 409);
        docs.patch(&env, &NameRequired, &id, &json!({"lifecycleStatus": "retired"}), None).unwrap();
        let d = docs.delete(&env, &NameRequired, &id).unwrap();
        assert_eq!(d.event_types(), vec!["ProductOfferingDeleteEvent"]);
        assert_eq!(docs.get(&id).unwrap_err().status, 404);
    }

    /// A create and a swap of a held copy keep the JSON they stored, and their events reuse it: it
    /// must be exactly the document the change answers and the store holds. A change that kept
    /// none (a patch) serialises its document for its events, to the same text.
    #[test]
    fn events_carry_the_json_the_write_stored() {
        let store = Store::new(MemKv::default());
        let t = tenant();
        let env = Env::new(&store, &t);
        let docs = env.resources(OFFER);
        let created = docs.create(&env, &NameRequired, json!({"name": "A", "lifecycleStatus": "inDesign"})).unwrap();
        let id = created.id().to_string();
        let known = Versioned { version: created.version, data: created.after.clone().unwrap() };
        let modified = docs
            .modify_known(&env, &NameRequired, &id, known, |d| {
                let mut n = d.clone();
                n["lifecycleStatus"] = json!("active");
                Ok(n)
            })
            .unwrap();
        assert_eq!(docs.get(&id).unwrap().data, *modified.after.as_ref().unwrap(), "the swap was stored");
        let patched = docs.patch(&env, &NameRequired, &id, &json!({"name": "B"}), None).unwrap();
        for (what, change, kept) in [("create", &created, true), ("swap", &modified, true), ("patch", &patched, false)]
        {
            assert_eq!(change.after_json.is_some(), kept, "{what}");
            let after = change.after.as_ref().unwrap();
            let payload = event_payload(change).unwrap().unwrap();
            let expected =
                serde_json::to_string(&std::collections::BTreeMap::from([(OFFER.collection, after)])).unwrap();
            assert_eq!(payload.get(), expected, "{what}: the event carries the document answered");
            if let Some(json) = &change.after_json {
                assert_eq!(serde_json::from_str::<Value>(json.0.get()).unwrap(), *after, "{what}");
            }
        }
        // What the store holds is that same text, inside its envelope.
        let key = store.tenant(&t.tenant_id).key(OFFER.collection, &id).unwrap();
        let bytes = store.backend().get(&key).unwrap().unwrap();
        let stored: Versioned<Value> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(stored.data, *patched.after.as_ref().unwrap());
        let deleted = docs.delete(&env, &NoHooks, &id).unwrap();
        let payload = event_payload(&deleted).unwrap().unwrap();
        assert_eq!(serde_json::from_str::<Value>(payload.get()).unwrap()[OFFER.collection]["name"], "B");
    }

    #[test]
    fn modify_known_swaps_in_the_change_of_a_current_copy_and_redoes_a_stale_one_on_the_stored_document() {
        let store = Store::new(MemKv::default());
        let t = tenant();
        let env = Env::new(&store, &t);
        let docs = env.resources(OFFER);
        let c = docs.create(&env, &NameRequired, json!({"name": "A", "lifecycleStatus": "inDesign"})).unwrap();
        let id = c.id().to_string();
        let known = Versioned { version: c.version, data: c.after.clone().unwrap() };
        let activate = |d: &Value| {
            let mut n = d.clone();
            n["lifecycleStatus"] = json!("active");
            Ok(n)
        };
        // The copy is current: the change of it is stored, validated and stamped.
        let m = docs.modify_known(&env, &NameRequired, &id, known.clone(), activate).unwrap();
        assert_eq!((m.version, m.event_types().len()), (2, 2), "a state change: two events");
        assert_eq!(m.before.as_ref(), Some(&known.data));
        let stored = docs.get(&id).unwrap();
        assert_eq!((stored.version, &stored.data), (2, m.after.as_ref().unwrap()));
        assert!(stored.data["lastUpdate"].as_str() > known.data["lastUpdate"].as_str());
        // A stale copy (version 1, the store has 2, renamed meanwhile): the change is made to the
        // stored document, so the rename is kept.
        docs.patch(&env, &NameRequired, &id, &json!({"name": "B"}), None).unwrap();
        let m = docs
            .modify_known(&env, &NameRequired, &id, known, |d| {
                let mut n = d.clone();
                n["x"] = json!(1);
                Ok(n)
            })
            .unwrap();
        let stored = docs.get(&id).unwrap();
        assert_eq!((stored.version, &stored.data["name"], &stored.data["x"]), (4, &json!("B"), &json!(1)));
        assert_eq!(m.before.unwrap()["name"], "B");
        // A change the stale copy cannot take (it lacks `x`) is judged on the stored document.
        let needs_x = |d: &Value| {
            if d["x"] != json!(1) {
                return Err(ApiError::conflict("no x"));
            }
            let mut n = d.clone();
            n["x"] = json!(2);
            Ok(n)
        };
        let stale = Versioned { version: 1, data: c.after.clone().unwrap() };
        assert_eq!(docs.modify_known(&env, &NameRequired, &id, stale, needs_x).unwrap().version, 5);
        assert_eq!(docs.get(&id).unwrap().data["x"], 2);
        // The hooks still refuse a change.
        let current = docs.get(&id).unwrap();
        let refused = docs.modify_known(&env, &NameRequired, &id, current, |d| {
            let mut n = d.clone();
            n["name"] = json!("");
            Ok(n)
        });
        assert_eq!(refused.unwrap_err().status, 422);
        assert_eq!(docs.get(&id).unwrap().version, 5);
    }

    #[test]
    fn upsert_keeps_ids_and_is_idempotent() {
        let store = Store::new(MemKv::default());
        let t = tenant();
        let env = Env::new(&store, &t);
        let docs = env.resources(OFFER);
        let first = docs.upsert(&env, &NoHooks, json!({"id": "po-1", "name": "A"})).unwrap();
        assert_eq!(first.action(), "created");
        let again = docs.upsert(&env, &NoHooks, json!({"id": "po-1", "name": "A"})).unwrap();
        assert_eq!(again.before, again.after, "re-importing the same document changes nothing");
        assert_eq!(docs.get("po-1").unwrap().version, 1);
        let changed = docs.upsert(&env, &NoHooks, json!({"id": "po-1", "name": "B"})).unwrap();
        assert_eq!(changed.action(), "updated");
        assert_eq!(docs.get("po-1").unwrap().version, 2);
        assert_eq!(docs.upsert(&env, &NoHooks, json!({"id": "a/b", "name": "x"})).unwrap_err().status, 422);
    }

    #[test]
    fn last_update_strictly_increases() {
        assert_eq!(later_than("2026-01-01T00:00:00.005Z", "2026-01-01T00:00:00.005Z"), "2026-01-01T00:00:00.006Z");
        assert_eq!(later_than("2026-01-01T00:00:00.999Z", "2026-01-01T00:00:00.100Z"), "2026-01-01T00:00:01.000Z");
        assert_eq!(later_than("2026-01-01T00:00:00.005Z", "2026-01-01T00:00:00.007Z"), "2026-01-01T00:00:00.007Z");
        assert_eq!(later_than("not a time", "2026-01-01T00:00:00.007Z"), "2026-01-01T00:00:00.007Z");
        let store = Store::new(MemKv::default());
        let t = tenant();
        let env = Env::new(&store, &t);
        let docs = env.resources(OFFER);
        let id = docs.create(&env, &NoHooks, json!({"name": "A"})).unwrap().id().to_string();
        let mut previous = docs.get(&id).unwrap().data["lastUpdate"].as_str().unwrap().to_string();
        for n in 0..20 {
            let c = docs.patch(&env, &NoHooks, &id, &json!({"n": n}), None).unwrap();
            let at = c.after.unwrap()["lastUpdate"].as_str().unwrap().to_string();
            assert!(at > previous, "{at} after {previous}");
            previous = at;
        }
    }

    #[test]
    fn if_match_forms() {
        let ctx = |v: &str| Ctx::new("PATCH", "/x", &[("If-Match", v)], "");
        assert_eq!(if_match(&ctx("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&ctx("W/\"4\"")).unwrap(), Some(4));
        assert_eq!(if_match(&ctx("*")).unwrap(), None);
        assert_eq!(if_match(&ctx("abc")).unwrap_err().status, 400);
        assert_eq!(if_match(&Ctx::new("PATCH", "/x", &[], "")).unwrap(), None);
    }
}
