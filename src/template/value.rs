//! Values that template expressions evaluate to. Sensitivity travels with
//! the value: anything computed from a sensitive value is sensitive too.

use std::collections::BTreeMap;

use crate::ui::redact::SENSITIVE;

/// A resolved template value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    /// A value derived from a secret or a `sensitive` variable.
    Sensitive(Box<Value>),
    /// Not known until build time (a secret that `validate` does not fetch).
    Unknown,
}

impl Value {
    /// Wraps a value as sensitive (idempotent).
    pub fn sensitive(self) -> Value {
        match self {
            v @ Value::Sensitive(_) => v,
            v => Value::Sensitive(Box::new(v)),
        }
    }

    /// True when this value, or anything inside it, is sensitive.
    pub fn is_sensitive(&self) -> bool {
        match self {
            Value::Sensitive(_) => true,
            Value::List(l) => l.iter().any(Value::is_sensitive),
            Value::Map(m) => m.values().any(Value::is_sensitive),
            _ => false,
        }
    }

    /// The value with sensitivity markers removed, and whether there were any.
    pub fn unwrap_sensitive(&self) -> (&Value, bool) {
        match self {
            Value::Sensitive(inner) => (inner.as_ref(), true),
            v => (v, false),
        }
    }

    /// True when the value (or part of it) is only known at build time.
    pub fn is_unknown(&self) -> bool {
        match self {
            Value::Unknown => true,
            Value::Sensitive(v) => v.is_unknown(),
            Value::List(l) => l.iter().any(Value::is_unknown),
            Value::Map(m) => m.values().any(Value::is_unknown),
            _ => false,
        }
    }

    /// The type name used in messages and in `[variables]`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Num(_) => "number",
            Value::Bool(_) => "bool",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Sensitive(v) => v.type_name(),
            Value::Unknown => "unknown",
        }
    }

    /// The string form used when a value is interpolated into a string.
    /// Lists and maps have none; the caller reports the error.
    pub fn as_interpolated(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Num(n) => Some(format_number(*n)),
            Value::Bool(b) => Some(b.to_string()),
            Value::Sensitive(v) => v.as_interpolated(),
            Value::Unknown => Some(String::new()),
            Value::List(_) | Value::Map(_) => None,
        }
    }

    /// JSON with the real values (for builders). Unknown becomes null.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Num(n) => number_json(*n),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Sensitive(v) => v.to_json(),
            Value::Unknown => serde_json::Value::Null,
        }
    }

    /// JSON for people (`inspect`): sensitive values are masked.
    pub fn to_masked_json(&self) -> serde_json::Value {
        match self {
            Value::Sensitive(_) => serde_json::Value::String(SENSITIVE.into()),
            Value::List(l) => {
                serde_json::Value::Array(l.iter().map(Value::to_masked_json).collect())
            }
            Value::Map(m) => serde_json::Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.to_masked_json()))
                    .collect(),
            ),
            Value::Unknown => serde_json::Value::String("<known at build time>".into()),
            v => v.to_json(),
        }
    }

    /// Every sensitive string inside this value (for the redactor).
    pub fn sensitive_strings(&self, out: &mut Vec<String>) {
        fn all_strings(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Str(s) => out.push(s.clone()),
                Value::Num(n) => out.push(format_number(*n)),
                Value::List(l) => l.iter().for_each(|v| all_strings(v, out)),
                Value::Map(m) => m.values().for_each(|v| all_strings(v, out)),
                Value::Sensitive(v) => all_strings(v, out),
                Value::Bool(_) | Value::Unknown => {}
            }
        }
        match self {
            Value::Sensitive(v) => all_strings(v, out),
            Value::List(l) => l.iter().for_each(|v| v.sensitive_strings(out)),
            Value::Map(m) => m.values().for_each(|v| v.sensitive_strings(out)),
            _ => {}
        }
    }

    /// Converts a parsed TOML value (a `--var-file` entry) into a value.
    pub fn from_toml(v: &toml_edit::Value) -> Value {
        use toml_edit::Value as T;
        match v {
            T::String(s) => Value::Str(s.value().clone()),
            T::Integer(i) => Value::Num(*i.value() as f64),
            T::Float(f) => Value::Num(*f.value()),
            T::Boolean(b) => Value::Bool(*b.value()),
            T::Datetime(d) => Value::Str(d.value().to_string()),
            T::Array(a) => Value::List(a.iter().map(Value::from_toml).collect()),
            T::InlineTable(t) => Value::Map(
                t.iter()
                    .map(|(k, v)| (k.to_string(), Value::from_toml(v)))
                    .collect(),
            ),
        }
    }
}

/// Formats a number without a trailing `.0` when it is integral.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn number_json(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Formats a value for human output (`inspect`), masking sensitive parts.
pub fn display_value(v: &Value) -> String {
    match v {
        Value::Sensitive(_) => SENSITIVE.to_string(),
        Value::Str(s) => format!("{s:?}"),
        Value::Num(n) => format_number(*n),
        Value::Bool(b) => b.to_string(),
        Value::Unknown => "<known at build time>".into(),
        Value::List(l) => format!(
            "[{}]",
            l.iter().map(display_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!("{k} = {}", display_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitivity_is_found_anywhere_and_masked() {
        let v = Value::List(vec![
            Value::Str("a".into()),
            Value::Str("s3cr3t".into()).sensitive(),
        ]);
        assert!(v.is_sensitive());
        assert_eq!(v.to_masked_json(), serde_json::json!(["a", "<sensitive>"]));
        assert_eq!(v.to_json(), serde_json::json!(["a", "s3cr3t"]));
        let mut out = vec![];
        v.sensitive_strings(&mut out);
        assert_eq!(out, vec!["s3cr3t".to_string()]);
    }

    #[test]
    fn integral_numbers_print_without_fraction() {
        assert_eq!(format_number(2.0), "2");
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(Value::Num(3.0).to_json(), serde_json::json!(3));
    }
}
