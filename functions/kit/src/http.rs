//! The HTTP edge: a plain request context ([`Ctx`]) and answer ([`Reply`]) that the pure modules
//! work on, and the adapters to spin-sdk's `Request`/`Response`/`Router`.
//!
//! A function registers its routes on a [`Router`] made for the request with [`handler`], which
//! builds the [`Ctx`], calls the route function (`Fn(&Ctx, &Params) -> Result<Reply, ApiError>`)
//! and maps its error through [`ApiError::into_reply`]. [`not_found`] and [`method_not_allowed`]
//! answer TMF error bodies for the fallbacks:
//!
//! ```ignore
//! let mut router = Router::for_request(&req);
//! router.get("/tmf-api/notes/v4/note/:id", bss_kit::http::handler(get_note));
//! router.any("/tmf-api/notes/v4/note/:id", bss_kit::http::method_not_allowed);
//! router.any("/*", bss_kit::http::not_found);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::http::conversions::{IntoResponse, TryFromRequest};
use spin_sdk::http::{Params, Request, Response};

use crate::error::ApiError;

/// An answer: status, headers (lower-case names) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Header names and values; names are lower case.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with a status and a body, no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: Vec::new(), body: body.into() }
    }

    /// A JSON reply.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(|e| ApiError::internal(format!("serialising reply: {e}")))?;
        Ok(Self::new(status, body).with_header("content-type", "application/json"))
    }

    /// A plain-text reply.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::new(status, text.into()).with_header("content-type", "text/plain; charset=utf-8")
    }

    /// 204 No Content.
    pub fn no_content() -> Self {
        Self::new(204, Vec::new())
    }

    /// Adds (or replaces) a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        e.into_reply()
    }
}

impl From<Reply> for Response {
    fn from(r: Reply) -> Self {
        let mut b = Response::builder();
        b.status(r.status);
        for (n, v) in r.headers {
            b.header(n, v);
        }
        b.body(r.body);
        b.build()
    }
}

/// The one mapping of a route's outcome to a response.
pub fn respond(outcome: Result<Reply, ApiError>) -> Response {
    outcome.unwrap_or_else(ApiError::into_reply).into()
}

/// Everything a route function needs from the request, in plain types (testable natively).
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// Method, upper case (`GET`, `POST`...).
    pub method: String,
    /// Path without the query, as sent (`/admin/v1/tenants`).
    pub path: String,
    /// The raw query string without `?` (still percent-encoded).
    pub query: String,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Ctx {
    /// A context from its parts (tests and non-Spin callers).
    pub fn new(method: &str, path_and_query: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        Self {
            method: method.to_ascii_uppercase(),
            path: path.into(),
            query: query.into(),
            headers: headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_string())).collect(),
            body: body.into(),
        }
    }

    /// The context of a spin-sdk request.
    pub fn from_request(req: &Request) -> Self {
        Self {
            method: req.method().to_string().to_ascii_uppercase(),
            path: req.path().to_string(),
            query: req.query().to_string(),
            headers: req
                .headers()
                .filter_map(|(n, v)| v.as_str().map(|v| (n.to_ascii_lowercase(), v.to_string())))
                .collect(),
            body: req.body().to_vec(),
        }
    }

    /// A header's value (case-insensitive name; the first one if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The decoded query parameters, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes()).into_owned().collect()
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v.into_owned())
    }

    /// The body parsed as JSON into `T`; every problem is a 400 (see [`crate::json::parse_json`]).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        crate::json::parse_json(self.header("content-type"), &self.body)
    }
}

/// [`Router`]'s registration method of each HTTP method that has one of its own.
macro_rules! method_routes {
    ($($(#[$doc:meta])* $name:ident => $method:ident,)*) => {$(
        $(#[$doc])*
        pub fn $name<F, Req, Resp>(&mut self, pattern: &str, handler: F)
        where
            F: Fn(Req, Params) -> Resp + 'static,
            Req: TryFromRequest + 'static,
            Req::Error: IntoResponse + 'static,
            Resp: IntoResponse + 'static,
        {
            self.add(pattern, spin_sdk::http::Method::$method, handler)
        }
    )*};
}

/// spin-sdk's router, given only the routes that can match the request it was made for.
///
/// A component instance serves one request, so its router is built for every request: with
/// spin-sdk's alone, every route pattern of the component was parsed and boxed each time (a
/// tenth of the guest's time in a key-value round-trip). This one first checks that the
/// pattern's literal start (up to its last `/` before the first `:param` or `*`) begins the
/// request path — which every match needs — and drops the others unparsed. Matching, precedence
/// (exact over `:param` over `*`, a method's routes before `any` routes) and spin-sdk's 405 and
/// 404 stay spin-sdk's, among the routes kept: a dropped route could not have matched under any
/// method.
///
/// `HEAD` is served by the `GET` routes (with the body left out by the server): spin-sdk's own
/// fallback from `HEAD` to `GET` comes after its `any` routes, so a component's catch-all (`/*`,
/// its TMF 404) answered every `HEAD`.
pub struct Router {
    /// The request path without its leading and trailing `/`, as spin-sdk matches it.
    path: String,
    /// The request is a `HEAD`: `GET` routes are registered for it.
    head: bool,
    inner: spin_sdk::http::Router,
}

impl Router {
    /// A router for `req`.
    pub fn for_request(req: &Request) -> Self {
        Self {
            path: trimmed(req.path()).to_string(),
            head: *req.method() == spin_sdk::http::Method::Head,
            inner: Default::default(),
        }
    }

    /// Registers `handler` for every method.
    pub fn any<F, Req, Resp>(&mut self, pattern: &str, handler: F)
    where
        F: Fn(Req, Params) -> Resp + 'static,
        Req: TryFromRequest + 'static,
        Req::Error: IntoResponse + 'static,
        Resp: IntoResponse + 'static,
    {
        if may_match(pattern, &self.path) {
            self.inner.any(pattern, handler);
        }
    }

    /// Registers `handler` for `method`.
    pub fn add<F, Req, Resp>(&mut self, pattern: &str, method: spin_sdk::http::Method, handler: F)
    where
        F: Fn(Req, Params) -> Resp + 'static,
        Req: TryFromRequest + 'static,
        Req::Error: IntoResponse + 'static,
        Resp: IntoResponse + 'static,
    {
        if may_match(pattern, &self.path) {
            self.inner.add(pattern, method, handler);
        }
    }

    /// Registers `handler` for `GET` and `HEAD`.
    pub fn get<F, Req, Resp>(&mut self, pattern: &str, handler: F)
    where
        F: Fn(Req, Params) -> Resp + 'static,
        Req: TryFromRequest + 'static,
        Req::Error: IntoResponse + 'static,
        Resp: IntoResponse + 'static,
    {
        let method = if self.head { spin_sdk::http::Method::Head } else { spin_sdk::http::Method::Get };
        self.add(pattern, method, handler)
    }

    method_routes! {
        /// Registers `handler` for `POST`.
        post => Post,
        /// Registers `handler` for `PUT`.
        put => Put,
        /// Registers `handler` for `PATCH`.
        patch => Patch,
        /// Registers `handler` for `DELETE`.
        delete => Delete,
    }

    /// Answers the request with the best route kept (spin-sdk's rules).
    pub fn handle(&self, req: Request) -> Response {
        debug_assert_eq!(self.path, trimmed(req.path()), "router of another path");
        self.inner.handle(req)
    }
}

/// A path or pattern without its leading and trailing `/`, as spin-sdk's matcher reads both.
fn trimmed(path: &str) -> &str {
    path.trim_start_matches('/').trim_end_matches('/')
}

/// Whether a route `pattern` can match `path` (both without their leading and trailing `/` for
/// the path): the pattern's literal characters before its first `:` or `*`, up to the last `/`
/// among them, must begin the path. Up to that `/`, spin-sdk's matcher (routefinder) consumes
/// every character of the pattern as it is, and nothing past it can start earlier. Stopping at
/// the `/` keeps `a/b/*` matching `a/b` (a wildcard matches nothing, slash included). A pattern
/// with neither `:` nor `*` must begin the path whole.
fn may_match(pattern: &str, path: &str) -> bool {
    let pattern = trimmed(pattern);
    let literal = match pattern.find([':', '*']) {
        Some(i) => pattern[..i].rfind('/').map_or("", |slash| &pattern[..slash]),
        None => pattern,
    };
    path.starts_with(literal)
}

/// Wraps a route function for [`Router`]: builds the [`Ctx`] and maps the error.
pub fn handler<F>(f: F) -> impl Fn(Request, Params) -> Response + 'static
where
    F: Fn(&Ctx, &Params) -> Result<Reply, ApiError> + 'static,
{
    move |req: Request, params: Params| {
        let ctx = Ctx::from_request(&req);
        respond(f(&ctx, &params))
    }
}

/// Fallback route: 404 with a TMF body.
pub fn not_found(req: Request, _params: Params) -> Response {
    respond(Err(ApiError::not_found(format!("no route for {} {}", req.method(), req.path()))))
}

/// Fallback for a known path with another method: 405 with a TMF body.
pub fn method_not_allowed(req: Request, _params: Params) -> Response {
    respond(Err(ApiError::method_not_allowed(format!("{} is not allowed on {}", req.method(), req.path()))))
}

/// A path parameter, percent-decoded; a missing one is a 404 (the route cannot match without it).
pub fn param(params: &Params, name: &str) -> Result<String, ApiError> {
    let raw = params.get(name).ok_or_else(|| ApiError::not_found(format!("missing path parameter {name}")))?;
    percent_decode(raw).ok_or_else(|| ApiError::bad_request(format!("path parameter {name} is not valid UTF-8")))
}

/// The trailing wildcard of a route (`/kvtest/kv/*`), percent-decoded.
pub fn wildcard(params: &Params) -> Result<String, ApiError> {
    let raw = params.wildcard().unwrap_or_default();
    percent_decode(raw).ok_or_else(|| ApiError::bad_request("path is not valid UTF-8 after percent-decoding"))
}

/// Decodes `%XX` escapes (not `+`: that is only a space in query strings). `None` if the result
/// is not UTF-8; malformed escapes are kept as they are.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn may_match_keeps_every_route_that_can_match() {
        for (pattern, path) in [
            ("/a/b/:id", "a/b/x"),
            ("/a/b/*", "a/b"),
            ("/a/b/*", "a/b/c/d"),
            ("/*", ""),
            ("/*", "x/y"),
            ("/a/b", "a/b"),
            ("/a/b/", "a/b"),
            ("/a/:id/c", "a/x/c"),
            ("/a/:id.json", "a/x.json"),
            ("/ab:id", "abz"),
        ] {
            assert!(may_match(pattern, path), "{pattern} vs {path}");
        }
        for (pattern, path) in
            [("/a/b/:id", "a/c/x"), ("/a/b", "a"), ("/a/b/c/*", "a/b"), ("/kvtest/kv/*", "kvtest/keys")]
        {
            assert!(!may_match(pattern, path), "{pattern} vs {path}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
    }

    #[test]
    fn ctx_parts() {
        let c = Ctx::new("post", "/x/y?a=1&b=two%20words&a=3", &[("Content-Type", "application/json")], "{}");
        assert_eq!(c.method, "POST");
        assert_eq!(c.path, "/x/y");
        assert_eq!(c.header("content-type"), Some("application/json"));
        assert_eq!(c.query_param("b").as_deref(), Some("two words"));
        assert_eq!(c.query_param("a").as_deref(), Some("1"));
        assert_eq!(c.query_pairs().len(), 3);
    }

    #[test]
    fn reply_headers_replace() {
        let r = Reply::no_content().with_header("X-A", "1").with_header("x-a", "2");
        assert_eq!(r.headers, vec![("x-a".to_string(), "2".to_string())]);
        assert_eq!(r.header("X-A"), Some("2"));
    }
}
