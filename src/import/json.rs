//! Reading legacy JSON Packer templates (`variables`, `builders`,
//! `provisioners`, `post-processors`) into the same blocks an HCL2
//! template gives, the way `packer hcl2_upgrade` lays them out: one
//! `variable` per variable, one `source` per builder, one `build` holding
//! the provisioners and post-processor chains. jsonc-parser keeps the byte
//! range of every value for the report.

use std::sync::Arc;

use jsonc_parser::ast::{self, ObjectPropName};
use jsonc_parser::common::Ranged;

use super::gotmpl;
use super::model::{Attr, Block, Expr, Loc, Node, Part};
use crate::template::{Diagnostic, SourceFile};

/// The blocks of a legacy JSON template, and top-level keys that are not
/// template sections (reported by the caller).
pub struct JsonTemplate {
    pub blocks: Vec<Block>,
    pub unknown: Vec<(String, Loc)>,
}

pub fn read(file: &Arc<SourceFile>) -> Result<JsonTemplate, Diagnostic> {
    let parsed = jsonc_parser::parse_to_ast(
        &file.text,
        &Default::default(),
        &jsonc_parser::ParseOptions {
            allow_comments: false,
            allow_loose_object_property_names: false,
            allow_trailing_commas: false,
        },
    )
    .map_err(|e| {
        let r = e.range();
        Diagnostic::at(
            file,
            r.start..r.end.max(r.start + 1),
            format!("invalid JSON: {}", e.kind()),
        )
    })?;
    let Some(ast::Value::Object(root)) = parsed.value else {
        return Err(Diagnostic::at(
            file,
            0..0,
            "a Packer JSON template must be a JSON object",
        ));
    };
    let loc = |r: jsonc_parser::common::Range| Loc {
        file: file.clone(),
        span: r.start..r.end,
    };
    let mut blocks = vec![];
    let mut unknown = vec![];
    let mut build = Block {
        kind: "build".into(),
        labels: vec![],
        attrs: vec![],
        blocks: vec![],
        loc: loc(root.range),
    };
    let mut sensitive: Vec<String> = vec![];
    let mut builder_names: Vec<(String, String)> = vec![];
    // Builders first: provisioners' `only` names them.
    for p in &root.properties {
        if prop_name(&p.name) == "builders" {
            if let ast::Value::Array(a) = &p.value {
                for (i, b) in a.elements.iter().enumerate() {
                    let ast::Value::Object(o) = b else { continue };
                    let attrs = object_attrs(file, o);
                    let ty = attrs
                        .iter()
                        .find(|a| a.key == "type")
                        .and_then(|a| a.value.as_str().map(str::to_string))
                        .unwrap_or_else(|| format!("builder-{}", i + 1));
                    let name = attrs
                        .iter()
                        .find(|a| a.key == "name")
                        .and_then(|a| a.value.as_str().map(str::to_string))
                        .unwrap_or_else(|| ty.clone());
                    builder_names.push((name.clone(), format!("{ty}.{name}")));
                    blocks.push(Block {
                        kind: "source".into(),
                        labels: vec![ty, name],
                        attrs: attrs
                            .into_iter()
                            .filter(|a| a.key != "type" && a.key != "name")
                            .collect(),
                        blocks: vec![],
                        loc: loc(o.range),
                    });
                }
            }
        }
    }
    build.attrs.push(Attr {
        key: "sources".into(),
        value: Node {
            expr: Expr::List(
                blocks
                    .iter()
                    .map(|b| Node {
                        expr: Expr::Str(format!("source.{}.{}", b.labels[0], b.labels[1])),
                        loc: b.loc.clone(),
                    })
                    .collect(),
            ),
            loc: loc(root.range),
        },
        loc: loc(root.range),
    });
    for p in &root.properties {
        let key = prop_name(&p.name);
        let here = loc(p.range);
        match (key.as_str(), &p.value) {
            ("builders", _) | ("min_packer_version", _) | ("_comment", _) => {}
            ("description", v) => build.attrs.push(Attr {
                key: "description".into(),
                value: value(file, v),
                loc: here,
            }),
            ("variables", ast::Value::Object(o)) => {
                for a in object_attrs(file, o) {
                    blocks.push(Block {
                        kind: "variable".into(),
                        labels: vec![a.key.clone()],
                        attrs: vec![Attr {
                            key: "default".into(),
                            value: a.value.clone(),
                            loc: a.loc.clone(),
                        }],
                        blocks: vec![],
                        loc: a.loc,
                    });
                }
            }
            ("sensitive-variables", ast::Value::Array(a)) => {
                sensitive.extend(a.elements.iter().filter_map(|e| match e {
                    ast::Value::StringLit(s) => Some(s.value.to_string()),
                    _ => None,
                }));
            }
            ("provisioners", ast::Value::Array(a)) => {
                for e in &a.elements {
                    if let ast::Value::Object(o) = e {
                        build
                            .blocks
                            .push(step(file, "provisioner", o, &builder_names));
                    }
                }
            }
            ("post-processors", ast::Value::Array(a)) => {
                for e in &a.elements {
                    let chain: Vec<&ast::Value> = match e {
                        ast::Value::Array(inner) => inner.elements.iter().collect(),
                        other => vec![other],
                    };
                    let mut pp = Block {
                        kind: "post-processors".into(),
                        labels: vec![],
                        attrs: vec![],
                        blocks: vec![],
                        loc: loc(e.range()),
                    };
                    for c in chain {
                        match c {
                            ast::Value::Object(o) => {
                                pp.blocks
                                    .push(step(file, "post-processor", o, &builder_names))
                            }
                            ast::Value::StringLit(s) => pp.blocks.push(Block {
                                kind: "post-processor".into(),
                                labels: vec![s.value.to_string()],
                                attrs: vec![],
                                blocks: vec![],
                                loc: loc(s.range),
                            }),
                            _ => {}
                        }
                    }
                    build.blocks.push(pp);
                }
            }
            _ => unknown.push((key, here)),
        }
    }
    for b in blocks.iter_mut().filter(|b| b.kind == "variable") {
        if sensitive.contains(&b.labels[0]) {
            let at = b.loc.clone();
            b.attrs.push(Attr {
                key: "sensitive".into(),
                value: Node {
                    expr: Expr::Bool(true),
                    loc: at.clone(),
                },
                loc: at,
            });
        }
    }
    blocks.push(build);
    Ok(JsonTemplate { blocks, unknown })
}

fn prop_name(n: &ObjectPropName) -> String {
    match n {
        ObjectPropName::String(s) => s.value.to_string(),
        ObjectPropName::Word(w) => w.value.to_string(),
    }
}

fn object_attrs(file: &Arc<SourceFile>, o: &ast::Object) -> Vec<Attr> {
    o.properties
        .iter()
        .map(|p| Attr {
            key: prop_name(&p.name),
            value: value(file, &p.value),
            loc: Loc {
                file: file.clone(),
                span: p.range.start..p.range.end,
            },
        })
        .collect()
}

/// A provisioner or post-processor object as a block labelled with its
/// type; `only`/`except` builder names become `TYPE.NAME` as in HCL2.
fn step(
    file: &Arc<SourceFile>,
    kind: &str,
    o: &ast::Object,
    builders: &[(String, String)],
) -> Block {
    let mut attrs = object_attrs(file, o);
    let ty = attrs
        .iter()
        .find(|a| a.key == "type")
        .and_then(|a| a.value.as_str().map(str::to_string))
        .unwrap_or_default();
    attrs.retain(|a| a.key != "type");
    for a in attrs
        .iter_mut()
        .filter(|a| a.key == "only" || a.key == "except")
    {
        if let Expr::List(items) = &mut a.value.expr {
            for i in items.iter_mut() {
                if let Some(name) = i.as_str() {
                    if let Some((_, full)) = builders.iter().find(|(n, _)| n == name) {
                        i.expr = Expr::Str(full.clone());
                    }
                }
            }
        }
    }
    Block {
        kind: kind.into(),
        labels: vec![ty],
        attrs,
        blocks: vec![],
        loc: Loc {
            file: file.clone(),
            span: o.range.start..o.range.end,
        },
    }
}

fn value(file: &Arc<SourceFile>, v: &ast::Value) -> Node {
    let r = v.range();
    let here = Loc {
        file: file.clone(),
        span: r.start..r.end,
    };
    let expr = match v {
        ast::Value::StringLit(s) => {
            let parts = gotmpl::parts(&s.value, &here);
            match parts.as_slice() {
                [] => Expr::Str(String::new()),
                [Part::Lit(l)] => Expr::Str(l.clone()),
                _ => Expr::Template(parts),
            }
        }
        ast::Value::NumberLit(n) => Expr::Num(n.value.parse().unwrap_or_default()),
        ast::Value::BooleanLit(b) => Expr::Bool(b.value),
        ast::Value::Object(o) => Expr::Map(
            o.properties
                .iter()
                .map(|p| (prop_name(&p.name), value(file, &p.value)))
                .collect(),
        ),
        ast::Value::Array(a) => Expr::List(a.elements.iter().map(|e| value(file, e)).collect()),
        ast::Value::NullKeyword(_) => Expr::Null,
    };
    Node { expr, loc: here }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_become_sources_and_one_build() {
        let text = r#"{
  "variables": {"region": "{{env `AWS_REGION`}}", "key": ""},
  "sensitive-variables": ["key"],
  "builders": [{"type": "docker", "image": "debian:12", "commit": true}],
  "provisioners": [{"type": "shell", "inline": ["echo ${HOME}"], "only": ["docker"]}],
  "post-processors": [["docker-tag", {"type": "docker-push"}]],
  "push": {}
}"#;
        let f = Arc::new(SourceFile {
            path: "p.json".into(),
            name: "p.json".into(),
            text: text.into(),
        });
        let t = read(&f).unwrap();
        let kinds: Vec<&str> = t.blocks.iter().map(|b| b.kind.as_str()).collect();
        assert_eq!(kinds, ["source", "variable", "variable", "build"]);
        assert_eq!(t.blocks[0].labels, ["docker", "docker"]);
        assert!(t.blocks[2].attr("sensitive").is_some());
        let build = t.blocks.last().unwrap();
        let prov = &build.blocks[0];
        assert_eq!(prov.labels, ["shell"]);
        assert_eq!(
            prov.value("only").unwrap().as_list().unwrap()[0].as_str(),
            Some("docker.docker")
        );
        assert_eq!(
            prov.value("inline").unwrap().as_list().unwrap()[0].as_str(),
            Some("echo ${HOME}"),
            "`$${{` is literal text in legacy JSON"
        );
        assert_eq!(build.blocks[1].blocks.len(), 2);
        assert_eq!(t.unknown[0].0, "push");
        assert_eq!(t.unknown[0].1.show(), "p.json:7:3");
    }

    #[test]
    fn bad_json_names_the_place() {
        let f = Arc::new(SourceFile {
            path: "p.json".into(),
            name: "p.json".into(),
            text: "{\n  \"builders\": [,]\n}".into(),
        });
        let d = read(&f).err().unwrap();
        assert_eq!(d.location().unwrap().1, 2, "{d}");
    }
}
