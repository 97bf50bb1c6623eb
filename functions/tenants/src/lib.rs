//! `tenants`: the BSS tenant admin API on `/admin/v1/...` (a Spin HTTP component). Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p tenants`; its logic lives in `bss_kit::tenancy`
//! (tested by `cargo test -p bss-kit`), the end-to-end tests drive it through bss-host.
//!
//! Every route but `whoami` needs `Authorization: Bearer <admin key>` (variable `admin_key`; 403
//! when it is not configured):
//!
//! | route | answer |
//! |---|---|
//! | `POST /admin/v1/tenants` `{"name"}` | 201 `{id, href, @type, name, createdAt, apiKey, keyId}` — the only time the key is shown |
//! | `GET /admin/v1/tenants` | 200 list (TMF `offset`/`limit`/`fields`/filters/`sort`, `X-Total-Count`, `X-Result-Count`) |
//! | `GET /admin/v1/tenants/{id}` | 200 tenant / 404 |
//! | `POST /admin/v1/tenants/{id}/apiKeys` | 201 `{keyId, apiKey, tenantId, href}` / 404 |
//! | `GET /admin/v1/tenants/{id}/apiKeys` | 200 list of `{id, keyId, href, tenantId, createdAt, revoked, revokedAt?}` / 404 |
//! | `DELETE /admin/v1/tenants/{id}/apiKeys/{keyId}` | 204 (revoked; idempotent) / 404 |
//! | `GET /admin/v1/whoami` (tenant key) | 200 `{tenantId, keyId}` / 401 |
//!
//! The two POSTs answer a secret, which is never stored; so they refuse an `Idempotency-Key`
//! (400) rather than keep the secret for replays.

use bss_kit::auth::{authenticate_admin, authenticate_tenant};
use bss_kit::http::Router;
use bss_kit::http::{Ctx, Reply, handler, method_not_allowed, not_found, param};
use bss_kit::list::ListQuery;
use bss_kit::wasi_kv::open_store;
use bss_kit::{ApiError, idempotency, tenancy};
use serde_json::json;
use spin_sdk::http::{Params, Request, Response};

const TENANTS: &str = "/admin/v1/tenants";
const TENANT: &str = "/admin/v1/tenants/:id";
const KEYS: &str = "/admin/v1/tenants/:id/apiKeys";
const KEY: &str = "/admin/v1/tenants/:id/apiKeys/:keyId";
const WHOAMI: &str = "/admin/v1/whoami";

bss_kit::export_http!(route);

fn route(req: Request) -> Response {
    let mut router = Router::for_request(&req);
    router.post(TENANTS, handler(create_tenant));
    router.get(TENANTS, handler(list_tenants));
    router.get(TENANT, handler(get_tenant));
    router.post(KEYS, handler(issue_key));
    router.get(KEYS, handler(list_keys));
    router.delete(KEY, handler(revoke_key));
    router.get(WHOAMI, handler(whoami));
    for path in [TENANTS, TENANT, KEYS, KEY, WHOAMI] {
        router.any(path, method_not_allowed);
    }
    router.any("/*", not_found);
    router.handle(req)
}

fn refuse_idempotency_key(ctx: &Ctx) -> Result<(), ApiError> {
    match ctx.header(idempotency::HEADER) {
        Some(_) => Err(ApiError::bad_request(
            "Idempotency-Key is not supported here: the answer carries a secret, which is never stored for replays",
        )
        .with_code("IDEMPOTENCY_NOT_SUPPORTED")),
        None => Ok(()),
    }
}

fn create_tenant(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    authenticate_admin(ctx)?;
    refuse_idempotency_key(ctx)?;
    let body: tenancy::CreateTenant = ctx.json()?;
    let store = open_store()?;
    let (tenant, key) = tenancy::create_tenant(&store, &body.name)?;
    let mut out = tenancy::tenant_json(&tenant);
    out["apiKey"] = json!(key.api_key);
    out["keyId"] = json!(key.key_id);
    Ok(Reply::json(201, &out)?.with_header("location", tenancy::tenant_href(&tenant.id)))
}

fn list_tenants(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    authenticate_admin(ctx)?;
    let query = ListQuery::parse(&ctx.query)?;
    let tenants = tenancy::list_tenants(&open_store()?)?;
    query.apply(tenants.iter().map(tenancy::tenant_json).collect()).into_reply()
}

fn get_tenant(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    authenticate_admin(ctx)?;
    let tenant = tenancy::get_tenant(&open_store()?, &param(params, "id")?)?;
    Reply::json(200, &tenancy::tenant_json(&tenant))
}

fn issue_key(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    authenticate_admin(ctx)?;
    refuse_idempotency_key(ctx)?;
    let tenant_id = param(params, "id")?;
    let key = tenancy::issue_key(&open_store()?, &tenant_id)?;
    let href = format!("{}/apiKeys/{}", tenancy::tenant_href(&tenant_id), key.key_id);
    let out = json!({"keyId": key.key_id, "apiKey": key.api_key, "tenantId": tenant_id, "href": href});
    Ok(Reply::json(201, &out)?.with_header("location", href))
}

fn list_keys(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    authenticate_admin(ctx)?;
    let query = ListQuery::parse(&ctx.query)?;
    let keys = tenancy::list_keys(&open_store()?, &param(params, "id")?)?;
    query.apply(keys.iter().map(tenancy::key_json).collect()).into_reply()
}

fn revoke_key(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    authenticate_admin(ctx)?;
    tenancy::revoke_key(&open_store()?, &param(params, "id")?, &param(params, "keyId")?)?;
    Ok(Reply::no_content())
}

fn whoami(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    let tenant = authenticate_tenant(&open_store()?, ctx)?;
    Reply::json(200, &tenant)
}
