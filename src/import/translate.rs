//! Packer expressions in kiln's terms: literals become TOML values, and
//! interpolations become kiln `${…}` over the references and functions kiln
//! has. Whatever kiln's expressions cannot say is a [`Gap`], named for the
//! report. Sensitivity travels along, so a secret never lands in a field
//! that would write it out.

use std::collections::BTreeMap;

use toml_edit::{Array, InlineTable, Value};

use super::model::{Expr, Loc, Node, Part};

/// What a Packer name (`var.x`, `local.y`, `data.T.N`) is in the kiln template.
#[derive(Debug, Clone)]
pub enum Binding {
    /// A kiln variable.
    Var { name: String, sensitive: bool },
    /// A kiln local.
    Local { name: String, sensitive: bool },
    /// A kiln `[secrets]` entry.
    Secret(String),
    /// A literal (e.g. `path.root`, the Packer template's folder).
    Literal(String),
    /// Not converted, and why (already reported where it is declared).
    Gone(String),
}

/// Every Packer name the translation may meet.
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub map: BTreeMap<String, Binding>,
}

/// Something kiln's `${…}` cannot express.
#[derive(Debug, Clone)]
pub struct Gap {
    pub loc: Loc,
    pub what: String,
}

/// A translated value.
#[derive(Debug, Clone)]
pub struct Out {
    pub value: Value,
    /// Derived from a secret or a sensitive variable.
    pub sensitive: bool,
}

/// Functions kiln has under the same name and arguments as Packer (HCL2).
const SAME_FUNCTIONS: &[&str] = &[
    "env",
    "file",
    "sha256",
    "timestamp",
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
    "formatdate",
    "try",
    "can",
    "templatefile",
];

enum Piece {
    /// Kiln expression text, for inside `${…}`.
    Expr(String),
    /// Literal text.
    Lit(String),
}

/// Escapes literal text for a kiln string (`${` is written `$${`).
pub fn escape(s: &str) -> String {
    s.replace("${", "$${")
}

impl Names {
    /// Translates a node into a TOML value.
    pub fn value(&self, n: &Node) -> Result<Out, Gap> {
        let mut sensitive = false;
        let value = self.value_inner(n, &mut sensitive)?;
        Ok(Out { value, sensitive })
    }

    /// Translates a node that must be a string.
    pub fn string(&self, n: &Node) -> Result<(String, bool), Gap> {
        let out = self.value(n)?;
        match out.value {
            Value::String(s) => Ok((s.value().clone(), out.sensitive)),
            Value::Integer(i) => Ok((i.value().to_string(), out.sensitive)),
            Value::Float(f) => Ok((f.value().to_string(), out.sensitive)),
            Value::Boolean(b) => Ok((b.value().to_string(), out.sensitive)),
            _ => Err(Gap {
                loc: n.loc.clone(),
                what: "a list or map where a string is expected".into(),
            }),
        }
    }

    fn value_inner(&self, n: &Node, sens: &mut bool) -> Result<Value, Gap> {
        Ok(match &n.expr {
            Expr::Null => {
                return Err(Gap {
                    loc: n.loc.clone(),
                    what: "`null`".into(),
                })
            }
            Expr::Bool(b) => Value::from(*b),
            Expr::Num(x) => number(*x),
            Expr::Str(s) => Value::from(escape(s)),
            Expr::List(items) => {
                let mut a = Array::new();
                for i in items {
                    a.push(self.value_inner(i, sens)?);
                }
                Value::Array(a)
            }
            Expr::Map(entries) => {
                let mut t = InlineTable::new();
                for (k, v) in entries {
                    t.insert(k, self.value_inner(v, sens)?);
                }
                Value::InlineTable(t)
            }
            Expr::Template(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        Part::Lit(l) => s.push_str(&escape(l)),
                        Part::Interp(i) => match self.piece(i, sens)? {
                            Piece::Expr(e) => s.push_str(&format!("${{{e}}}")),
                            Piece::Lit(l) => s.push_str(&escape(&l)),
                        },
                    }
                }
                Value::from(s)
            }
            _ => match self.piece(n, sens)? {
                Piece::Expr(e) => Value::from(format!("${{{e}}}")),
                Piece::Lit(l) => Value::from(escape(&l)),
            },
        })
    }

    fn piece(&self, n: &Node, sens: &mut bool) -> Result<Piece, Gap> {
        let gap = |what: String| Gap {
            loc: n.loc.clone(),
            what,
        };
        match &n.expr {
            Expr::Str(s) => Ok(Piece::Lit(s.clone())),
            Expr::Num(x) => Ok(Piece::Expr(number(*x).to_string().trim().to_string())),
            Expr::Bool(b) => Ok(Piece::Expr(b.to_string())),
            Expr::Template(parts) if parts.len() == 1 => match &parts[0] {
                Part::Lit(l) => Ok(Piece::Lit(l.clone())),
                Part::Interp(i) => self.piece(i, sens),
            },
            Expr::Ref(path) => self.reference(path, sens).map_err(gap),
            Expr::Call(name, args) => {
                if name == "regex_replace" {
                    if let Some(e) = self.regex_replace(args, sens)? {
                        return Ok(Piece::Expr(e));
                    }
                }
                let kiln_name = match name.as_str() {
                    "uuidv4" => "uuid",
                    n if SAME_FUNCTIONS.contains(&n) => n,
                    "vault" | "aws_secretsmanager" => {
                        return Err(gap(format!(
                            "`{name}()` inside a larger expression (kiln reads secrets only as a whole `[secrets]` value)"
                        )))
                    }
                    other => {
                        return Err(gap(format!(
                            "the function `{other}()`, which kiln does not have"
                        )))
                    }
                };
                let mut out = vec![];
                for a in args {
                    out.push(match self.piece(a, sens)? {
                        Piece::Expr(e) => e,
                        Piece::Lit(l) => quote(&l),
                    });
                }
                Ok(Piece::Expr(format!("{kiln_name}({})", out.join(", "))))
            }
            Expr::Template(_) => Err(gap("a string template inside an expression".into())),
            Expr::List(items) => {
                let mut out = vec![];
                for i in items {
                    out.push(self.operand(i, sens)?);
                }
                Ok(Piece::Expr(format!("[{}]", out.join(", "))))
            }
            Expr::Map(entries) => {
                let mut out = vec![];
                for (k, v) in entries {
                    out.push(format!("{} = {}", quote(k), self.operand(v, sens)?));
                }
                Ok(Piece::Expr(format!("{{ {} }}", out.join(", "))))
            }
            Expr::Null => Err(gap("`null`".into())),
            Expr::Cond(c, a, b) => Ok(Piece::Expr(format!(
                "({} ? {} : {})",
                self.operand(c, sens)?,
                self.operand(a, sens)?,
                self.operand(b, sens)?
            ))),
            Expr::BinOp(op, a, b)
                if matches!(
                    op.as_str(),
                    "==" | "!=" | "<" | "<=" | ">" | ">=" | "&&" | "||"
                ) =>
            {
                Ok(Piece::Expr(format!(
                    "({} {op} {})",
                    self.operand(a, sens)?,
                    self.operand(b, sens)?
                )))
            }
            Expr::BinOp(op, _, _) => Err(gap(format!("the operator `{op}`"))),
            Expr::Other(what) => Err(gap(what.clone())),
        }
    }

    /// A node as a kiln expression operand (literal text quoted).
    fn operand(&self, n: &Node, sens: &mut bool) -> Result<String, Gap> {
        Ok(match self.piece(n, sens)? {
            Piece::Expr(e) => e,
            Piece::Lit(l) => quote(&l),
        })
    }

    /// `regex_replace(x, "[- TZ:]", "")` (the usual timestamp idiom) and
    /// other patterns that are a literal or a class of literal characters,
    /// as nested `replace` calls.
    fn regex_replace(&self, args: &[Node], sens: &mut bool) -> Result<Option<String>, Gap> {
        let [x, pattern, with] = args else {
            return Ok(None);
        };
        let (Some(pattern), Some(with)) = (pattern.as_str(), with.as_str()) else {
            return Ok(None);
        };
        let meta = |c: char| "\\.+*?()|[]{}^$".contains(c);
        let chars: Vec<String> = match pattern.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            Some(class) if !class.is_empty() && !class.starts_with('^') => {
                let inner = class.trim_matches('-');
                if inner.contains('-') || class.chars().any(meta) {
                    return Ok(None);
                }
                class.chars().map(String::from).collect()
            }
            _ if !pattern.is_empty() && !pattern.chars().any(meta) => vec![pattern.to_string()],
            _ => return Ok(None),
        };
        let mut e = match self.piece(x, sens)? {
            Piece::Expr(e) => e,
            Piece::Lit(l) => quote(&l),
        };
        for c in chars {
            e = format!("replace({e}, {}, {})", quote(&c), quote(with));
        }
        Ok(Some(e))
    }

    fn reference(&self, path: &[String], sens: &mut bool) -> Result<Piece, String> {
        let shown = path.join(".");
        let key = |n: usize| path.iter().take(n).cloned().collect::<Vec<_>>().join(".");
        let (binding, used) = match path.first().map(String::as_str) {
            Some("var") | Some("local") if path.len() >= 2 => (self.map.get(&key(2)), 2),
            Some("data") if path.len() >= 4 => match self.map.get(&key(4)) {
                Some(b) => (Some(b), 4),
                None => (self.map.get(&key(3)), 3),
            },
            Some("path") if matches!(path.get(1).map(String::as_str), Some("root" | "cwd")) => {
                (self.map.get("path.root"), 2)
            }
            Some("source") if matches!(path.get(1).map(String::as_str), Some("name" | "type")) => {
                return Ok(Piece::Expr(shown))
            }
            Some("build") if path.get(1).map(String::as_str) == Some("name") => {
                return Ok(Piece::Expr(shown))
            }
            Some("build") => {
                return Err(format!(
                    "Packer's build variable `{shown}`, known only while Packer builds"
                ))
            }
            _ => {
                return Err(format!(
                    "the reference `{shown}`, which kiln has no equivalent of"
                ))
            }
        };
        if path.len() > used {
            return Err(format!(
                "`{shown}` (an attribute of a value; kiln values have none)"
            ));
        }
        match binding {
            None => Err(format!("`{shown}`, which is not declared")),
            Some(Binding::Var { name, sensitive }) => {
                *sens |= sensitive;
                Ok(Piece::Expr(format!("var.{name}")))
            }
            Some(Binding::Local { name, sensitive }) => {
                *sens |= sensitive;
                Ok(Piece::Expr(format!("local.{name}")))
            }
            Some(Binding::Secret(name)) => {
                *sens = true;
                Ok(Piece::Expr(format!("secret.{name}")))
            }
            Some(Binding::Literal(l)) => Ok(Piece::Lit(l.clone())),
            Some(Binding::Gone(why)) => Err(format!("`{shown}`, {why}")),
        }
    }
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

/// A string literal inside kiln's `${…}`.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn hcl(text: &str) -> Node {
        let f = Arc::new(crate::template::SourceFile {
            path: "t.pkr.hcl".into(),
            name: "t.pkr.hcl".into(),
            text: format!("x = {text}\n"),
        });
        let h = super::super::hcl::read(&f).unwrap();
        h.attrs[0].value.clone()
    }

    fn names() -> Names {
        let mut n = Names::default();
        n.map.insert(
            "var.region".into(),
            Binding::Var {
                name: "region".into(),
                sensitive: false,
            },
        );
        n.map
            .insert("local.pw".into(), Binding::Secret("pw".into()));
        n.map.insert(
            "local.ts".into(),
            Binding::Gone("which was not converted".into()),
        );
        n.map
            .insert("path.root".into(), Binding::Literal("/p".into()));
        n
    }

    fn s(text: &str) -> Result<(String, bool), String> {
        names().string(&hcl(text)).map_err(|g| g.what)
    }

    #[test]
    fn references_functions_and_literals() {
        assert_eq!(
            s("\"ami-${var.region}\"").unwrap(),
            ("ami-${var.region}".into(), false)
        );
        assert_eq!(s("var.region").unwrap(), ("${var.region}".into(), false));
        assert_eq!(s("upper(var.region)").unwrap().0, "${upper(var.region)}");
        assert_eq!(s("uuidv4()").unwrap().0, "${uuid()}");
        assert_eq!(s("\"${path.root}/a.sh\"").unwrap().0, "/p/a.sh");
        assert_eq!(s("env(\"HOME\")").unwrap().0, "${env(\"HOME\")}");
        assert_eq!(
            s("\"$${literal}\"").unwrap().0,
            "$${literal}",
            "a literal `$${{` stays literal"
        );
    }

    #[test]
    fn simple_regex_replace_becomes_replace() {
        assert_eq!(
            s("regex_replace(timestamp(), \"[- TZ:]\", \"\")").unwrap().0,
            "${replace(replace(replace(replace(replace(timestamp(), \"-\", \"\"), \" \", \"\"), \"T\", \"\"), \"Z\", \"\"), \":\", \"\")}"
        );
    }

    #[test]
    fn secrets_are_marked_sensitive() {
        assert_eq!(s("local.pw").unwrap(), ("${secret.pw}".into(), true));
    }

    #[test]
    fn gaps_say_what_kiln_lacks() {
        assert!(s("regex_replace(var.region, \"a+\", \"b\")")
            .unwrap_err()
            .contains("`regex_replace()`"));
        assert!(s("local.ts").unwrap_err().contains("not converted"));
        assert!(s("var.nope").unwrap_err().contains("not declared"));
        assert!(s("build.ID").unwrap_err().contains("build variable"));
        assert!(s("\"{{ .Path }}\"").unwrap_err().contains("{{ .Path }}"));
    }

    #[test]
    fn conditionals_operators_collections_and_new_functions_translate() {
        assert_eq!(
            s("var.region == \"us-east-1\" ? \"east\" : \"other\"")
                .unwrap()
                .0,
            "${((var.region == \"us-east-1\") ? \"east\" : \"other\")}"
        );
        assert_eq!(
            s("formatdate(\"YYYYMMDD\", timestamp())").unwrap().0,
            "${formatdate(\"YYYYMMDD\", timestamp())}"
        );
        assert_eq!(
            s("templatefile(\"motd.tpl\", { name = var.region, n = 2 })")
                .unwrap()
                .0,
            "${templatefile(\"motd.tpl\", { \"name\" = var.region, \"n\" = 2 })}"
        );
        assert_eq!(
            s("length(merge({ a = 1 }, { b = [1, 2] }))").unwrap().0,
            "${length(merge({ \"a\" = 1 }, { \"b\" = [1, 2] }))}"
        );
        assert!(s("var.region + 1")
            .unwrap_err()
            .contains("the operator `+`"));
    }
}
