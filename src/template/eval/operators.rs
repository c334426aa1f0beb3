//! Operators of the expression language: indexing (`list[0]`, `map.key`),
//! `!`, comparisons, `&&`/`||`, conditionals (`c ? a : b`, only the branch
//! taken is evaluated) and `try()`/`can()`, which evaluate their arguments
//! with errors held back. Sensitivity travels: an item keeps its own
//! marker, and anything taken out of, or decided by, a sensitive value is
//! sensitive.

use std::collections::{BTreeMap, HashSet};

use super::Scope;
use crate::template::diagnostic::{did_you_mean, Span};
use crate::template::expr::{BinOp, Expr};
use crate::template::value::{format_number, Value};

/// `v` sensitive when `sensitive`.
fn mark(v: Value, sensitive: bool) -> Value {
    if sensitive {
        v.sensitive()
    } else {
        v
    }
}

/// The value with every sensitivity marker removed (for comparisons).
pub(super) fn strip(v: &Value) -> Value {
    match v {
        Value::Sensitive(inner) => strip(inner),
        Value::List(l) => Value::List(l.iter().map(strip).collect()),
        Value::Map(m) => Value::Map(m.iter().map(|(k, v)| (k.clone(), strip(v))).collect()),
        v => v.clone(),
    }
}

impl Scope<'_> {
    /// `collection[index]`: a list by a whole number, a map by a key.
    pub(super) fn index(&self, collection: Value, index: Value, span: &Span) -> Option<Value> {
        let (c, c_sensitive) = collection.unwrap_sensitive();
        let (i, i_sensitive) = index.unwrap_sensitive();
        let sensitive = c_sensitive || i_sensitive;
        if matches!(c, Value::Unknown) || matches!(i, Value::Unknown) {
            return Some(mark(Value::Unknown, sensitive));
        }
        let item = match (c, i) {
            (Value::List(items), Value::Num(n)) => {
                if n.fract() != 0.0 || *n < 0.0 || *n as usize >= items.len() {
                    self.error(
                        span.clone(),
                        format!(
                            "index {} is out of range for a list of {} item(s)",
                            format_number(*n),
                            items.len()
                        ),
                        (!items.is_empty())
                            .then(|| format!("indexes are 0 to {}", items.len() - 1)),
                    );
                    return None;
                }
                items[*n as usize].clone()
            }
            (Value::Map(map), Value::Str(key)) => match map.get(key) {
                Some(v) => v.clone(),
                None => {
                    self.error(
                        span.clone(),
                        format!("the map has no key `{key}`"),
                        did_you_mean(key, map.keys().map(String::as_str)).or_else(|| {
                            Some(if map.is_empty() {
                                "the map is empty".into()
                            } else {
                                format!(
                                    "keys: {}",
                                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                                )
                            })
                        }),
                    );
                    return None;
                }
            },
            (Value::List(_), other) => {
                self.error(
                    span.clone(),
                    format!("a list is indexed by a number, not a {}", other.type_name()),
                    None,
                );
                return None;
            }
            (Value::Map(_), other) => {
                self.error(
                    span.clone(),
                    format!("a map is indexed by a string, not a {}", other.type_name()),
                    None,
                );
                return None;
            }
            (other, _) => {
                self.error(
                    span.clone(),
                    format!("cannot index a {}: only lists and maps", other.type_name()),
                    None,
                );
                return None;
            }
        };
        Some(mark(item, sensitive))
    }

    /// A boolean operand, or an error naming what it was.
    fn boolean(&self, v: &Value, what: &str, span: &Span) -> Option<(Option<bool>, bool)> {
        let (inner, sensitive) = v.unwrap_sensitive();
        match inner {
            Value::Bool(b) => Some((Some(*b), sensitive)),
            Value::Unknown => Some((None, sensitive)),
            other => {
                self.error(
                    span.clone(),
                    format!("{what} must be a bool, found a {}", other.type_name()),
                    None,
                );
                None
            }
        }
    }

    pub(super) fn not(&self, inner: &Expr, span: &Span) -> Option<Value> {
        let v = self.eval_expr(inner)?;
        let (b, sensitive) = self.boolean(&v, "the operand of `!`", span)?;
        Some(mark(
            b.map(|b| Value::Bool(!b)).unwrap_or(Value::Unknown),
            sensitive,
        ))
    }

    pub(super) fn binary(&self, op: BinOp, a: &Expr, b: &Expr, span: &Span) -> Option<Value> {
        let lhs = self.eval_expr(a)?;
        if matches!(op, BinOp::And | BinOp::Or) {
            let what = format!("the left side of `{}`", op.symbol());
            let (l, l_sensitive) = self.boolean(&lhs, &what, &a.span)?;
            // Short circuit: `false && x` and `true || x` never look at x.
            if l == Some(op == BinOp::Or) {
                return Some(mark(Value::Bool(op == BinOp::Or), l_sensitive));
            }
            let rhs = self.eval_expr(b)?;
            let what = format!("the right side of `{}`", op.symbol());
            let (r, r_sensitive) = self.boolean(&rhs, &what, &b.span)?;
            let sensitive = l_sensitive || r_sensitive;
            return Some(mark(
                match (l, r) {
                    (Some(_), Some(r)) => Value::Bool(r),
                    _ => Value::Unknown,
                },
                sensitive,
            ));
        }
        let rhs = self.eval_expr(b)?;
        let sensitive = lhs.is_sensitive() || rhs.is_sensitive();
        if lhs.is_unknown() || rhs.is_unknown() {
            return Some(mark(Value::Unknown, sensitive));
        }
        let (l, r) = (strip(&lhs), strip(&rhs));
        let out = match op {
            BinOp::Eq => l == r,
            BinOp::Ne => l != r,
            _ => {
                let (Value::Num(x), Value::Num(y)) = (&l, &r) else {
                    self.error(
                        span.clone(),
                        format!(
                            "`{}` compares numbers, found a {} and a {}",
                            op.symbol(),
                            l.type_name(),
                            r.type_name()
                        ),
                        None,
                    );
                    return None;
                };
                match op {
                    BinOp::Lt => x < y,
                    BinOp::Le => x <= y,
                    BinOp::Gt => x > y,
                    _ => x >= y,
                }
            }
        };
        Some(mark(Value::Bool(out), sensitive))
    }

    /// `cond ? a : b`: only the branch taken is evaluated (so the other may
    /// fail); an unknown condition evaluates both and is unknown. A
    /// sensitive condition makes the result sensitive (it tells the
    /// condition).
    pub(super) fn conditional(&self, cond: &Expr, a: &Expr, b: &Expr) -> Option<Value> {
        let c = self.eval_expr(cond)?;
        let (taken, sensitive) = self.boolean(&c, "the condition of `? :`", &cond.span)?;
        match taken {
            Some(true) => Some(mark(self.eval_expr(a)?, sensitive)),
            Some(false) => Some(mark(self.eval_expr(b)?, sensitive)),
            None => {
                let x = self.eval_expr(a)?;
                let y = self.eval_expr(b)?;
                let sensitive = sensitive || x.is_sensitive() || y.is_sensitive();
                Some(mark(Value::Unknown, sensitive))
            }
        }
    }

    /// `try(a, b, …)`: the first argument that evaluates without an error;
    /// when all fail, the last one's errors are reported. `can(a)`: whether
    /// `a` evaluates without an error.
    pub(super) fn try_call(&self, name: &str, args: &[Expr], span: &Span) -> Option<Value> {
        if args.is_empty() || (name == "can" && args.len() != 1) {
            let want = if name == "can" { "1" } else { "at least 1" };
            self.error(
                span.clone(),
                format!("`{name}` takes {want} argument(s), got {}", args.len()),
                None,
            );
            return None;
        }
        for (i, arg) in args.iter().enumerate() {
            let last = i + 1 == args.len();
            let diags = self.diags.borrow().len();
            let seen = self.seen.borrow().clone();
            let memo: HashSet<String> = self.memo.borrow().keys().cloned().collect();
            let v = self.eval_expr(arg);
            let failed = v.is_none() || self.diags.borrow().len() > diags;
            if !failed {
                return Some(if name == "can" { Value::Bool(true) } else { v? });
            }
            if name == "try" && last {
                return None;
            }
            // Forget the errors, and what failed evaluations memoized
            // (a local evaluated here must report its errors where it is
            // used outside `try`).
            self.diags.borrow_mut().0.truncate(diags);
            *self.seen.borrow_mut() = seen;
            self.memo.borrow_mut().retain(|k, _| memo.contains(k));
            if name == "can" {
                return Some(Value::Bool(false));
            }
        }
        unreachable!("the last argument returns")
    }

    /// A bare `${name}` (or `${name.key}`) inside a `templatefile()`
    /// template: the variables passed to it, nothing else.
    pub(super) fn eval_bare(&self, path: &[String], span: &Span) -> Option<Value> {
        let vars: &BTreeMap<String, Value> = self.bare.as_ref().expect("called inside a template");
        let Some(v) = vars.get(&path[0]) else {
            let help = if matches!(path[0].as_str(), "var" | "local" | "secret" | "image") {
                "a template sees only the variables passed to templatefile(): pass it in the map and write `${name}`".to_string()
            } else if vars.is_empty() {
                "no variables were passed to templatefile()".into()
            } else {
                did_you_mean(&path[0], vars.keys().map(String::as_str)).unwrap_or_else(|| {
                    format!(
                        "variables passed: {}",
                        vars.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
            };
            self.error(
                span.clone(),
                format!("unknown template variable `{}`", path[0]),
                Some(help),
            );
            return None;
        };
        let mut v = v.clone();
        for key in &path[1..] {
            v = self.index(v, Value::Str(key.clone()), span)?;
        }
        Some(v)
    }
}
