//! `{{ VAR }}` substitution, strict: every name must be defined, or it is an error that
//! names it and the task. Values come from a [`Vars`] (environment, files of a Kubernetes
//! secret volume, credkeeper's store). The names used are reported, so values can be
//! redacted from a run's captured output.

/// Where values come from.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;

    /// Whether `name`'s value is a secret by where it comes from (a secret volume), so it
    /// must never be put where others can read it, such as a command line.
    fn is_secret(&self, _name: &str) -> bool {
        false
    }
}

/// `{{ NAME }}` occurrences: (start, end, name).
fn occurrences(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| from + i) {
        let Some(close) = text[open + 2..].find("}}").map(|i| open + 2 + i) else {
            break;
        };
        let name = text[open + 2..close].trim();
        if valid_name(name) {
            out.push((open, close + 2, name.to_string()));
        }
        from = close + 2;
    }
    out
}

/// The names `text` uses.
pub fn names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = occurrences(text).into_iter().map(|(_, _, n)| n).collect();
    names.sort();
    names.dedup();
    names
}

/// `text` with every `{{ NAME }}` replaced, or the first undefined name.
pub fn render(text: &str, vars: &dyn Vars) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, name) in occurrences(text) {
        let value = vars.get(&name).ok_or_else(|| name.clone())?;
        out.push_str(&text[last..start]);
        out.push_str(&value);
        last = end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Whether `name` can be a template variable (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn valid_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The file `name` (a path relative to a secret volume) in the first of `dirs` that has
/// it, without its trailing newlines.
pub fn from_dirs(dirs: &[std::path::PathBuf], name: &str) -> Option<String> {
    dirs.iter().find_map(|dir| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|v| v.trim_end_matches('\n').to_string())
    })
}

/// Environment variables first, then files named after the variable in each directory
/// (a Kubernetes secret volume), then the secrets kept in credkeeper's store.
#[derive(Clone, Default)]
pub struct Sources {
    pub env: bool,
    pub dirs: Vec<std::path::PathBuf>,
    pub store: Option<std::sync::Arc<dyn credkeeper_store::TaskSecrets>>,
}

impl Sources {
    fn in_env(&self, name: &str) -> Option<String> {
        self.env.then(|| std::env::var(name).ok()).flatten()
    }

    fn in_dirs(&self, name: &str) -> Option<String> {
        from_dirs(&self.dirs, name)
    }

    fn in_store(&self, name: &str) -> Option<String> {
        match self.store.as_ref()?.task_secret(name) {
            Ok(v) => v.map(|s| s.expose().to_string()),
            Err(e) => {
                tracing::warn!("task secret {name}: {e}");
                None
            }
        }
    }
}

impl Vars for Sources {
    fn get(&self, name: &str) -> Option<String> {
        self.in_env(name)
            .or_else(|| self.in_dirs(name))
            .or_else(|| self.in_store(name))
    }

    fn is_secret(&self, name: &str) -> bool {
        self.in_env(name).is_none()
            && (self.in_dirs(name).is_some() || self.in_store(name).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Map(BTreeMap<&'static str, &'static str>);
    impl Vars for Map {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    #[test]
    fn names_are_filled_and_an_undefined_one_is_named() {
        let vars = Map(BTreeMap::from([("TEXT", "hello"), ("N", "3")]));
        assert_eq!(
            render("say {{ TEXT }} x{{N}} {{TEXT}}", &vars).unwrap(),
            "say hello x3 hello"
        );
        assert_eq!(render("a {{ MISSING }} b", &vars).unwrap_err(), "MISSING");
        assert_eq!(
            names("{{ B }} {{A}} {{ B }} {{ not valid! }}"),
            vec!["A", "B"]
        );
        assert_eq!(render("no templates {{", &vars).unwrap(), "no templates {{");
    }
}
