//! HTCondor-style configuration without HTCondor: `key = value` files (from
//! `CONDOR_CONFIG`), `_CONDOR_<NAME>` environment variables, and `$(NAME)` /
//! `$(NAME:default)` expansion, for the knobs the credmon reads.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("condor config {file} line {line}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Configuration values by upper-cased name (HTCondor names are case-insensitive).
#[derive(Clone, Debug, Default)]
pub struct CondorConfig {
    values: HashMap<String, String>,
}

impl CondorConfig {
    /// Read `CONDOR_CONFIG` (if set and not `ONLY_ENV`), then `_CONDOR_*` variables.
    pub fn from_environment() -> Result<CondorConfig, ConfigError> {
        let mut config = CondorConfig::default();
        if let Ok(path) = std::env::var("CONDOR_CONFIG")
            && path != "ONLY_ENV"
            && !path.is_empty()
        {
            config.read_file(Path::new(&path))?;
        }
        config.apply_env(std::env::vars());
        Ok(config)
    }

    pub fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            message: e.to_string(),
        })?;
        self.parse(&path.display().to_string(), &text)
    }

    pub fn parse(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
        let mut pending = String::new();
        let mut start_line = 0;
        for (i, raw) in text.lines().enumerate() {
            if pending.is_empty() {
                start_line = i + 1;
            }
            // A trailing backslash continues the line.
            if let Some(stripped) = raw.strip_suffix('\\') {
                pending.push_str(stripped);
                continue;
            }
            pending.push_str(raw);
            let line = std::mem::take(&mut pending);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let lower = line.to_ascii_lowercase();
            // Metaknobs, includes and conditionals are HTCondor's; the credmon's knobs are
            // plain assignments.
            if lower.starts_with("use ")
                || lower.starts_with("include")
                || lower.starts_with("if ")
                || lower == "else"
                || lower == "endif"
                || lower.starts_with("elif ")
            {
                tracing::debug!("{file} line {start_line}: ignoring `{line}`");
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(ConfigError {
                    file: file.to_string(),
                    line: start_line,
                    message: format!("expected `NAME = value`, found `{line}`"),
                });
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(ConfigError {
                    file: file.to_string(),
                    line: start_line,
                    message: format!("`{name}` is not a configuration name"),
                });
            }
            self.values
                .insert(name.to_ascii_uppercase(), value.trim().to_string());
        }
        Ok(())
    }

    pub fn apply_env(&mut self, vars: impl Iterator<Item = (String, String)>) {
        for (k, v) in vars {
            if let Some(name) = k
                .strip_prefix("_CONDOR_")
                .or_else(|| k.strip_prefix("_condor_"))
            {
                self.values.insert(name.to_ascii_uppercase(), v);
            }
        }
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.values
            .insert(name.to_ascii_uppercase(), value.to_string());
    }

    /// The expanded value of `name`, if defined.
    pub fn get(&self, name: &str) -> Option<String> {
        let raw = self.values.get(&name.to_ascii_uppercase())?;
        Some(self.expand(raw, 0))
    }

    pub fn get_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }

    /// HTCondor booleans: true/false/yes/no/1/0, case-insensitive.
    pub fn get_bool(&self, name: &str, default: bool) -> bool {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            Some(v) if ["true", "yes", "1", "t", "y"].contains(&v.as_str()) => true,
            Some(v) if ["false", "no", "0", "f", "n"].contains(&v.as_str()) => false,
            _ => default,
        }
    }

    pub fn get_i64(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    fn expand(&self, value: &str, depth: usize) -> String {
        if depth > 16 {
            return value.to_string();
        }
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("$(") {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start + 2..].find(')') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let inner = &rest[start + 2..start + 2 + len];
            let (name, default) = match inner.split_once(':') {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let replacement = match self.values.get(&name.to_ascii_uppercase()) {
                Some(v) => self.expand(v, depth + 1),
                None if name.eq_ignore_ascii_case("FULL_HOSTNAME") => hostname(),
                None => default.unwrap_or("").to_string(),
            };
            out.push_str(&replacement);
            rest = &rest[start + 2 + len + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_env_and_expansion_like_htcondor() {
        let mut c = CondorConfig::default();
        c.parse(
            "condor_config",
            "# comment\nuse feature : OAUTH\nLOG = /var/log/condor\nSEC_CREDENTIAL_MONITOR_OAUTH_LOG = $(LOG)/CredMonOAuthLog\n\
             local_credmon_authz_template = read:/user/{username} \\\n  write:/user/{username}\nX = $(UNSET:fallback)\n",
        )
        .unwrap();
        assert_eq!(
            c.get("SEC_CREDENTIAL_MONITOR_OAUTH_LOG").unwrap(),
            "/var/log/condor/CredMonOAuthLog"
        );
        assert_eq!(
            c.get("LOCAL_CREDMON_AUTHZ_TEMPLATE").unwrap(),
            "read:/user/{username}   write:/user/{username}"
        );
        assert_eq!(c.get("X").unwrap(), "fallback");
        c.apply_env([("_CONDOR_LOG".to_string(), "/tmp/logs".to_string())].into_iter());
        assert_eq!(
            c.get("SEC_CREDENTIAL_MONITOR_OAUTH_LOG").unwrap(),
            "/tmp/logs/CredMonOAuthLog"
        );
        assert!(c.get_bool("MISSING", true));
    }

    #[test]
    fn a_line_that_is_not_an_assignment_is_an_error_with_its_line() {
        let err = CondorConfig::default()
            .parse("c", "A = 1\nnonsense here\n")
            .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("expected `NAME = value`"));
    }
}
