//! From `[store] url` to a connection: the URL's parts, the password (never from argv or a
//! log), and TLS the way libpq's `sslmode` means it.

use crate::backend::StoreError;
use credkeeper_core::Secret;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How a [`PostgresStore`](super::PostgresStore) reaches its database.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    /// `postgres://user@host:port/dbname?sslmode=verify-full` (libpq's URL form; also
    /// `sslrootcert=FILE`, `host=/socket/dir`, `application_name`). A password in the URL
    /// works but is discouraged: it shows wherever the URL does.
    pub url: String,
    /// A file holding only the password (0600). Without it: the URL's, `PGPASSWORD`, then
    /// `PGPASSFILE` or `~/.pgpass`, as libpq looks them up.
    pub password_file: Option<PathBuf>,
    /// The CA certificates (PEM) the server's certificate must chain to; default: the
    /// URL's `sslrootcert`, else the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// The sealing key file, the same on every replica.
    pub key_file: PathBuf,
}

/// libpq's `sslmode`, without `allow` and `prefer`: a store of credentials never falls back
/// to clear text by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SslMode {
    Disable,
    /// Encrypted, the server not checked (libpq's meaning).
    Require,
    /// The certificate chains to a trusted root; its name is not checked.
    VerifyCa,
    VerifyFull,
}

pub(super) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The URL without its password, for messages.
    pub shown: String,
}

fn bad(shown: &str, message: impl Into<String>) -> StoreError {
    StoreError::Backend {
        path: shown.to_string(),
        message: message.into(),
    }
}

/// The URL as it may be shown: its password, if any, left out.
pub(super) fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(None);
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "[store] url".to_string(),
    }
}

pub(super) fn target(settings: &PostgresSettings) -> Result<Target, StoreError> {
    let shown = shown(&settings.url);
    let url = url::Url::parse(&settings.url)
        .map_err(|e| bad(&shown, format!("[store] url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(bad(
            &shown,
            "[store] url must start with postgres:// or postgresql://",
        ));
    }
    let decode =
        |s: &str| percent_decode(s).map_err(|_| bad(&shown, "[store] url: bad percent-encoding"));
    let mut config = tokio_postgres::Config::new();
    let mut host = url.host_str().map(str::to_string);
    let user = if url.username().is_empty() {
        std::env::var("PGUSER")
            .ok()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".into())
    } else {
        decode(url.username())?
    };
    let dbname = match url.path().trim_start_matches('/') {
        "" => user.clone(),
        db => decode(db)?,
    };
    let mut mode = SslMode::VerifyFull;
    let mut root_cert = settings.ca_file.clone();
    for (k, v) in url.query_pairs() {
        match &*k {
            "sslmode" => {
                mode = match &*v {
                    "disable" => SslMode::Disable,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(bad(
                            &shown,
                            format!(
                                "[store] url: sslmode={other} is not supported; use verify-full (the default), verify-ca, require or disable"
                            ),
                        ));
                    }
                }
            }
            "sslrootcert" => {
                root_cert.get_or_insert_with(|| PathBuf::from(&*v));
            }
            "host" => host = Some(v.into_owned()),
            "port" => {
                let port = v
                    .parse()
                    .map_err(|_| bad(&shown, "[store] url: port is not a number"))?;
                config.port(port);
            }
            "application_name" => {
                config.application_name(&*v);
            }
            "connect_timeout" | "passfile" => {}
            other => {
                return Err(bad(
                    &shown,
                    format!("[store] url: the parameter {other} is not supported"),
                ));
            }
        }
    }
    let host = host.unwrap_or_else(|| "/var/run/postgresql".into());
    if host.starts_with('/') {
        config.host_path(&host);
        // A local socket is as private as its directory: TLS there would only cost.
        mode = SslMode::Disable;
    } else {
        config.host(&host);
    }
    if let Some(port) = url.port() {
        config.port(port);
    }
    config.user(&user).dbname(&dbname);
    if config.get_application_name().is_none() {
        config.application_name("credkeeper");
    }
    let password = password(settings, &url, &host, config.get_ports(), &dbname, &user)
        .map_err(|m| bad(&shown, m))?;
    if let Some(password) = password {
        config.password(password.expose().as_bytes());
    }
    // A database that vanishes must not hang a request: connections give up in 5 s and an
    // unanswered write fails in 15.
    config
        .connect_timeout(Duration::from_secs(5))
        .tcp_user_timeout(Duration::from_secs(15))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    let tls = match mode {
        SslMode::Disable => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            None
        }
        mode => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            Some(tls(mode, root_cert.as_deref()).map_err(|e| bad(&shown, e.to_string()))?)
        }
    };
    Ok(Target { config, tls, shown })
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
}

/// The password, looked up as libpq does, the file named in the settings first.
fn password(
    settings: &PostgresSettings,
    url: &url::Url,
    host: &str,
    ports: &[u16],
    dbname: &str,
    user: &str,
) -> Result<Option<Secret>, String> {
    if let Some(file) = &settings.password_file {
        let text = credkeeper_sink::perm::read_private(file, "the database password file")
            .map_err(|e| format!("[store] password_file: {e}"))?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(format!("[store] password_file {} is empty", file.display()));
        }
        return Ok(Some(Secret::new(line)));
    }
    if let Some(p) = url.password() {
        return percent_decode(p)
            .map(|p| Some(Secret::new(p)))
            .map_err(|_| "[store] url: bad percent-encoding in the password".into());
    }
    if let Ok(p) = std::env::var("PGPASSWORD") {
        return Ok(Some(Secret::new(p)));
    }
    let passfile = url
        .query_pairs()
        .find(|(k, _)| k == "passfile")
        .map(|(_, v)| PathBuf::from(&*v))
        .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")));
    let Some(passfile) = passfile.filter(|p| p.exists()) else {
        return Ok(None);
    };
    let text = credkeeper_sink::perm::read_private(&passfile, "the database password file")
        .map_err(|e| format!("password file {}: {e}", passfile.display()))?;
    let port = ports.first().copied().unwrap_or(5432).to_string();
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    Ok(pgpass_lookup(&text, host, &port, dbname, user).map(Secret::new))
}

/// The password of the first matching line of a `.pgpass` file
/// (`host:port:database:user:password`, `*` matches anything, `\` escapes `:` and `\`).
fn pgpass_lookup(text: &str, host: &str, port: &str, dbname: &str, user: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let mut fields = Vec::with_capacity(5);
            let mut field = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => field.extend(chars.next()),
                    ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                    c => field.push(c),
                }
            }
            fields.push(field);
            let [h, p, d, u, pw] = <[String; 5]>::try_from(fields).ok()?;
            let hit = |pattern: &str, value: &str| pattern == "*" || pattern == value;
            (hit(&h, host) && hit(&p, port) && hit(&d, dbname) && hit(&u, user)).then_some(pw)
        })
}

/// Why the TLS client for the database could not be made.
#[derive(Debug, thiserror::Error)]
enum TlsError {
    #[error("TLS: {0}")]
    Protocol(#[from] rustls::Error),
    #[error("CA file {}: {source}", path.display())]
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {}: {source}", path.display())]
    CaPem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("TLS roots: {0}")]
    Roots(#[from] rustls::client::VerifierBuilderError),
}

fn tls(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut roots = rustls::RootCertStore::empty();
    if mode != SslMode::Require {
        match root_cert {
            Some(file) => {
                let path = || file.to_path_buf();
                let pem = std::fs::read(file).map_err(|source| TlsError::CaRead {
                    path: path(),
                    source,
                })?;
                let certs = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
                    .collect::<Result<Vec<rustls_pki_types::CertificateDer<'static>>, _>>()
                    .map_err(|source| TlsError::CaPem {
                        path: path(),
                        source,
                    })?;
                if certs.is_empty() {
                    return Err(TlsError::NoCertificate { path: path() });
                }
                roots.add_parsable_certificates(certs);
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
    }
    let config = match mode {
        SslMode::VerifyFull => builder.with_root_certificates(roots).with_no_client_auth(),
        SslMode::VerifyCa | SslMode::Require => {
            let chain = match mode {
                SslMode::VerifyCa => Some(
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()?,
                ),
                _ => None,
            };
            let verifier = Verifier {
                chain,
                algorithms: provider.signature_verification_algorithms,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        SslMode::Disable => unreachable!("no TLS is made for sslmode=disable"),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// libpq's `verify-ca` (the chain, not the name: `chain` is set) and `require` (nothing but
/// the handshake's own signatures): what the user asked for with `sslmode`.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_as_libpq_matches_them() {
        let file = "# comment\n\
                    other:5432:*:*:no\n\
                    127.0.0.1:5433:credkeeper:credkeeper:pa\\:ss\\\\word\n\
                    *:*:*:credkeeper:fallback\n";
        assert_eq!(
            pgpass_lookup(file, "127.0.0.1", "5433", "credkeeper", "credkeeper").as_deref(),
            Some("pa:ss\\word")
        );
        assert_eq!(
            pgpass_lookup(file, "db", "5432", "x", "credkeeper").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup(file, "db", "5432", "x", "someone"), None);
    }

    #[test]
    fn a_url_is_shown_without_its_password_and_bad_modes_are_named() {
        assert_eq!(
            shown("postgres://ck:hunter2@db:5432/ck?sslmode=require"),
            "postgres://ck@db:5432/ck"
        );
        let settings = PostgresSettings {
            url: "postgres://ck@db/ck?sslmode=prefer".into(),
            password_file: None,
            ca_file: None,
            pool_size: 2,
            key_file: "k".into(),
        };
        let err = target(&settings).err().unwrap().to_string();
        assert!(err.contains("sslmode=prefer is not supported"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = tls(SslMode::VerifyFull, Some(&missing)).err().unwrap();
        assert!(
            matches!(err, TlsError::CaRead { ref path, .. } if path == &missing),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = tls(SslMode::VerifyCa, Some(&empty)).err().unwrap();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("holds no certificate"), "{err}");
        // `require` checks no chain: no CA file is read.
        assert!(tls(SslMode::Require, Some(&missing)).is_ok());
    }
}
