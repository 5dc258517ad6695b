//! `--set` overrides and `${var}` substitution, both on the untyped YAML document,
//! before the typed model is read from it.

use std::collections::HashMap;

use serde_yaml::{Mapping, Value};

use super::SpecError;

/// Applies `sets` and substitutes vars in `doc` (a mapping). Returns whether the
/// document changed, i.e. whether positions from the original text still apply.
pub(crate) fn apply(
    file: &str,
    doc: &mut Value,
    sets: &[(String, String)],
) -> Result<bool, SpecError> {
    let declared = declared_vars(file, doc)?;
    let mut changed = false;

    // Paths first, so that `--set vars.x=1` is seen when the vars are read below;
    // a key naming a declared var sets the var.
    let mut var_sets: Vec<(&str, Value)> = Vec::new();
    for (key, text) in sets {
        let value = parse_set_value(text);
        if declared.contains_key(key.as_str()) {
            var_sets.push((key, value));
        } else {
            set_path(doc, key, value).map_err(|msg| {
                SpecError::new(file, format!("--set `{key}={text}`: {msg}")).with_path(key.clone())
            })?;
        }
        changed = true;
    }
    let mut vars = declared_vars(file, doc)?;
    for (key, value) in var_sets {
        vars.insert(key.to_string(), value);
    }

    if let Value::Mapping(root) = doc {
        for (key, value) in root.iter_mut() {
            let Some(key) = key.as_str() else { continue };
            if key == "vars" {
                continue;
            }
            changed |= substitute(file, value, key.to_string(), &vars)?;
        }
    }
    Ok(changed)
}

/// The `vars:` mapping of the document (empty when absent).
fn declared_vars(file: &str, doc: &Value) -> Result<HashMap<String, Value>, SpecError> {
    let mut vars = HashMap::new();
    match doc.get("vars") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (key, value) in m {
                let name = key.as_str().filter(|k| is_var_name(k)).ok_or_else(|| {
                    SpecError::new(
                        file,
                        format!(
                            "vars: `{}` is not a valid var name (letters, digits, `_`, `-`)",
                            scalar_text(key)
                        ),
                    )
                    .with_path("vars")
                })?;
                vars.insert(name.to_string(), value.clone());
            }
        }
        Some(_) => {
            return Err(
                SpecError::new(file, "vars: expected a mapping of names to values")
                    .with_path("vars"),
            );
        }
    }
    Ok(vars)
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A `--set` value: a YAML scalar (`3`, `true`, `abc`); a flow list or mapping
/// (`[16, 32]`) when written as one; otherwise the text itself.
pub(crate) fn parse_set_value(text: &str) -> Value {
    if text.is_empty() {
        return Value::String(String::new());
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) if matches!(text.trim(), "~" | "null" | "Null" | "NULL") => Value::Null,
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        Ok(v @ (Value::Sequence(_) | Value::Mapping(_)))
            if text.trim_start().starts_with(['[', '{']) =>
        {
            v
        }
        _ => Value::String(text.to_string()),
    }
}

/// Replaces the value at dotted `key` (`defaults.priority`, `jobs.0.params.resolution`,
/// `jobs[0].name`), which must exist. A mapping key containing dots
/// (`sweep.parameters.params.resolution`) is matched too.
fn set_path(doc: &mut Value, key: &str, value: Value) -> Result<(), String> {
    let normalized = key.replace('[', ".").replace(']', "");
    let segments: Vec<&str> = normalized.split('.').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return Err("empty key".into());
    }
    match find_path(doc, &segments) {
        Some(node) => {
            *node = value;
            Ok(())
        }
        None => Err(format!(
            "`{key}` is neither a declared var nor a path in the document"
        )),
    }
}

fn find_path<'v>(node: &'v mut Value, segments: &[&str]) -> Option<&'v mut Value> {
    if segments.is_empty() {
        return Some(node);
    }
    match node {
        Value::Mapping(m) => {
            let n =
                (1..=segments.len()).find(|&n| m.contains_key(segments[..n].join(".").as_str()))?;
            find_path(m.get_mut(segments[..n].join(".").as_str())?, &segments[n..])
        }
        Value::Sequence(s) => {
            let i = segments[0].parse::<usize>().ok()?;
            find_path(s.get_mut(i)?, &segments[1..])
        }
        Value::Tagged(t) => find_path(&mut t.value, segments),
        _ => None,
    }
}

/// Replaces `${name}` in every string below `value`; returns whether anything changed.
fn substitute(
    file: &str,
    value: &mut Value,
    path: String,
    vars: &HashMap<String, Value>,
) -> Result<bool, SpecError> {
    match value {
        Value::String(s) if s.contains('$') => {
            let replaced = substitute_str(s, vars).map_err(|msg| {
                SpecError::new(file, format!("{path}: {msg}")).with_path(path.clone())
            })?;
            match replaced {
                Some(new) => {
                    *value = new;
                    Ok(true)
                }
                None => Ok(false),
            }
        }
        Value::Sequence(items) => {
            let mut changed = false;
            for (i, item) in items.iter_mut().enumerate() {
                changed |= substitute(file, item, format!("{path}[{i}]"), vars)?;
            }
            Ok(changed)
        }
        Value::Mapping(m) => substitute_mapping(file, m, &path, vars),
        Value::Tagged(t) => substitute(file, &mut t.value, path, vars),
        _ => Ok(false),
    }
}

fn substitute_mapping(
    file: &str,
    m: &mut Mapping,
    path: &str,
    vars: &HashMap<String, Value>,
) -> Result<bool, SpecError> {
    let mut changed = false;
    for (key, item) in m.iter_mut() {
        let child = format!("{path}.{}", scalar_text(key));
        changed |= substitute(file, item, child, vars)?;
    }
    Ok(changed)
}

/// `Ok(None)`: nothing to replace. A string that is exactly `${name}` takes the var's
/// value with its type (a number stays a number); otherwise the var's text is spliced
/// in. `$${` is a literal `${`.
fn substitute_str(s: &str, vars: &HashMap<String, Value>) -> Result<Option<Value>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let lookup = |name: &str| -> Result<&Value, String> {
        match vars.get(name) {
            None => Err(format!(
                "`${{{name}}}` uses var `{name}`, which is not declared under `vars`"
            )),
            Some(Value::Null) => Err(format!(
                "var `{name}` is used but has no value; set it with `--set {name}=...`"
            )),
            Some(v) => Ok(v),
        }
    };
    if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if is_var_name(name) {
            return lookup(name).map(|v| Some(v.clone()));
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            let name = &after[..end];
            if !is_var_name(name) {
                return Err(format!("`${{{name}}}` is not a valid var reference"));
            }
            match lookup(name)? {
                Value::String(text) => out.push_str(text),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Number(n) => out.push_str(&n.to_string()),
                _ => {
                    return Err(format!(
                        "var `{name}` is a list or mapping and cannot be spliced into a string"
                    ))
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(Value::String(out)))
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn whole_string_keeps_type_and_splices_text() {
        let v = vars(&[("res", Value::from(64)), ("m", Value::from("sd15"))]);
        assert_eq!(substitute_str("${res}", &v).unwrap(), Some(Value::from(64)));
        assert_eq!(
            substitute_str("out/${m}-${res}px", &v).unwrap(),
            Some(Value::from("out/sd15-64px"))
        );
        assert_eq!(
            substitute_str("cost $5 $${m}", &v).unwrap(),
            Some(Value::from("cost $5 ${m}"))
        );
        assert_eq!(substitute_str("no vars", &v).unwrap(), None);
        assert!(substitute_str("${nope}", &v)
            .unwrap_err()
            .contains("`nope`"));
        assert!(substitute_str("a ${m", &v)
            .unwrap_err()
            .contains("unterminated"));
    }

    #[test]
    fn set_values_are_yaml_scalars() {
        assert_eq!(parse_set_value("3"), Value::from(3));
        assert_eq!(parse_set_value("true"), Value::from(true));
        assert_eq!(parse_set_value("abc"), Value::from("abc"));
        assert_eq!(parse_set_value("a: b"), Value::from("a: b"));
        assert_eq!(parse_set_value("#1"), Value::from("#1"));
        assert_eq!(parse_set_value(""), Value::from(""));
        assert_eq!(parse_set_value("null"), Value::Null);
        assert!(parse_set_value("[1, 2]").is_sequence());
    }
}
