//! The Logs Ingestion API, with an Entra ID token from the client-credentials flow.

use std::{
    fs,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use ureq::{
    Agent,
    tls::{PemItem, RootCerts, TlsConfig},
};

use super::settings::Settings;

/// What became of one POST.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// Try again later (outage, throttling, expired token), after at least this long.
    Retry(Option<Duration>, String),
    /// HTTP 413: the body is over the service's limit; smaller parts may pass.
    TooLarge(String),
    /// The service refuses this batch for good (malformed, too large): set it aside.
    Rejected(String),
}

pub struct Client {
    agent: Agent,
    settings: Arc<Settings>,
    token: Option<(String, Instant)>,
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn retry_after(resp: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    resp.headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl Client {
    pub fn new(settings: Arc<Settings>) -> Result<Self> {
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &settings.ca_file {
            let pem = fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(anyhow!("{}: no PEM certificate", ca.display()));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        let agent: Agent = Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(settings.timeout_secs)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            agent,
            settings,
            token: None,
        })
    }

    /// A cached token, renewed five minutes before it expires.
    fn token(&mut self) -> Result<String> {
        if let Some((t, until)) = &self.token
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let s = &self.settings;
        let mut form = format!(
            "grant_type=client_credentials&client_id={}&scope={}",
            form_encode(&s.client_id),
            form_encode(&s.scope)
        );
        for (k, v) in s.credential.form_fields(&s.client_id, &s.token_url)? {
            form.push_str(&format!("&{k}={}", form_encode(&v)));
        }
        let mut resp = self
            .agent
            .post(&s.token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(form.as_bytes())
            .map_err(|e| anyhow!("token request to {}: {e}", s.token_url))?;
        let status = resp.status();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if !status.is_success() {
            return Err(anyhow!("token request: HTTP {status}: {body}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).context("token response is not JSON")?;
        let token = v["access_token"]
            .as_str()
            .context("token response has no access_token")?
            .to_owned();
        let lifetime = v["expires_in"].as_u64().unwrap_or(3600);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(300).max(30));
        self.token = Some((token.clone(), until));
        Ok(token)
    }

    /// POSTs one spooled batch (already a gzip'd JSON array).
    pub fn post(&mut self, gz_body: &[u8]) -> Outcome {
        let token = match self.token() {
            Ok(t) => t,
            Err(e) => return Outcome::Retry(None, format!("{e:#}")),
        };
        let resp = self
            .agent
            .post(&self.settings.ingest_url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .send(gz_body);
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry(None, format!("POST {}: {e}", self.settings.ingest_url));
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(&resp);
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        match status {
            200..=299 => Outcome::Delivered,
            401 | 403 => {
                self.token = None;
                Outcome::Retry(None, format!("HTTP {status} (token refused): {body}"))
            }
            408 | 429 | 500..=599 => Outcome::Retry(after, format!("HTTP {status}: {body}")),
            413 => Outcome::TooLarge(format!("HTTP 413: {body}")),
            _ => Outcome::Rejected(format!("HTTP {status}: {body}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_encoding() {
        assert_eq!(super::form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            super::form_encode("https://monitor.azure.com//.default"),
            "https%3A%2F%2Fmonitor.azure.com%2F%2F.default"
        );
    }
}
