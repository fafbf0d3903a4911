//! `{{ … }}` substitution, strict: every name must be defined, or it is an error that
//! names it and the task. Inside the braces stands a name (`{{ TEXT }}`) or, as in
//! rucio-task-manager's `j2` (Jinja2), an expression: filters (`{{ X | lower }}`,
//! `{{ X | default('none') }}`), literals, tests (`{{ X is defined }}`), evaluated by
//! minijinja with a strict undefined. Values come from a [`Vars`] (environment, files of a
//! Kubernetes secret volume, credkeeper's store). The names used are reported, so values
//! can be redacted from a run's captured output.

use std::sync::OnceLock;

/// Where values come from.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;

    /// Whether `name`'s value is a secret by where it comes from (a secret volume), so it
    /// must never be put where others can read it, such as a command line.
    fn is_secret(&self, _name: &str) -> bool {
        false
    }
}

/// What stands between `{{` and `}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    Name(String),
    /// A Jinja expression (it compiles; it is not a plain name).
    Expr(String),
}

/// Why a `{{ … }}` could not be filled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FillError {
    /// A name with no value.
    Undefined(String),
    /// An expression that failed (a filter given the wrong kind of value, …).
    Expression { expr: String, message: String },
}

/// Jinja2's semantics, with an undefined name an error wherever it is used (except in
/// `default` and `is defined`, which exist to handle it).
fn jinja() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env
    })
}

/// `{{ … }}` occurrences: (start, end, slot). Text that is neither a name nor an expression
/// stays as it is.
fn occurrences(text: &str) -> Vec<(usize, usize, Slot)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| from + i) {
        let Some(close) = text[open + 2..].find("}}").map(|i| open + 2 + i) else {
            break;
        };
        let inside = text[open + 2..close].trim();
        if valid_name(inside) {
            out.push((open, close + 2, Slot::Name(inside.to_string())));
        } else if !inside.is_empty() && jinja().compile_expression(inside).is_ok() {
            out.push((open, close + 2, Slot::Expr(inside.to_string())));
        }
        from = close + 2;
    }
    out
}

/// The variables an expression reads, sorted.
pub fn expression_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = jinja()
        .compile_expression(expr)
        .map(|e| e.undeclared_variables(false).into_iter().collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The names `text` uses (those inside expressions too).
pub fn names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = occurrences(text)
        .into_iter()
        .flat_map(|(_, _, slot)| match slot {
            Slot::Name(n) => vec![n],
            Slot::Expr(e) => expression_names(&e),
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `text` with every `{{ … }}` replaced by what `fill` makes of it.
pub fn substitute<E>(
    text: &str,
    mut fill: impl FnMut(&Slot) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, slot) in occurrences(text) {
        let value = fill(&slot)?;
        out.push_str(&text[last..start]);
        out.push_str(&value);
        last = end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// The value of one `{{ … }}`.
pub fn value(slot: &Slot, vars: &dyn Vars) -> Result<String, FillError> {
    match slot {
        Slot::Name(name) => vars
            .get(name)
            .ok_or_else(|| FillError::Undefined(name.clone())),
        Slot::Expr(expr) => eval(expr, vars),
    }
}

/// An expression's value as Jinja2 prints it.
pub fn eval(expr: &str, vars: &dyn Vars) -> Result<String, FillError> {
    let failed = |message: String| FillError::Expression {
        expr: expr.to_string(),
        message,
    };
    let compiled = jinja()
        .compile_expression(expr)
        .map_err(|e| failed(e.to_string()))?;
    let mut context = std::collections::BTreeMap::new();
    let mut missing = Vec::new();
    for name in compiled.undeclared_variables(false) {
        match vars.get(&name) {
            Some(v) => {
                context.insert(name, v);
            }
            None => missing.push(name),
        }
    }
    match compiled.eval(minijinja::Value::from(context)) {
        Ok(v) => Ok(v.to_string()),
        Err(e) if e.kind() == minijinja::ErrorKind::UndefinedError && !missing.is_empty() => {
            missing.sort();
            Err(FillError::Undefined(missing.remove(0)))
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

/// `text` with every `{{ … }}` filled, or why not.
pub fn render(text: &str, vars: &dyn Vars) -> Result<String, FillError> {
    substitute(text, |slot| value(slot, vars))
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
        assert_eq!(
            render("a {{ MISSING }} b", &vars).unwrap_err(),
            FillError::Undefined("MISSING".into())
        );
        assert_eq!(
            names("{{ B }} {{A}} {{ B }} {{ not valid! }}"),
            vec!["A", "B"]
        );
        assert_eq!(render("no templates {{", &vars).unwrap(), "no templates {{");
    }

    #[test]
    fn expressions_are_evaluated_as_jinja2_evaluates_them() {
        let vars = Map(BTreeMap::from([("TEXT", "Hello"), ("N", "3")]));
        let r = |t: &str| render(t, &vars);
        assert_eq!(
            r("{{ TEXT | lower }}-{{ TEXT|upper }}").unwrap(),
            "hello-HELLO"
        );
        assert_eq!(r("{{ N | int + 1 }}").unwrap(), "4");
        assert_eq!(r("{{ TEXT ~ '/' ~ N }}").unwrap(), "Hello/3");
        assert_eq!(r("{{ TEXT | replace('l', 'L') }}").unwrap(), "HeLLo");
        // What `default` and `is defined` are for: a missing name they handle is no error.
        assert_eq!(r("{{ MISSING | default('none') }}").unwrap(), "none");
        assert_eq!(
            r("{{ MISSING is defined }}").unwrap(),
            "False",
            "as Python prints it"
        );
        // Anywhere else it is, naming it.
        assert_eq!(
            r("{{ MISSING | lower }}").unwrap_err(),
            FillError::Undefined("MISSING".into())
        );
        assert!(matches!(
            r("{{ TEXT | no_such_filter }}").unwrap_err(),
            FillError::Expression { .. }
        ));
        assert_eq!(names("{{ A | default(B) }} {{ C }}"), vec!["A", "B", "C"]);
    }
}
