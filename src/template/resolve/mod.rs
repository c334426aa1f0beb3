//! The second stage: a [`Template`] read from disk resolved into a
//! [`BuildPlan`]. Variables, secrets, locals and every `${…}` are resolved
//! here, each job's source and provisioners are checked against their
//! schemas (`jobs`, `provisioners`), and every error in the template is
//! collected.

mod jobs;
mod provisioners;
mod secrets;
mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::template::diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceFile};
use crate::template::eval::Scope;
use crate::template::node::{Node, NodeKind};
use crate::template::plan::{
    BuildPlan, FetchSecrets, ImagePlan, PlanOptions, Retention, SecretRequest, VariablePlan,
};
use crate::template::schema::TemplateSchema;
use crate::template::value::Value;
use crate::template::variables;
use jobs::{check_keys, table_map};
use tables::{IMAGE_FIELDS, RETENTION_FIELDS, TOP_KEYS};

/// A template read from disk with its syntax already checked.
pub struct Template {
    pub file: Arc<SourceFile>,
    root: Option<Node>,
    /// Syntax errors found while reading; reported with all the others.
    syntax: Diagnostics,
}

impl Template {
    /// Reads and parses a template file. Fails only when it cannot be read.
    pub fn read(path: &Path) -> Result<Template, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::new(format!(
                "cannot read template `{}`: {e}",
                path.display()
            ))])
        })?;
        Ok(Template::from_text(path, text))
    }

    /// Parses template text as if read from `path`.
    pub fn from_text(path: &Path, text: String) -> Template {
        let file = Arc::new(SourceFile {
            path: path.to_path_buf(),
            name: path.display().to_string(),
            text,
        });
        let mut syntax = Diagnostics::default();
        let root = crate::template::node::parse_document(&file, &mut syntax);
        Template { file, root, syntax }
    }

    fn dir(&self) -> PathBuf {
        let dir = self
            .file
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// Resolves the template into a plan. `fetch_secrets` turns the
    /// declarations into values (sensitive), or into [`Value::Unknown`]
    /// for commands that must not fetch them.
    pub fn plan(
        &self,
        schema: &TemplateSchema,
        opts: &PlanOptions,
        fetch_secrets: &FetchSecrets,
    ) -> Result<BuildPlan, Diagnostics> {
        let mut diags = self.syntax.clone();
        let Some(root) = &self.root else {
            return Err(diags);
        };
        let file = &self.file;
        let dir = self.dir();
        let empty = Node {
            kind: NodeKind::Table(vec![]),
            span: 0..0,
        };

        for e in root.entries().unwrap_or_default() {
            if !TOP_KEYS.contains(&e.key.as_str()) {
                diags.push(
                    Diagnostic::at(
                        file,
                        e.key_span.clone(),
                        format!("unknown top-level key `{}`", e.key),
                    )
                    .with_label("here")
                    .with_help(
                        did_you_mean(&e.key, TOP_KEYS.iter().copied())
                            .unwrap_or_else(|| format!("a template has: {}", TOP_KEYS.join(", "))),
                    ),
                );
            }
        }
        let section = |key: &str| root.get(key).map(|e| &e.value);

        // Variables first: everything else may refer to them.
        let decls = variables::declarations(file, section("variables"), &mut diags);
        let vars = variables::resolve(file, &decls, &opts.vars, &mut diags);

        let image_nodes = table_map(section("image"));
        let local_nodes = table_map(section("locals"));
        let no_secrets = BTreeMap::new();
        let (secret_decls, vault) = {
            let scope = Scope::new(
                file,
                &dir,
                &vars,
                &no_secrets,
                &local_nodes,
                &image_nodes,
                &opts.build_id,
            );
            let decls = self.secret_decls(&scope, section("secrets"));
            let vault = self.vault_settings(&scope, section("vault"));
            diags.extend(scope.take_diagnostics());
            (decls, vault)
        };
        let secret_values = if diags.is_empty() {
            match fetch_secrets(&SecretRequest {
                decls: &secret_decls,
                vault: &vault,
            }) {
                Ok(v) => v.into_iter().map(|(k, v)| (k, v.sensitive())).collect(),
                Err(d) => {
                    diags.extend(d);
                    return Err(diags);
                }
            }
        } else {
            secret_decls
                .iter()
                .map(|d| (d.name.clone(), Value::Unknown.sensitive()))
                .collect()
        };

        let scope = Scope::new(
            file,
            &dir,
            &vars,
            &secret_values,
            &local_nodes,
            &image_nodes,
            &opts.build_id,
        );

        // [image]
        let image_node = section("image");
        if image_node.is_none() {
            diags.push(
                Diagnostic::at(file, 0..0, "the template has no `[image]` table")
                    .with_help("add `[image]` with `name` and `version`"),
            );
        }
        let image_node = image_node.unwrap_or(&empty);
        check_keys(&scope, image_node, IMAGE_FIELDS, "image");
        let image_attr = |name: &str| -> Option<String> {
            let node = image_node.get(name)?;
            let v = scope.lookup("image", name, &node.value.span)?;
            if v.is_unknown() {
                return None;
            }
            if v.is_sensitive() {
                scope.error(
                    node.value.span.clone(),
                    format!("`image.{name}` cannot be sensitive"),
                    Some("image names and versions appear in tags, logs and the catalog".into()),
                );
                return None;
            }
            v.as_interpolated()
        };
        let name = image_attr("name");
        if let (Some(n), Some(node)) = (&name, image_node.get("name")) {
            if !crate::template::schema::is_valid_name(n) {
                scope.error(
                    node.value.span.clone(),
                    format!("`image.name` `{n}` is not a valid image name"),
                    Some("letters, digits, `-`, `_`, `.`, starting with a letter or digit, at most 64 characters: it names the image in the catalog, in tags and in file names".into()),
                );
            }
        }
        let version = image_attr("version");
        if let (Some(v), Some(node)) = (&version, image_node.get("version")) {
            if let Err(e) = semver::Version::parse(v) {
                scope.error(node.value.span.clone(), format!("`image.version` must be a semantic version such as \"1.4.0\", found `{v}`: {e}"), None);
            }
        }
        let description = image_attr("description");
        let retention = image_node.get("retention").and_then(|e| {
            let Some(Value::Map(m)) =
                scope.eval_table(&e.value, RETENTION_FIELDS, "image.retention")
            else {
                return None;
            };
            let duration = |k: &str| {
                m.get(k)
                    .and_then(Value::as_interpolated)
                    .and_then(|d| crate::template::schema::parse_duration(&d))
            };
            let keep = match m.get("keep") {
                Some(Value::Num(n)) if *n >= 1.0 => Some(*n as u64),
                Some(v) => {
                    scope.error(
                        e.value.span.clone(),
                        format!(
                            "`image.retention.keep` must be at least 1, found {}",
                            v.to_masked_json()
                        ),
                        Some(
                            "channel targets are always kept; `keep` counts the newest versions"
                                .into(),
                        ),
                    );
                    None
                }
                None => None,
            };
            Some(Retention {
                keep,
                max_age: duration("max_age"),
                deprecate_after: duration("deprecate_after"),
            })
        });

        // [locals]: all of them, so errors in unused ones are found too.
        let mut locals = BTreeMap::new();
        if let Some(node) = section("locals") {
            if node.entries().is_none() {
                scope.error(node.span.clone(), "`locals` must be a table", None);
            }
            for e in node.entries().unwrap_or_default() {
                if let Some(v) = scope.lookup("local", &e.key, &e.key_span) {
                    locals.insert(e.key.clone(), v);
                }
            }
        }

        let sources = self.sources(&scope, schema, section("source"));
        let jobs = self.jobs(&scope, schema, &sources, section("build"), opts);

        diags.extend(scope.take_diagnostics());
        if !diags.is_empty() {
            return Err(diags);
        }
        let variables = decls
            .iter()
            .filter_map(|d| {
                Some(VariablePlan {
                    name: d.name.clone(),
                    ty: d.ty,
                    value: vars.get(&d.name)?.clone(),
                    description: d.description.clone(),
                })
            })
            .collect();
        use sha2::Digest as _;
        Ok(BuildPlan {
            template: file.path.clone(),
            template_digest: format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(file.text.as_bytes()))
            ),
            build_id: opts.build_id.clone(),
            image: ImagePlan {
                name: name.unwrap_or_default(),
                version: version.unwrap_or_default(),
                description,
                retention,
            },
            variables,
            secrets: secret_decls,
            secret_values,
            locals,
            jobs,
            vault,
        })
    }
}
