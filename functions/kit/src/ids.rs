//! Random identifiers and clock readings.
//!
//! Randomness comes from `getrandom` (on wasm32-wasip2 that is `wasi:random`). Ids are UUID v4
//! strings; API keys are `bss_` followed by 32 random bytes in hex.

/// Prefix of every API key.
pub const API_KEY_PREFIX: &str = "bss_";

/// `N` random bytes. Panics (a trap, hence a 500) only if the platform has no randomness.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the platform provides no randomness");
    buf
}

/// A stable id derived from `input`: `<prefix>` and the first 32 hex digits of its SHA-256, so a
/// retried step that derives it again addresses the same document (valid as a KV id segment
/// when `prefix` is).
pub fn derived_id(prefix: &str, input: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(input.as_bytes()));
    format!("{prefix}{}", &digest[..32])
}

/// Formats 16 random bytes as a UUID version 4 (RFC 9562) string.
pub fn format_uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A new random UUID v4 string.
pub fn new_id() -> String {
    format_uuid_v4(random_bytes())
}

/// A new API key: `bss_` + 64 hex digits (32 random bytes).
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", hex::encode(random_bytes::<32>()))
}

/// Now, as RFC 3339 UTC with milliseconds (`2024-05-01T12:00:00.123Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_id("o-", "key-1"), derived_id("o-", "key-1"));
        assert_ne!(derived_id("o-", "key-1"), derived_id("o-", "key-2"));
        assert_eq!(derived_id("o-", "x").len(), 34);
        assert!(crate::kv::valid_segment(&derived_id("o-", "any key / with spaces")));
    }

    #[test]
    fn uuid_v4_format() {
        let id = format_uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = format_uuid_v4([0; 16]);
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");
        let a = new_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_id());
    }

    #[test]
    fn api_keys() {
        let k = new_api_key();
        assert!(k.starts_with(API_KEY_PREFIX));
        assert_eq!(k.len(), 4 + 64);
        assert!(k[4..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(k, new_api_key());
    }

    #[test]
    fn clock() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && t.len() == 24, "{t}");
        assert!(now_ms() > 1_700_000_000_000);
    }
}
