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
        let valid = !name.is_empty()
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
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

/// Environment variables first, then files named after the variable in each directory
/// (a Kubernetes secret volume), then extra values.
pub struct Sources {
    pub env: bool,
    pub dirs: Vec<std::path::PathBuf>,
    pub extra: std::collections::BTreeMap<String, String>,
}

impl Vars for Sources {
    fn get(&self, name: &str) -> Option<String> {
        if self.env
            && let Ok(v) = std::env::var(name)
        {
            return Some(v);
        }
        for dir in &self.dirs {
            if let Ok(v) = std::fs::read_to_string(dir.join(name)) {
                return Some(v.trim_end_matches('\n').to_string());
            }
        }
        self.extra.get(name).cloned()
    }

    fn is_secret(&self, name: &str) -> bool {
        !(self.env && std::env::var_os(name).is_some())
            && self.dirs.iter().any(|d| d.join(name).is_file())
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
