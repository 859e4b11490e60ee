//! Fetching `http(s)://` sources safely (server-side request forgery guard).
//!
//! Off unless `api.allowed_url_hosts` lists the host. Every hop — the first request and
//! each redirect — is checked: the host must be allowed, and every address it resolves
//! to must be public (not loopback, private, link-local, CGNAT, unique-local, multicast,
//! unspecified, or a cloud metadata address), unless listed in
//! `api.trusted_url_addresses`. The connection is pinned to the checked address, so a
//! second DNS answer cannot swap it. Size (`conversion.max_size_mb`) and time
//! (`api.url_timeout_seconds`) are limited while downloading.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actix_web::http::StatusCode;
use bytes::{Bytes, BytesMut};

use super::error::ApiError;

const MAX_REDIRECTS: usize = 5;

/// Limits and lists for remote sources.
#[derive(Debug, Clone)]
pub struct RemotePolicy {
    pub allowed_hosts: Vec<String>,
    pub trusted_addresses: Vec<IpAddr>,
    pub timeout: Duration,
    pub max_bytes: u64,
}

fn refused(message: String) -> ApiError {
    ApiError::bad_request("url_not_allowed", message)
}

fn not_accessible(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "url_not_accessible", message)
}

impl RemotePolicy {
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            match a.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => a == host,
            }
        })
    }

    /// Resolves `url`'s host and checks every address; returns the one to connect to.
    async fn check(&self, url: &url::Url) -> Result<SocketAddr, ApiError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(format!("{url}: only http and https sources are allowed")));
        }
        let host = url.host_str().ok_or_else(|| refused(format!("{url}: no host")))?;
        if !self.host_allowed(host) {
            return Err(refused(format!("{host} is not in api.allowed_url_hosts")));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| not_accessible(format!("{host}: cannot resolve: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(not_accessible(format!("{host}: no address")));
        }
        for a in &addrs {
            if !self.trusted_addresses.contains(&a.ip()) && !is_public(a.ip()) {
                return Err(refused(format!("{host} resolves to {}, a non-public address", a.ip())));
            }
        }
        Ok(addrs[0])
    }

    /// Downloads `url`, following redirects, within the limits.
    pub async fn fetch(&self, url: &str) -> Result<Bytes, ApiError> {
        let mut url =
            url::Url::parse(url).map_err(|e| ApiError::bad_request("invalid_request", format!("{url}: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let addr = self.check(&url).await?;
            let host = url.host_str().unwrap_or_default().to_owned();
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(self.timeout)
                .resolve(&host, addr)
                .no_proxy()
                .build()
                .map_err(|e| not_accessible(format!("{url}: {e}")))?;
            let mut resp = client.get(url.clone()).send().await.map_err(|e| not_accessible(format!("{url}: {e}")))?;
            if resp.status().is_redirection() {
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| not_accessible(format!("{url}: redirect without a location")))?;
                url = url.join(location).map_err(|e| not_accessible(format!("{url}: bad redirect: {e}")))?;
                continue;
            }
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
            while let Some(chunk) = resp.chunk().await.map_err(|e| not_accessible(format!("{url}: {e}")))? {
                if (body.len() + chunk.len()) as u64 > self.max_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(body.freeze());
        }
        Err(not_accessible(format!("{url}: more than {MAX_REDIRECTS} redirects")))
    }
}

/// True for addresses on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 may reach private IPv4
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn hosts_match_exactly_or_by_wildcard() {
        let p = RemotePolicy {
            allowed_hosts: vec!["images.example.com".into(), "*.cdn.example".into()],
            trusted_addresses: vec![],
            timeout: Duration::from_secs(1),
            max_bytes: 1,
        };
        assert!(p.host_allowed("images.example.com"));
        assert!(p.host_allowed("a.cdn.example"));
        assert!(!p.host_allowed("cdn.example"));
        assert!(!p.host_allowed("evil.com"));
    }
}
