//! The CredD's key files: `<cred_dir>/<64 hex>`, old-syntax ClassAds (`Attr = "value"`
//! lines, one ad per provider, ads separated by a blank line) describing the OAuth logins
//! a user still has to do.

use credkeeper_core::Secret;
use std::collections::HashMap;

/// One provider login the CredD asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAd {
    pub provider: String,
    pub handle: String,
    pub local_user: String,
    pub scopes: Vec<String>,
    pub audience: String,
    pub client_id: String,
    /// Never printed: `Debug` of an ad shows it redacted.
    pub client_secret: Secret,
    pub return_url: String,
    pub authorization_url: String,
    pub token_url: String,
}

impl KeyAd {
    /// The credential's file stem: `<provider>` or `<provider>_<handle>`.
    pub fn token_name(&self) -> String {
        if self.handle.is_empty() {
            self.provider.clone()
        } else {
            format!("{}_{}", self.provider, self.handle)
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("line {0}: expected `Name = \"value\"`")]
    Syntax(usize),
    #[error("an ad lacks {0}")]
    Missing(&'static str),
    #[error("the file holds no ad")]
    Empty,
    #[error("{0} {1:?} has characters HTCondor does not allow in credential names")]
    BadName(&'static str, String),
}

fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn okay(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-+=_.".contains(c))
}

pub fn parse(text: &str) -> Result<Vec<KeyAd>, KeyFileError> {
    let mut ads = Vec::new();
    let mut current: HashMap<String, String> = HashMap::new();
    let mut finish = |attrs: &mut HashMap<String, String>| -> Result<(), KeyFileError> {
        if attrs.is_empty() {
            return Ok(());
        }
        let mut take = |name: &'static str, required: bool| -> Result<String, KeyFileError> {
            match attrs.remove(&name.to_ascii_lowercase()) {
                Some(v) => Ok(v),
                None if required => Err(KeyFileError::Missing(name)),
                None => Ok(String::new()),
            }
        };
        let ad = KeyAd {
            provider: take("Provider", true)?,
            handle: take("Handle", false)?,
            local_user: take("LocalUser", true)?,
            scopes: take("Scopes", false)?
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            audience: take("Audience", false)?,
            client_id: take("ClientId", true)?,
            client_secret: Secret::new(take("ClientSecret", false)?),
            return_url: take("ReturnUrl", true)?,
            authorization_url: take("AuthorizationUrl", true)?,
            token_url: take("TokenUrl", true)?,
        };
        attrs.clear();
        for (what, v) in [
            ("Provider", &ad.provider),
            ("Handle", &ad.handle),
            ("LocalUser", &ad.local_user),
        ] {
            if !okay(v) || v.starts_with('.') {
                return Err(KeyFileError::BadName(what, v.clone()));
            }
        }
        ads.push(ad);
        Ok(())
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            finish(&mut current)?;
            continue;
        }
        let (name, value) = line.split_once('=').ok_or(KeyFileError::Syntax(i + 1))?;
        let value = unquote(value.trim()).ok_or(KeyFileError::Syntax(i + 1))?;
        current.insert(name.trim().to_ascii_lowercase(), value);
    }
    finish(&mut current)?;
    if ads.is_empty() {
        return Err(KeyFileError::Empty);
    }
    Ok(ads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credds_ads_are_read() {
        let text = "Provider = \"box\"\nHandle = \"\"\nLocalUser = \"alice\"\nScopes = \"read, write\"\nAudience = \"\"\n\
            ClientId = \"cid\"\nClientSecret = \"s\\\"x\"\nReturnUrl = \"https://h/return/box\"\n\
            AuthorizationUrl = \"https://box/auth\"\nTokenUrl = \"https://box/token\"\n\n\
            Provider = \"op\"\nHandle = \"h1\"\nLocalUser = \"alice\"\nClientId = \"c2\"\nReturnUrl = \"r\"\n\
            AuthorizationUrl = \"a\"\nTokenUrl = \"t\"\n";
        let ads = parse(text).unwrap();
        assert_eq!(ads.len(), 2);
        assert_eq!(ads[0].scopes, ["read", "write"]);
        assert_eq!(ads[0].client_secret.expose(), "s\"x");
        assert_eq!(ads[1].token_name(), "op_h1");
    }

    #[test]
    fn malformed_key_files_are_refused() {
        assert_eq!(parse(""), Err(KeyFileError::Empty));
        assert_eq!(parse("Provider = box\n"), Err(KeyFileError::Syntax(1)));
        assert_eq!(
            parse("Provider = \"box\"\n"),
            Err(KeyFileError::Missing("LocalUser"))
        );
        let evil = "Provider = \"box\"\nLocalUser = \"../root\"\nClientId = \"c\"\nReturnUrl = \"r\"\nAuthorizationUrl = \"a\"\nTokenUrl = \"t\"\n";
        assert!(matches!(
            parse(evil),
            Err(KeyFileError::BadName("LocalUser", _))
        ));
    }
}
