//! Evaluating a node against its schema while checking it: the [`Kind`]
//! of each field, unknown and missing keys (with "did you mean"), and where
//! a sensitive value may go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Scope;
use crate::template::diagnostic::{did_you_mean, Span};
use crate::template::node::{Node, NodeKind};
use crate::template::schema::{parse_duration, parse_size, Field, Kind};
use crate::template::value::Value;

impl Scope<'_> {
    /// Checks `node` against `kind` while evaluating it; `key` names the
    /// value in messages. Returns `None` after reporting an error.
    pub fn eval_node(
        &self,
        node: &Node,
        kind: &Kind,
        sensitive_ok: bool,
        key: &str,
    ) -> Option<Value> {
        let mismatch = || {
            self.error(
                node.span.clone(),
                format!(
                    "`{key}` must be {}, found {}",
                    kind.describe(),
                    node.type_name()
                ),
                None,
            );
            None
        };
        let v = match (kind, &node.kind) {
            (Kind::Any, NodeKind::Int(i)) => Value::Num(*i as f64),
            (Kind::Any, NodeKind::Float(f)) => Value::Num(*f),
            (Kind::Any, NodeKind::Bool(b)) => Value::Bool(*b),
            (Kind::Any, NodeKind::Datetime(d)) => Value::Str(d.clone()),
            (Kind::Any, NodeKind::List(items)) => Value::List(
                self.all(
                    items
                        .iter()
                        .map(|n| self.eval_node(n, &Kind::Any, sensitive_ok, key)),
                )?,
            ),
            (Kind::Any | Kind::Map(_), NodeKind::Table(entries)) => {
                let elem = if let Kind::Map(k) = kind {
                    *k
                } else {
                    &Kind::Any
                };
                let vals = self.all(
                    entries
                        .iter()
                        .map(|e| self.eval_node(&e.value, elem, sensitive_ok, &e.key)),
                )?;
                Value::Map(entries.iter().map(|e| e.key.clone()).zip(vals).collect())
            }
            (Kind::Table(fields) | Kind::StrOrTable(fields), NodeKind::Table(_)) => {
                return self.eval_table(node, fields, key);
            }
            (Kind::List(elem), NodeKind::List(items)) => Value::List(
                self.all(
                    items
                        .iter()
                        .map(|n| self.eval_node(n, elem, sensitive_ok, key)),
                )?,
            ),
            (Kind::Int | Kind::Number, NodeKind::Int(i)) => Value::Num(*i as f64),
            (Kind::Number, NodeKind::Float(f)) => Value::Num(*f),
            (Kind::Bool, NodeKind::Bool(b)) => Value::Bool(*b),
            (_, NodeKind::Str(t)) => {
                let v = self.eval_str(t)?;
                return self.check_scalar(v, node, kind, sensitive_ok, key);
            }
            _ => return mismatch(),
        };
        Some(v)
    }

    fn all(&self, it: impl Iterator<Item = Option<Value>>) -> Option<Vec<Value>> {
        // Evaluate every element so that all errors are reported.
        let vals: Vec<Option<Value>> = it.collect();
        vals.into_iter().collect()
    }

    /// Checks a value computed from a string against the expected kind.
    fn check_scalar(
        &self,
        v: Value,
        node: &Node,
        kind: &Kind,
        sensitive_ok: bool,
        key: &str,
    ) -> Option<Value> {
        if v.is_sensitive() && !sensitive_ok {
            self.error(
                node.span.clone(),
                format!("a sensitive value cannot be used in `{key}`"),
                Some("it would end up in a command line, a file or an artifact; pass secrets to provisioners through `env`".into()),
            );
            return None;
        }
        if v.is_unknown() {
            return Some(v);
        }
        let (plain, sensitive) = v.unwrap_sensitive();
        let wrap = |v: Value| if sensitive { v.sensitive() } else { v };
        let bad = |what: String| {
            self.error(
                node.span.clone(),
                format!("`{key}` must be {}, {what}", kind.describe()),
                None,
            );
            None
        };
        let text = plain
            .as_interpolated()
            .filter(|_| matches!(plain, Value::Str(_) | Value::Num(_) | Value::Bool(_)));
        match kind {
            Kind::Any => Some(v),
            Kind::Str => match plain {
                Value::Str(_) => Some(v),
                Value::Num(_) | Value::Bool(_) => Some(wrap(Value::Str(text.unwrap_or_default()))),
                other => bad(format!("found a {}", other.type_name())),
            },
            Kind::Int | Kind::Number => match plain {
                Value::Num(n) if matches!(kind, Kind::Number) || n.fract() == 0.0 => Some(v),
                Value::Str(s) => match s.trim().parse::<f64>() {
                    Ok(n) if matches!(kind, Kind::Number) || n.fract() == 0.0 => {
                        Some(wrap(Value::Num(n)))
                    }
                    _ => bad(format!("found `{s}`")),
                },
                other => bad(format!("found a {}", other.type_name())),
            },
            Kind::Bool => match plain {
                Value::Bool(_) => Some(v),
                Value::Str(s) if s == "true" || s == "false" => {
                    Some(wrap(Value::Bool(s == "true")))
                }
                other => bad(format!("found a {}", other.type_name())),
            },
            // A list or map computed by an expression: each item is
            // checked (and paths resolved) as if it were written out.
            Kind::List(elem) if matches!(plain, Value::List(_)) => {
                let Value::List(items) = plain else {
                    unreachable!()
                };
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.check_scalar(item.clone(), node, elem, sensitive_ok, key)?);
                }
                Some(wrap(Value::List(out)))
            }
            Kind::Map(elem) if matches!(plain, Value::Map(_)) => {
                let Value::Map(items) = plain else {
                    unreachable!()
                };
                let mut out = BTreeMap::new();
                for (k, item) in items {
                    out.insert(
                        k.clone(),
                        self.check_scalar(item.clone(), node, elem, sensitive_ok, k)?,
                    );
                }
                Some(wrap(Value::Map(out)))
            }
            Kind::List(_) | Kind::Map(_) | Kind::Table(_) => {
                let want = if matches!(kind, Kind::List(_)) {
                    "list"
                } else {
                    "map"
                };
                if plain.type_name() == want {
                    Some(v)
                } else {
                    bad(format!("found a {}", plain.type_name()))
                }
            }
            Kind::StrOrTable(_) => match plain {
                Value::Str(_) => Some(v),
                other => bad(format!("found a {}", other.type_name())),
            },
            Kind::Path | Kind::ExistingFile | Kind::InputFile => {
                let Some(s) = text.filter(|_| matches!(plain, Value::Str(_))) else {
                    return bad(format!("found a {}", plain.type_name()));
                };
                let p = self.resolve_path(&s);
                if matches!(kind, Kind::ExistingFile) && !p.is_file() {
                    self.error(
                        node.span.clone(),
                        format!("`{key}`: file `{}` does not exist", p.display()),
                        Some("relative paths resolve against the template's folder".into()),
                    );
                    return None;
                }
                Some(wrap(Value::Str(p.display().to_string())))
            }
            Kind::Duration | Kind::Size | Kind::Mode | Kind::Enum(_) => {
                let Some(s) = text else {
                    return bad(format!("found a {}", plain.type_name()));
                };
                let ok = match kind {
                    Kind::Duration => parse_duration(&s).is_some(),
                    Kind::Size => parse_size(&s).is_some(),
                    Kind::Mode => {
                        s.len() <= 5 && u32::from_str_radix(&s, 8).is_ok_and(|m| m <= 0o7777)
                    }
                    Kind::Enum(options) => options.contains(&s.as_str()),
                    _ => unreachable!(),
                };
                if ok {
                    return Some(wrap(Value::Str(s)));
                }
                let help = match kind {
                    Kind::Enum(options) => did_you_mean(&s, options.iter().copied()),
                    _ => None,
                };
                self.error(
                    node.span.clone(),
                    format!("`{key}` must be {}, found `{s}`", kind.describe()),
                    help,
                );
                None
            }
        }
    }

    fn resolve_path(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// Checks a table's keys against `fields` and evaluates each value.
    pub fn eval_table(&self, node: &Node, fields: &[Field], context: &str) -> Option<Value> {
        let Some(entries) = node.entries() else {
            self.error(
                node.span.clone(),
                format!("`{context}` must be a table, found {}", node.type_name()),
                None,
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for e in entries {
            match fields.iter().find(|f| f.name == e.key) {
                Some(f) => match self.eval_node(&e.value, &f.kind, f.sensitive_ok, &e.key) {
                    Some(v) => {
                        out.insert(e.key.clone(), v);
                    }
                    None => ok = false,
                },
                None => {
                    ok = false;
                    self.unknown_key(
                        e.key_span.clone(),
                        &e.key,
                        context,
                        fields.iter().map(|f| f.name),
                    );
                }
            }
        }
        for f in fields.iter().filter(|f| f.required) {
            if missing(entries, f.name) {
                ok = false;
                self.error(
                    node.span.clone(),
                    format!("`{context}` is missing the required key `{}`", f.name),
                    Some(format!("add `{} = …`", f.name)),
                );
            }
        }
        ok.then_some(Value::Map(out))
    }

    /// Reports an unknown key with a "did you mean" hint.
    pub fn unknown_key<'k>(
        &self,
        span: Span,
        key: &str,
        context: &str,
        known: impl Iterator<Item = &'k str> + Clone,
    ) {
        let help = did_you_mean(key, known.clone()).unwrap_or_else(|| {
            format!(
                "`{context}` takes: {}",
                known.collect::<Vec<_>>().join(", ")
            )
        });
        self.error(
            span,
            format!("unknown key `{key}` in `{context}`"),
            Some(help),
        );
    }
}

/// True when a required key is absent and no unknown key looks like a
/// misspelling of it (that one is reported already, with a hint).
pub fn missing(entries: &[crate::template::node::Entry], name: &str) -> bool {
    !entries
        .iter()
        .any(|e| e.key == name || crate::template::diagnostic::is_close(&e.key, name))
}
