//! The checks a configuration passes before the broker starts, each failure naming the
//! file, the key and its line: names unique and well-formed, every reference resolved,
//! every scope and registry entry grammatical, limits in range, the store complete.

use super::*;

impl Config {
    pub(super) fn validate(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let fail = |key: String, needle: &str, message: String| ConfigError {
            file: file.to_string(),
            line: line_of(text, needle),
            key,
            message,
        };
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |k: &str| format!("provider[{i}].{k}");
            if p.name == "local" {
                return Err(fail(
                    key("name"),
                    &q(&p.name),
                    "`local` is the broker's own issuer; pick another name".into(),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(fail(
                    key("name"),
                    &q(&p.name),
                    format!("provider `{}` is defined twice", p.name),
                ));
            }
            if url::Url::parse(&p.issuer).is_err() {
                return Err(fail(
                    key("issuer"),
                    &q(&p.issuer),
                    format!("`{}` is not a URL", p.issuer),
                ));
            }
            if let Some(f) = &p.client_secret_file
                && let Err(e) = credkeeper_sink::perm::check_private(f, "client-secret file")
            {
                return Err(fail(
                    key("client_secret_file"),
                    &f.display().to_string(),
                    e.to_string(),
                ));
            }
            if let Some(grace) = p.refresh_reuse_grace_secs
                && grace < 2 * MIN_CLAIM_SECS
            {
                return Err(fail(
                    key("refresh_reuse_grace_secs"),
                    "refresh_reuse_grace_secs",
                    format!(
                        "must be at least {} (a refresh's claim, at least {MIN_CLAIM_SECS} s, must end within half of it)",
                        2 * MIN_CLAIM_SECS
                    ),
                ));
            }
        }
        let mut robots = std::collections::HashSet::new();
        for (i, r) in self.robots.iter().enumerate() {
            let key = |k: &str| format!("robot[{i}].{k}");
            if !robots.insert(r.name.as_str()) {
                return Err(fail(
                    key("name"),
                    &q(&r.name),
                    format!("robot `{}` is defined twice", r.name),
                ));
            }
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@/".contains(c))
            {
                return Err(fail(
                    key("name"),
                    &q(&r.name),
                    "use letters, digits and - _ . @ / only".into(),
                ));
            }
            for p in &r.providers {
                if p != "local" && !names.contains(p.as_str()) {
                    return Err(fail(
                        key("providers"),
                        &q(p),
                        format!(
                            "no provider named `{p}` (known: local{})",
                            names.iter().map(|n| format!(", {n}")).collect::<String>()
                        ),
                    ));
                }
            }
            for s in &r.scopes {
                if let Err(e) = credkeeper_core::Scope::read(&fill(s, r.username())) {
                    return Err(fail(key("scopes"), &q(s), e.to_string()));
                }
            }
            if r.auth.kerberos_principal.is_some() && self.server.kerberos_keytab.is_none() {
                return Err(fail(
                    key("auth.kerberos_principal"),
                    "kerberos_principal",
                    format!(
                        "robot `{}` authenticates with Kerberos, so the broker needs its service keytab: set server.kerberos_keytab",
                        r.name
                    ),
                ));
            }
            for entry in &r.registry {
                if crate::access::Access::parse(entry).is_none() {
                    return Err(fail(
                        key("registry"),
                        &q(entry),
                        format!("`{entry}` is not `repository:<name>:<actions>`"),
                    ));
                }
            }
            if r.auth.jwt_issuer.is_some() != r.auth.jwt_subject.is_some() {
                return Err(fail(
                    key("auth.jwt_issuer"),
                    "jwt_",
                    "jwt_issuer and jwt_subject go together".into(),
                ));
            }
            if let Some(i) = &r.auth.jwt_issuer
                && url::Url::parse(i).is_err()
            {
                return Err(fail(
                    key("auth.jwt_issuer"),
                    &q(i),
                    format!("`{i}` is not a URL"),
                ));
            }
            if let Some(l) = r.max_lifetime
                && l <= 0
            {
                return Err(fail(
                    key("max_lifetime"),
                    "max_lifetime",
                    "must be a positive number of seconds".into(),
                ));
            }
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(fail(
                "server.tls_cert".into(),
                "tls_",
                "tls_cert and tls_key go together".into(),
            ));
        }
        if let Some(reg) = &self.registry {
            if reg.lifetime <= 0 || reg.lifetime > 3600 {
                return Err(fail(
                    "registry.lifetime".into(),
                    "lifetime",
                    "must be between 1 and 3600 seconds".into(),
                ));
            }
            if reg.algorithm == Algorithm::EdDSA {
                return Err(fail(
                    "registry.algorithm".into(),
                    "algorithm",
                    "registries verify RS256 or ES256, not EdDSA".into(),
                ));
            }
        }
        if self.vault.token_ttl <= 0 {
            return Err(fail(
                "vault.token_ttl".into(),
                "token_ttl",
                "must be a positive number of seconds".into(),
            ));
        }
        for (name, provider) in &self.vault.issuers {
            if provider != "local" && !names.contains(provider.as_str()) {
                return Err(fail(
                    format!("vault.issuers.{name}"),
                    &q(provider),
                    format!("no provider named `{provider}`"),
                ));
            }
        }
        if self.issuer.lifetime <= 0 {
            return Err(fail(
                "issuer.lifetime".into(),
                "lifetime",
                "must be a positive number of seconds".into(),
            ));
        }
        if !(self.refresher.share > 0.0 && self.refresher.share < 1.0) {
            return Err(fail(
                "refresher.share".into(),
                "share",
                "must be between 0 and 1 (e.g. 0.5)".into(),
            ));
        }
        if self.refresher.concurrency == 0 {
            return Err(fail(
                "refresher.concurrency".into(),
                "concurrency",
                "must be at least 1".into(),
            ));
        }
        if self.refresher.claim_secs < MIN_CLAIM_SECS {
            return Err(fail(
                "refresher.claim_secs".into(),
                "claim_secs",
                "must be at least 5 (seconds a refresh may take; default 90)".into(),
            ));
        }
        if let Err((key, message)) = self.store.check() {
            return Err(fail(format!("store.{key}"), key, message));
        }
        Ok(())
    }
}
