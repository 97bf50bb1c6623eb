//! Authentication: tenant API keys and the admin key.
//!
//! - Tenant calls carry `Authorization: Bearer <key>`. Keys are never stored: the store holds
//!   `sys/apikey/<sha256-hex(key)>` → [`ApiKeyRecord`] `{tenantId, keyId, revoked}`. A missing or
//!   malformed header, an unknown key or a revoked key is a 401 with a TMF error body.
//! - Admin calls carry `Authorization: Bearer <admin key>`, compared in constant time with the
//!   variable `admin_key` (host env `BSS_VAR_ADMIN_KEY`). If that variable is unset or empty, admin
//!   calls are refused with 403 — the admin API is never open.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::Ctx;
use crate::kv::{KvBackend, Store};

/// Name of the spin variable holding the admin key.
pub const ADMIN_KEY_VARIABLE: &str = "admin_key";
/// Longest bearer token looked at.
pub const MAX_TOKEN_LEN: usize = 512;

/// What the store keeps for an API key, at [`apikey_store_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    /// Tenant the key belongs to.
    pub tenant_id: String,
    /// Public id of the key.
    pub key_id: String,
    /// Revoked keys authenticate nobody.
    #[serde(default)]
    pub revoked: bool,
}

/// An authenticated tenant caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// The tenant.
    pub tenant_id: String,
    /// The key it authenticated with.
    pub key_id: String,
}

/// SHA-256 of a key, lower-case hex.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Store key of an API key's record.
pub fn apikey_store_key(key_hash: &str) -> String {
    format!("sys/apikey/{key_hash}")
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, ApiError> {
    let header = authorization.ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key> header"))?;
    let (scheme, token) = header.trim().split_once(' ').unwrap_or((header, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized("the Authorization header must be Bearer <key>"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    Ok(token)
}

/// Compares two secrets in time independent of where they differ (and of their lengths: both are
/// hashed first).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter().zip(hb.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin decision: `configured` is the value of the `admin_key` variable (None if unset).
pub fn check_admin(configured: Option<&str>, authorization: Option<&str>) -> Result<(), ApiError> {
    let configured = configured.map(str::trim).filter(|k| !k.is_empty()).ok_or_else(|| {
        ApiError::forbidden("the admin API is disabled: no admin key is configured").with_code("ADMIN_DISABLED")
    })?;
    let token = bearer_token(authorization)?;
    if constant_time_eq(token.as_bytes(), configured.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid admin key"))
    }
}

/// The tenant decision for the record found under the presented key's hash.
pub fn tenant_from_record(record: Option<ApiKeyRecord>) -> Result<Tenant, ApiError> {
    match record {
        Some(r) if !r.revoked => Ok(Tenant { tenant_id: r.tenant_id, key_id: r.key_id }),
        Some(_) => Err(ApiError::unauthorized("this API key has been revoked")),
        None => Err(ApiError::unauthorized("invalid API key")),
    }
}

/// Authenticates a tenant caller against the store.
pub fn authenticate_tenant<B: KvBackend>(store: &Store<B>, ctx: &Ctx) -> Result<Tenant, ApiError> {
    let token = bearer_token(ctx.header("authorization"))?;
    let record = store.get::<ApiKeyRecord>(&apikey_store_key(&hash_api_key(token)))?.map(|v| v.data);
    tenant_from_record(record)
}

/// The configured admin key (spin variable `admin_key`); `None` if undefined or unreadable.
pub fn configured_admin_key() -> Option<String> {
    match spin_sdk::variables::get(ADMIN_KEY_VARIABLE) {
        Ok(v) => Some(v),
        Err(spin_sdk::variables::Error::Undefined(_)) => None,
        Err(e) => {
            eprintln!("bss: reading variable {ADMIN_KEY_VARIABLE}: {e}");
            None
        }
    }
}

/// Authenticates an admin caller (reads the `admin_key` variable).
pub fn authenticate_admin(ctx: &Ctx) -> Result<(), ApiError> {
    check_admin(configured_admin_key().as_deref(), ctx.header("authorization"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_is_sha256_hex() {
        assert_eq!(hash_api_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(apikey_store_key("ab"), "sys/apikey/ab");
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("bearer   abc ")).unwrap(), "abc");
        for h in [None, Some(""), Some("Bearer"), Some("Bearer  "), Some("Basic abc"), Some("abc")] {
            assert_eq!(bearer_token(h).unwrap_err().status, 401, "{h:?}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(bearer_token(Some(&long)).unwrap_err().status, 401);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn admin_is_never_open() {
        for configured in [None, Some(""), Some("   ")] {
            for auth in [None, Some("Bearer "), Some("Bearer x")] {
                let e = check_admin(configured, auth).unwrap_err();
                assert_eq!(e.status, 403, "{configured:?} {auth:?}");
            }
        }
        assert!(check_admin(Some("s3cret"), Some("Bearer s3cret")).is_ok());
        assert_eq!(check_admin(Some("s3cret"), Some("Bearer s3cre")).unwrap_err().status, 401);
        assert_eq!(check_admin(Some("s3cret"), None).unwrap_err().status, 401);
    }

    #[test]
    fn tenant_records() {
        let r = ApiKeyRecord { tenant_id: "t1".into(), key_id: "k1".into(), revoked: false };
        assert_eq!(
            tenant_from_record(Some(r.clone())).unwrap(),
            Tenant { tenant_id: "t1".into(), key_id: "k1".into() }
        );
        let revoked = ApiKeyRecord { revoked: true, ..r };
        let e = tenant_from_record(Some(revoked)).unwrap_err();
        assert_eq!(e.status, 401);
        assert!(e.message.contains("revoked"));
        assert_eq!(tenant_from_record(None).unwrap_err().status, 401);
        // The stored shape.
        let json =
            serde_json::to_value(ApiKeyRecord { tenant_id: "t".into(), key_id: "k".into(), revoked: true }).unwrap();
        assert_eq!(json, serde_json::json!({"tenantId": "t", "keyId": "k", "revoked": true}));
    }
}
