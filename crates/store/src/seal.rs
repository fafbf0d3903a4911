//! Encryption at rest: AES-256-GCM-SIV with random nonces, keys in a 0600 key file.
//!
//! GCM-SIV is chosen over plain GCM because a repeated random nonce then only reveals
//! that two plaintexts were equal, instead of breaking the key.
//!
//! The key file holds one key per line, `<key id> <base64 key>`; the first line is the
//! key new values are sealed with, the others still open older values. Rotation is
//! adding a new first line.

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use credkeeper_sink::perm;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Permissions(#[from] perm::PermError),
    #[error("cannot create key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} line {line}: {problem}")]
    Malformed {
        path: PathBuf,
        line: usize,
        problem: &'static str,
    },
    #[error("no key with id {0} in the key file")]
    UnknownKey(String),
    #[error("the sealed value is damaged or was sealed for another credential")]
    Open,
    #[error("the system random number generator failed")]
    Random,
}

struct Key {
    id: String,
    cipher: RandomizedNonceKey,
}

/// The keys that seal and open stored secrets.
pub struct KeyRing {
    keys: Vec<Key>,
}

/// A sealed value: which key, then nonce followed by ciphertext and tag.
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl KeyRing {
    /// Load the key file at `path`, creating it with one fresh key when it does not exist.
    /// A key file that group or others can read is refused.
    pub fn open_or_create(path: &Path) -> Result<KeyRing, SealError> {
        if !path.exists() {
            create_key_file(path)?;
        }
        let text = perm::read_private(path, "store key file")?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let malformed = |problem| SealError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                problem,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, b64) = line
                .split_once(' ')
                .ok_or_else(|| malformed("expected `<key id> <base64 key>`"))?;
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| malformed("the key is not base64"))?;
            let cipher = RandomizedNonceKey::new(&AES_256_GCM_SIV, &bytes)
                .map_err(|_| malformed("the key must be 32 bytes"))?;
            keys.push(Key {
                id: id.to_string(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err(SealError::Malformed {
                path: path.to_path_buf(),
                line: 1,
                problem: "the file holds no key",
            });
        }
        Ok(KeyRing { keys })
    }

    /// Seal `plaintext`, bound to `aad`, with the current key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SealError> {
        let key = &self.keys[0];
        let mut buf = plaintext.to_vec();
        let nonce = key
            .cipher
            .seal_in_place_append_tag(Aad::from(aad), &mut buf)
            .map_err(|_| SealError::Random)?;
        let mut bytes = nonce.as_ref().to_vec();
        bytes.append(&mut buf);
        Ok(Sealed {
            key_id: key.id.clone(),
            bytes,
        })
    }

    /// Open a value sealed with key `key_id` and the same `aad`.
    pub fn open(&self, key_id: &str, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_string()))?;
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = ct.to_vec();
        let plain = key
            .cipher
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

/// Write a new key file without ever exposing a partial one: the key goes to a private
/// temporary file which is then hard-linked into place. If another process won the race,
/// its file stands and ours is discarded.
fn create_key_file(path: &Path) -> Result<(), SealError> {
    let err = |source| SealError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| SealError::Random)?;
    let mut id = [0u8; 4];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| SealError::Random)?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = credkeeper_sink::file::temp_path_beside(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{id} {}", STANDARD.encode(key))?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_binding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let ring = KeyRing::open_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let sealed = ring.seal(b"refresh-token", b"row-a").unwrap();
        assert!(!sealed.bytes.windows(13).any(|w| w == b"refresh-token"));
        assert_eq!(
            ring.open(&sealed.key_id, &sealed.bytes, b"row-a").unwrap(),
            b"refresh-token"
        );
        assert!(matches!(
            ring.open(&sealed.key_id, &sealed.bytes, b"row-b"),
            Err(SealError::Open)
        ));

        let mut damaged = sealed.bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(matches!(
            ring.open(&sealed.key_id, &damaged, b"row-a"),
            Err(SealError::Open)
        ));

        // The same file opens the same values in a later process.
        let again = KeyRing::open_or_create(&path).unwrap();
        assert_eq!(
            again.open(&sealed.key_id, &sealed.bytes, b"row-a").unwrap(),
            b"refresh-token"
        );
    }

    #[test]
    fn a_rotated_key_file_still_opens_old_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let old = KeyRing::open_or_create(&path).unwrap();
        let sealed = old.seal(b"v", b"").unwrap();
        let existing = std::fs::read_to_string(&path).unwrap();
        let new_line = format!("new {}\n", STANDARD.encode([7u8; 32]));
        std::fs::write(&path, format!("{new_line}{existing}")).unwrap();
        let ring = KeyRing::open_or_create(&path).unwrap();
        assert_eq!(ring.seal(b"x", b"").unwrap().key_id, "new");
        assert_eq!(ring.open(&sealed.key_id, &sealed.bytes, b"").unwrap(), b"v");
    }

    #[test]
    fn an_open_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        KeyRing::open_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = KeyRing::open_or_create(&path).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
