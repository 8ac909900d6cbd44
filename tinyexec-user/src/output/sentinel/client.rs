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

/// Most bytes read of a response's body: a token response is a few KiB, the
/// ingestion API answers with a short JSON error or nothing. A body past it is
/// refused as too large, not read on (ureq's own default would read 10 MiB).
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// The response's body as text, at most [`MAX_RESPONSE_BYTES`]; errors name `url`.
fn body_text(resp: &mut ureq::http::Response<ureq::Body>, url: &str) -> Result<String> {
    resp.body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(n) => {
                anyhow!("the response from {url} is too large (over {n} bytes)")
            }
            e => anyhow!("reading the response from {url}: {e}"),
        })
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
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", s.client_id.clone()),
            ("scope", s.scope.clone()),
        ];
        form.extend(s.credential.form_fields(&s.client_id, &s.token_url)?);
        let url = &s.token_url;
        let mut resp = self
            .agent
            .post(url)
            .send_form(form)
            .map_err(|e| anyhow!("token request to {url}: {e}"))?;
        let status = resp.status();
        let body = body_text(&mut resp, url);
        if !status.is_success() {
            let body = body.unwrap_or_else(|e| format!("{e:#}"));
            return Err(anyhow!("token request to {url}: HTTP {status}: {body}"));
        }
        let v: serde_json::Value = serde_json::from_str(&body?)
            .with_context(|| format!("the token response from {url} is not JSON"))?;
        let token = v["access_token"]
            .as_str()
            .with_context(|| format!("the token response from {url} has no access_token"))?
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
        // Only quoted in messages: one too large is quoted as such.
        let body =
            body_text(&mut resp, &self.settings.ingest_url).unwrap_or_else(|e| format!("{e:#}"));
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
    use std::{
        io::{BufRead as _, BufReader, Read as _, Write as _},
        net::TcpListener,
        path::PathBuf,
        sync::Arc,
        thread,
    };

    use super::{Client, Settings};
    use crate::output::sentinel::credential::Credential;

    /// The token request as an HTTP server receives it: form-encoded, values
    /// with the form's own delimiters intact.
    #[test]
    fn token_request_is_a_form() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line.trim_end().is_empty() {
                    break;
                }
                head.push(line.trim_end().to_ascii_lowercase());
            }
            let len: usize = head
                .iter()
                .find_map(|h| h.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let answer = r#"{"access_token":"t0k","expires_in":3600}"#;
            write!(
                &conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        let settings = Settings {
            ingest_url: format!("http://127.0.0.1:{port}/ingest"),
            token_url: format!("http://127.0.0.1:{port}/token"),
            client_id: "client-1".into(),
            credential: Credential::Secret("a b&c=d/é".into()),
            scope: "https://monitor.azure.com//.default".into(),
            spool_dir: PathBuf::new(),
            spool_max_bytes: 0,
            batch_max_records: 1,
            batch_max_bytes: 1,
            batch_max_delay_ms: 0,
            timeout_secs: 10,
            ca_file: None,
        };
        let mut client = Client::new(Arc::new(settings)).unwrap();
        assert_eq!(client.token().unwrap(), "t0k");
        let (head, body) = server.join().unwrap();
        assert!(head[0].starts_with("post /token "), "{head:?}");
        assert!(
            head.contains(&"content-type: application/x-www-form-urlencoded".to_owned()),
            "{head:?}"
        );
        assert_eq!(
            body,
            "grant_type=client_credentials&client_id=client-1\
             &scope=https%3A%2F%2Fmonitor.azure.com%2F%2F.default\
             &client_secret=a+b%26c%3Dd%2F%C3%A9"
        );
    }
}
