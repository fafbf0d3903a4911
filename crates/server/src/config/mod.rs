//! The broker's configuration: one TOML file, every scalar of the single sections
//! overridable by `CREDKEEPER_<SECTION>_<KEY>` (e.g. `CREDKEEPER_SERVER_LISTEN`), validated
//! at start with errors that name the file, the key and the line.
//!
//! The sections live by what they configure: `broker` (`[server]`, `[issuer]`), `access`
//! (`[[provider]]`, `[[robot]]`), `store` (`[store]`, `[refresher]`), `services`
//! (`[credmon]`, `[registry]`, `[vault]`); here, the file as a whole, its environment
//! overrides, and (in `validate`) the checks across sections.

mod access;
mod broker;
mod services;
mod store;
mod validate;

use access::MIN_CLAIM_SECS;
pub use access::{ProviderSection, RobotAuth, RobotSection, fill};
pub use broker::{IssuerSection, ServerSection, TokenProfile};
pub use services::{CredmonSection, RegistrySection, VaultSection};
pub use store::{RefresherSection, StoreSection};

pub use credkeeper_issuer::Algorithm;

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("config {file}{}: {key}: {message}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub issuer: IssuerSection,
    #[serde(default, rename = "provider")]
    pub providers: Vec<ProviderSection>,
    #[serde(default, rename = "robot")]
    pub robots: Vec<RobotSection>,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub refresher: RefresherSection,
    #[serde(default)]
    pub credmon: CredmonSection,
    #[serde(default)]
    pub vault: VaultSection,
    /// The registry token server (optional).
    pub registry: Option<RegistrySection>,
}

/// Sections whose scalars `CREDKEEPER_<SECTION>_<KEY>` may override.
const OVERRIDABLE: &[&str] = &["server", "issuer", "store", "refresher", "credmon", "vault"];

impl Config {
    /// Read, apply environment overrides, and validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            key: "(file)".into(),
            message: e.to_string(),
        })?;
        Config::parse(&file, &text, std::env::vars())
    }

    pub fn parse(
        file: &str,
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let err = |e: toml::de::Error| {
            let line = e.span().map(|s| line_at(text, s.start));
            // The key is what stands before `=` on the offending line.
            let key = line
                .and_then(|l| text.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string())
                .unwrap_or_else(|| "(syntax)".into());
            ConfigError {
                file: file.to_string(),
                line,
                key,
                message: e.message().to_string(),
            }
        };
        // Parse the file as written first, so errors point at its lines.
        let mut table: toml::Table = toml::from_str(text).map_err(err)?;
        toml::from_str::<Config>(text).map_err(err)?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("CREDKEEPER_") else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let Some((section, key)) = OVERRIDABLE
                .iter()
                .find_map(|s| rest.strip_prefix(&format!("{s}_")).map(|k| (*s, k)))
            else {
                continue;
            };
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            if let toml::Value::Table(t) = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(Default::default()))
            {
                t.insert(key.to_string(), value);
            }
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError {
                    file: file.to_string(),
                    line: None,
                    key: "(environment override)".into(),
                    message: e.message().to_string(),
                })?;
        config.validate(file, text)?;
        Ok(config)
    }

    pub fn robot(&self, name: &str) -> Option<&RobotSection> {
        self.robots.iter().find(|r| r.name == name)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderSection> {
        self.providers.iter().find(|p| p.name == name)
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn q(value: &str) -> String {
    format!("\"{value}\"")
}

/// The line where `needle` first appears, for errors about values found after parsing.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.find(needle).map(|i| line_at(text, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use credkeeper_core::ScopeSet;
    use credkeeper_store::StoreSettings;
    use std::os::unix::fs::PermissionsExt;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse("c.toml", text, std::iter::empty()).map_err(|e| e.to_string())
    }

    /// The README's example config, as printed there (and again with its commented-out
    /// PostgreSQL store in place of the SQLite one).
    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../../../../README.md");
        let start = readme
            .find("## Broker configuration")
            .and_then(|at| readme[at..].find("```toml").map(|i| at + i + 7))
            .expect("README has a broker config example");
        // Its client-secret file, made here as the README says it must be (0600).
        let dir = tempfile::tempdir().unwrap();
        let mut example = readme[start..start + readme[start..].find("```").unwrap()].to_string();
        let secret = dir.path().join("iam.secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        example = example.replace("/etc/credkeeper/iam.secret", secret.to_str().unwrap());
        let config = parse(&example).unwrap_or_else(|e| panic!("README example: {e}"));
        assert!(matches!(
            config.store.settings(Path::new("/s")),
            StoreSettings::Sqlite { .. }
        ));
        // The PostgreSQL lines instead of SQLite's.
        let postgres: String = example
            .lines()
            .filter(|l| !l.starts_with("backend = \"sqlite\"") && !l.starts_with("path = "))
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| {
                        ["url", "password_file", "ca_file", "pool_size", "key_file"]
                            .iter()
                            .any(|k| r.starts_with(&format!("{k} = ")))
                    })
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = parse(&postgres).unwrap_or_else(|e| panic!("README example, PostgreSQL: {e}"));
        let StoreSettings::Postgres(pg) = config.store.settings(Path::new("/s")) else {
            panic!("the url selects PostgreSQL");
        };
        assert_eq!(pg.pool_size, 8);
        assert_eq!(pg.key_file, Path::new("/etc/credkeeper/store.key"));
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(c.issuer.algorithm, Algorithm::ES256);
        assert_eq!(c.issuer.profile, TokenProfile::Scitokens);
    }

    #[test]
    fn each_config_error_names_the_key_and_line() {
        let cases = [
            ("[server]\nlisten = 5\n", "line 2", "listen"),
            ("[server]\nlisen = \"x\"\n", "line 2", "lisen"),
            ("[issuer]\nalgorithm = \"HS256\"\n", "line 2", "HS256"),
            (
                "[[robot]]\nname = \"ci\"\nproviders = [\"iam\"]\n",
                "line 3",
                "no provider named `iam`",
            ),
            (
                "[[provider]]\nname = \"local\"\nissuer = \"https://x\"\nclient_id = \"c\"\n",
                "line 2",
                "provider[0].name",
            ),
            (
                "[[provider]]\nname = \"a\"\nissuer = \"not a url\"\nclient_id = \"c\"\n",
                "line 3",
                "provider[0].issuer",
            ),
            (
                "[[robot]]\nname = \"a\"\n[[robot]]\nname = \"a\"\n",
                "robot[1].name",
                "defined twice",
            ),
            (
                "[[robot]]\nname = \"ci\"\nscopes = [\"read:/../etc\"]\n",
                "line 3",
                "climbs above",
            ),
            (
                "[[robot]]\nname = \"ci\"\nscopes = [\"read:/data/%2e%2e/etc\"]\n",
                "line 3",
                "`%2e` in its path",
            ),
            ("[refresher]\nshare = 1.5\n", "line 2", "refresher.share"),
            ("[issuer]\nlifetime = -1\n", "line 2", "issuer.lifetime"),
            ("[store]\nbackend = \"postgres\"\n", "line 2", "needs url"),
            (
                "[store]\nbackend = \"mysql\"\n",
                "line 2",
                "unknown backend",
            ),
            (
                "[store]\npath = \"/x\"\nurl = \"postgres://db/x\"\n",
                "line 2",
                "store.path",
            ),
            (
                "[store]\nkey_file = \"/k\"\n",
                "line 2",
                "is for a PostgreSQL store",
            ),
            (
                "[store]\nurl = \"postgres://db/x\"\npool_size = 0\n",
                "line 3",
                "store.pool_size",
            ),
        ];
        for (text, where_, what) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(where_) && err.contains(what),
                "{text:?} -> {err}"
            );
            assert!(err.starts_with("config c.toml"), "{err}");
        }
    }

    #[test]
    fn a_client_secret_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[[provider]]\nname = \"a\"\nissuer = \"https://x\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
            f.display()
        );
        let err = parse(&text).unwrap_err();
        assert!(err.contains("line 5") && err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn environment_variables_override_single_sections() {
        let env = [
            (
                "CREDKEEPER_SERVER_LISTEN".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            ("CREDKEEPER_ISSUER_LIFETIME".to_string(), "60".to_string()),
            (
                "CREDKEEPER_ISSUER_URL".to_string(),
                "https://broker.example".to_string(),
            ),
        ];
        let c = Config::parse("c.toml", "[issuer]\nlifetime = 600\n", env.into_iter()).unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.issuer.lifetime, 60);
        assert_eq!(c.issuer.url.as_deref(), Some("https://broker.example"));
    }

    #[test]
    fn templates_fill_in_the_username() {
        let c = parse("[[robot]]\nname = \"ci\"\nusername = \"ligo-ci\"\nscopes = [\"read:/user/{username}\"]\n").unwrap();
        assert!(
            c.robots[0]
                .allowed_scopes()
                .covers(&ScopeSet::parse("read:/user/ligo-ci/x"))
        );
    }
}
