//! credkeeper-issuer: the local issuer — a signing key, its JWKS and discovery document,
//! and tokens following the SciTokens 2.0 or WLCG 1.0 profile (or the bare claim set of
//! the scitokens-credmon's local mode).
//!
//! What it is for: minting tokens for the broker (`serve`) and for `credmon` local mode.
//! What it is not: policy. Who gets which scopes is decided by the caller.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use credkeeper_core::{Secret, Timestamp};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

mod jws;
use jws::SigningKey;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    #[default]
    ES256,
    RS256,
    EdDSA,
}

impl Algorithm {
    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// The token-profile version claim a token carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionClaim {
    /// `ver: <value>`, e.g. `scitoken:2.0`.
    Ver(String),
    /// `wlcg.ver: <value>`, e.g. `1.0`.
    Wlcg(String),
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    Permissions(#[from] credkeeper_sink::perm::PermError),
    #[error("issuer key file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Where the key is and what the tokens look like.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The tokens' `iss`.
    pub url: String,
    pub algorithm: Algorithm,
    /// PKCS#8 (or, for EC, SEC1 `EC PRIVATE KEY`) PEM, mode 0600 or stricter.
    pub key_file: PathBuf,
    /// Create the key when the file does not exist.
    pub generate: bool,
    /// When generating, also write the public key (SubjectPublicKeyInfo PEM, 0644) here.
    pub public_key_file: Option<PathBuf>,
    /// Default: the RFC 7638 thumbprint of the public key.
    pub key_id: Option<String>,
    /// Longest lifetime, seconds.
    pub lifetime: i64,
    pub version: Option<VersionClaim>,
}

pub struct LocalIssuer {
    url: String,
    algorithm: Algorithm,
    /// Swapped whole when the keys rotate; signing takes a cheap `Arc` clone.
    keys: RwLock<Arc<Keys>>,
    lifetime: i64,
    version: Option<VersionClaim>,
}

/// The key tokens are signed with now, and every public key published beside it.
struct Keys {
    key: SigningKey,
    kid: String,
    jwks: Arc<JwkSet>,
}

/// A private key in PEM and the `kid` it goes by: one key of an issuer's set.
pub struct KeyPem<'a> {
    pub pem: &'a str,
    pub kid: &'a str,
}

/// What a signed token says.
pub struct Grant<'a> {
    pub subject: &'a str,
    pub scope: &'a str,
    /// The `aud` claim as it should appear (a string or a list); `None` for no `aud`.
    pub audience: Option<Value>,
    pub lifetime: i64,
}

impl LocalIssuer {
    pub fn open(settings: &Settings) -> Result<LocalIssuer, IssuerError> {
        let path = &settings.key_file;
        let key_err = |message: String| IssuerError::Key {
            path: path.clone(),
            message,
        };
        if settings.generate && !path.exists() {
            generate(
                path,
                settings.algorithm,
                settings.public_key_file.as_deref(),
            )
            .map_err(|e| key_err(e.to_string()))?;
        }
        let pem = credkeeper_sink::perm::read_private(path, "issuer key file")?;
        LocalIssuer::from_pem(settings, &pem, path)
    }

    /// The issuer with the private key in `pem`; `origin` names where it came from in
    /// errors (a file, or the store).
    pub fn from_pem(
        settings: &Settings,
        pem: &str,
        origin: &Path,
    ) -> Result<LocalIssuer, IssuerError> {
        let kid = match &settings.key_id {
            Some(kid) => kid.clone(),
            None => key_id_of(pem, settings.algorithm, origin)?,
        };
        let keys = Keys::new(settings.algorithm, KeyPem { pem, kid: &kid }, &[], origin)?;
        Ok(LocalIssuer {
            url: settings.url.trim_end_matches('/').to_string(),
            algorithm: settings.algorithm,
            keys: RwLock::new(Arc::new(keys)),
            lifetime: settings.lifetime,
            version: settings.version.clone(),
        })
    }

    /// From now on sign with `signing`, and publish it and `also` (keys coming into use,
    /// or going out of it while tokens they signed are still valid) in the JWKS.
    pub fn use_keys(
        &self,
        signing: KeyPem<'_>,
        also: &[KeyPem<'_>],
        origin: &Path,
    ) -> Result<(), IssuerError> {
        let keys = Keys::new(self.algorithm, signing, also, origin)?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    fn keys(&self) -> Arc<Keys> {
        // A panic elsewhere cannot leave the `Arc` half-written.
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `kid` tokens are signed with now.
    pub fn key_id(&self) -> String {
        self.keys().kid.clone()
    }

    pub fn lifetime(&self) -> i64 {
        self.lifetime
    }

    pub fn jwks(&self) -> Arc<JwkSet> {
        self.keys().jwks.clone()
    }

    /// OpenID Provider metadata, enough for relying parties to find the keys.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.url,
            "jwks_uri": format!("{}/jwks", self.url),
            "token_endpoint": format!("{}/api/v1/token", self.url),
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [format!("{:?}", self.algorithm.jwt())],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "grant_types_supported": ["client_credentials"],
        })
    }

    /// Sign a token for `grant`, valid from now.
    pub fn sign(&self, grant: &Grant<'_>) -> Result<(Secret, Timestamp), IssuerError> {
        let now = Timestamp::now();
        let exp = now.plus_secs(grant.lifetime.min(self.lifetime));
        let mut claims = json!({
            "sub": grant.subject,
            "scope": grant.scope,
            "iss": self.url,
            "exp": exp.unix(),
            "iat": now.unix(),
            "nbf": now.unix(),
            "jti": uuid4(),
        });
        if let Some(aud) = &grant.audience {
            claims["aud"] = aud.clone();
        }
        match &self.version {
            Some(VersionClaim::Ver(v)) => claims["ver"] = json!(v),
            Some(VersionClaim::Wlcg(v)) => claims["wlcg.ver"] = json!(v),
            None => {}
        }
        let keys = self.keys();
        let mut header = Header::new(self.algorithm.jwt());
        header.kid = Some(keys.kid.clone());
        header.typ = Some("JWT".into());
        let token = jws::encode(&header, &claims, &keys.key)?;
        Ok((Secret::new(token), exp))
    }
}

impl Keys {
    fn new(
        algorithm: Algorithm,
        signing: KeyPem<'_>,
        also: &[KeyPem<'_>],
        origin: &Path,
    ) -> Result<Keys, IssuerError> {
        let (key, jwk) = parse(signing.pem, algorithm, signing.kid, origin)?;
        let mut jwks = vec![jwk];
        for other in also.iter().filter(|k| k.kid != signing.kid) {
            jwks.push(parse(other.pem, algorithm, other.kid, origin)?.1);
        }
        Ok(Keys {
            key,
            kid: signing.kid.to_string(),
            jwks: Arc::new(JwkSet { keys: jwks }),
        })
    }
}

/// The private key in `pem` and its public JWK under `kid`.
fn parse(
    pem: &str,
    algorithm: Algorithm,
    kid: &str,
    origin: &Path,
) -> Result<(SigningKey, Jwk), IssuerError> {
    let alg = algorithm.jwt();
    let key_err = |message: String| IssuerError::Key {
        path: origin.to_path_buf(),
        message,
    };
    let key = load_key(pem, algorithm)
        .map_err(|e| key_err(format!("not a {alg:?} private key in PEM: {e}")))?;
    let mut jwk = Jwk::from_encoding_key(&key, alg).map_err(|e| key_err(e.to_string()))?;
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((SigningKey::of(&key, algorithm).map_err(key_err)?, jwk))
}

/// The RFC 7638 thumbprint of the key in `pem`: the `kid` a key gets unless one is set.
pub fn key_id_of(pem: &str, algorithm: Algorithm, origin: &Path) -> Result<String, IssuerError> {
    let (_, jwk) = parse(pem, algorithm, "", origin)?;
    Ok(thumbprint(&jwk))
}

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
            .map_err(|message| IssuerError::Key {
                path: key_file.to_path_buf(),
                message: format!("not a {algorithm:?} private key in PEM: {message}"),
            })?;
        // The same PEM reader as the TLS server's: a malformed certificate is an error,
        // never a chain silently cut short.
        use rustls_pki_types::pem::PemObject;
        let x5c: Vec<String> = rustls_pki_types::CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.map(|c| c.map(|c| STANDARD.encode(c))).collect())
            .map_err(|e| IssuerError::Key {
                path: cert_file.to_path_buf(),
                message: e.to_string(),
            })?;
        if x5c.is_empty() {
            return Err(IssuerError::Key {
                path: cert_file.to_path_buf(),
                message: "no PEM certificate in it".into(),
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

/// A random (version 4) UUID, for `jti`.
pub fn new_jti() -> String {
    uuid4()
}

/// A random (version 4) UUID, as the scitokens library puts in `jti`.
fn uuid4() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Parse a private key PEM. SEC1 `EC PRIVATE KEY` files (what scitokens-credmon and
/// `openssl ecparam -genkey` write) are converted to PKCS#8, which is what the JWT
/// library reads.
fn load_key(pem: &str, alg: Algorithm) -> Result<EncodingKey, String> {
    if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
        let der = pem_body(pem, "EC PRIVATE KEY").ok_or("malformed PEM")?;
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
        )
        .map_err(|_| "not a P-256 key".to_string())?;
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| "cannot convert the key".to_string())?;
        return Ok(EncodingKey::from_ec_der(pkcs8.as_ref()));
    }
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
    }
    .map_err(|e| e.to_string())
}

fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = pem[start..].find(&end)? + start;
    let b64: String = pem[start..stop].split_whitespace().collect();
    STANDARD.decode(b64).ok()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order.
fn thumbprint(jwk: &Jwk) -> String {
    let v = serde_json::to_value(jwk).unwrap_or_default();
    let members: &[&str] = match v.get("kty").and_then(Value::as_str) {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["crv", "kty", "x"],
    };
    // serde_json's map is ordered by key, which is the order RFC 7638 asks for.
    let required: serde_json::Map<String, Value> = members
        .iter()
        .filter_map(|m| v.get(*m).map(|x| (m.to_string(), x.clone())))
        .collect();
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        Value::Object(required).to_string().as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn create_new(path: &Path, mode: u32, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// A new private key for `alg`, as PKCS#8 PEM.
pub fn generate_pem(alg: Algorithm) -> std::io::Result<String> {
    let (private, _) = generate_der(alg)?;
    Ok(pem_encode("PRIVATE KEY", &private))
}

/// Generate a private key in a new 0600 PKCS#8 PEM file, and its public key (0644) when
/// asked.
fn generate(path: &Path, alg: Algorithm, public: Option<&Path>) -> std::io::Result<()> {
    let (private, public_der) = generate_der(alg)?;
    create_new(path, 0o600, &pem_encode("PRIVATE KEY", &private))?;
    if let Some(public) = public {
        let _ = std::fs::remove_file(public);
        create_new(public, 0o644, &pem_encode("PUBLIC KEY", &public_der))?;
    }
    Ok(())
}

/// A new key pair: PKCS#8 private key and SubjectPublicKeyInfo, DER.
fn generate_der(alg: Algorithm) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    fn fail<E>(_: E) -> std::io::Error {
        std::io::Error::other("key generation failed")
    }
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let (private, public_der): (Vec<u8>, Vec<u8>) = match alg {
        Algorithm::ES256 => {
            let alg = &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let doc =
                aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(fail)?;
            let pair =
                aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).map_err(fail)?;
            let spki = pair.public_key().as_der().map_err(fail)?.as_ref().to_vec();
            (doc.as_ref().to_vec(), spki)
        }
        Algorithm::EdDSA => {
            let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(fail)?;
            let pair =
                aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(fail)?;
            let spki = pair.public_key().as_der().map_err(fail)?.as_ref().to_vec();
            (doc.as_ref().to_vec(), spki)
        }
        Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(fail)?;
            let private = pair.as_der().map_err(fail)?.as_ref().to_vec();
            let spki = pair.public_key().as_der().map_err(fail)?.as_ref().to_vec();
            (private, spki)
        }
    };
    Ok((private, public_der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use credkeeper_core::Jwt;
    use credkeeper_core::verify::{Expectations, Profile, verify};
    use std::os::unix::fs::PermissionsExt;

    fn settings(dir: &Path, algorithm: Algorithm, version: Option<VersionClaim>) -> Settings {
        Settings {
            url: "https://broker.example/".into(),
            algorithm,
            key_file: dir.join("key.pem"),
            generate: true,
            public_key_file: Some(dir.join("key.pub")),
            key_id: None,
            lifetime: 1200,
            version,
        }
    }

    #[test]
    fn a_rotated_issuer_signs_with_the_new_key_and_still_publishes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), Algorithm::ES256, None);
        let issuer = LocalIssuer::open(&s).unwrap();
        let grant = Grant {
            subject: "ci",
            scope: "read:/d",
            audience: None,
            lifetime: 60,
        };
        let (old_token, _) = issuer.sign(&grant).unwrap();
        let old_pem = std::fs::read_to_string(&s.key_file).unwrap();
        let old_kid = issuer.key_id();
        let new_pem = generate_pem(Algorithm::ES256).unwrap();
        let new_kid = key_id_of(&new_pem, Algorithm::ES256, Path::new("new")).unwrap();
        assert_ne!(new_kid, old_kid);
        issuer
            .use_keys(
                KeyPem {
                    pem: &new_pem,
                    kid: &new_kid,
                },
                &[KeyPem {
                    pem: &old_pem,
                    kid: &old_kid,
                }],
                Path::new("store"),
            )
            .unwrap();
        let (new_token, _) = issuer.sign(&grant).unwrap();
        let jwks = issuer.jwks();
        let kids: Vec<_> = jwks
            .keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids, [new_kid.clone(), old_kid.clone()]);
        for (token, kid) in [(old_token, &old_kid), (new_token, &new_kid)] {
            let jwt = Jwt::decode(token.expose()).unwrap();
            assert_eq!(jwt.kid(), Some(kid.as_str()));
            verify(&jwt, &jwks, &Expectations::default(), Timestamp::now()).unwrap();
        }
        // Once the old key is dropped from the set, its tokens no longer verify.
        issuer
            .use_keys(
                KeyPem {
                    pem: &new_pem,
                    kid: &new_kid,
                },
                &[],
                Path::new("store"),
            )
            .unwrap();
        assert_eq!(issuer.jwks().keys.len(), 1);
    }

    #[test]
    fn each_algorithm_signs_tokens_its_own_jwks_verifies() {
        for (alg, version, profile) in [
            (
                Algorithm::ES256,
                Some(VersionClaim::Ver("scitoken:2.0".into())),
                Profile::SciTokens2,
            ),
            (
                Algorithm::RS256,
                Some(VersionClaim::Wlcg("1.0".into())),
                Profile::Wlcg1,
            ),
            (
                Algorithm::EdDSA,
                Some(VersionClaim::Ver("scitoken:2.0".into())),
                Profile::SciTokens2,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let s = settings(dir.path(), alg, version);
            let issuer = LocalIssuer::open(&s).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&s.key_file), 0o600);
            assert_eq!(mode(s.public_key_file.as_ref().unwrap()), 0o644);
            let (token, _) = issuer
                .sign(&Grant {
                    subject: "ci",
                    scope: "read:/d",
                    audience: Some(json!("https://s")),
                    lifetime: 60,
                })
                .unwrap();
            let jwt = Jwt::decode(token.expose()).unwrap();
            let expect = Expectations {
                issuer: Some("https://broker.example".into()),
                audience: Some("https://s".into()),
                profile: Some(profile),
                ..Default::default()
            };
            let v = verify(&jwt, &issuer.jwks(), &expect, Timestamp::now())
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(v.key_id.as_deref(), Some(issuer.key_id().as_str()));
            // The same key file gives the same key id on the next start.
            assert_eq!(LocalIssuer::open(&s).unwrap().key_id(), issuer.key_id());
        }
    }

    #[test]
    fn sec1_ec_keys_as_scitokens_credmon_writes_them_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scitokens-private.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(out.success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("BEGIN EC PRIVATE KEY")
        );
        let s = Settings {
            key_file: path,
            generate: false,
            key_id: Some("local".into()),
            ..settings(dir.path(), Algorithm::ES256, None)
        };
        let issuer = LocalIssuer::open(&s).unwrap();
        let (token, _) = issuer
            .sign(&Grant {
                subject: "bob",
                scope: "read:/user/bob",
                audience: None,
                lifetime: 1200,
            })
            .unwrap();
        let jwt = Jwt::decode(token.expose()).unwrap();
        assert_eq!(jwt.kid(), Some("local"));
        assert!(jwt.claims().get("aud").is_none() && jwt.claims().get("ver").is_none());
        let jti = jwt.str_claim("jti").unwrap();
        assert_eq!(jti.len(), 36);
        assert_eq!(&jti[14..15], "4");
        verify(
            &jwt,
            &issuer.jwks(),
            &Expectations::default(),
            Timestamp::now(),
        )
        .unwrap();
    }
}
