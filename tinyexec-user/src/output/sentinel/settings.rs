//! The ingestion settings file (`--sentinel FILE`, TOML).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use super::credential::Credential;
use crate::textfile;

/// Environment variable holding the client secret (never a command-line flag:
/// the command line is world-readable in /proc).
pub(super) const SECRET_ENV: &str = "TINYEXEC_SENTINEL_CLIENT_SECRET";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Data collection endpoint (or the DCR's own logs ingestion endpoint), `https://…`.
    endpoint: String,
    /// The DCR's immutable id, `dcr-…`.
    dcr_immutable_id: String,
    /// The DCR stream, e.g. `Custom-TinyexecAlerts`.
    stream: String,
    tenant_id: String,
    client_id: String,
    /// File holding the client secret (else `$TINYEXEC_SENTINEL_CLIENT_SECRET`).
    client_secret_file: Option<PathBuf>,
    /// PEM file with the app's certificate and RSA key (instead of a secret).
    client_certificate_file: Option<PathBuf>,
    #[serde(default = "default_authority")]
    authority: String,
    #[serde(default = "default_scope")]
    scope: String,
    #[serde(default = "default_spool_dir")]
    spool_dir: PathBuf,
    #[serde(default = "default_spool_max_bytes")]
    spool_max_bytes: u64,
    #[serde(default = "default_batch_max_records")]
    batch_max_records: usize,
    /// Uncompressed bytes per POST (the gzip'd body is smaller still); at most the API's limit.
    #[serde(default = "default_batch_max_bytes")]
    batch_max_bytes: usize,
    #[serde(default = "default_batch_max_delay_ms")]
    batch_max_delay_ms: u64,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    /// Extra PEM root certificates to trust instead of the public roots (private PKI, tests).
    ca_file: Option<PathBuf>,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_scope() -> String {
    "https://monitor.azure.com//.default".into()
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/lib/tinyexec/spool")
}
const fn default_spool_max_bytes() -> u64 {
    100 << 20
}
const fn default_batch_max_records() -> usize {
    500
}
const fn default_batch_max_bytes() -> usize {
    API_MAX_BYTES
}
const fn default_batch_max_delay_ms() -> u64 {
    1000
}
const fn default_timeout_secs() -> u64 {
    30
}

/// The Logs Ingestion API takes at most 1 MB per call, compressed and uncompressed
/// (Azure Monitor service limits); 10^6, not 2^20, to stay clear of either reading.
pub const API_MAX_BYTES: usize = 1_000_000;

/// Resolved settings, secret included.
#[derive(Debug)]
pub struct Settings {
    pub ingest_url: String,
    pub token_url: String,
    pub client_id: String,
    pub credential: Credential,
    pub scope: String,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub batch_max_delay_ms: u64,
    pub timeout_secs: u64,
    pub ca_file: Option<PathBuf>,
}

impl Settings {
    pub fn load(path: &Path) -> Result<Self> {
        let text = textfile::read(path, "Sentinel settings", textfile::MAX_CONFIG_BYTES)?;
        let f: File = toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        let credential = match (&f.client_secret_file, &f.client_certificate_file) {
            (Some(_), Some(_)) => bail!(
                "{}: set client_secret_file or client_certificate_file, not both",
                path.display()
            ),
            (None, Some(cert)) => Credential::certificate(cert)
                .with_context(|| format!("{}: client_certificate_file", path.display()))?,
            (Some(p), None) => Credential::secret_file(p)
                .with_context(|| format!("{}: client_secret_file", path.display()))?,
            (None, None) => Credential::Secret(std::env::var(SECRET_ENV).with_context(|| {
                format!(
                    "{}: no credential: set client_secret_file or client_certificate_file, \
                     or {SECRET_ENV} in the environment",
                    path.display()
                )
            })?),
        };
        if matches!(&credential, Credential::Secret(s) if s.is_empty()) {
            bail!("{}: the client secret is empty", path.display());
        }
        for (what, url) in [("endpoint", &f.endpoint), ("authority", &f.authority)] {
            if !url.starts_with("https://") {
                bail!(
                    "{}: {what} must be an https:// URL, not `{url}`",
                    path.display()
                );
            }
        }
        if !(1024..=API_MAX_BYTES).contains(&f.batch_max_bytes) {
            bail!(
                "{}: batch_max_bytes must be between 1024 and {API_MAX_BYTES} (the Logs Ingestion API's limit per call), not {}",
                path.display(),
                f.batch_max_bytes
            );
        }
        let endpoint = f.endpoint.trim_end_matches('/');
        let authority = f.authority.trim_end_matches('/');
        Ok(Self {
            ingest_url: format!(
                "{endpoint}/dataCollectionRules/{}/streams/{}?api-version=2023-01-01",
                f.dcr_immutable_id, f.stream
            ),
            token_url: format!("{authority}/{}/oauth2/v2.0/token", f.tenant_id),
            client_id: f.client_id,
            credential,
            scope: f.scope,
            spool_dir: f.spool_dir,
            spool_max_bytes: f.spool_max_bytes,
            batch_max_records: f.batch_max_records.max(1),
            batch_max_bytes: f.batch_max_bytes,
            batch_max_delay_ms: f.batch_max_delay_ms,
            timeout_secs: f.timeout_secs.max(1),
            ca_file: f.ca_file,
        })
    }
}
