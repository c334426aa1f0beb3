//! Evaluation of `${…}` against a [`Scope`]: references (`var.*`,
//! `local.*`, `secret.*`, `image.*`, `build.*`, `source.*`) and lazy locals
//! with cycle detection. The function library is in `functions`; operators,
//! indexing and conditionals in `operators`; dates in `dates`; checking a
//! node against its schema [`Kind`] while evaluating it in `fields`.

mod dates;
mod fields;
mod functions;
mod operators;
#[cfg(test)]
mod tests;

pub use fields::missing;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::template::diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceFile, Span};
use crate::template::expr::{Expr, ExprKind, Interpolated, Part};
use crate::template::node::Node;
use crate::template::schema::Kind;
use crate::template::value::Value;

/// What `build.*` and `source.*` refer to while a job's strings are evaluated.
#[derive(Debug, Clone)]
pub struct JobRefs {
    pub build_name: String,
    pub source_type: String,
    pub source_name: String,
}

/// Everything a reference can name, plus the errors found so far.
pub struct Scope<'a> {
    pub file: &'a Arc<SourceFile>,
    pub dir: &'a Path,
    pub vars: &'a BTreeMap<String, Value>,
    pub secrets: &'a BTreeMap<String, Value>,
    pub locals: &'a BTreeMap<String, Node>,
    pub image: &'a BTreeMap<String, Node>,
    pub build_id: &'a str,
    job: RefCell<Option<JobRefs>>,
    memo: RefCell<HashMap<String, Option<Value>>>,
    stack: RefCell<Vec<String>>,
    diags: RefCell<Diagnostics>,
    seen: RefCell<HashSet<(usize, usize, String)>>,
    /// Inside a `templatefile()` template: the only names it can refer to
    /// (bare, `${name}`), and how deep templates nest.
    bare: Option<BTreeMap<String, Value>>,
    depth: usize,
}

impl<'a> Scope<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        file: &'a Arc<SourceFile>,
        dir: &'a Path,
        vars: &'a BTreeMap<String, Value>,
        secrets: &'a BTreeMap<String, Value>,
        locals: &'a BTreeMap<String, Node>,
        image: &'a BTreeMap<String, Node>,
        build_id: &'a str,
    ) -> Self {
        Scope {
            file,
            dir,
            vars,
            secrets,
            locals,
            image,
            build_id,
            job: RefCell::new(None),
            memo: Default::default(),
            stack: Default::default(),
            diags: Default::default(),
            seen: Default::default(),
            bare: None,
            depth: 0,
        }
    }

    /// Runs `f` with `build.name` and `source.*` set for one job.
    pub fn with_job<T>(&self, refs: JobRefs, f: impl FnOnce(&Self) -> T) -> T {
        let before = self.job.replace(Some(refs));
        let out = f(self);
        self.job.replace(before);
        out
    }

    /// Evaluates the reference `root.name` (e.g. `image.version`).
    pub fn lookup(&self, root: &str, name: &str, span: &Span) -> Option<Value> {
        self.eval_ref(&[root.to_string(), name.to_string()], span)
    }

    /// Adds an error that has no place in the template.
    pub fn push(&self, d: Diagnostic) {
        self.diags.borrow_mut().push(d);
    }

    /// Errors found so far (deduplicated).
    pub fn take_diagnostics(&self) -> Diagnostics {
        std::mem::take(&mut self.diags.borrow_mut())
    }

    pub fn error(&self, span: Span, message: impl Into<String>, help: Option<String>) {
        let message = message.into();
        if !self
            .seen
            .borrow_mut()
            .insert((span.start, span.end, message.clone()))
        {
            return;
        }
        let mut d = Diagnostic::at(self.file, span, message).with_label("here");
        if let Some(h) = help {
            d = d.with_help(h);
        }
        self.diags.borrow_mut().push(d);
    }

    /// Evaluates a string; `None` after reporting an error.
    pub fn eval_str(&self, t: &Interpolated) -> Option<Value> {
        if let Some(e) = t.single_expr() {
            return self.eval_expr(e);
        }
        let mut out = String::new();
        let (mut sensitive, mut unknown, mut ok) = (false, false, true);
        for part in &t.parts {
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Expr(e) => {
                    let Some(v) = self.eval_expr(e) else {
                        ok = false;
                        continue;
                    };
                    sensitive |= v.is_sensitive();
                    unknown |= v.is_unknown();
                    match v.as_interpolated() {
                        Some(s) => out.push_str(&s),
                        None => {
                            ok = false;
                            self.error(
                                e.span.clone(),
                                format!("cannot interpolate a {} into a string", v.type_name()),
                                Some("use `join(\",\", …)` to turn a list into a string, or make the whole string `\"${…}\"`".into()),
                            )
                        }
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        let v = if unknown {
            Value::Unknown
        } else {
            Value::Str(out)
        };
        Some(if sensitive { v.sensitive() } else { v })
    }

    fn eval_expr(&self, e: &Expr) -> Option<Value> {
        match &e.kind {
            ExprKind::Str(s) => Some(Value::Str(s.clone())),
            ExprKind::Num(n) => Some(Value::Num(*n)),
            ExprKind::Bool(b) => Some(Value::Bool(*b)),
            ExprKind::Invalid => Some(Value::Unknown),
            ExprKind::Ref(path) if self.bare.is_some() => self.eval_bare(path, &e.span),
            ExprKind::Ref(path)
                if path.len() > 2 && matches!(path[0].as_str(), "var" | "local" | "secret") =>
            {
                // `var.map.key.inner`: the variable, then its keys.
                let mut v = self.eval_ref(&path[..2], &e.span)?;
                for key in &path[2..] {
                    v = self.index(v, Value::Str(key.clone()), &e.span)?;
                }
                Some(v)
            }
            ExprKind::Ref(path) => self.eval_ref(path, &e.span),
            ExprKind::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.eval_expr(i)?);
                }
                Some(Value::List(out))
            }
            ExprKind::Map(pairs) => {
                let mut out = BTreeMap::new();
                for (k, v) in pairs {
                    out.insert(k.clone(), self.eval_expr(v)?);
                }
                Some(Value::Map(out))
            }
            ExprKind::Index(c, i) => {
                let c = self.eval_expr(c)?;
                let i = self.eval_expr(i)?;
                self.index(c, i, &e.span)
            }
            ExprKind::Attr(c, key) => {
                let c = self.eval_expr(c)?;
                self.index(c, Value::Str(key.clone()), &e.span)
            }
            ExprKind::Not(inner) => self.not(inner, &e.span),
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, &e.span),
            ExprKind::Cond(c, a, b) => self.conditional(c, a, b),
            ExprKind::Call(name, args) if name == "try" || name == "can" => {
                self.try_call(name, args, &e.span)
            }
            ExprKind::Call(name, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(self.eval_expr(a)?);
                }
                self.call(name, vals, &e.span)
            }
        }
    }

    fn eval_ref(&self, path: &[String], span: &Span) -> Option<Value> {
        let root = path[0].as_str();
        let attr = |names: &[&str]| -> Option<String> {
            match path {
                [_, a] if names.contains(&a.as_str()) => Some(a.clone()),
                [_, a] => {
                    self.error(
                        span.clone(),
                        format!("`{root}` has no attribute `{a}`"),
                        did_you_mean(a, names.iter().copied())
                            .or(Some(format!("`{root}` has: {}", names.join(", ")))),
                    );
                    None
                }
                _ => {
                    self.error(
                        span.clone(),
                        format!("`{}` is not a valid reference", path.join(".")),
                        Some(format!("write `{root}.NAME`")),
                    );
                    None
                }
            }
        };
        match root {
            "var" | "secret" => {
                let (map, what) = if root == "var" {
                    (self.vars, "variable")
                } else {
                    (self.secrets, "secret")
                };
                let [_, name] = path else {
                    self.error(
                        span.clone(),
                        format!("`{}` is not a valid reference", path.join(".")),
                        Some(format!("write `{root}.NAME`")),
                    );
                    return None;
                };
                match map.get(name) {
                    Some(v) => Some(v.clone()),
                    None => {
                        let section = if root == "var" {
                            "variables"
                        } else {
                            "secrets"
                        };
                        self.error(
                            span.clone(),
                            format!("unknown {what} `{name}`"),
                            did_you_mean(name, map.keys().map(String::as_str))
                                .or(Some(format!("declare it as `[{section}.{name}]`"))),
                        );
                        None
                    }
                }
            }
            "local" => {
                let [_, name] = path else {
                    self.error(
                        span.clone(),
                        format!("`{}` is not a valid reference", path.join(".")),
                        Some("write `local.NAME`".into()),
                    );
                    return None;
                };
                let Some(node) = self.locals.get(name) else {
                    self.error(
                        span.clone(),
                        format!("unknown local `{name}`"),
                        did_you_mean(name, self.locals.keys().map(String::as_str))
                            .or(Some(format!("add `{name} = …` under `[locals]`"))),
                    );
                    return None;
                };
                self.memoized(&format!("local.{name}"), span, || {
                    self.eval_node(node, &Kind::Any, true, name)
                })
            }
            "image" => {
                let a = attr(&["name", "version", "description"])?;
                match self.image.get(&a) {
                    Some(node) => self.memoized(&format!("image.{a}"), span, || {
                        self.eval_node(node, &Kind::Str, false, &a)
                    }),
                    None => Some(Value::Str(String::new())),
                }
            }
            "build" => {
                let a = attr(&["name", "id"])?;
                if a == "id" {
                    return Some(Value::Str(self.build_id.to_string()));
                }
                match &*self.job.borrow() {
                    Some(j) => Some(Value::Str(j.build_name.clone())),
                    None => {
                        self.error(span.clone(), "`build.name` is only known inside a build", Some("use it in `[source.*]` or `[[build]]` settings, not in `[locals]` or `[image]`".into()));
                        None
                    }
                }
            }
            "source" => {
                let a = attr(&["type", "name"])?;
                match &*self.job.borrow() {
                    Some(j) => Some(Value::Str(if a == "type" {
                        j.source_type.clone()
                    } else {
                        j.source_name.clone()
                    })),
                    None => {
                        self.error(
                            span.clone(),
                            format!("`source.{a}` is only known inside a build"),
                            Some("use it in `[source.*]` or `[[build]]` settings".into()),
                        );
                        None
                    }
                }
            }
            _ => {
                self.error(
                    span.clone(),
                    format!("unknown reference `{}`", path.join(".")),
                    did_you_mean(root, ["var", "local", "secret", "image", "build", "source"])
                        .or(Some(
                        "references start with var., local., secret., image., build. or source."
                            .into(),
                    )),
                );
                None
            }
        }
    }

    /// Evaluates a named node once, detecting cycles through the stack.
    fn memoized(&self, key: &str, span: &Span, f: impl FnOnce() -> Option<Value>) -> Option<Value> {
        if let Some(v) = self.memo.borrow().get(key) {
            return v.clone();
        }
        if let Some(pos) = self.stack.borrow().iter().position(|k| k == key) {
            let mut cycle: Vec<String> = self.stack.borrow()[pos..].to_vec();
            cycle.push(key.to_string());
            self.error(
                span.clone(),
                format!("cycle: {}", cycle.join(" → ")),
                Some("break the cycle: one of these must not refer back".into()),
            );
            return None;
        }
        self.stack.borrow_mut().push(key.to_string());
        let v = f();
        self.stack.borrow_mut().pop();
        self.memo.borrow_mut().insert(key.to_string(), v.clone());
        v
    }
}
