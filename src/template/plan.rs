//! The resolved plan: [`BuildPlan`] and its parts (jobs, provisioners,
//! variables, secrets, `[image]`, `[vault]`), the only thing the engine
//! ever sees. `resolve` makes it from a [`super::resolve::Template`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::diagnostic::{Diagnostics, SourceFile, Span};
use super::value::Value;
use super::variables::{VarInputs, VarType};

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

/// One `[[build.test]]` of a job, resolved: the same shape as a
/// provisioner (`kind` is the test type: `file`, `command`, `shell`, …),
/// run against a fresh instance of each artifact after `snapshot`.
pub type TestPlan = ProvisionerPlan;

/// One build × source: what the engine runs.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub build: String,
    pub source_type: String,
    pub source_name: String,
    pub source: BTreeMap<String, Value>,
    pub provisioners: Vec<ProvisionerPlan>,
    /// `[[build.test]]`: checks of the produced artifact.
    pub tests: Vec<TestPlan>,
    pub sign: Option<BTreeMap<String, Value>>,
    pub register: Option<BTreeMap<String, Value>>,
    /// `[build.sbom] enabled`: SPDX and CycloneDX documents of each
    /// artifact, read from a fresh instance of it after `snapshot`.
    pub sbom: bool,
    /// `[build.rebuild] when`; empty: the default, `["inputs", "base"]`.
    pub rebuild: Vec<RebuildTrigger>,
    /// `[build.policy]`: the Rego policy that gates its channels.
    pub policy: Option<PolicyPlan>,
}

/// `[build.policy]`, resolved: Rego files (absolute) and the package
/// evaluated. Parsed by the `policy` module (`kiln validate`, preflight).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyPlan {
    pub files: Vec<std::path::PathBuf>,
    /// As written (`data.kiln.promote` when not given).
    pub entrypoint: String,
    /// Where `[build.policy]` is declared (`file:line:col`).
    pub at: String,
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
                .chain(j.tests.iter().map(|p| &p.config))
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
