//! Tokens signed for a container registry's token auth, which verifies them against the
//! certificate chain in their header (`x5c`), not a JWKS.

use crate::jws::{self, SigningKey};
use crate::keyfile::load_key;
use crate::{Algorithm, IssuerError, KeyProblem};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use credkeeper_core::Secret;
use jsonwebtoken::Header;
use serde_json::Value;
use std::path::Path;

/// Signs tokens whose header carries the signing certificate chain (`x5c`): what a
/// container registry's token auth (CNCF distribution) verifies against its
/// `rootcertbundle`, which has no JWKS.
pub struct X5cSigner {
    alg: jsonwebtoken::Algorithm,
    key: SigningKey,
    x5c: Vec<String>,
}

impl X5cSigner {
    /// The key (PKCS#8, or SEC1 for EC; 0600) and its certificate chain, leaf first (PEM).
    pub fn open(
        key_file: &Path,
        cert_file: &Path,
        algorithm: Algorithm,
    ) -> Result<X5cSigner, IssuerError> {
        let pem = credkeeper_sink::perm::read_private(key_file, "registry token key file")?;
        let key = load_key(&pem, algorithm)
            .and_then(|key| SigningKey::of(&key, algorithm))
            .map_err(|reason| IssuerError::Key {
                path: key_file.to_path_buf(),
                problem: KeyProblem::NotAKey { algorithm, reason },
            })?;
        // The same PEM reader as the TLS server's: a malformed certificate is an error,
        // never a chain silently cut short.
        use rustls_pki_types::pem::PemObject;
        let x5c: Vec<String> = rustls_pki_types::CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.map(|c| c.map(|c| STANDARD.encode(c))).collect())
            .map_err(|e| IssuerError::Key {
                path: cert_file.to_path_buf(),
                problem: KeyProblem::Certificates(e),
            })?;
        if x5c.is_empty() {
            return Err(IssuerError::Key {
                path: cert_file.to_path_buf(),
                problem: KeyProblem::NoCertificate,
            });
        }
        Ok(X5cSigner {
            alg: algorithm.jwt(),
            key,
            x5c,
        })
    }

    /// Sign `claims` as they are.
    pub fn sign(&self, claims: &Value) -> Result<Secret, IssuerError> {
        let mut header = Header::new(self.alg);
        header.typ = Some("JWT".into());
        header.x5c = Some(self.x5c.clone());
        jws::encode(&header, claims, &self.key).map(Secret::new)
    }
}
