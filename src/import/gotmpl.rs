//! Packer's older `{{ … }}` template syntax (Go text/template), found in
//! every legacy JSON template and in build-time strings of HCL ones
//! (`{{ .Path }}`, `{{ .SourceAMIName }}`). The few functions kiln has
//! become references and calls; everything else is named for the report.

use super::model::{Expr, Loc, Node, Part};

/// Splits `s` into literal text and `{{ … }}` actions.
pub fn parts(s: &str, at: &Loc) -> Vec<Part> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        if open > 0 {
            push_lit(&mut out, &rest[..open]);
        }
        let inner = &rest[open + 2..open + close];
        out.push(Part::Interp(Node {
            expr: action(inner, at),
            loc: at.clone(),
        }));
        rest = &rest[open + close + 2..];
    }
    if !rest.is_empty() {
        push_lit(&mut out, rest);
    }
    out
}

fn push_lit(out: &mut Vec<Part>, s: &str) {
    if let Some(Part::Lit(prev)) = out.last_mut() {
        prev.push_str(s);
    } else {
        out.push(Part::Lit(s.to_string()));
    }
}

/// One `{{ … }}` action.
fn action(inner: &str, at: &Loc) -> Expr {
    let text = inner
        .trim()
        .trim_start_matches('-')
        .trim_end_matches('-')
        .trim();
    let words: Vec<&str> = text.split_whitespace().collect();
    let arg = |i: usize| {
        words
            .get(i)
            .map(|w| w.trim_matches(|c| c == '`' || c == '"').to_string())
    };
    match words.as_slice() {
        ["user", _] => Expr::Ref(vec!["var".into(), arg(1).unwrap_or_default()]),
        ["env", _] => Expr::Call(
            "env".into(),
            vec![Node {
                expr: Expr::Str(arg(1).unwrap_or_default()),
                loc: at.clone(),
            }],
        ),
        ["timestamp"] => Expr::Call("timestamp".into(), vec![]),
        ["uuid"] => Expr::Call("uuid".into(), vec![]),
        ["build_name"] => Expr::Ref(vec!["build".into(), "name".into()]),
        ["template_dir"] => Expr::Ref(vec!["path".into(), "root".into()]),
        _ if text.starts_with('.') => {
            Expr::Other(format!("the Packer build variable `{{{{ {text} }}}}`"))
        }
        _ => Expr::Other(format!("the Packer template function `{{{{ {text} }}}}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dummy_loc() -> Loc {
        Loc {
            file: std::sync::Arc::new(crate::template::SourceFile {
                path: Default::default(),
                name: String::new(),
                text: String::new(),
            }),
            span: 0..0,
        }
    }

    #[test]
    fn user_env_and_build_variables() {
        let at = dummy_loc();
        let p = parts("r-{{user `region`}}-{{ env `HOME` }}-{{ .Path }}", &at);
        assert_eq!(p.len(), 6);
        assert!(
            matches!(&p[1], Part::Interp(n) if n.as_ref_path() == Some(&["var".to_string(), "region".to_string()][..]))
        );
        assert!(matches!(&p[3], Part::Interp(n) if n.as_call().map(|c| c.0) == Some("env")));
        assert!(
            matches!(&p[5], Part::Interp(n) if matches!(&n.expr, Expr::Other(w) if w.contains("{{ .Path }}")))
        );
        assert!(
            matches!(&parts("no actions ${HOME}", &at)[..], [Part::Lit(l)] if l == "no actions ${HOME}")
        );
    }
}
