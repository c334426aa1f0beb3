//! The second stage: a fully resolved [`BuildPlan`], the only thing the
//! engine ever sees. Variables, secrets, locals and every `${…}` are
//! resolved here, each job's source and provisioners are checked against
//! their schemas, and every error in the template is collected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceFile, Span};
use super::eval::{JobRefs, Scope};
use super::node::{Node, NodeKind};
use super::schema::{Field, Kind, STR, STR_LIST};
use super::value::Value;
use super::variables::{self, VarInputs, VarType};

/// The source and provisioner types kiln knows, with their fields.
#[derive(Debug, Clone)]
pub struct TemplateSchema {
    pub sources: Vec<(&'static str, &'static [Field])>,
    pub provisioners: Vec<(&'static str, &'static [Field])>,
    /// The provisioners' own checks of their settings beyond the types.
    pub provisioner_checks: ProvisionerCheck,
}

/// Problems with a provisioner's settings (its type, its resolved table)
/// beyond their types, as `(key, message)`, reported as input errors.
pub type ProvisionerCheck = fn(&str, &BTreeMap<String, Value>) -> Vec<(&'static str, String)>;

impl Default for TemplateSchema {
    fn default() -> TemplateSchema {
        TemplateSchema {
            sources: vec![],
            provisioners: vec![],
            provisioner_checks: |_, _| vec![],
        }
    }
}

/// Where a secret's value comes from (`[secrets.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// `vault = "mount/path#key"`, optionally a KV v2 `version`.
    Vault {
        path: String,
        key: String,
        version: Option<u64>,
    },
    /// `env = "NAME"`.
    Env(String),
    /// `file = "/run/secrets/x"`.
    File(PathBuf),
}

/// A declared secret.
#[derive(Debug, Clone)]
pub struct SecretDecl {
    pub name: String,
    pub source: SecretSource,
    /// Where it is declared, for errors.
    pub file: Arc<SourceFile>,
    pub span: Span,
}

/// Secret values by name.
pub type SecretValues = BTreeMap<String, Value>;

/// `[vault]`: where the template's Vault secrets come from. The `VAULT_*`
/// environment variables override each setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VaultSettings {
    pub address: Option<String>,
    pub namespace: Option<String>,
    /// `token`, `approle` or `jwt`.
    pub auth: Option<String>,
    /// The auth method's mount (`approle`, `jwt` by default).
    pub mount: Option<String>,
    /// The JWT role.
    pub role: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// What a secret fetcher is asked for.
pub struct SecretRequest<'a> {
    pub decls: &'a [SecretDecl],
    pub vault: &'a VaultSettings,
}

/// Turns secret declarations into values (or errors naming the secret).
pub type FetchSecrets = dyn Fn(&SecretRequest) -> Result<SecretValues, Diagnostics>;

/// Options that shape a plan besides the template itself.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub vars: VarInputs,
    /// `--only`: job names (`type.name` or `build.type.name`).
    pub only: Vec<String>,
    /// `--except`.
    pub except: Vec<String>,
    /// The id of this build run (`build.id`).
    pub build_id: String,
}

/// Resolved `[image]`.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    /// `[image.retention]`: what `kiln prune` keeps.
    pub retention: Option<Retention>,
}

/// `[image.retention]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Retention {
    /// Keep this many newest versions.
    pub keep: Option<u64>,
    /// Delete versions older than this (beyond `keep`).
    #[serde(with = "humantime_opt")]
    pub max_age: Option<std::time::Duration>,
    /// Deprecate versions older than this (beyond `keep`).
    #[serde(with = "humantime_opt")]
    pub deprecate_after: Option<std::time::Duration>,
}

mod humantime_opt {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// One reason `[build.rebuild] when` may trigger a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebuildTrigger {
    /// The template, variables, provisioner files or kiln changed.
    Inputs,
    /// The base resolves to something new (a new digest behind the tag).
    Base,
    /// The newest active version is older than this.
    Age(#[serde(with = "humantime_secs")] std::time::Duration),
    /// The newest version's package manager has pending security updates.
    SecurityUpdates,
}

mod humantime_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl RebuildTrigger {
    /// Parses one `when` entry: `inputs`, `base`, `age:7d`, `security-updates`.
    pub fn parse(s: &str) -> Result<RebuildTrigger, String> {
        match s {
            "inputs" => Ok(RebuildTrigger::Inputs),
            "base" => Ok(RebuildTrigger::Base),
            "security-updates" => Ok(RebuildTrigger::SecurityUpdates),
            _ => match s.strip_prefix("age:") {
                Some(d) => super::schema::parse_duration(d)
                    .map(RebuildTrigger::Age)
                    .ok_or_else(|| format!("`{d}` is not a duration (such as `7d` or `12h`)")),
                None => Err(format!(
                    "unknown rebuild trigger `{s}`: expected `inputs`, `base`, `age:DURATION` or `security-updates`"
                )),
            },
        }
    }
}

/// A resolved variable.
#[derive(Debug, Clone)]
pub struct VariablePlan {
    pub name: String,
    pub ty: VarType,
    pub value: Value,
    pub description: Option<String>,
}

/// One provisioner of a job, resolved.
#[derive(Debug, Clone)]
pub struct ProvisionerPlan {
    /// `shell`, `file`, `breakpoint`, `hardening`.
    pub kind: String,
    /// 1-based position in the build's provisioner list.
    pub index: usize,
    /// Its settings without `type`, `only` and `except`.
    pub config: BTreeMap<String, Value>,
    /// Where it is declared (`file:line:col` of its `type`), for errors.
    pub at: String,
    /// Where each `inline` command is written (`file:line:col`).
    pub inline_at: Vec<String>,
}

/// One build × source: what the engine runs.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub build: String,
    pub source_type: String,
    pub source_name: String,
    pub source: BTreeMap<String, Value>,
    pub provisioners: Vec<ProvisionerPlan>,
    pub sign: Option<BTreeMap<String, Value>>,
    pub register: Option<BTreeMap<String, Value>>,
    /// `[build.rebuild] when`; empty: the default, `["inputs", "base"]`.
    pub rebuild: Vec<RebuildTrigger>,
}

impl JobPlan {
    /// `build.type.name`, as shown in logs and matched by `--only`.
    pub fn name(&self) -> String {
        format!("{}.{}.{}", self.build, self.source_type, self.source_name)
    }
}

/// Everything a build needs, resolved.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub template: PathBuf,
    /// `sha256:` of the template's bytes.
    pub template_digest: String,
    pub build_id: String,
    pub image: ImagePlan,
    pub variables: Vec<VariablePlan>,
    pub secrets: Vec<SecretDecl>,
    pub secret_values: BTreeMap<String, Value>,
    pub locals: BTreeMap<String, Value>,
    pub jobs: Vec<JobPlan>,
    /// `[vault]` (for secrets and transit signing keys).
    pub vault: VaultSettings,
}

impl BuildPlan {
    /// The template's folder, absolute: relative paths resolve against it.
    pub fn template_dir(&self) -> PathBuf {
        let dir = match self.template.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// Every sensitive string in the plan: secret values, sensitive
    /// variables and everything derived from them. The redactor's input.
    pub fn sensitive_strings(&self) -> Vec<String> {
        let mut out = vec![];
        let values = self
            .secret_values
            .values()
            .chain(self.variables.iter().map(|v| &v.value))
            .chain(self.locals.values());
        for v in values {
            v.sensitive_strings(&mut out);
        }
        for j in &self.jobs {
            let maps = std::iter::once(&j.source)
                .chain(j.provisioners.iter().map(|p| &p.config))
                .chain(j.sign.iter())
                .chain(j.register.iter());
            for m in maps {
                for v in m.values() {
                    v.sensitive_strings(&mut out);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

const TOP_KEYS: &[&str] = &[
    "image",
    "variables",
    "secrets",
    "vault",
    "locals",
    "source",
    "build",
];
const VAULT_FIELDS: &[Field] = &[
    Field::opt("address", Kind::Str),
    Field::opt("namespace", Kind::Str),
    Field::opt("auth", Kind::Enum(&["token", "approle", "jwt"])),
    Field::opt("mount", Kind::Str),
    Field::opt("role", Kind::Str),
    Field::opt("ca_cert", Kind::Path),
];
const IMAGE_FIELDS: &[Field] = &[
    Field::req("name", Kind::Str),
    Field::req("version", Kind::Str),
    Field::opt("description", Kind::Str),
    Field::opt("retention", Kind::Table(RETENTION_FIELDS)),
];
const RETENTION_FIELDS: &[Field] = &[
    Field::opt("keep", Kind::Int),
    Field::opt("max_age", Kind::Duration),
    Field::opt("deprecate_after", Kind::Duration),
];
const REBUILD_FIELDS: &[Field] = &[Field::opt("when", STR_LIST)];
const SECRET_FIELDS: &[Field] = &[
    Field::opt("vault", Kind::Str),
    Field::opt("version", Kind::Int),
    Field::opt("env", Kind::Str),
    Field::opt("file", Kind::Path),
    Field::opt("description", Kind::Str),
];
const SIGN_FIELDS: &[Field] = &[Field::req("key", Kind::Str)];
const REGISTER_FIELDS: &[Field] = &[Field::opt("channels", STR_LIST)];
const BUILD_KEYS: &[&str] = &[
    "name",
    "description",
    "sources",
    "provisioner",
    "sign",
    "register",
    "rebuild",
];
const PROVISIONER_COMMON: &[&str] = &["type", "only", "except"];

/// A template read from disk with its syntax already checked.
pub struct Template {
    pub file: Arc<SourceFile>,
    pub(super) root: Option<Node>,
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
        let root = super::node::parse_document(&file, &mut syntax);
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
            if !super::schema::is_valid_name(n) {
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
                    .and_then(|d| super::schema::parse_duration(&d))
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

    fn vault_settings(&self, scope: &Scope, node: Option<&Node>) -> VaultSettings {
        let Some(node) = node else {
            return VaultSettings::default();
        };
        let Some(Value::Map(m)) = scope.eval_table(node, VAULT_FIELDS, "vault") else {
            return VaultSettings::default();
        };
        let text = |k: &str| m.get(k).and_then(Value::as_interpolated);
        VaultSettings {
            address: text("address"),
            namespace: text("namespace"),
            auth: text("auth"),
            mount: text("mount"),
            role: text("role"),
            ca_cert: text("ca_cert").map(PathBuf::from),
        }
    }

    fn secret_decls(&self, scope: &Scope, node: Option<&Node>) -> Vec<SecretDecl> {
        let mut out = vec![];
        let Some(node) = node else { return out };
        for e in node.entries().unwrap_or_default() {
            let ctx = format!("secrets.{}", e.key);
            let Some(Value::Map(m)) = scope.eval_table(&e.value, SECRET_FIELDS, &ctx) else {
                out.push(self.invalid_secret(e));
                continue;
            };
            let text = |k: &str| m.get(k).and_then(Value::as_interpolated);
            let given: Vec<&str> = ["vault", "env", "file"]
                .into_iter()
                .filter(|k| m.contains_key(*k))
                .collect();
            if given.len() != 1 {
                scope.error(
                    e.key_span.clone(),
                    format!("secret `{}` needs exactly one source, found {}", e.key, if given.is_empty() { "none".to_string() } else { given.join(" and ") }),
                    Some("set one of `vault = \"mount/path#key\"`, `env = \"NAME\"` or `file = \"/run/secrets/x\"`".into()),
                );
                out.push(self.invalid_secret(e));
                continue;
            }
            let source = match given[0] {
                "vault" => {
                    let spec = text("vault").unwrap_or_default();
                    match spec.split_once('#') {
                        Some((path, key))
                            if !path.is_empty() && !key.is_empty() && path.contains('/') =>
                        {
                            SecretSource::Vault {
                                path: path.to_string(),
                                key: key.to_string(),
                                version: m.get("version").and_then(|v| match v {
                                    Value::Num(n) => Some(*n as u64),
                                    _ => None,
                                }),
                            }
                        }
                        _ => {
                            let span = e
                                .value
                                .get("vault")
                                .map(|v| v.value.span.clone())
                                .unwrap_or(e.key_span.clone());
                            scope.error(
                                span,
                                format!("`vault` must be `mount/path#key`, found `{spec}`"),
                                Some("for example `secret/data/ci/db#password`".into()),
                            );
                            // Still declared: its uses are not also "unknown".
                            out.push(self.invalid_secret(e));
                            continue;
                        }
                    }
                }
                "env" => SecretSource::Env(text("env").unwrap_or_default()),
                _ => SecretSource::File(PathBuf::from(text("file").unwrap_or_default())),
            };
            if m.contains_key("version") && !matches!(source, SecretSource::Vault { .. }) {
                scope.error(
                    e.key_span.clone(),
                    format!(
                        "secret `{}`: `version` applies only to `vault` secrets",
                        e.key
                    ),
                    None,
                );
            }
            out.push(SecretDecl {
                name: e.key.clone(),
                source,
                file: self.file.clone(),
                span: e.key_span.clone(),
            });
        }
        out
    }

    /// A secret whose declaration has an error (reported already): still
    /// declared, so that its uses are not also reported as unknown. The
    /// plan never fetches it (a template with errors has no plan).
    fn invalid_secret(&self, e: &super::node::Entry) -> SecretDecl {
        SecretDecl {
            name: e.key.clone(),
            source: SecretSource::Env(String::new()),
            file: self.file.clone(),
            span: e.key_span.clone(),
        }
    }

    /// `[source.TYPE.NAME]` tables, checked for known types.
    fn sources<'n>(
        &self,
        scope: &Scope,
        schema: &TemplateSchema,
        node: Option<&'n Node>,
    ) -> Vec<SourceDecl<'n>> {
        let mut out = vec![];
        let Some(node) = node else { return out };
        let types = || schema.sources.iter().map(|(t, _)| *t);
        for t in node.entries().unwrap_or_default() {
            let Some((_, fields)) = schema.sources.iter().find(|(name, _)| *name == t.key) else {
                scope.error(
                    t.key_span.clone(),
                    format!("unknown source type `{}`", t.key),
                    did_you_mean(&t.key, types()).or(Some(format!(
                        "source types: {}",
                        types().collect::<Vec<_>>().join(", ")
                    ))),
                );
                continue;
            };
            let Some(named) = t.value.entries() else {
                scope.error(
                    t.value.span.clone(),
                    format!("write sources as `[source.{}.NAME]` tables", t.key),
                    None,
                );
                continue;
            };
            for n in named {
                if n.value.entries().is_none() {
                    scope.error(
                        n.value.span.clone(),
                        format!("`source.{}.{}` must be a table", t.key, n.key),
                        None,
                    );
                    continue;
                }
                out.push(SourceDecl {
                    ty: t.key.clone(),
                    name: n.key.clone(),
                    span: n.key_span.clone(),
                    node: &n.value,
                    fields,
                });
            }
        }
        out
    }

    fn jobs(
        &self,
        scope: &Scope,
        schema: &TemplateSchema,
        sources: &[SourceDecl],
        node: Option<&Node>,
        opts: &PlanOptions,
    ) -> Vec<JobPlan> {
        let mut jobs = vec![];
        let source_names: Vec<String> = sources
            .iter()
            .map(|s| format!("{}.{}", s.ty, s.name))
            .collect();
        let builds: Vec<&Node> = match node.map(|n| &n.kind) {
            None => {
                scope.error(
                    0..0,
                    "the template has no `[[build]]`",
                    Some("add `[[build]]` with `sources = [\"TYPE.NAME\"]`".into()),
                );
                vec![]
            }
            Some(NodeKind::List(items)) => items.iter().collect(),
            Some(_) => {
                scope.error(
                    node.map(|n| n.span.clone()).unwrap_or(0..0),
                    "`build` must be an array of tables",
                    Some("write `[[build]]`, with two brackets".into()),
                );
                vec![]
            }
        };
        let mut used = vec![false; sources.len()];
        let mut build_names: Vec<String> = vec![];
        for (i, b) in builds.iter().enumerate() {
            for e in b.entries().unwrap_or_default() {
                if !BUILD_KEYS.contains(&e.key.as_str()) {
                    scope.unknown_key(
                        e.key_span.clone(),
                        &e.key,
                        "build",
                        BUILD_KEYS.iter().copied(),
                    );
                }
            }
            let bname = match b.get("name") {
                Some(e) => scope
                    .eval_node(&e.value, &STR, false, "name")
                    .and_then(|v| v.as_interpolated())
                    .unwrap_or_default(),
                None => {
                    if builds.len() == 1 {
                        "build".into()
                    } else {
                        format!("build-{}", i + 1)
                    }
                }
            };
            if build_names.contains(&bname) {
                scope.error(
                    b.get("name")
                        .map(|e| e.value.span.clone())
                        .unwrap_or(b.span.clone()),
                    format!("two builds are named `{bname}`"),
                    Some("build names must be unique".into()),
                );
            }
            build_names.push(bname.clone());
            // The build's sources.
            let mut picked = vec![];
            match b.get("sources") {
                // A misspelled `sources` is reported once, as unknown.
                None if !super::eval::missing(b.entries().unwrap_or_default(), "sources") => {}
                None => scope.error(
                    b.span.clone(),
                    format!("build `{bname}` is missing the required key `sources`"),
                    Some("add `sources = [\"TYPE.NAME\"]`".into()),
                ),
                Some(e) => match &e.value.kind {
                    NodeKind::List(items) => {
                        for item in items {
                            let Some(text) = item.as_literal_str() else {
                                scope.error(item.span.clone(), "`sources` entries must be plain strings such as \"oci.debian\"", None);
                                continue;
                            };
                            let text = text.strip_prefix("source.").unwrap_or(&text).to_string();
                            match source_names.iter().position(|n| *n == text) {
                                Some(idx) => {
                                    used[idx] = true;
                                    picked.push(idx);
                                }
                                None => scope.error(
                                    item.span.clone(),
                                    format!("build `{bname}` uses undeclared source `{text}`"),
                                    did_you_mean(&text, source_names.iter().map(String::as_str))
                                        .or(Some(format!("declare it as `[source.{text}]`"))),
                                ),
                            }
                        }
                    }
                    _ => scope.error(
                        e.value.span.clone(),
                        format!(
                            "`sources` must be an array of strings, found {}",
                            e.value.type_name()
                        ),
                        None,
                    ),
                },
            }
            let provisioners: Vec<&Node> = match b.get("provisioner").map(|e| &e.value) {
                None => vec![],
                Some(Node {
                    kind: NodeKind::List(items),
                    ..
                }) => items.iter().collect(),
                Some(n) => {
                    scope.error(
                        n.span.clone(),
                        "`provisioner` must be an array of tables",
                        Some("write `[[build.provisioner]]`".into()),
                    );
                    vec![]
                }
            };
            for idx in picked {
                let s = &sources[idx];
                let job_scope_refs = JobRefs {
                    build_name: bname.clone(),
                    source_type: s.ty.clone(),
                    source_name: s.name.clone(),
                };
                if let Some(job) = self.job(
                    scope,
                    schema,
                    s,
                    job_scope_refs,
                    b,
                    &provisioners,
                    &source_names,
                ) {
                    jobs.push(job);
                }
            }
        }
        // Sources no build uses are still checked.
        for (s, used) in sources.iter().zip(used) {
            if !used {
                scope.with_job(
                    JobRefs {
                        build_name: String::new(),
                        source_type: s.ty.clone(),
                        source_name: s.name.clone(),
                    },
                    |sc| {
                        sc.eval_table(s.node, s.fields, &format!("source.{}.{}", s.ty, s.name));
                    },
                );
            }
        }
        self.select(scope, jobs, opts)
    }

    #[allow(clippy::too_many_arguments)]
    fn job(
        &self,
        scope: &Scope,
        schema: &TemplateSchema,
        s: &SourceDecl,
        refs: JobRefs,
        build: &Node,
        provisioners: &[&Node],
        source_names: &[String],
    ) -> Option<JobPlan> {
        let bname = refs.build_name.clone();
        let job_source = format!("{}.{}", s.ty, s.name);
        scope.with_job(refs, |sc| {
            let source = sc.eval_table(s.node, s.fields, &format!("source.{}.{}", s.ty, s.name));
            let mut plans = vec![];
            let mut ok = true;
            for (i, p) in provisioners.iter().enumerate() {
                match self.provisioner(sc, schema, p, i + 1, &job_source, source_names) {
                    Some(Some(plan)) => plans.push(plan),
                    Some(None) => {}
                    None => ok = false,
                }
            }
            let sub =
                |key: &str, fields: &'static [Field]| -> Option<Option<BTreeMap<String, Value>>> {
                    match build.get(key) {
                        None => Some(None),
                        Some(e) => match sc.eval_table(&e.value, fields, &format!("build.{key}")) {
                            Some(Value::Map(m)) => Some(Some(m)),
                            _ => None,
                        },
                    }
                };
            let sign = sub("sign", SIGN_FIELDS);
            let register = sub("register", REGISTER_FIELDS);
            if let Some(Some(r)) = &register {
                if let Some(Value::List(channels)) = r.get("channels") {
                    let span = build
                        .get("register")
                        .and_then(|r| r.value.get("channels"))
                        .map(|c| c.value.span.clone())
                        .unwrap_or(0..0);
                    for ch in channels.iter().filter_map(Value::as_interpolated) {
                        if !super::schema::is_valid_name(&ch) {
                            sc.error(
                                span.clone(),
                                format!("`build.register.channels`: `{ch}` is not a valid channel name"),
                                Some("letters, digits, `-`, `_`, `.`, starting with a letter or digit: a channel becomes an image tag".into()),
                            );
                        }
                    }
                }
            }
            let rebuild = sub("rebuild", REBUILD_FIELDS).map(|r| {
                let when = r.and_then(|mut m| m.remove("when"));
                let Some(Value::List(items)) = when else {
                    return vec![];
                };
                let span = build
                    .get("rebuild")
                    .and_then(|r| r.value.get("when"))
                    .map(|w| w.value.span.clone())
                    .unwrap_or(0..0);
                items
                    .iter()
                    .filter_map(|v| {
                        let text = v.as_interpolated()?;
                        RebuildTrigger::parse(&text)
                            .map_err(|msg| {
                                sc.error(span.clone(), format!("`build.rebuild.when`: {msg}"), None)
                            })
                            .ok()
                    })
                    .collect()
            });
            let Some(Value::Map(source)) = source else {
                return None;
            };
            if !ok {
                return None;
            }
            Some(JobPlan {
                build: bname,
                source_type: s.ty.clone(),
                source_name: s.name.clone(),
                source,
                provisioners: plans,
                sign: sign?,
                register: register?,
                rebuild: rebuild?,
            })
        })
    }

    /// `Some(None)` when the provisioner does not apply to this source;
    /// `None` after an error.
    fn provisioner(
        &self,
        sc: &Scope,
        schema: &TemplateSchema,
        p: &Node,
        index: usize,
        job_source: &str,
        source_names: &[String],
    ) -> Option<Option<ProvisionerPlan>> {
        let ctx = format!("build.provisioner[{index}]");
        let Some(entries) = p.entries() else {
            sc.error(p.span.clone(), format!("`{ctx}` must be a table"), None);
            return None;
        };
        let kinds = || schema.provisioners.iter().map(|(k, _)| *k);
        let Some(ty) = p.get("type") else {
            sc.error(
                p.span.clone(),
                format!("`{ctx}` is missing the required key `type`"),
                Some(format!(
                    "provisioner types: {}",
                    kinds().collect::<Vec<_>>().join(", ")
                )),
            );
            return None;
        };
        let Some(kind) = ty.value.as_literal_str() else {
            sc.error(ty.value.span.clone(), "`type` must be a plain string", None);
            return None;
        };
        let Some((_, fields)) = schema.provisioners.iter().find(|(k, _)| *k == kind) else {
            sc.error(
                ty.value.span.clone(),
                format!("unknown provisioner type `{kind}`"),
                did_you_mean(&kind, kinds()).or(Some(format!(
                    "provisioner types: {}",
                    kinds().collect::<Vec<_>>().join(", ")
                ))),
            );
            return None;
        };
        let ctx = format!("{ctx} ({kind})");
        // only / except select sources by `TYPE.NAME`.
        let mut applies = true;
        for key in ["only", "except"] {
            let Some(e) = p.get(key) else { continue };
            let Some(Value::List(items)) = sc.eval_node(&e.value, &STR_LIST, false, key) else {
                return None;
            };
            let names: Vec<String> = items
                .iter()
                .filter_map(Value::as_interpolated)
                .map(|s| s.strip_prefix("source.").unwrap_or(&s).to_string())
                .collect();
            for n in &names {
                if !source_names.contains(n) {
                    sc.error(
                        e.value.span.clone(),
                        format!("`{key}` names undeclared source `{n}`"),
                        did_you_mean(n, source_names.iter().map(String::as_str)),
                    );
                    return None;
                }
            }
            let hit = names.iter().any(|n| n == job_source);
            applies &= if key == "only" { hit } else { !hit };
        }
        // The remaining keys are the provisioner's own.
        let own: Vec<_> = entries
            .iter()
            .filter(|e| !PROVISIONER_COMMON.contains(&e.key.as_str()))
            .cloned()
            .collect();
        let own_node = Node {
            kind: NodeKind::Table(own),
            span: p.span.clone(),
        };
        let all_keys: Vec<&str> = fields
            .iter()
            .map(|f| f.name)
            .chain(PROVISIONER_COMMON.iter().copied())
            .collect();
        for e in own_node.entries().unwrap_or_default() {
            if !fields.iter().any(|f| f.name == e.key) {
                sc.unknown_key(e.key_span.clone(), &e.key, &ctx, all_keys.iter().copied());
            }
        }
        let known: Vec<_> = own_node
            .entries()
            .unwrap_or_default()
            .iter()
            .filter(|e| fields.iter().any(|f| f.name == e.key))
            .cloned()
            .collect();
        let known_node = Node {
            kind: NodeKind::Table(known),
            span: p.span.clone(),
        };
        let Some(Value::Map(config)) = sc.eval_table(&known_node, fields, &ctx) else {
            return None;
        };
        let problems = (schema.provisioner_checks)(&kind, &config);
        for (key, message) in &problems {
            let span = p.get(key).map_or(p.span.clone(), |e| e.key_span.clone());
            sc.error(span, format!("`{ctx}`: {message}"), None);
        }
        if !problems.is_empty() {
            return None;
        }
        let place = |span: &Span| {
            let (line, col) = self.file.line_col(span.start);
            format!("{}:{line}:{col}", self.file.name)
        };
        let inline_at = match p.get("inline").map(|e| &e.value.kind) {
            Some(NodeKind::List(items)) => items.iter().map(|i| place(&i.span)).collect(),
            _ => vec![],
        };
        Some(applies.then_some(ProvisionerPlan {
            kind,
            index,
            config,
            at: place(&ty.key_span),
            inline_at,
        }))
    }

    /// Applies `--only` / `--except`.
    fn select(&self, scope: &Scope, jobs: Vec<JobPlan>, opts: &PlanOptions) -> Vec<JobPlan> {
        let matches = |pat: &str, j: &JobPlan| {
            pat == j.name()
                || pat == format!("{}.{}", j.source_type, j.source_name)
                || pat == j.build
        };
        let mut ok = true;
        for (flag, pats) in [("--only", &opts.only), ("--except", &opts.except)] {
            for p in pats.iter() {
                if !jobs.iter().any(|j| matches(p, j)) {
                    ok = false;
                    let names: Vec<String> = jobs
                        .iter()
                        .flat_map(|j| [j.name(), format!("{}.{}", j.source_type, j.source_name)])
                        .collect();
                    let mut d = Diagnostic::new(format!("{flag} `{p}` matches no build"));
                    d = d.with_help(
                        did_you_mean(p, names.iter().map(String::as_str))
                            .unwrap_or_else(|| format!("builds: {}", names.join(", "))),
                    );
                    scope.push(d);
                }
            }
        }
        if !ok {
            return jobs;
        }
        jobs.into_iter()
            .filter(|j| opts.only.is_empty() || opts.only.iter().any(|p| matches(p, j)))
            .filter(|j| !opts.except.iter().any(|p| matches(p, j)))
            .collect()
    }
}

/// A `[source.TYPE.NAME]` table and the fields its type takes.
struct SourceDecl<'n> {
    ty: String,
    name: String,
    #[allow(dead_code)]
    span: Span,
    node: &'n Node,
    fields: &'static [Field],
}

fn table_map(node: Option<&Node>) -> BTreeMap<String, Node> {
    node.and_then(Node::entries)
        .unwrap_or_default()
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

/// Reports unknown and missing keys of a table without evaluating it.
fn check_keys(scope: &Scope, node: &Node, fields: &[Field], ctx: &str) {
    let Some(entries) = node.entries() else {
        scope.error(node.span.clone(), format!("`{ctx}` must be a table"), None);
        return;
    };
    for e in entries {
        if !fields.iter().any(|f| f.name == e.key) {
            scope.unknown_key(
                e.key_span.clone(),
                &e.key,
                ctx,
                fields.iter().map(|f| f.name),
            );
        }
    }
    for f in fields.iter().filter(|f| f.required) {
        if super::eval::missing(entries, f.name) {
            scope.error(
                node.span.clone(),
                format!("`{ctx}` is missing the required key `{}`", f.name),
                None,
            );
        }
    }
}
