//! How the sensor proves who it is to Entra ID: a client secret, or a
//! certificate whose key signs a JWT client assertion (RS256, `x5t` thumbprint).

use std::{
    fs,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow};
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

impl Credential {
    /// A PEM file holding the certificate registered for the app and its RSA key.
    pub fn certificate(path: &Path) -> Result<Self> {
        let pem = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
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
        "jti": crate::identity::new_uuid(),
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
