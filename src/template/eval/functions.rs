//! The template's built-in functions (`env`, `file`, `sha256`, `format`…):
//! their arity, argument checks, and sensitivity (a function of a secret is
//! sensitive too).

use base64::Engine as _;
use sha2::Digest as _;

use super::Scope;
use crate::template::diagnostic::{did_you_mean, Span};
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
];

impl Scope<'_> {
    pub(super) fn call(&self, name: &str, args: Vec<Value>, span: &Span) -> Option<Value> {
        let arity: Option<(usize, usize)> = match name {
            "timestamp" | "uuid" => Some((0, 0)),
            "env" | "file" | "sha256" | "lower" | "upper" | "trimspace" | "base64encode" => {
                Some((1, 1))
            }
            "join" | "split" => Some((2, 2)),
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
            _ => unreachable!("arity table covers every function"),
        };
        Some(if sensitive { out.sensitive() } else { out })
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
