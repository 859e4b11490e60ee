//! Fetching `http(s)://` sources safely (server-side request forgery guard).
//!
//! Off unless `api.allowed_url_hosts` lists the host. One rule decides every address a
//! fetch may connect to ([`Rules::check_address`]): it must be public (see
//! [`super::address`]) or listed in `api.trusted_url_addresses` with that port, and never
//! be the daemon's own listening address. The rule sits in the fetch client's DNS
//! resolver, so no connection — first request, redirect, or a second DNS answer — can
//! reach an address it did not pass. A literal IP host (`http://[::127.0.0.1]/`) never
//! reaches a resolver, so the same rule is applied to it when the request starts and in
//! the redirect policy, which also re-checks the scheme and host of every hop. Size
//! (`conversion.max_size_mb`) and time (`api.url_timeout_seconds`) are limited while
//! downloading.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use bytes::{Bytes, BytesMut};

use super::address::{OwnAddresses, is_public};
use super::error::ApiError;

const MAX_REDIRECTS: usize = 5;

/// Why a URL or an address was refused (answered 400 `url_not_allowed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}: only http and https sources are allowed")]
    Scheme(String),
    #[error("{0}: no host")]
    NoHost(String),
    #[error("{0} is not in api.allowed_url_hosts")]
    Host(String),
    #[error("{host} resolves to {addr}, a non-public address (trust it in api.trusted_url_addresses as IP:PORT)")]
    NotPublic { host: String, addr: SocketAddr },
    #[error("{host} is {addr}, the daemon's own API address")]
    Own { host: String, addr: SocketAddr },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
}

/// The lists a fetch is checked against.
#[derive(Debug, Default)]
pub struct Rules {
    allowed_hosts: Vec<String>,
    trusted: Vec<SocketAddr>,
    own: OnceLock<OwnAddresses>,
}

impl Rules {
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        // IP hosts compare as addresses: the URL parser rewrites `[::127.0.0.1]` as `[::7f00:1]`.
        let ip = |h: &str| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let host_ip = ip(&host);
        self.allowed_hosts.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            if let (Some(h), Some(a)) = (host_ip, ip(&a)) {
                return h == a;
            }
            match a.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => a == host,
            }
        })
    }

    /// The one rule for every address a fetch may connect to.
    pub fn check_address(&self, host: &str, addr: SocketAddr) -> Result<(), Refused> {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        if self.own.get().is_some_and(|own| own.contains(addr)) {
            return Err(Refused::Own { host: host.to_owned(), addr });
        }
        let trusted = self.trusted.iter().any(|t| t.ip().to_canonical() == addr.ip() && t.port() == addr.port());
        if trusted || is_public(addr.ip()) { Ok(()) } else { Err(Refused::NotPublic { host: host.to_owned(), addr }) }
    }

    /// Checks a URL about to be requested (the first or a redirect's); returns its port.
    fn check_url(&self, url: &url::Url) -> Result<u16, Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme(url.to_string()));
        }
        let host = url.host().ok_or_else(|| Refused::NoHost(url.to_string()))?;
        let name = url.host_str().unwrap_or_default();
        if !self.host_allowed(name) {
            return Err(Refused::Host(name.to_owned()));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            self.check_address(name, SocketAddr::new(ip, port))?;
        }
        Ok(port)
    }
}

/// The resolver of a fetch: resolves a name and refuses the whole answer if any address
/// fails [`Rules::check_address`] for the port of the request being made.
struct Filter {
    rules: Arc<Rules>,
    port: Arc<AtomicU16>,
}

impl reqwest::dns::Resolve for Filter {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (rules, port) = (self.rules.clone(), self.port.load(Ordering::SeqCst));
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port)).await?.collect();
            for a in &addrs {
                rules.check_address(&host, *a)?;
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Limits and lists for remote sources.
#[derive(Debug, Clone)]
pub struct RemotePolicy {
    rules: Arc<Rules>,
    pub timeout: Duration,
    pub max_bytes: u64,
}

fn refused(e: Refused) -> ApiError {
    ApiError::bad_request("url_not_allowed", e.to_string())
}

fn not_accessible(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "url_not_accessible", message)
}

/// The refusal somewhere in a client error's causes, if that is why it failed.
fn refusal(e: &reqwest::Error) -> Option<Refused> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        cause = c.source();
    }
    None
}

impl RemotePolicy {
    pub fn new(allowed_hosts: Vec<String>, trusted: Vec<SocketAddr>, timeout: Duration, max_bytes: u64) -> Self {
        Self { rules: Arc::new(Rules { allowed_hosts, trusted, own: OnceLock::new() }), timeout, max_bytes }
    }

    /// True when no host is allowed (URL sources are off).
    pub fn is_off(&self) -> bool {
        self.rules.allowed_hosts.is_empty()
    }

    /// Records the addresses the API listens on (once, after binding): never fetched.
    pub fn set_own_addresses(&self, listening: Vec<SocketAddr>) {
        let _ = self.rules.own.set(OwnAddresses::new(listening));
    }

    /// A client for one fetch: every connection it makes passes the rules.
    fn client(&self, first_port: u16) -> Result<reqwest::Client, reqwest::Error> {
        let port = Arc::new(AtomicU16::new(first_port));
        let rules = self.rules.clone();
        let next_port = port.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(Refused::TooManyRedirects);
            }
            match rules.check_url(attempt.url()) {
                Ok(p) => {
                    next_port.store(p, Ordering::SeqCst);
                    attempt.follow()
                }
                Err(e) => attempt.error(e),
            }
        });
        reqwest::Client::builder()
            .dns_resolver(Filter { rules: self.rules.clone(), port })
            .redirect(redirects)
            .timeout(self.timeout)
            .no_proxy()
            .build()
    }

    /// Downloads `url`, following redirects, within the limits.
    pub async fn fetch(&self, url: &str) -> Result<Bytes, ApiError> {
        let url = url::Url::parse(url).map_err(|e| ApiError::bad_request("invalid_request", format!("{url}: {e}")))?;
        let port = self.rules.check_url(&url).map_err(refused)?;
        let client = self.client(port).map_err(|e| not_accessible(format!("{url}: {e}")))?;
        let fail = |e: reqwest::Error| match refusal(&e) {
            Some(r) => refused(r),
            None => not_accessible(format!("{url}: {}", e.without_url())),
        };
        let mut resp = client.get(url.clone()).send().await.map_err(fail)?;
        if !resp.status().is_success() {
            return Err(not_accessible(format!("{url}: HTTP {}", resp.status())));
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("{url}: over conversion.max_size_mb ({} bytes)", self.max_bytes),
            )
        };
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(fail)? {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
