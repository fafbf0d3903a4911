//! What rucio-task-manager's Helm chart (`etc/helm/templates/cronjobs.yaml`) does with its
//! values, done the same way here: Go template truth (`{{ if not .disabled }}`), a value
//! printed into `value: "{{ $val_config }}"` (null prints as the empty string), and
//! `toYaml` of an inline task file — keys sorted at every level (so tasks run in the
//! order of their names), and every string kept a string.
//!
//! The task file is read by PyYAML (YAML 1.1), where `yes`, `0755`, `1_000` or `12:30` are
//! not strings when plain. So every string is written double-quoted, escaped: a value
//! filled into it later ([`quote`]) stays a string whatever its characters, where the
//! chart's single quotes break on a `'`.

use serde_norway::Value;

/// YAML 1.1's bool words, which Helm's YAML reader (go-yaml v2) makes bools where the
/// YAML 1.2 reader here keeps strings. The reader does not say whether a scalar was
/// quoted, so a quoted `'no'` is taken for the bool too: the plain one is the usual.
pub fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// Go template truth: false, 0, null and empty strings, lists and maps are false. YAML
/// 1.1's plain `no`, `off` and `n` are false too, as Helm's YAML reader makes them bools.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => yaml11_bool(s).unwrap_or(!s.is_empty()),
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        Value::Tagged(t) => truthy(&t.value),
    }
}

/// A scalar as the chart prints it into the manifest: a string as it is, a number or a
/// bool in its plain form, null as the empty string.
pub fn string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => yaml11_bool(s).map_or_else(|| s.clone(), |b| b.to_string()),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Tagged(t) => string(&t.value),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// `text` as one YAML double-quoted scalar's content (without the quotes): what PyYAML
/// reads back as exactly `text`.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // What a YAML reader refuses or takes as a line break, escaped.
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A mapping key as a string (Helm's values pass through JSON, where keys are strings);
/// a string key is kept as written.
fn key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => string(other),
    }
}

/// `value` as block YAML, keys sorted and every string double-quoted.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    emit(value, 0, &mut out);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => match yaml11_bool(s) {
            Some(b) => b.to_string(),
            None => format!("\"{}\"", quote(s)),
        },
        Value::Tagged(t) => return scalar(&t.value),
        Value::Sequence(s) if s.is_empty() => "[]".into(),
        Value::Mapping(m) if m.is_empty() => "{}".into(),
        _ => return None,
    })
}

fn emit(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Tagged(t) => emit(&t.value, indent, out),
        Value::Mapping(m) if !m.is_empty() => {
            let mut entries: Vec<(String, &Value)> = m.iter().map(|(k, v)| (key(k), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in entries {
                out.push_str(&format!("{pad}\"{}\":", quote(&k)));
                entry(v, indent, out);
            }
        }
        Value::Sequence(s) if !s.is_empty() => {
            for v in s {
                out.push_str(&format!("{pad}-"));
                entry(v, indent, out);
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other).unwrap_or_default());
            out.push('\n');
        }
    }
}

/// What follows `key:` or `-`: a scalar on the same line, a collection below it.
fn entry(v: &Value, indent: usize, out: &mut String) {
    match scalar(v) {
        Some(s) => {
            out.push(' ');
            out.push_str(&s);
            out.push('\n');
        }
        None => {
            out.push('\n');
            emit(v, indent + 2, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_template_truth_and_printed_values() {
        for (yaml, truth) in [
            ("yes", true),
            ("true", true),
            ("'false'", true),
            ("Off", false),
            ("1", true),
            ("0", false),
            ("~", false),
            ("''", false),
            ("no", false),
            ("anything", true),
        ] {
            let v: Value = serde_norway::from_str(yaml).unwrap();
            assert_eq!(truthy(&v), truth, "{yaml}");
        }
        for (yaml, printed) in [
            ("~", ""),
            ("0", "0"),
            ("3.5", "3.5"),
            ("abc", "abc"),
            ("yes", "true"),
        ] {
            let v: Value = serde_norway::from_str(yaml).unwrap();
            assert_eq!(string(&v), printed, "{yaml}");
        }
    }

    #[test]
    fn to_yaml_sorts_keys_and_keeps_strings_strings() {
        let v: Value = serde_norway::from_str(
            "b-task:\n  kwargs: {secret: '1234567890', weird: \"%Tq8&zL@2!'\\\"\\\\\\n\", on: yes, off: 'no', n: 3, l: [1, 'x', {}], e: []}\n  args:\na-task: {enabled: true}\n",
        )
        .unwrap();
        let text = to_yaml(&v);
        assert!(text.starts_with("\"a-task\":\n  \"enabled\": true\n\"b-task\":\n  \"args\": null\n  \"kwargs\":\n    \"e\": []\n    \"l\":\n      - 1\n      - \"x\"\n      - {}\n    \"n\": 3\n    \"off\": false\n    \"on\": true\n    \"secret\": \"1234567890\"\n"), "{text}");
        // Read back, it is what it was, YAML 1.1's bool words made bools as Helm does.
        let mut back: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(back["b-task"]["kwargs"]["on"], Value::Bool(true));
        back["b-task"]["kwargs"]["on"] = "yes".into();
        back["b-task"]["kwargs"]["off"] = "no".into();
        assert_eq!(back, v);
    }
}
