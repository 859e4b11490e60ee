//! `image-converting-server health`: asks a running daemon's `GET /ready` whether it is
//! ready, for container health checks (Dockerfile's `HEALTHCHECK`) and scripts.
//!
//! With no `--url` it asks this configuration's own address: `server.port` on
//! 127.0.0.1 (or `server.host` when that is a specific address other than 0.0.0.0/::).

use std::time::Duration;

use crate::config::Config;

/// How long the probe waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The `/ready` URL of the daemon that `config` describes.
pub fn default_url(config: &Config) -> String {
    let host = match config.server.host.as_str() {
        "0.0.0.0" | "::" | "[::]" | "" => "127.0.0.1".to_owned(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_owned(),
    };
    format!("http://{host}:{}/ready", config.server.port)
}

/// Probes `url`; `Ok` with the answer's body when it is a 2xx, `Err` saying why not.
pub async fn probe(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let resp = client.get(url).send().await.map_err(|e| format!("{url}: no answer: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() { Ok(body) } else { Err(format!("{url}: HTTP {status}: {}", body.trim())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_asks_loopback_for_a_wildcard_host() {
        let mut c = Config::validate(Default::default()).unwrap();
        c.server.port = 4321;
        c.server.host = "0.0.0.0".into();
        assert_eq!(default_url(&c), "http://127.0.0.1:4321/ready");
        c.server.host = "::1".into();
        assert_eq!(default_url(&c), "http://[::1]:4321/ready");
        c.server.host = "127.0.0.2".into();
        assert_eq!(default_url(&c), "http://127.0.0.2:4321/ready");
    }
}
