//! Outbound HTTP for components (webhooks, partner APIs): only to hosts the component's
//! `allowed_outbound_hosts` names, Spin syntax (`https://api.example.com`,
//! `https://*.example.com:8443`, `http://127.0.0.1:*`).
//!
//! Server-side request forgery guard: a request whose host is matched only by a wildcard entry
//! must resolve to public addresses; loopback, private, link-local and other special ranges are
//! refused unless an entry names that host exactly (for example `http://localhost:8080` or
//! `http://10.0.0.7`), so that a manifest allowing `https://*` cannot reach the operator's own
//! network. Every refusal is a `HttpRequestDenied` error code for the guest.

use http_body_util::BodyExt;
use std::net::IpAddr;
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One entry of `allowed_outbound_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// `http`, `https` or `*`.
    scheme: String,
    /// Exact host (lower case), `*`, or `*.suffix`.
    host: String,
    /// `None` = any port.
    port: Option<u16>,
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<AllowedHost, String> {
        let (scheme, rest) =
            entry.split_once("://").ok_or_else(|| format!("{entry:?}: expected scheme://host[:port]"))?;
        if !["http", "https", "*"].contains(&scheme) {
            return Err(format!("{entry:?}: scheme must be http, https or *"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!("{entry:?}: no path is allowed"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let port = match port {
            None => Some(if scheme == "http" { 80 } else { 443 }).filter(|_| scheme != "*"),
            Some("*") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| format!("{entry:?}: bad port {p:?}"))?),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if host.is_empty() || (host.contains('*') && host != "*" && !host.starts_with("*.")) || host[1..].contains('*')
        {
            return Err(format!("{entry:?}: host must be a name, an address, '*' or '*.domain'"));
        }
        Ok(AllowedHost { scheme: scheme.to_string(), host, port })
    }

    fn is_wildcard(&self) -> bool {
        self.host.starts_with('*')
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme == "*" || self.scheme == scheme;
        let port_ok = self.port.is_none_or(|p| p == port);
        let host_ok = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            None => self.host == host,
        };
        scheme_ok && port_ok && host_ok
    }
}

/// Is `ip` somewhere a wildcard entry must not reach?
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64.0.0/10 carrier-grade NAT
                || v4.octets()[0] >= 240
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// The decision for one request, before any connection is made.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Allowed only by a wildcard: the resolved addresses must be public.
    AllowedIfPublic,
    Denied(String),
}

/// Check `scheme://host:port` against the allow-list.
pub fn check(allowed: &[AllowedHost], scheme: &str, host: &str, port: u16) -> Verdict {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let matching: Vec<&AllowedHost> = allowed.iter().filter(|a| a.matches(scheme, &host, port)).collect();
    if matching.is_empty() {
        return Verdict::Denied(format!("{scheme}://{host}:{port} is not in allowed_outbound_hosts"));
    }
    if matching.iter().any(|a| !a.is_wildcard()) {
        return Verdict::Allowed;
    }
    if host == "localhost" || host.parse::<IpAddr>().is_ok_and(is_internal) {
        return Verdict::Denied(format!("{host} is internal and only allowed when named exactly"));
    }
    Verdict::AllowedIfPublic
}

/// The `wasi:http` hooks of one component instance.
pub struct OutboundHooks {
    pub allowed: Arc<Vec<AllowedHost>>,
    pub component: Arc<str>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let allowed = self.allowed.clone();
        let component = self.component.clone();
        Box::new(async move {
            let uri = request.uri();
            let scheme = uri.scheme_str().unwrap_or("https").to_string();
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(if scheme == "http" { 80 } else { 443 });
            let verdict = check(&allowed, &scheme, &host, port);
            if verdict == Verdict::AllowedIfPublic {
                let addrs = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|e| HttpError::DnsError { rcode: Some(e.to_string()), info_code: None })?;
                if let Some(bad) = addrs.map(|a| a.ip()).find(|ip| is_internal(*ip)) {
                    tracing::warn!(%component, %host, %bad, "outbound request refused: resolves to an internal address");
                    return Err(HttpError::HttpRequestDenied);
                }
            } else if let Verdict::Denied(why) = verdict {
                tracing::warn!(%component, "outbound request refused: {why}");
                return Err(HttpError::HttpRequestDenied);
            }
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<AllowedHost> {
        entries.iter().map(|e| AllowedHost::parse(e).unwrap()).collect()
    }

    #[test]
    fn parses_spin_entries() {
        assert!(AllowedHost::parse("https://api.example.com").is_ok());
        assert!(AllowedHost::parse("http://127.0.0.1:*").is_ok());
        assert!(AllowedHost::parse("*://*:*").is_ok());
        assert!(AllowedHost::parse("ftp://x").is_err());
        assert!(AllowedHost::parse("https://a*b.com").is_err());
        assert!(AllowedHost::parse("https://x.com/path").is_err());
        assert!(AllowedHost::parse("https://x.com:99999").is_err());
    }

    #[test]
    fn allow_list_and_ssrf_guard() {
        let a = list(&["https://api.example.com", "https://*.partner.net", "http://127.0.0.1:8080"]);
        assert_eq!(check(&a, "https", "api.example.com", 443), Verdict::Allowed);
        assert!(matches!(check(&a, "http", "api.example.com", 80), Verdict::Denied(_)));
        assert!(matches!(check(&a, "https", "evil.com", 443), Verdict::Denied(_)));
        assert_eq!(check(&a, "https", "hooks.partner.net", 443), Verdict::AllowedIfPublic);
        assert!(matches!(check(&a, "https", "partner.net", 443), Verdict::Denied(_)));
        assert_eq!(check(&a, "http", "127.0.0.1", 8080), Verdict::Allowed);
        assert!(matches!(check(&a, "http", "127.0.0.1", 8081), Verdict::Denied(_)));
        let any = list(&["*://*:*"]);
        assert!(matches!(check(&any, "http", "127.0.0.1", 80), Verdict::Denied(_)));
        assert!(matches!(check(&any, "http", "localhost", 80), Verdict::Denied(_)));
        assert!(matches!(check(&any, "http", "10.1.2.3", 80), Verdict::Denied(_)));
        assert!(matches!(check(&any, "http", "[::1]", 80), Verdict::Denied(_)));
        assert_eq!(check(&any, "https", "example.org", 443), Verdict::AllowedIfPublic);
    }

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2001:4860::8888"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
