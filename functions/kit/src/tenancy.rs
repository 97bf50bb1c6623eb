//! Tenants and their API keys (the logic behind the `tenants` admin component).
//!
//! Stored documents (all [`Versioned`]):
//! - `sys/tenant/<tenantId>` → [`TenantRecord`] `{id, name, createdAt}`
//! - `sys/tenantkey/<tenantId>/<keyId>` → [`KeyInfo`] `{keyId, tenantId, keyHash, createdAt, revoked, revokedAt}`
//! - `sys/apikey/<sha256(key)>` → [`ApiKeyRecord`] `{tenantId, keyId, revoked}` (what authentication reads)
//!
//! A key's secret exists only in the answer that issues it. Revoking marks both records revoked
//! (the `sys/apikey` one first, which is what makes the key stop working).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{ApiKeyRecord, apikey_store_key, hash_api_key};
use crate::error::ApiError;
use crate::ids::{new_api_key, new_id, now_rfc3339};
use crate::kv::{KvBackend, Store, StoreError, Versioned, valid_segment};

/// Longest tenant name.
pub const MAX_NAME_LEN: usize = 200;
/// Most tenants or keys listed.
pub const MAX_LISTED: usize = 10_000;
/// Base path of the admin API.
pub const ADMIN_BASE: &str = "/admin/v1";

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantRecord {
    /// Tenant id (UUID).
    pub id: String,
    /// Display name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

/// What is listed about a key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    /// Public id.
    pub key_id: String,
    /// Owner.
    pub tenant_id: String,
    /// SHA-256 of the secret (to find the `sys/apikey` record on revocation).
    pub key_hash: String,
    /// RFC 3339.
    pub created_at: String,
    /// Whether it was revoked.
    #[serde(default)]
    pub revoked: bool,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A freshly issued key: the only time the secret is seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewKey {
    /// Public id.
    pub key_id: String,
    /// The secret (`bss_...`).
    pub api_key: String,
}

fn tenant_key(id: &str) -> String {
    format!("sys/tenant/{id}")
}

fn tenant_key_key(tenant_id: &str, key_id: &str) -> String {
    format!("sys/tenantkey/{tenant_id}/{key_id}")
}

/// The body of `POST /admin/v1/tenants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Display name.
    pub name: String,
}

/// Checks and normalises a tenant name (422 if empty, too long or with control characters).
pub fn validate_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::unprocessable("name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::unprocessable(format!("name must be at most {MAX_NAME_LEN} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable("name must not contain control characters"));
    }
    Ok(name.to_string())
}

/// The href of a tenant.
pub fn tenant_href(id: &str) -> String {
    format!("{ADMIN_BASE}/tenants/{id}")
}

/// The JSON representation of a tenant.
pub fn tenant_json(t: &TenantRecord) -> Value {
    json!({"id": t.id, "href": tenant_href(&t.id), "@type": "Tenant", "name": t.name, "createdAt": t.created_at})
}

/// The JSON representation of a key (no secret, no hash).
pub fn key_json(k: &KeyInfo) -> Value {
    let mut v = json!({
        "id": k.key_id, "keyId": k.key_id, "href": format!("{}/apiKeys/{}", tenant_href(&k.tenant_id), k.key_id),
        "@type": "ApiKey", "tenantId": k.tenant_id, "createdAt": k.created_at, "revoked": k.revoked,
    });
    if let Some(at) = &k.revoked_at {
        v["revokedAt"] = json!(at);
    }
    v
}

/// Creates a tenant and its first key.
pub fn create_tenant<B: KvBackend>(store: &Store<B>, name: &str) -> Result<(TenantRecord, NewKey), ApiError> {
    let name = validate_name(name)?;
    let tenant = TenantRecord { id: new_id(), name, created_at: now_rfc3339() };
    store.create(&tenant_key(&tenant.id), tenant.clone())?;
    let key = issue_key(store, &tenant.id)?;
    Ok((tenant, key))
}

/// A tenant (404 if unknown).
pub fn get_tenant<B: KvBackend>(store: &Store<B>, id: &str) -> Result<TenantRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("tenant {id} does not exist"));
    if !valid_segment(id) {
        return Err(not_found());
    }
    store.get::<TenantRecord>(&tenant_key(id))?.map(|d| d.data).ok_or_else(not_found)
}

/// Every tenant, by id.
pub fn list_tenants<B: KvBackend>(store: &Store<B>) -> Result<Vec<TenantRecord>, ApiError> {
    Ok(store.list::<TenantRecord>("sys/tenant/", MAX_LISTED)?.into_iter().map(|(_, d)| d.data).collect())
}

/// Issues a new key for an existing tenant.
pub fn issue_key<B: KvBackend>(store: &Store<B>, tenant_id: &str) -> Result<NewKey, ApiError> {
    get_tenant(store, tenant_id)?;
    let new = NewKey { key_id: new_id(), api_key: new_api_key() };
    let hash = hash_api_key(&new.api_key);
    let info = KeyInfo {
        key_id: new.key_id.clone(),
        tenant_id: tenant_id.into(),
        key_hash: hash.clone(),
        created_at: now_rfc3339(),
        revoked: false,
        revoked_at: None,
    };
    store.create(&tenant_key_key(tenant_id, &new.key_id), info)?;
    let record = ApiKeyRecord { tenant_id: tenant_id.into(), key_id: new.key_id.clone(), revoked: false };
    store.create(&apikey_store_key(&hash), record)?;
    Ok(new)
}

/// A tenant's keys (404 if the tenant is unknown).
pub fn list_keys<B: KvBackend>(store: &Store<B>, tenant_id: &str) -> Result<Vec<KeyInfo>, ApiError> {
    get_tenant(store, tenant_id)?;
    let prefix = format!("sys/tenantkey/{tenant_id}/");
    Ok(store.list::<KeyInfo>(&prefix, MAX_LISTED)?.into_iter().map(|(_, d)| d.data).collect())
}

/// Revokes a key (idempotent; 404 if the tenant or key is unknown).
pub fn revoke_key<B: KvBackend>(store: &Store<B>, tenant_id: &str, key_id: &str) -> Result<(), ApiError> {
    get_tenant(store, tenant_id)?;
    let not_found = || ApiError::not_found(format!("API key {key_id} of tenant {tenant_id} does not exist"));
    if !valid_segment(key_id) {
        return Err(not_found());
    }
    let info_key = tenant_key_key(tenant_id, key_id);
    let info: Versioned<KeyInfo> = store.get(&info_key)?.ok_or_else(not_found)?;
    match store.update(&apikey_store_key(&info.data.key_hash), |cur: &Versioned<ApiKeyRecord>| {
        Ok(ApiKeyRecord { revoked: true, ..cur.data.clone() })
    }) {
        Ok(_) | Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let now = now_rfc3339();
    store.update(&info_key, |cur: &Versioned<KeyInfo>| {
        let mut k = cur.data.clone();
        if !k.revoked {
            k.revoked = true;
            k.revoked_at = Some(now.clone());
        }
        Ok(k)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{authenticate_tenant, tenant_from_record};
    use crate::http::Ctx;
    use crate::kv::MemKv;

    fn auth(store: &Store<MemKv>, key: &str) -> Result<crate::auth::Tenant, ApiError> {
        let header = format!("Bearer {key}");
        authenticate_tenant(store, &Ctx::new("GET", "/", &[("authorization", &header)], ""))
    }

    #[test]
    fn tenant_lifecycle() {
        let store = Store::new(MemKv::new());
        let (t, k) = create_tenant(&store, "  Acme  ").unwrap();
        assert_eq!(t.name, "Acme");
        assert_eq!(get_tenant(&store, &t.id).unwrap(), t);
        assert_eq!(list_tenants(&store).unwrap(), vec![t.clone()]);
        // The key authenticates as the tenant; the secret is stored nowhere.
        let who = auth(&store, &k.api_key).unwrap();
        assert_eq!((who.tenant_id.as_str(), who.key_id.as_str()), (t.id.as_str(), k.key_id.as_str()));
        for key in store.backend().keys() {
            let v = store.backend().get(&key).unwrap().unwrap();
            assert!(!String::from_utf8_lossy(&v).contains(&k.api_key));
            assert!(!key.contains(&k.api_key));
        }
        // A second key; both listed without secrets.
        let k2 = issue_key(&store, &t.id).unwrap();
        let keys = list_keys(&store, &t.id).unwrap();
        assert_eq!(keys.len(), 2);
        let listed = serde_json::to_string(&keys.iter().map(key_json).collect::<Vec<_>>()).unwrap();
        assert!(!listed.contains(&k.api_key) && !listed.contains("keyHash"));
        // Revoking one stops it, leaves the other.
        revoke_key(&store, &t.id, &k.key_id).unwrap();
        revoke_key(&store, &t.id, &k.key_id).unwrap();
        assert!(auth(&store, &k.api_key).unwrap_err().message.contains("revoked"));
        assert!(auth(&store, &k2.api_key).is_ok());
        let revoked: Vec<_> = list_keys(&store, &t.id).unwrap().into_iter().filter(|k| k.revoked).collect();
        assert_eq!(revoked.len(), 1);
        assert!(revoked[0].revoked_at.is_some());
        assert_eq!(auth(&store, "bss_nope").unwrap_err().status, 401);
        assert_eq!(tenant_from_record(None).unwrap_err().status, 401);
    }

    #[test]
    fn unknown_things_are_404_and_bad_names_422() {
        let store = Store::new(MemKv::new());
        assert_eq!(get_tenant(&store, "nope").unwrap_err().status, 404);
        assert_eq!(get_tenant(&store, "../x").unwrap_err().status, 404);
        assert_eq!(issue_key(&store, "nope").unwrap_err().status, 404);
        assert_eq!(list_keys(&store, "nope").unwrap_err().status, 404);
        let (t, _) = create_tenant(&store, "A").unwrap();
        assert_eq!(revoke_key(&store, &t.id, "nope").unwrap_err().status, 404);
        assert_eq!(revoke_key(&store, "nope", "x").unwrap_err().status, 404);
        for bad in ["", "   ", "a\u{7}b", &"x".repeat(201)] {
            assert_eq!(create_tenant(&store, bad).unwrap_err().status, 422, "{bad:?}");
        }
        assert!(create_tenant(&store, &"é".repeat(200)).is_ok());
    }

    #[test]
    fn representations() {
        let t = TenantRecord { id: "t1".into(), name: "A".into(), created_at: "now".into() };
        assert_eq!(
            tenant_json(&t),
            json!({"id": "t1", "href": "/admin/v1/tenants/t1", "@type": "Tenant", "name": "A", "createdAt": "now"})
        );
    }
}
