//! `{{ … }}` in a definition: each replaced by a placeholder before the YAML is read (so no
//! character of an expression ends a scalar, and no definition holds a value), and filled
//! in with the values when a run starts.

use super::*;

/// A printable marker YAML accepts anywhere a plain scalar may stand.
pub(super) const PLACEHOLDER: &str = "\u{27e6}ck:";
pub(super) const PLACEHOLDER_END: char = '\u{27e7}';

pub(super) fn placeholder(name: &str) -> String {
    format!("{PLACEHOLDER}{name}{PLACEHOLDER_END}")
}

/// An expression's placeholder: `=` and its bytes in hex (so no character of it can end a
/// YAML scalar).
pub(super) const EXPRESSION: char = '=';

/// Replace each `{{ … }}` by a placeholder (so the YAML parses and holds no values).
pub(super) fn protect(text: &str) -> String {
    template::substitute(text, |slot| {
        Ok::<_, std::convert::Infallible>(match slot {
            Slot::Name(name) => placeholder(name),
            Slot::Expr(expr) => {
                let hex: String = expr.bytes().map(|b| format!("{b:02x}")).collect();
                placeholder(&format!("{EXPRESSION}{hex}"))
            }
        })
    })
    .unwrap_or_else(|never| match never {})
}

/// What a placeholder stands for.
pub(super) fn slot(content: &str) -> Slot {
    match content.strip_prefix(EXPRESSION) {
        Some(hex) => {
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            Slot::Expr(String::from_utf8_lossy(&bytes).into_owned())
        }
        None => Slot::Name(content.to_string()),
    }
}

/// Fill placeholders with values; the first undefined name is the error.
pub fn fill(text: &str, vars: &dyn Vars) -> Result<String, FillError> {
    fill_with(text, vars, str::to_string)
}

/// Fill placeholders with values, each passed through `escape` (for the context it lands in).
pub(super) fn fill_with(
    text: &str,
    vars: &dyn Vars,
    escape: impl Fn(&str) -> String,
) -> Result<String, FillError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(PLACEHOLDER) {
        out.push_str(&rest[..i]);
        let after = &rest[i + PLACEHOLDER.len()..];
        let end = after
            .find(PLACEHOLDER_END)
            .ok_or_else(|| FillError::Undefined("a broken placeholder".into()))?;
        out.push_str(&escape(&template::value(&slot(&after[..end]), vars)?));
        rest = &after[end + PLACEHOLDER_END.len_utf8()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The placeholders of `text`, in order.
pub(super) fn slots(text: &str) -> Vec<Slot> {
    let mut slots = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(PLACEHOLDER) {
        let after = &rest[i + PLACEHOLDER.len()..];
        let Some(end) = after.find(PLACEHOLDER_END) else {
            break;
        };
        slots.push(slot(&after[..end]));
        rest = &after[end + PLACEHOLDER_END.len_utf8()..];
    }
    slots
}

/// Every name `text` reads, those inside expressions too.
pub(super) fn placeholder_names(text: &str) -> Vec<String> {
    names_of(text, true)
}

/// The names `text` needs defined: those standing alone (an expression may handle a missing
/// one with `default`; it is checked by evaluating it).
pub(super) fn required_names(text: &str) -> Vec<String> {
    names_of(text, false)
}

pub(super) fn names_of(text: &str, in_expressions: bool) -> Vec<String> {
    let mut names: Vec<String> = slots(text)
        .into_iter()
        .flat_map(|s| match s {
            Slot::Name(n) => vec![n],
            Slot::Expr(e) if in_expressions => template::expression_names(&e),
            Slot::Expr(_) => vec![],
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
