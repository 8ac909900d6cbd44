//! How the sensor proves who it is to Entra ID: a client secret, or a
//! certificate whose key signs a JWT client assertion (RS256, `x5t` thumbprint).
//!
//! The files holding either are refused unless they are protected as OpenSSH
//! wants a private key: not reached through a symbolic link, owned by root or
//! by the sensor's own user, and no access for group or others.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    digest,
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use ureq::tls::PemItem;

pub enum Credential {
    Secret(String),
    Certificate {
        /// base64url(SHA-1(certificate DER)), the `x5t` header Entra ID matches.
        thumbprint: String,
        key: Box<RsaKeyPair>,
    },
}

impl std::fmt::Debug for Credential {
    /// Never prints the secret or the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(..)"),
            Self::Certificate { thumbprint, .. } => write!(f, "Certificate(x5t {thumbprint})"),
        }
    }
}

/// Most bytes a credential file may hold: a secret is a line, a PEM file with
/// a certificate chain and a 4096-bit key a few KiB.
const MAX_CREDENTIAL_BYTES: u64 = 64 << 10;

/// The bytes of a credential file (`what` names it in messages), refused when
/// it is a symbolic link, not a regular file, owned by anyone but root or the
/// sensor's user, readable or writable by group or others, or over
/// [`MAX_CREDENTIAL_BYTES`]. The checks are made on the file opened (fstat of
/// its descriptor), so the path cannot be swapped between check and read.
fn read_protected(path: &Path, what: &str) -> Result<Vec<u8>> {
    let p = path.display();
    // Seen before opening, so a device is never opened (opening some has effects).
    let md = std::fs::symlink_metadata(path).map_err(|e| anyhow!("cannot read {what} {p}: {e}"))?;
    let symlink = || {
        anyhow!(
            "{what} {p} is a symbolic link: refused (whoever can re-point the link chooses \
             the credential); name the file itself in the settings"
        )
    };
    if md.file_type().is_symlink() {
        return Err(symlink());
    }
    if !md.is_file() {
        bail!(
            "{what} {p} is {}, not a regular file: refused",
            crate::textfile::file_kind(md.file_type())
        );
    }
    // O_NOFOLLOW: a link put in its place meanwhile fails with ELOOP.
    // O_NONBLOCK: so does a FIFO, at once, instead of waiting for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => symlink(),
            _ => anyhow!("cannot read {what} {p}: {e}"),
        })?;
    let md = file
        .metadata()
        .map_err(|e| anyhow!("cannot read {what} {p}: {e}"))?;
    check_protected(&md, path, what)?;
    let bytes = read_at_most(file, MAX_CREDENTIAL_BYTES)
        .map_err(|e| anyhow!("cannot read {what} {p}: {e}"))?;
    if bytes.len() as u64 > MAX_CREDENTIAL_BYTES {
        bail!(
            "{what} {p} is too large: more than the limit of {}",
            crate::textfile::human_bytes(MAX_CREDENTIAL_BYTES)
        );
    }
    Ok(bytes)
}

/// Refuses the opened file unless it is a regular file that only root or the
/// sensor's own user owns and that group and others cannot access at all.
fn check_protected(md: &std::fs::Metadata, path: &Path, what: &str) -> Result<()> {
    let p = path.display();
    if !md.is_file() {
        bail!(
            "{what} {p} is {}, not a regular file: refused",
            crate::textfile::file_kind(md.file_type())
        );
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    // Its owner could make it readable to anyone at any time.
    if md.uid() != 0 && md.uid() != euid {
        bail!(
            "{what} {p} is owned by uid {}: refused, only root or the sensor's own user \
             (uid {euid}) may own it; fix: chown root {p}",
            md.uid()
        );
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} {p} has mode {mode:04o}, open to group or others: refused, as OpenSSH \
             refuses an unprotected private key; fix: chmod 600 {p}"
        );
    }
    Ok(())
}

/// Reads up to `limit + 1` bytes: one more than allowed tells "too large"
/// without reading the rest.
fn read_at_most(file: File, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl Credential {
    /// A file holding the client secret (surrounding white space trimmed).
    pub fn secret_file(path: &Path) -> Result<Self> {
        let bytes = read_protected(path, "client secret file")?;
        let text = crate::textfile::utf8(&path.display().to_string(), bytes)?;
        Ok(Self::Secret(text.trim().to_owned()))
    }

    /// A PEM file holding the certificate registered for the app and its RSA key.
    pub fn certificate(path: &Path) -> Result<Self> {
        let pem = read_protected(path, "client certificate file")?;
        let (mut cert, mut key) = (None, None);
        for item in ureq::tls::parse_pem(&pem) {
            match item.with_context(|| format!("{}: bad PEM", path.display()))? {
                PemItem::Certificate(c) if cert.is_none() => cert = Some(c.der().to_vec()),
                PemItem::PrivateKey(k) => {
                    // PKCS#8 ("PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
                    let pair = RsaKeyPair::from_pkcs8(k.der())
                        .or_else(|_| RsaKeyPair::from_der(k.der()))
                        .map_err(|e| {
                            anyhow!("{}: the private key must be RSA: {e}", path.display())
                        })?;
                    key = Some(pair);
                }
                _ => {}
            }
        }
        let cert = cert.with_context(|| format!("{}: no certificate", path.display()))?;
        let key = key.with_context(|| format!("{}: no private key", path.display()))?;
        let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        Ok(Self::Certificate {
            thumbprint: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
            key: Box::new(key),
        })
    }

    /// The form fields that authenticate a client-credentials token request.
    pub fn form_fields(
        &self,
        client_id: &str,
        token_url: &str,
    ) -> Result<Vec<(&'static str, String)>> {
        Ok(match self {
            Self::Secret(s) => vec![("client_secret", s.clone())],
            Self::Certificate { thumbprint, key } => vec![
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ),
                (
                    "client_assertion",
                    assertion(thumbprint, key, client_id, token_url)?,
                ),
            ],
        })
    }
}

/// A short-lived JWT signed with the certificate's key (Entra ID's certificate credentials).
fn assertion(thumbprint: &str, key: &RsaKeyPair, client_id: &str, aud: &str) -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": thumbprint});
    let claims = serde_json::json!({
        "aud": aud,
        "iss": client_id,
        "sub": client_id,
        "jti": crate::exec::identity::new_uuid(),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| anyhow!("signing the client assertion failed"))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}
