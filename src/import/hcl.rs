//! Reading HCL2 Packer files (`.pkr.hcl`, `.pkrvars.hcl`) with hcl-edit,
//! which keeps the byte span of every block, attribute and expression, so
//! the report can name the Packer `file:line:col` of each construct.

use std::sync::Arc;

use hcl_edit::expr::{Expression, ObjectKey, TraversalOperator};
use hcl_edit::structure::{Body, Structure};
use hcl_edit::template::Element;
use hcl_edit::Span as _;

use super::gotmpl;
use super::model::{Attr, Block, Expr, Loc, Node, Part};
use crate::template::{Diagnostic, SourceFile};

/// Top-level blocks and attributes of one HCL file.
pub struct HclFile {
    pub blocks: Vec<Block>,
    pub attrs: Vec<Attr>,
}

/// Parses `file`; a syntax error names its place.
pub fn read(file: &Arc<SourceFile>) -> Result<HclFile, Diagnostic> {
    let body = hcl_edit::parser::parse_body(&file.text).map_err(|e| {
        let at = e.location().offset().min(file.text.len());
        Diagnostic::at(
            file,
            at..(at + 1).min(file.text.len()),
            format!("invalid HCL: {}", e.message()),
        )
    })?;
    let (attrs, blocks) = body_parts(file, &body);
    Ok(HclFile { blocks, attrs })
}

fn loc(file: &Arc<SourceFile>, span: Option<std::ops::Range<usize>>) -> Loc {
    Loc {
        file: file.clone(),
        span: span.unwrap_or(0..0),
    }
}

fn body_parts(file: &Arc<SourceFile>, body: &Body) -> (Vec<Attr>, Vec<Block>) {
    let mut attrs = vec![];
    let mut blocks = vec![];
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => attrs.push(Attr {
                key: a.key.value().to_string(),
                value: node(file, &a.value),
                loc: loc(file, a.span()),
            }),
            Structure::Block(b) => {
                let (a, bl) = body_parts(file, &b.body);
                blocks.push(Block {
                    kind: b.ident.value().to_string(),
                    labels: b.labels.iter().map(|l| l.as_str().to_string()).collect(),
                    attrs: a,
                    blocks: bl,
                    loc: loc(file, b.span()),
                });
            }
        }
    }
    (attrs, blocks)
}

/// One HCL expression as the importer's [`Node`].
pub fn node(file: &Arc<SourceFile>, e: &Expression) -> Node {
    let here = loc(file, e.span());
    let expr = match e {
        Expression::Null(_) => Expr::Null,
        Expression::Bool(b) => Expr::Bool(*b.value()),
        Expression::Number(n) => Expr::Num(n.value().as_f64().unwrap_or_default()),
        Expression::String(s) => literal(s.value(), &here),
        Expression::Array(a) => Expr::List(a.iter().map(|x| node(file, x)).collect()),
        Expression::Object(o) => Expr::Map(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        ObjectKey::Ident(i) => i.value().to_string(),
                        ObjectKey::Expression(x) => match node(file, x).expr {
                            Expr::Str(s) => s,
                            Expr::Ref(p) => p.join("."),
                            _ => format!("{x}"),
                        },
                    };
                    (key, node(file, v.expr()))
                })
                .collect(),
        ),
        Expression::StringTemplate(t) => template(file, t.iter(), &here),
        Expression::HeredocTemplate(h) => template(file, h.template.iter(), &here),
        Expression::Parenthesis(p) => return node(file, p.inner()),
        Expression::Variable(v) => Expr::Ref(vec![v.value().to_string()]),
        Expression::Conditional(c) => Expr::Cond(
            Box::new(node(file, &c.cond_expr)),
            Box::new(node(file, &c.true_expr)),
            Box::new(node(file, &c.false_expr)),
        ),
        Expression::FuncCall(f) => {
            if f.name.is_namespaced() {
                Expr::Other(format!(
                    "the provider function `{}::{}`",
                    f.name
                        .namespace
                        .iter()
                        .map(|n| n.value().to_string())
                        .collect::<Vec<_>>()
                        .join("::"),
                    f.name.name.value()
                ))
            } else {
                Expr::Call(
                    f.name.name.value().to_string(),
                    f.args.iter().map(|a| node(file, a)).collect(),
                )
            }
        }
        Expression::Traversal(t) => {
            let mut path = match &t.expr {
                Expression::Variable(v) => vec![v.value().to_string()],
                _ => vec![],
            };
            let mut ok = !path.is_empty();
            for op in &t.operators {
                match op.value() {
                    TraversalOperator::GetAttr(i) => path.push(i.value().to_string()),
                    _ => ok = false,
                }
            }
            if ok {
                Expr::Ref(path)
            } else {
                Expr::Other("an index, splat or attribute of a computed value".into())
            }
        }
        Expression::UnaryOp(_) => Expr::Other("a unary operator".into()),
        Expression::BinaryOp(b) => Expr::BinOp(
            b.operator.value().as_str().to_string(),
            Box::new(node(file, &b.lhs_expr)),
            Box::new(node(file, &b.rhs_expr)),
        ),
        Expression::ForExpr(_) => Expr::Other("a `for` expression".into()),
    };
    Node { expr, loc: here }
}

/// A quoted literal, which may still hold Packer's `{{ … }}` build-time
/// template syntax (`{{ .Path }}`, `{{ .SourceAMIName }}`).
fn literal(s: &str, at: &Loc) -> Expr {
    let parts = gotmpl::parts(s, at);
    match parts.as_slice() {
        [] => Expr::Str(String::new()),
        [Part::Lit(l)] => Expr::Str(l.clone()),
        _ => Expr::Template(parts),
    }
}

fn template<'a>(
    file: &Arc<SourceFile>,
    elements: impl Iterator<Item = &'a Element>,
    at: &Loc,
) -> Expr {
    let mut parts = vec![];
    for el in elements {
        match el {
            Element::Literal(l) => parts.extend(gotmpl::parts(l.value(), at)),
            Element::Interpolation(i) => parts.push(Part::Interp(node(file, &i.expr))),
            Element::Directive(_) => {
                return Expr::Other("a template directive (`%{ … }`)".into());
            }
        }
    }
    match parts.as_slice() {
        [] => Expr::Str(String::new()),
        [Part::Lit(l)] => Expr::Str(l.clone()),
        _ => Expr::Template(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            path: "t.pkr.hcl".into(),
            name: "t.pkr.hcl".into(),
            text: text.into(),
        })
    }

    #[test]
    fn blocks_attributes_and_places() {
        let f = file("variable \"x\" {\n  type = string\n  default = \"a-${var.y}\"\n}\n");
        let h = read(&f).unwrap();
        let v = &h.blocks[0];
        assert_eq!(
            (v.kind.as_str(), v.labels.as_slice()),
            ("variable", &["x".to_string()][..])
        );
        assert_eq!(v.value("type").unwrap().as_ref_path().unwrap(), ["string"]);
        let d = v.attr("default").unwrap();
        assert_eq!(d.loc.show(), "t.pkr.hcl:3:3");
        let Expr::Template(parts) = &d.value.expr else {
            panic!("{:?}", d.value)
        };
        assert!(matches!(&parts[0], Part::Lit(l) if l == "a-"));
        assert!(
            matches!(&parts[1], Part::Interp(n) if n.as_ref_path() == Some(&["var".to_string(), "y".to_string()][..]))
        );
    }

    #[test]
    fn what_kiln_cannot_say_is_named() {
        let f = file("a = var.x == \"\" ? 1 : 2\nb = var.l[0]\nc = \"{{ .Path }}\"\n");
        let h = read(&f).unwrap();
        assert!(matches!(&h.attrs[0].value.expr, Expr::Cond(..)));
        assert!(matches!(&h.attrs[1].value.expr, Expr::Other(w) if w.contains("index")));
        let Expr::Template(parts) = &h.attrs[2].value.expr else {
            panic!()
        };
        assert!(
            matches!(&parts[0], Part::Interp(n) if matches!(&n.expr, Expr::Other(w) if w.contains(".Path")))
        );
    }

    #[test]
    fn syntax_errors_name_the_place() {
        let f = file("source \"docker\" \"x\" {\n  image = \n}\n");
        let d = read(&f).err().expect("an error");
        let (_, line, _) = d.location().unwrap();
        assert!(line >= 2, "{d}");
        assert!(d.message.starts_with("invalid HCL"), "{d}");
    }
}
