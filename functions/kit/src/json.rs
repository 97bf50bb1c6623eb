//! JSON request bodies: one parser that turns every malformed input into a 400 naming the problem,
//! and RFC 7386 merge-patch.
//!
//! Rules of [`parse_json`]:
//! - `Content-Type` must be `application/json`, `application/merge-patch+json` or any other
//!   `application/*+json` (parameters such as `charset` are ignored); an absent `Content-Type` is
//!   accepted and read as JSON; anything else is a 400.
//! - An empty (or whitespace-only) body is a 400; a body over [`MAX_JSON_BODY`] bytes is a 413.
//! - Syntax errors, wrong types, missing or (for `deny_unknown_fields` types) unknown fields are a
//!   400 whose message carries serde's explanation with line and column.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Largest JSON body a function parses (1 MiB).
pub const MAX_JSON_BODY: usize = 1 << 20;

/// Whether a `Content-Type` value names JSON.
pub fn is_json_content_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Parses a JSON body into `T`; see the module doc for the rules.
pub fn parse_json<T: DeserializeOwned>(content_type: Option<&str>, body: &[u8]) -> Result<T, ApiError> {
    if let Some(ct) = content_type
        && !is_json_content_type(ct)
    {
        return Err(ApiError::bad_request(format!("Content-Type must be application/json, not {ct:?}"))
            .with_code("UNSUPPORTED_CONTENT_TYPE"));
    }
    if body.len() > MAX_JSON_BODY {
        return Err(ApiError::payload_too_large(format!(
            "the body has {} bytes; at most {MAX_JSON_BODY} are accepted",
            body.len()
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(
            ApiError::bad_request("the request body is empty; a JSON document is expected").with_code("EMPTY_BODY")
        );
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        let (code, what) = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ("MALFORMED_JSON", "the body is not valid JSON"),
            Category::Data => ("INVALID_BODY", "the body does not have the expected shape"),
        };
        ApiError::bad_request(format!("{what}: {e}")).with_code(code)
    })
}

/// Applies an RFC 7386 JSON merge patch to `target`: objects merge recursively, `null` removes a
/// member, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                target_map.remove(k);
            } else {
                merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
        count: Option<u32>,
    }

    fn err(ct: Option<&str>, body: &str) -> ApiError {
        parse_json::<Body>(ct, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_good_bodies() {
        let b: Body = parse_json(Some("application/json; charset=utf-8"), br#"{"name":"a","count":2}"#).unwrap();
        assert_eq!(b, Body { name: "a".into(), count: Some(2) });
        let b: Body = parse_json(None, br#"{"name":"a"}"#).unwrap();
        assert_eq!(b.count, None);
        let _: Body = parse_json(Some("application/merge-patch+json"), br#"{"name":"a"}"#).unwrap();
    }

    #[test]
    fn every_malformed_input_is_a_400_that_says_why() {
        let e = err(Some("text/plain"), r#"{"name":"a"}"#);
        assert_eq!((e.status, e.code.as_str()), (400, "UNSUPPORTED_CONTENT_TYPE"));
        assert!(e.message.contains("text/plain"));

        let e = err(Some("application/json"), "  \n");
        assert_eq!((e.status, e.code.as_str()), (400, "EMPTY_BODY"));

        let e = err(None, r#"{"name": "a""#);
        assert_eq!((e.status, e.code.as_str()), (400, "MALFORMED_JSON"));
        assert!(e.message.contains("line 1"), "{}", e.message);

        let e = err(None, r#"{"name": 5}"#);
        assert_eq!((e.status, e.code.as_str()), (400, "INVALID_BODY"));
        assert!(e.message.contains("invalid type"), "{}", e.message);

        let e = err(None, r#"{"count": 1}"#);
        assert!(e.message.contains("missing field `name`"), "{}", e.message);

        let e = err(None, r#"{"name": "a", "colour": "red"}"#);
        assert!(e.message.contains("unknown field `colour`"), "{}", e.message);

        let e = err(None, r#"[1,2]"#);
        assert_eq!(e.status, 400);
    }

    #[test]
    fn oversized_body_is_413() {
        let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_JSON_BODY));
        assert_eq!(err(None, &big).status, 413);
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        // The example of RFC 7386 section 3.
        let mut target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
                                "tags": ["example", "sample"], "content": "This will be unchanged"});
        let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890",
                           "author": {"familyName": null}, "tags": ["example"]});
        merge_patch(&mut target, &patch);
        assert_eq!(
            target,
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
                   "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
        let mut t = json!({"a": 1});
        merge_patch(&mut t, &json!("x"));
        assert_eq!(t, json!("x"));
        let mut t = json!("x");
        merge_patch(&mut t, &json!({"a": {"b": null, "c": 1}}));
        assert_eq!(t, json!({"a": {"c": 1}}));
    }
}
