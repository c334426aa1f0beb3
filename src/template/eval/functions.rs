//! The template's built-in functions (`env`, `file`, `sha256`, `format`,
//! `merge`, `lookup`, `templatefile`, `formatdate`…): their arity, argument
//! checks, and sensitivity (a function of a secret is sensitive too; the
//! functions that pick values out of maps and lists keep each value's own
//! marker, so a secret merged into a map stays sensitive in it).

use base64::Engine as _;
use sha2::Digest as _;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Scope;
use crate::template::diagnostic::{did_you_mean, Diagnostic, SourceFile, Span};
use crate::template::value::Value;

pub(super) const FUNCTIONS: &[&str] = &[
    "env",
    "file",
    "sha256",
    "timestamp",
    "uuid",
    "lower",
    "upper",
    "replace",
    "join",
    "split",
    "format",
    "trimspace",
    "base64encode",
    "length",
    "merge",
    "lookup",
    "contains",
    "keys",
    "values",
    "templatefile",
    "formatdate",
    "try",
    "can",
];

/// How deep `templatefile()` templates may nest.
const MAX_TEMPLATE_DEPTH: usize = 8;

impl Scope<'_> {
    pub(super) fn call(&self, name: &str, args: Vec<Value>, span: &Span) -> Option<Value> {
        let arity: Option<(usize, usize)> = match name {
            "timestamp" | "uuid" => Some((0, 0)),
            "env" | "file" | "sha256" | "lower" | "upper" | "trimspace" | "base64encode" => {
                Some((1, 1))
            }
            "join" | "split" | "contains" | "templatefile" | "formatdate" => Some((2, 2)),
            "length" | "keys" | "values" => Some((1, 1)),
            "lookup" => Some((2, 3)),
            "merge" => Some((0, usize::MAX)),
            "replace" => Some((3, 3)),
            "format" => Some((1, usize::MAX)),
            _ => None,
        };
        let Some((min, max)) = arity else {
            self.error(
                span.clone(),
                format!("unknown function `{name}`"),
                did_you_mean(name, FUNCTIONS.iter().copied())
                    .or(Some(format!("functions: {}", FUNCTIONS.join(", ")))),
            );
            return None;
        };
        if args.len() < min || args.len() > max {
            let want = if min == max {
                min.to_string()
            } else {
                format!("at least {min}")
            };
            self.error(
                span.clone(),
                format!("`{name}` takes {want} argument(s), got {}", args.len()),
                None,
            );
            return None;
        }
        match name {
            "merge" => return self.merge(&args, span),
            "lookup" => return self.lookup_fn(&args, span),
            "templatefile" => return self.templatefile(&args, span),
            _ => {}
        }
        let sensitive = args.iter().any(Value::is_sensitive);
        if args.iter().any(Value::is_unknown) {
            return Some(if sensitive {
                Value::Unknown.sensitive()
            } else {
                Value::Unknown
            });
        }
        let plain: Vec<&Value> = args.iter().map(|a| a.unwrap_sensitive().0).collect();
        let s = |i: usize| -> Option<String> {
            match plain[i].as_interpolated() {
                Some(s) if !matches!(plain[i], Value::List(_) | Value::Map(_)) => Some(s),
                _ => {
                    self.error(
                        span.clone(),
                        format!(
                            "argument {} of `{name}` must be a string, found a {}",
                            i + 1,
                            plain[i].type_name()
                        ),
                        None,
                    );
                    None
                }
            }
        };
        let out = match name {
            "env" => Value::Str(std::env::var(s(0)?).unwrap_or_default()),
            "file" => {
                let p = self.dir.join(s(0)?);
                match std::fs::read_to_string(&p) {
                    Ok(text) => Value::Str(text),
                    Err(e) => {
                        self.error(
                            span.clone(),
                            format!("file(): cannot read `{}`: {e}", p.display()),
                            None,
                        );
                        return None;
                    }
                }
            }
            "sha256" => Value::Str(hex::encode(sha2::Sha256::digest(s(0)?.as_bytes()))),
            "timestamp" => Value::Str(
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
            "uuid" => Value::Str(uuid::Uuid::new_v4().to_string()),
            "lower" => Value::Str(s(0)?.to_lowercase()),
            "upper" => Value::Str(s(0)?.to_uppercase()),
            "trimspace" => Value::Str(s(0)?.trim().to_string()),
            "base64encode" => Value::Str(base64::engine::general_purpose::STANDARD.encode(s(0)?)),
            "replace" => Value::Str(s(0)?.replace(&s(1)?, &s(2)?)),
            "split" => Value::List(
                s(1)?
                    .split(&s(0)?)
                    .map(|p| Value::Str(p.to_string()))
                    .collect(),
            ),
            "join" => {
                let sep = s(0)?;
                let Value::List(items) = plain[1] else {
                    self.error(
                        span.clone(),
                        format!(
                            "argument 2 of `join` must be a list, found a {}",
                            plain[1].type_name()
                        ),
                        None,
                    );
                    return None;
                };
                let mut parts = vec![];
                for i in items {
                    match i.as_interpolated() {
                        Some(p) if !matches!(i, Value::List(_) | Value::Map(_)) => parts.push(p),
                        _ => {
                            self.error(
                                span.clone(),
                                "join(): list items must be strings, numbers or booleans",
                                None,
                            );
                            return None;
                        }
                    }
                }
                Value::Str(parts.join(&sep))
            }
            "format" => Value::Str(self.format(&s(0)?, &plain[1..], span)?),
            "length" => Value::Num(match plain[0] {
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                _ => s(0)?.chars().count(),
            } as f64),
            "contains" => {
                let Value::List(items) = plain[0] else {
                    self.error(
                        span.clone(),
                        format!(
                            "argument 1 of `contains` must be a list, found a {}",
                            plain[0].type_name()
                        ),
                        None,
                    );
                    return None;
                };
                let want = super::operators::strip(plain[1]);
                Value::Bool(items.iter().any(|i| super::operators::strip(i) == want))
            }
            "keys" | "values" => {
                let Value::Map(m) = plain[0] else {
                    self.error(
                        span.clone(),
                        format!(
                            "argument 1 of `{name}` must be a map, found a {}",
                            plain[0].type_name()
                        ),
                        None,
                    );
                    return None;
                };
                if name == "keys" {
                    Value::List(m.keys().map(|k| Value::Str(k.clone())).collect())
                } else {
                    Value::List(m.values().cloned().collect())
                }
            }
            "formatdate" => {
                let (spec, ts) = (s(0)?, s(1)?);
                match super::dates::formatdate(&spec, &ts) {
                    Ok(out) => Value::Str(out),
                    Err(e) => {
                        self.error(span.clone(), format!("formatdate(): {e}"), None);
                        return None;
                    }
                }
            }
            _ => unreachable!("arity table covers every function"),
        };
        Some(if sensitive { out.sensitive() } else { out })
    }

    /// `merge(m1, m2, …)`: one map with every key, later maps winning.
    /// Each value keeps its own sensitivity; a wholly sensitive map makes
    /// each of its values sensitive.
    fn merge(&self, args: &[Value], span: &Span) -> Option<Value> {
        let mut out = BTreeMap::new();
        let mut unknown = false;
        for (i, a) in args.iter().enumerate() {
            let (inner, sensitive) = a.unwrap_sensitive();
            match inner {
                Value::Map(m) => {
                    for (k, v) in m {
                        let v = if sensitive {
                            v.clone().sensitive()
                        } else {
                            v.clone()
                        };
                        out.insert(k.clone(), v);
                    }
                }
                Value::Unknown => unknown = true,
                other => {
                    self.error(
                        span.clone(),
                        format!(
                            "argument {} of `merge` must be a map, found a {}",
                            i + 1,
                            other.type_name()
                        ),
                        None,
                    );
                    return None;
                }
            }
        }
        Some(if unknown {
            Value::Unknown
        } else {
            Value::Map(out)
        })
    }

    /// `lookup(map, key[, default])`: the value (with its own
    /// sensitivity), or the default; without a default a missing key is an
    /// error naming the keys there are.
    fn lookup_fn(&self, args: &[Value], span: &Span) -> Option<Value> {
        let (map, map_sensitive) = args[0].unwrap_sensitive();
        let (key, key_sensitive) = args[1].unwrap_sensitive();
        let sensitive = map_sensitive || key_sensitive;
        let mark = |v: Value| if sensitive { v.sensitive() } else { v };
        if matches!(map, Value::Unknown) || matches!(key, Value::Unknown) {
            return Some(mark(Value::Unknown));
        }
        let Value::Map(m) = map else {
            self.error(
                span.clone(),
                format!(
                    "argument 1 of `lookup` must be a map, found a {}",
                    map.type_name()
                ),
                None,
            );
            return None;
        };
        let key = match key {
            Value::Str(k) => k.clone(),
            other => {
                self.error(
                    span.clone(),
                    format!(
                        "argument 2 of `lookup` must be a string, found a {}",
                        other.type_name()
                    ),
                    None,
                );
                return None;
            }
        };
        match (m.get(&key), args.get(2)) {
            (Some(v), _) => Some(mark(v.clone())),
            (None, Some(default)) => Some(mark(default.clone())),
            (None, None) => {
                self.error(
                    span.clone(),
                    format!("lookup(): the map has no key `{key}` and no default was given"),
                    did_you_mean(&key, m.keys().map(String::as_str))
                        .or(Some("give a default: lookup(map, key, default)".into())),
                );
                None
            }
        }
    }

    /// `templatefile(PATH, VARS)`: renders the file (relative to the
    /// template) with kiln's `${…}`, where bare names are the keys of VARS
    /// and nothing else is visible. Errors point into that file; the
    /// result is sensitive when a sensitive value was rendered into it.
    fn templatefile(&self, args: &[Value], span: &Span) -> Option<Value> {
        let (path, path_sensitive) = args[0].unwrap_sensitive();
        let (vars, vars_sensitive) = args[1].unwrap_sensitive();
        let path = match path {
            Value::Str(p) => p.clone(),
            Value::Unknown => return Some(Value::Unknown),
            other => {
                self.error(
                    span.clone(),
                    format!(
                        "argument 1 of `templatefile` must be a string, found a {}",
                        other.type_name()
                    ),
                    None,
                );
                return None;
            }
        };
        let vars = match vars {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| {
                    let v = if vars_sensitive {
                        v.clone().sensitive()
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect::<BTreeMap<_, _>>(),
            Value::Unknown => return Some(Value::Unknown),
            other => {
                self.error(
                    span.clone(),
                    format!(
                        "argument 2 of `templatefile` must be a map of variables, found a {}",
                        other.type_name()
                    ),
                    Some("write `templatefile(\"file.tpl\", { name = var.name })`".into()),
                );
                return None;
            }
        };
        if self.depth >= MAX_TEMPLATE_DEPTH {
            self.error(
                span.clone(),
                format!("templatefile(): templates nest deeper than {MAX_TEMPLATE_DEPTH} (a template that renders itself?)"),
                None,
            );
            return None;
        }
        let full = self.dir.join(&path);
        let text = match std::fs::read_to_string(&full) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    span.clone(),
                    format!("templatefile(): cannot read `{}`: {e}", full.display()),
                    None,
                );
                return None;
            }
        };
        let file = Arc::new(SourceFile {
            name: full.display().to_string(),
            path: full.clone(),
            text: text.clone(),
        });
        if let Some(at) = directive(&text) {
            self.push(
                Diagnostic::at(&file, at..at + 2, "template directives (`%{ for … }`, `%{ if … }`) are not supported yet")
                    .with_label("here")
                    .with_help("compute the text with `join`, `format` or a conditional inside `${…}`, or write `%%{` for a literal `%{`"),
            );
            return None;
        }
        let parsed = match crate::template::expr::parse(&text, 0..text.len(), &|i| i) {
            Ok(p) => p,
            Err(e) => {
                self.push(Diagnostic::at(&file, e.span, e.message).with_label("here"));
                return None;
            }
        };
        let (no_vars, no_nodes) = (BTreeMap::new(), BTreeMap::new());
        let mut child = Scope::new(
            &file,
            self.dir,
            &no_vars,
            &no_vars,
            &no_nodes,
            &no_nodes,
            self.build_id,
        );
        child.bare = Some(vars);
        child.depth = self.depth + 1;
        let out = child.eval_str(&parsed);
        let errors = child.take_diagnostics();
        let failed = !errors.is_empty();
        for d in errors.0 {
            self.push(d);
        }
        if failed {
            return None;
        }
        let out = out?;
        // A string, whatever a single `${…}` template evaluated to.
        let rendered = match out.unwrap_sensitive().0 {
            Value::Unknown => Value::Unknown,
            v => match v.as_interpolated() {
                Some(s) => Value::Str(s.replace("%%{", "%{")),
                None => {
                    self.error(
                        span.clone(),
                        format!(
                            "templatefile(): the template renders a {}, not text",
                            v.type_name()
                        ),
                        None,
                    );
                    return None;
                }
            },
        };
        Some(if out.is_sensitive() || path_sensitive {
            rendered.sensitive()
        } else {
            rendered
        })
    }

    /// `format("%s-%d", a, b)`: `%s` `%d` `%v` take the next argument, `%%` is `%`.
    fn format(&self, fmt: &str, args: &[&Value], span: &Span) -> Option<String> {
        let mut out = String::new();
        let mut next = args.iter();
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some(v @ ('s' | 'd' | 'v')) => {
                    let Some(arg) = next.next() else {
                        self.error(
                            span.clone(),
                            format!("format(): not enough arguments for `%{v}`"),
                            None,
                        );
                        return None;
                    };
                    if v == 'd' && !matches!(arg, Value::Num(_)) {
                        self.error(
                            span.clone(),
                            format!("format(): `%d` needs a number, found a {}", arg.type_name()),
                            None,
                        );
                        return None;
                    }
                    match arg.as_interpolated() {
                        Some(s) => out.push_str(&s),
                        None => {
                            self.error(
                                span.clone(),
                                format!("format(): cannot format a {}", arg.type_name()),
                                None,
                            );
                            return None;
                        }
                    }
                }
                other => {
                    self.error(
                        span.clone(),
                        format!(
                            "format(): unknown verb `%{}`",
                            other.map(String::from).unwrap_or_default()
                        ),
                        Some("verbs: %s %d %v %%".into()),
                    );
                    return None;
                }
            }
        }
        if next.next().is_some() {
            self.error(span.clone(), "format(): too many arguments", None);
            return None;
        }
        Some(out)
    }
}

/// The byte offset of the first template directive (`%{` followed by a
/// directive keyword) that is not escaped as `%%{`.
fn directive(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("%{") {
        let at = from + i;
        from = at + 2;
        if at > 0 && text.as_bytes()[at - 1] == b'%' {
            continue;
        }
        let rest = text[at + 2..].trim_start_matches(['~', ' ', '\t']);
        if ["for ", "if ", "else", "endif", "endfor"]
            .iter()
            .any(|k| rest.starts_with(k))
        {
            return Some(at);
        }
    }
    None
}
