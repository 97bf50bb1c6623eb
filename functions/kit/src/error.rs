//! The one error type of the BSS API and its TMF630 body.
//!
//! Every failure a function answers is an [`ApiError`]; [`ApiError::into_reply`] is the only place
//! that turns one into an HTTP answer. The body is the TMF630 `Error` resource:
//!
//! ```json
//! {"code": "NOT_FOUND", "reason": "Not Found", "message": "note 42 does not exist", "status": "404", "@type": "Error"}
//! ```
//!
//! A 5xx body never carries internals: [`ApiError::internal`] keeps its detail for the log
//! (`eprintln!`, which the host forwards to its log) and answers a generic message.

use serde_json::{Value, json};
use std::fmt;

use crate::http::Reply;

/// Generic message of every 500 answer.
pub const INTERNAL_MESSAGE: &str = "An internal error occurred; it has been logged.";

/// A TMF630 error: HTTP status, machine code, short reason and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (400..=599).
    pub status: u16,
    /// Application error code, e.g. `BAD_REQUEST`, `NOT_FOUND`.
    pub code: String,
    /// Short explanation: the HTTP reason phrase unless a constructor says otherwise.
    pub reason: String,
    /// What exactly is wrong, for the caller. Generic for 5xx.
    pub message: String,
    /// Internal detail, logged when the error is answered, never sent.
    detail: Option<String>,
    /// A list of every problem found (`problems` in the body of a 4xx), for checks that report
    /// all problems at once rather than the first. Boxed: errors stay small.
    problems: Option<Box<Value>>,
}

impl ApiError {
    /// An error with every field given. Prefer the named constructors.
    pub fn new(status: u16, code: &str, reason: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), reason: reason.into(), message: message.into(), detail: None, problems: None }
    }

    /// 400: the request is malformed (bad JSON, bad query parameter, missing field...).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BAD_REQUEST", "Bad Request", message)
    }

    /// 401: no credentials, or credentials that are unknown or revoked.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "UNAUTHORIZED", "Unauthorized", message)
    }

    /// 403: the caller is known but may not do this (or the operation is disabled).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "FORBIDDEN", "Forbidden", message)
    }

    /// 404: no such resource (for this tenant) or no such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NOT_FOUND", "Not Found", message)
    }

    /// 405: the route exists but not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "METHOD_NOT_ALLOWED", "Method Not Allowed", message)
    }

    /// 409: the state of the resource forbids the operation (exists already, concurrent change,
    /// idempotent request still in progress).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "CONFLICT", "Conflict", message)
    }

    /// 412: an `If-Match` precondition failed.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(412, "PRECONDITION_FAILED", "Precondition Failed", message)
    }

    /// 413: the body is larger than the function accepts.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "PAYLOAD_TOO_LARGE", "Payload Too Large", message)
    }

    /// 422: the body is well-formed but its content is not acceptable.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "UNPROCESSABLE_ENTITY", "Unprocessable Entity", message)
    }

    /// 500: something failed inside. `detail` is logged, never answered.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut e = Self::new(500, "INTERNAL_ERROR", "Internal Server Error", INTERNAL_MESSAGE);
        e.detail = Some(detail.into());
        e
    }

    /// 503: a dependency (store, queue) is unavailable; the caller may retry. `detail` is logged,
    /// the caller gets `message`, which must not carry internals.
    pub fn service_unavailable(message: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut e = Self::new(503, "SERVICE_UNAVAILABLE", "Service Unavailable", message);
        e.detail = Some(detail.into());
        e
    }

    /// Replaces the application error code.
    pub fn with_code(mut self, code: &str) -> Self {
        self.code = code.into();
        self
    }

    /// Adds the list of problems to the body (`problems`, 4xx only): e.g. one per quote item.
    pub fn with_problems(mut self, problems: Value) -> Self {
        self.problems = Some(Box::new(problems));
        self
    }

    /// The problems list, if any.
    pub fn problems(&self) -> Option<&Value> {
        self.problems.as_deref()
    }

    /// The internal detail (for logs and tests).
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The TMF630 `Error` body.
    pub fn body(&self) -> Value {
        let message = if self.status >= 500 && self.status != 503 { INTERNAL_MESSAGE } else { self.message.as_str() };
        let mut body = json!({
            "code": self.code,
            "reason": self.reason,
            "message": message,
            "status": self.status.to_string(),
            "@type": "Error",
        });
        if let (Some(p), true) = (&self.problems, self.status < 500) {
            body["problems"] = (**p).clone();
        }
        body
    }

    /// The answer for this error — the one place errors become responses. Logs the detail of
    /// server errors; adds `WWW-Authenticate` to 401s.
    pub fn into_reply(self) -> Reply {
        if self.status >= 500 {
            eprintln!(
                "bss: {} {}: {} ({})",
                self.status,
                self.code,
                self.detail.as_deref().unwrap_or("no detail"),
                self.message
            );
        }
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut reply = Reply::new(self.status, body).with_header("content-type", "application/json");
        if self.status == 401 {
            reply = reply.with_header("www-authenticate", "Bearer realm=\"bss\"");
        }
        reply
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_error_body_is_tmf630() {
        let e = ApiError::unprocessable("name must not be empty");
        assert_eq!(
            e.body(),
            json!({"code": "UNPROCESSABLE_ENTITY", "reason": "Unprocessable Entity",
                   "message": "name must not be empty", "status": "422", "@type": "Error"})
        );
    }

    #[test]
    fn problems_are_listed_in_client_errors_only() {
        let e = ApiError::unprocessable("2 problems").with_problems(json!([{"field": "a"}, {"field": "b"}]));
        assert_eq!(e.body()["problems"], json!([{"field": "a"}, {"field": "b"}]));
        let e = ApiError::new(500, "X", "Internal", "m").with_problems(json!([{"field": "secret"}]));
        assert!(e.body().get("problems").is_none());
    }

    #[test]
    fn internal_error_hides_detail() {
        let e = ApiError::internal("sqlite: disk I/O error at /var/data/kv.db");
        let body = serde_json::to_string(&e.body()).unwrap();
        assert!(!body.contains("sqlite"), "{body}");
        assert!(body.contains(INTERNAL_MESSAGE));
        assert_eq!(e.detail(), Some("sqlite: disk I/O error at /var/data/kv.db"));
        // Even a hand-made 5xx with a message leaks nothing.
        let e = ApiError::new(502, "X", "Bad Gateway", "secret upstream token");
        assert!(!e.body().to_string().contains("secret"));
    }

    #[test]
    fn unavailable_keeps_its_public_message_only() {
        let e = ApiError::service_unavailable("the queue is unavailable; retry later", "redis: connection refused");
        let body = e.body().to_string();
        assert!(body.contains("retry later"));
        assert!(!body.contains("redis"));
    }

    #[test]
    fn reply_has_status_content_type_and_auth_challenge() {
        let r = ApiError::unauthorized("missing bearer token").into_reply();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("www-authenticate").is_some());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"], "401");
        assert_eq!(v["@type"], "Error");
    }

    #[test]
    fn named_constructors_have_their_status() {
        let cases = [
            (ApiError::bad_request(""), 400),
            (ApiError::unauthorized(""), 401),
            (ApiError::forbidden(""), 403),
            (ApiError::not_found(""), 404),
            (ApiError::method_not_allowed(""), 405),
            (ApiError::conflict(""), 409),
            (ApiError::precondition_failed(""), 412),
            (ApiError::payload_too_large(""), 413),
            (ApiError::unprocessable(""), 422),
            (ApiError::internal(""), 500),
            (ApiError::service_unavailable("", ""), 503),
        ];
        for (e, status) in cases {
            assert_eq!(e.status, status);
            assert_eq!(e.body()["status"], status.to_string());
        }
    }
}
