//! An oidc-agent encrypted account configuration, read without an agent.
//!
//! What it is for: rucio-task-manager's `oidc-agent` auth route hands a container its
//! account in `OIDC_AGENT_AUTH_CLIENT_CFG_VALUE` (the file `oidc-gen` writes under
//! `~/.oidc-agent/NAME`, pasted into a values file) and the encryption password in
//! `OIDC_AGENT_AUTH_CLIENT_CFG_PASSWORD`; its entry point writes the value out with
//! `echo -e`, runs `oidc-add --pw-env` and then `oidc-token`. [`decrypt`] reads the same
//! value directly: it decrypts it with the password and returns what a refresh-token grant
//! needs — issuer, client id and secret, refresh token, scope, audience.
//!
//! What it is not: a token source. Nothing here talks to the network, runs an agent or
//! writes a file; the caller does the refresh-token grant. Configs encrypted with GPG
//! (`oidc-gen --pgp`) and the hex format written before oidc-agent 2.1.0 are recognised
//! and refused ([`AgentConfigError::Unsupported`]).
//!
//! The format (oidc-agent 2.1.0 to 5.x; `src/utils/crypt/crypt.c` `crypt_encrypt` and
//! `cryptUtils.c` `encryptWithVersionLine`), seven lines:
//!
//! ```text
//! 486                                cipher length: plaintext bytes + 16 (the MAC)
//! 25ZVDbcpDmn5NerXF23Gfhynl9InHbfu   nonce, base64 (standard alphabet, padded): 24 bytes
//! G6wRS4S6gxeON8vXHKvN1g==           salt, base64: 16 bytes
//! 24:16:16:32:1:2:67108864:2         nonce:salt:mac:key lengths, base64 variant (1 = original),
//!                                    crypto_pwhash opslimit, memlimit (bytes), algorithm
//!                                    (2 = Argon2id v1.3, 1 = Argon2i v1.3)
//! GgCC6Sf…                           crypto_secretbox_easy output, base64: MAC ‖ ciphertext
//! Y/iB6FEOL4vFEF5GP+ki/5FxJetboYj/…  password check, base64: 32 bytes
//! Generated using version: 4.2.6     (no newline after it)
//! ```
//!
//! The key is libsodium's `crypto_pwhash` of the password (its bytes, no terminator) and the
//! salt, 64 bytes long (parallelism 1): the first 32 are the XSalsa20-Poly1305 key, the last
//! 32 must equal the password check line, which tells a wrong password from a damaged file.
//! The plaintext is the account as JSON (`src/account/account.c` `accountToJSON`): `name`,
//! `issuer_url`, `client_id`, `client_secret`, `refresh_token`, `scope` (5.x: `auth_scope`
//! and `refresh_scope`), `audience`, … with `""` for an unset field.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use credkeeper_core::Secret;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::{Key, Nonce, Tag, XSalsa20Poly1305};
use serde::Deserialize;
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// The prefix of the last line, followed by the oidc-agent version that wrote the file.
const VERSION_PREFIX: &str = "Generated using version: ";
const NONCE_LEN: usize = 24;
const SALT_LEN: usize = 16;
const MAC_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// libsodium's `crypto_pwhash_ALG_ARGON2I13` and `crypto_pwhash_ALG_ARGON2ID13`.
const ALG_ARGON2I13: u32 = 1;
const ALG_ARGON2ID13: u32 = 2;
/// The largest key derivation cost accepted from a file. oidc-agent writes libsodium's
/// INTERACTIVE limits (2 passes, 64 MiB); these bounds only keep a damaged parameter line
/// from asking for gigabytes or minutes.
const MAX_MEMLIMIT: u64 = 1 << 30;
const MAX_OPSLIMIT: u32 = 32;

/// An oidc-agent account: what a refresh-token grant at its provider needs.
///
/// `Debug` shows the client secret and the refresh token as `[redacted]`.
#[derive(Debug)]
pub struct AgentAccount {
    /// The account's short name (`name`; `shortname` if that is absent).
    pub name: Option<String>,
    /// The issuer URL as oidc-gen stored it (`issuer_url`, else `issuer`); oidc-gen 4.2.6
    /// adds a trailing `/`.
    pub issuer: String,
    /// `token_endpoint`, if the file has one (oidc-agent 4.x does not: it discovers it from
    /// the issuer).
    pub token_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub refresh_token: Secret,
    /// The scope to ask for: 5.x's `refresh_scope`, else `auth_scope`, else `scope`.
    pub scope: Option<String>,
    pub audience: Option<String>,
}

/// Why a value could not be read. No variant carries the password, the value's text or
/// anything decrypted.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// The text is not an oidc-agent encrypted account config (or is cut short or damaged
    /// outside the ciphertext); says which part.
    #[error("not an oidc-agent encrypted account config: {0}")]
    Format(String),
    /// An oidc-agent format this reader does not decrypt.
    #[error("unsupported oidc-agent account config: {0}")]
    Unsupported(&'static str),
    /// The password check line does not match the key derived from this password.
    #[error("wrong password for the oidc-agent account config")]
    WrongPassword,
    /// The password is right but the ciphertext fails its authentication: it was changed.
    #[error(
        "the oidc-agent account config's ciphertext is damaged (the password is right, the MAC does not match)"
    )]
    Corrupted,
    /// The key derivation failed (e.g. the memory could not be allocated).
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// Decrypted, but not an account JSON object.
    #[error(
        "decrypted, but the content is not an oidc-agent account JSON object (line {line}, column {column})"
    )]
    NotAccountJson { line: usize, column: usize },
    /// Decrypted, but a field a refresh grant needs is absent or empty.
    #[error("the oidc-agent account config has no {0}")]
    MissingField(&'static str),
}

/// Decrypts `value` — the text of `OIDC_AGENT_AUTH_CLIENT_CFG_VALUE`, or an oidc-gen account
/// file — with `password` and reads the account in it.
///
/// Surrounding whitespace is ignored, and so is a `\r` ending a line. A value on one line
/// whose lines are joined by the two characters `\n` (as a values file often has it) is
/// split there first, as the upstream entry point's `echo -e` does.
pub fn decrypt(value: &str, password: &Secret) -> Result<AgentAccount, AgentConfigError> {
    let text = unescape(value);
    let sealed = Sealed::parse(&text)?;
    let plaintext = sealed.open(password)?;
    account_from_json(&plaintext)
}

/// `echo -e`'s `\n` (the only escape a base64 config can contain), applied only when the
/// value has no real line break.
fn unescape(value: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = value.trim();
    if !trimmed.contains('\n') && trimmed.contains("\\n") {
        std::borrow::Cow::Owned(trimmed.replace("\\n", "\n").trim().to_string())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

/// The parsed (still encrypted) config.
struct Sealed {
    nonce: [u8; NONCE_LEN],
    salt: [u8; SALT_LEN],
    kdf: Kdf,
    /// MAC ‖ ciphertext, as `crypto_secretbox_easy` writes it.
    boxed: Vec<u8>,
    password_check: [u8; KEY_LEN],
}

/// libsodium `crypto_pwhash` parameters from the file.
struct Kdf {
    algorithm: argon2::Algorithm,
    opslimit: u32,
    memlimit: u64,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("boxed_len", &self.boxed.len())
            .finish_non_exhaustive()
    }
}

fn format_err(what: impl Into<String>) -> AgentConfigError {
    AgentConfigError::Format(what.into())
}

impl Sealed {
    fn parse(text: &str) -> Result<Self, AgentConfigError> {
        if text.is_empty() {
            return Err(format_err("the value is empty"));
        }
        if text.starts_with("-----BEGIN PGP MESSAGE-----") {
            return Err(AgentConfigError::Unsupported(
                "encrypted with GPG (oidc-gen --pgp), not with a password",
            ));
        }
        let mut lines: Vec<&str> = text.lines().map(str::trim).collect();
        while lines.last() == Some(&"") {
            lines.pop();
        }
        if let Some(last) = lines.last().filter(|_| lines.len() > 1)
            && let Some(version) = last.strip_prefix(VERSION_PREFIX)
        {
            let version = parse_version(version).ok_or_else(|| {
                format_err("the last line names no version (\"Generated using version: X.Y.Z\")")
            })?;
            if version < (2, 1, 0) {
                return Err(AgentConfigError::Unsupported(
                    "the hex format of oidc-agent before 2.1.0",
                ));
            }
            lines.pop();
        }
        if lines.len() == 1 && is_legacy_hex(lines[0]) {
            return Err(AgentConfigError::Unsupported(
                "the hex format of oidc-agent before 2.1.0",
            ));
        }
        if lines.len() != 6 {
            return Err(format_err(format!(
                "expected 6 lines (cipher length, nonce, salt, parameters, ciphertext, password \
                 check) before the version line, found {}",
                lines.len()
            )));
        }

        let cipher_len: usize = lines[0]
            .parse()
            .map_err(|_| format_err("line 1 (cipher length) is not a number"))?;
        let params: Vec<u64> = lines[3]
            .split(':')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| format_err("line 4 (parameters) is not eight numbers separated by ':'"))?;
        let [
            nonce_len,
            salt_len,
            mac_len,
            key_len,
            _variant,
            opslimit,
            memlimit,
            alg,
        ] = params[..]
        else {
            return Err(format_err(
                "line 4 (parameters) is not eight numbers separated by ':'",
            ));
        };
        // The base64 variant field is not used: oidc-agent always decodes the original
        // alphabet with padding.
        if (nonce_len, salt_len, mac_len, key_len)
            != (
                NONCE_LEN as u64,
                SALT_LEN as u64,
                MAC_LEN as u64,
                KEY_LEN as u64,
            )
        {
            return Err(AgentConfigError::Unsupported(
                "nonce, salt, MAC and key lengths other than crypto_secretbox's 24:16:16:32",
            ));
        }
        let algorithm = match u32::try_from(alg) {
            Ok(ALG_ARGON2ID13) => argon2::Algorithm::Argon2id,
            Ok(ALG_ARGON2I13) => argon2::Algorithm::Argon2i,
            _ => {
                return Err(AgentConfigError::Unsupported(
                    "a crypto_pwhash algorithm other than Argon2id (2) or Argon2i (1)",
                ));
            }
        };
        let opslimit = u32::try_from(opslimit)
            .ok()
            .filter(|o| (1..=MAX_OPSLIMIT).contains(o))
            .ok_or_else(|| format_err("line 4: opslimit out of range"))?;
        if !(8 * 1024..=MAX_MEMLIMIT).contains(&memlimit) {
            return Err(format_err("line 4: memlimit out of range"));
        }

        let nonce = decode_exact::<NONCE_LEN>(lines[1], "line 2 (nonce)")?;
        let salt = decode_exact::<SALT_LEN>(lines[2], "line 3 (salt)")?;
        let boxed = BASE64
            .decode(lines[4])
            .map_err(|_| format_err("line 5 (ciphertext) is not base64"))?;
        if boxed.len() != cipher_len {
            return Err(format_err(format!(
                "line 5 (ciphertext) holds {} bytes where line 1 says {cipher_len}",
                boxed.len()
            )));
        }
        if boxed.len() < MAC_LEN {
            return Err(format_err("line 5 (ciphertext) is shorter than its MAC"));
        }
        let password_check = decode_exact::<KEY_LEN>(lines[5], "line 6 (password check)")?;
        Ok(Self {
            nonce,
            salt,
            kdf: Kdf {
                algorithm,
                opslimit,
                memlimit,
            },
            boxed,
            password_check,
        })
    }

    /// Derives the keys, checks the password, opens the box. The plaintext is wiped when the
    /// result is dropped.
    fn open(&self, password: &Secret) -> Result<Zeroizing<Vec<u8>>, AgentConfigError> {
        let params = argon2::Params::new(
            // libsodium's memlimit is in bytes, Argon2's m_cost in KiB.
            u32::try_from(self.kdf.memlimit / 1024).expect("memlimit checked"),
            self.kdf.opslimit,
            1,
            Some(2 * KEY_LEN),
        )
        .map_err(|e| AgentConfigError::Kdf(e.to_string()))?;
        let argon = argon2::Argon2::new(self.kdf.algorithm, argon2::Version::V0x13, params);
        let mut keys = Zeroizing::new([0u8; 2 * KEY_LEN]);
        argon
            .hash_password_into(password.expose().as_bytes(), &self.salt, &mut keys[..])
            .map_err(|e| AgentConfigError::Kdf(e.to_string()))?;
        let (encryption_key, check) = keys.split_at(KEY_LEN);
        if !constant_time_eq(check, &self.password_check) {
            return Err(AgentConfigError::WrongPassword);
        }

        let cipher = XSalsa20Poly1305::new(Key::from_slice(encryption_key));
        let (mac, ciphertext) = self.boxed.split_at(MAC_LEN);
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&self.nonce),
                b"",
                &mut plaintext[..],
                Tag::from_slice(mac),
            )
            .map_err(|_| AgentConfigError::Corrupted)?;
        Ok(plaintext)
    }
}

/// `X.Y.Z` (a missing part counts as 0) as numbers.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    // A patch part may carry a suffix (e.g. "4.2.6-1"): its leading digits count.
    let patch = parts.next().map_or(Some(0), |p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })?;
    Some((major, minor, patch))
}

/// The one-line format before 2.1.0: `cipher_len:salt_hex:nonce_hex:cipher_hex`.
fn is_legacy_hex(line: &str) -> bool {
    let parts: Vec<&str> = line.split(':').collect();
    parts.len() == 4
        && parts[0].bytes().all(|b| b.is_ascii_digit())
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn decode_exact<const N: usize>(
    text: &str,
    what: &'static str,
) -> Result<[u8; N], AgentConfigError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|_| format_err(format!("{what} is not base64")))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format_err(format!("{what} is {} bytes, not {N}", bytes.len())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The JSON fields read; every other field is skipped unread (`username`, `password`,
/// `cert_path`, `redirect_uris`, …).
#[derive(Deserialize)]
struct RawAccount {
    name: Option<String>,
    shortname: Option<String>,
    issuer_url: Option<String>,
    issuer: Option<String>,
    token_endpoint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    auth_scope: Option<String>,
    refresh_scope: Option<String>,
    audience: Option<String>,
}

impl Drop for RawAccount {
    fn drop(&mut self) {
        self.client_secret.zeroize();
        self.refresh_token.zeroize();
    }
}

/// `None` for an absent, null or empty (oidc-agent writes `""` for unset) field.
fn non_empty(field: &mut Option<String>) -> Option<String> {
    field.take().filter(|s| !s.trim().is_empty())
}

fn account_from_json(plaintext: &[u8]) -> Result<AgentAccount, AgentConfigError> {
    // serde_json's messages can quote the input: only the position is passed on.
    let mut raw: RawAccount =
        serde_json::from_slice(plaintext).map_err(|e| AgentConfigError::NotAccountJson {
            line: e.line(),
            column: e.column(),
        })?;
    let issuer = non_empty(&mut raw.issuer_url)
        .or_else(|| non_empty(&mut raw.issuer))
        .ok_or(AgentConfigError::MissingField("issuer_url"))?;
    let client_id =
        non_empty(&mut raw.client_id).ok_or(AgentConfigError::MissingField("client_id"))?;
    let refresh_token = non_empty(&mut raw.refresh_token)
        .map(Secret::from)
        .ok_or(AgentConfigError::MissingField("refresh_token"))?;
    Ok(AgentAccount {
        name: non_empty(&mut raw.name).or_else(|| non_empty(&mut raw.shortname)),
        issuer,
        token_endpoint: non_empty(&mut raw.token_endpoint),
        client_id,
        client_secret: non_empty(&mut raw.client_secret).map(Secret::from),
        refresh_token,
        scope: non_empty(&mut raw.refresh_scope)
            .or_else(|| non_empty(&mut raw.auth_scope))
            .or_else(|| non_empty(&mut raw.scope)),
        audience: non_empty(&mut raw.audience),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real fixture (oidc-gen 4.2.6; see tests/data/oidc-agent/SOURCE.md).
    const FIXTURE: &str = include_str!("../tests/data/oidc-agent/rucio-auth.enc");
    /// The same file on one line, its line breaks written `\n`, as in a Helm values file.
    const FIXTURE_ESCAPED: &str = include_str!("../tests/data/oidc-agent/rucio-auth.enc.escaped");
    const PASSWORD: &str = "credkeeper-test-password";

    fn password() -> Secret {
        Secret::new(PASSWORD)
    }

    fn lines() -> Vec<&'static str> {
        FIXTURE.lines().collect()
    }

    #[test]
    fn a_real_oidc_gen_4_2_6_config_decrypts_with_its_password() {
        let account = decrypt(FIXTURE, &password()).expect("decrypts");
        assert_eq!(account.name.as_deref(), Some("rucio-auth"));
        assert!(
            account.issuer.starts_with("http://127.0.0.1:"),
            "issuer {}",
            account.issuer
        );
        assert_eq!(account.client_id, "robot-client");
        assert_eq!(
            account.client_secret.as_ref().map(Secret::expose),
            Some("robot-secret")
        );
        assert!(account.refresh_token.expose().len() > 20);
        assert_eq!(account.scope.as_deref(), Some("openid offline_access"));
        // oidc-gen 4.2.6 writes "" for these: unset.
        assert_eq!(account.audience, None);
        assert_eq!(account.token_endpoint, None);
    }

    /// The real oidc-gen 4.2.6 decrypting the same file (`oidc-gen --print`) gets exactly
    /// the bytes decrypted here: the key derivation, the box and the fields are its own.
    #[test]
    fn the_plaintext_is_what_oidc_gen_print_shows_for_the_same_file() {
        let by_oidc_gen = include_str!("../tests/data/oidc-agent/rucio-auth.oidc-gen-print.json");
        let sealed = Sealed::parse(FIXTURE).unwrap();
        let plaintext = sealed.open(&password()).unwrap();
        assert_eq!(
            std::str::from_utf8(&plaintext).unwrap().trim(),
            by_oidc_gen.trim()
        );
        let printed: serde_json::Value = serde_json::from_str(by_oidc_gen).unwrap();
        let account = decrypt(FIXTURE, &password()).unwrap();
        assert_eq!(account.refresh_token.expose(), printed["refresh_token"]);
        assert_eq!(account.issuer, printed["issuer_url"]);
    }

    #[test]
    fn the_values_file_form_with_backslash_n_decrypts_the_same() {
        assert!(!FIXTURE_ESCAPED.trim().contains('\n'));
        let a = decrypt(FIXTURE, &password()).unwrap();
        let b = decrypt(FIXTURE_ESCAPED, &password()).unwrap();
        assert_eq!(a.refresh_token, b.refresh_token);
        assert_eq!((a.issuer, a.client_id), (b.issuer, b.client_id));
    }

    #[test]
    fn surrounding_whitespace_crlf_and_the_trailing_newline_of_echo_are_ignored() {
        let crlf = format!("\n  {}\r\n\n", FIXTURE.replace('\n', "\r\n"));
        let account = decrypt(&crlf, &password()).unwrap();
        assert_eq!(account.client_id, "robot-client");
    }

    #[test]
    fn a_wrong_password_is_told_apart_and_not_repeated() {
        let wrong = "not-the-password-x7";
        let err = decrypt(FIXTURE, &Secret::new(wrong)).unwrap_err();
        assert!(
            matches!(err, AgentConfigError::WrongPassword),
            "got {err:?}"
        );
        assert!(err.to_string().contains("wrong password"), "{err}");
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
        }
    }

    #[test]
    fn debug_of_an_account_shows_no_secret() {
        let account = decrypt(FIXTURE, &password()).unwrap();
        let shown = format!("{account:?}");
        assert!(shown.contains("robot-client"), "{shown}");
        assert!(!shown.contains(account.refresh_token.expose()), "{shown}");
        assert!(!shown.contains("robot-secret"), "{shown}");
    }

    #[test]
    fn a_truncated_value_is_a_format_error() {
        // Without its version line (cut 1) the rest is still read: see below.
        for cut in [2, 4, 6] {
            let short = lines()[..lines().len() - cut].join("\n");
            let err = decrypt(&short, &password()).unwrap_err();
            assert!(
                matches!(err, AgentConfigError::Format(_)),
                "cut {cut}: {err:?}"
            );
        }
        // The ciphertext line cut short: its length no longer matches line 1.
        let mut l = lines();
        let half = &l[4][..l[4].len() / 2];
        l[4] = half;
        let err = decrypt(&l.join("\n"), &password()).unwrap_err();
        assert!(matches!(err, AgentConfigError::Format(_)), "{err:?}");
        assert!(err.to_string().contains("line 5"), "{err}");
        let err = decrypt("", &password()).unwrap_err();
        assert!(matches!(err, AgentConfigError::Format(_)), "{err:?}");
    }

    #[test]
    fn damaged_lines_are_format_errors_naming_the_line() {
        let cases: [(usize, &str, &str); 4] = [
            (0, "many", "line 1"),
            (1, "not base64!", "line 2"),
            (3, "24:16:16:32", "line 4"),
            (5, "QUJD", "line 6"),
        ];
        for (index, replacement, named) in cases {
            let mut l = lines();
            l[index] = replacement;
            let err = decrypt(&l.join("\n"), &password()).unwrap_err();
            assert!(matches!(err, AgentConfigError::Format(_)), "{err:?}");
            assert!(err.to_string().contains(named), "{err}");
        }
    }

    #[test]
    fn a_changed_ciphertext_with_the_right_password_is_corrupted() {
        let mut l = lines();
        let mut boxed = BASE64.decode(l[4]).unwrap();
        let last = boxed.len() - 1;
        boxed[last] ^= 1;
        let changed = BASE64.encode(&boxed);
        l[4] = &changed;
        let err = decrypt(&l.join("\n"), &password()).unwrap_err();
        assert!(matches!(err, AgentConfigError::Corrupted), "{err:?}");
    }

    #[test]
    fn gpg_and_pre_2_1_0_hex_configs_are_refused_by_name() {
        let gpg = "-----BEGIN PGP MESSAGE-----\nhQEMA\n-----END PGP MESSAGE-----\n\
                   Generated using version: 4.2.6";
        assert!(matches!(
            decrypt(gpg, &password()),
            Err(AgentConfigError::Unsupported(_))
        ));
        assert!(matches!(
            decrypt("48:0a1b:2c3d:4e5f", &password()),
            Err(AgentConfigError::Unsupported(_))
        ));
        let mut l = lines();
        l[6] = "Generated using version: 2.0.3";
        assert!(matches!(
            decrypt(&l.join("\n"), &password()),
            Err(AgentConfigError::Unsupported(_))
        ));
    }

    #[test]
    fn the_version_line_may_be_absent() {
        let l = lines();
        let account = decrypt(&l[..6].join("\n"), &password()).unwrap();
        assert_eq!(account.client_id, "robot-client");
    }

    #[test]
    fn unset_fields_are_none_and_required_ones_are_named() {
        let json = br#"{"name":"x","issuer_url":"https://op/","client_id":"c","client_secret":"",
                        "refresh_token":"rt","scope":"","audience":"","username":"","password":""}"#;
        let account = account_from_json(json).unwrap();
        assert!(account.client_secret.is_none());
        assert_eq!((account.scope, account.audience), (None, None));

        let json = br#"{"issuer_url":"https://op/","client_id":"c","refresh_token":""}"#;
        assert!(matches!(
            account_from_json(json),
            Err(AgentConfigError::MissingField("refresh_token"))
        ));
        let json = br#"{"issuer_url":"","client_id":"c","refresh_token":"rt"}"#;
        assert!(matches!(
            account_from_json(json),
            Err(AgentConfigError::MissingField("issuer_url"))
        ));
    }

    /// Field names as oidc-agent 5.x writes them (`src/account/account.c`, `accountToJSON`):
    /// no `scope`, but `auth_scope` and `refresh_scope`, the latter used for refreshes.
    #[test]
    fn the_5_x_scope_fields_are_read_refresh_scope_first() {
        let json = br#"{"name":"a","issuer_url":"https://op/","client_id":"c","refresh_token":"rt",
                        "auth_scope":"openid offline_access profile","refresh_scope":"openid",
                        "oauth":0,"mytoken_profile":{}}"#;
        assert_eq!(
            account_from_json(json).unwrap().scope.as_deref(),
            Some("openid")
        );
        let json =
            br#"{"issuer":"https://op/","shortname":"b","client_id":"c","refresh_token":"rt",
                        "auth_scope":"openid profile","refresh_scope":""}"#;
        let account = account_from_json(json).unwrap();
        assert_eq!(account.scope.as_deref(), Some("openid profile"));
        assert_eq!(account.name.as_deref(), Some("b"));
        assert_eq!(account.issuer, "https://op/");
    }

    #[test]
    fn a_decrypted_non_account_says_where_and_not_what() {
        let err = account_from_json(br#"{"refresh_token": 12345678}"#).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, AgentConfigError::NotAccountJson { .. }),
            "{err:?}"
        );
        assert!(!text.contains("12345678"), "{text}");
    }
}
