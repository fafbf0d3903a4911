//! Kerberos failures sorted by what the person reading them can do about it.

use crate::gssapi::GssError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KerberosError {
    #[error(
        "keytab {path} does not exist; name the robot's keytab with -k/--keytab or KRB5_KTNAME"
    )]
    NoKeytab { path: PathBuf },
    #[error("keytab {path} cannot be read: {reason}")]
    KeytabUnreadable { path: PathBuf, reason: String },
    #[error(
        "keytab {path} is open to others (mode {mode:04o}); run `chmod 600 {path}` (a \
         Kubernetes secret volume may use 0440 with fsGroup: group read is allowed)"
    )]
    KeytabTooOpen { path: PathBuf, mode: u32 },
    #[error("keytab {path} is not a regular file")]
    KeytabNotAFile { path: PathBuf },
    #[error(
        "{during}: this host's clock and the KDC's differ by more than the allowed skew \
         (5 minutes unless krb5.conf says otherwise); synchronise the clock (NTP) [{detail}]"
    )]
    ClockSkew {
        during: &'static str,
        detail: String,
    },
    #[error("{during}: the KDC does not know this principal [{detail}]")]
    UnknownPrincipal {
        during: &'static str,
        detail: String,
    },
    #[error(
        "{during}: no KDC answered; check the realm's `kdc` in krb5.conf (KRB5_CONFIG) and \
         that the KDC is running and reachable [{detail}]"
    )]
    KdcUnreachable {
        during: &'static str,
        detail: String,
    },
    #[error(
        "{during}: the keytab's key is not the KDC's (was the key rotated?); export a \
         fresh keytab [{detail}]"
    )]
    WrongKey {
        during: &'static str,
        detail: String,
    },
    #[error("{during}: the keytab holds no key for that principal [{detail}]")]
    NoKeyForPrincipal {
        during: &'static str,
        detail: String,
    },
    #[error("`{principal}` is not a Kerberos principal name: {reason}")]
    BadPrincipal { principal: String, reason: String },
    #[error("the client's token needs more than one round (only Kerberos in SPNEGO is served)")]
    Incomplete,
    #[error(
        "{during}: Kerberos needs MIT krb5's GSSAPI library, and `{library}` could not be \
         loaded ({reason}); install it (Debian/Ubuntu: `apt-get install libgssapi-krb5-2`; \
         RHEL/Fedora: `dnf install krb5-libs`)"
    )]
    LibraryMissing {
        during: &'static str,
        library: String,
        reason: String,
    },
    #[error("{during}: {detail}")]
    Gss {
        during: &'static str,
        detail: String,
    },
}

impl KerberosError {
    /// Sort a GSSAPI failure by MIT krb5's message (the minor status names the Kerberos
    /// error; its text is stable across MIT releases).
    pub(crate) fn classify(e: GssError, during: &'static str) -> KerberosError {
        let detail = match e {
            GssError::Unavailable { library, reason } => {
                return KerberosError::LibraryMissing {
                    during,
                    library,
                    reason,
                };
            }
            GssError::Failed { message } => message.trim().to_string(),
        };
        let has = |needle: &str| detail.to_ascii_lowercase().contains(needle);
        if has("clock skew") || has("ticket not yet valid") {
            KerberosError::ClockSkew { during, detail }
        } else if has("not found in kerberos database") {
            KerberosError::UnknownPrincipal { during, detail }
        } else if has("cannot contact any kdc") || has("cannot find kdc") {
            KerberosError::KdcUnreachable { during, detail }
        } else if has("preauthentication failed")
            || has("decrypt integrity check failed")
            || has("bad encryption type")
            || has("message stream modified")
        {
            KerberosError::WrongKey { during, detail }
        } else if has("key table entry not found") || has("no key table entry") {
            KerberosError::NoKeyForPrincipal { during, detail }
        } else {
            KerberosError::Gss { during, detail }
        }
    }

    /// A name the library would not take; a missing library says so instead.
    pub(crate) fn bad_principal(principal: &str, e: GssError) -> KerberosError {
        match e {
            GssError::Failed { message } => KerberosError::BadPrincipal {
                principal: principal.to_string(),
                reason: message,
            },
            unavailable => KerberosError::classify(unavailable, "reading a principal name"),
        }
    }

    /// Whether the fault is on the client's side of an exchange the server accepted
    /// to try (a bad or replayed token, a wrong key), as opposed to the server's own keytab.
    pub fn is_client_fault(&self) -> bool {
        !matches!(
            self,
            KerberosError::NoKeytab { .. }
                | KerberosError::KeytabUnreadable { .. }
                | KerberosError::KeytabTooOpen { .. }
                | KerberosError::KeytabNotAFile { .. }
                | KerberosError::LibraryMissing { .. }
        )
    }
}
