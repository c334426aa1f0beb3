//! Builders turn a source into a throw-away instance and the provisioned
//! instance into artifacts. Each source type (`null`, `oci`, `qemu`, `ami`)
//! is a peer behind [`Builder`]; [`Builders`] maps type names to them and
//! to the template fields each takes.
//!
//! Architecture invariant: a builder registers every resource it creates
//! with the job's undo stack *before* creating it, and never cleans up on
//! its own: the engine unwinds the stack.

pub mod ami;
pub mod cache;
pub mod null;
pub mod oci;
pub mod qemu;

use std::sync::Arc;

use async_trait::async_trait;

use crate::communicator::{CommError, Communicator};
use crate::job::{JobContext, Reap, Reapers, Resource, Undo, UndoHandle};
use crate::template::plan::JobPlan;
use crate::template::schema::Field;
use crate::template::TemplateSchema;
use crate::ui::ArtifactInfo;

/// What went wrong launching or snapshotting an instance.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    NotSupported(String),
    #[error("invalid source settings: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Comm(#[from] CommError),
    /// The leak scan found something that must not ship; nothing was pushed.
    #[error("leak scan: {0} (nothing was pushed)")]
    Leak(String),
    /// An untrusted input went past a size limit (a decompression bomb, a
    /// blob larger than its descriptor said); nothing of it was kept.
    #[error("{0}")]
    Limit(String),
}

impl BuildError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
        let what = what.into();
        move |source| BuildError::Io { what, source }
    }
}

/// A source's settings (`[source.TYPE.NAME]`, resolved) as the builder's
/// own typed struct.
pub(crate) fn source_settings<T: serde::de::DeserializeOwned>(
    job: &JobPlan,
) -> Result<T, BuildError> {
    let json = serde_json::Value::Object(
        job.source
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
    );
    serde_json::from_value(json).map_err(|e| BuildError::Config(e.to_string()))
}

/// A `Duration` setting (`30s`, `10m`) or `default` when unset.
#[cfg_attr(not(any(feature = "qemu", feature = "ami")), allow(dead_code))]
pub(crate) fn duration_or(v: &Option<String>, default: std::time::Duration) -> std::time::Duration {
    v.as_deref()
        .and_then(crate::template::schema::parse_duration)
        .unwrap_or(default)
}

/// Registers a resource with the job's undo stack (and journal) before it
/// is created: what every builder does first.
#[cfg_attr(not(any(feature = "qemu", feature = "ami")), allow(dead_code))]
pub(crate) async fn register(
    ctx: &JobContext,
    r: Resource,
    what: &str,
) -> Result<UndoHandle, BuildError> {
    ctx.undo
        .register(r, what)
        .await
        .map_err(BuildError::io("journal"))
}

/// [`register`] on an undo stack of its own (a test instance's).
pub(crate) async fn register_on(
    undo: &Undo,
    r: Resource,
    what: &str,
) -> Result<UndoHandle, BuildError> {
    undo.register(r, what)
        .await
        .map_err(BuildError::io("journal"))
}

/// One source type.
#[async_trait]
pub trait Builder: Send + Sync {
    /// Checks, before any job starts, that this job can run at all (the
    /// backend exists, its tools are installed). Nothing is created here.
    fn preflight(&self, _job: &JobPlan) -> Result<(), BuildError> {
        Ok(())
    }

    /// The base this job would build from, resolved the way its artifacts
    /// record it (`…@sha256:…`, an AMI id), without launching anything:
    /// `--skip-unchanged` fingerprints with it. `None`: no base to resolve
    /// (a builder that has one but does not say so is always rebuilt).
    async fn resolve_base(
        &self,
        _job: &JobPlan,
        _template_dir: &std::path::Path,
        _state_dir: &std::path::Path,
    ) -> Result<Option<String>, BuildError> {
        Ok(None)
    }

    /// Starts a throw-away instance from `ctx.plan.source`.
    async fn launch(&self, ctx: &JobContext) -> Result<Box<dyn Instance>, BuildError>;

    /// Whether [`Builder::launch_artifact`] can start its artifacts:
    /// preflight refuses `[[build.test]]` otherwise, before anything runs.
    fn can_test(&self) -> bool {
        false
    }

    /// Starts a fresh instance from an artifact this builder produced (or
    /// one named like it), for `[[build.test]]` and `kiln test`: never the
    /// build instance. Its resources go on `undo` — a stack of their own,
    /// journaled under the job, so the test instance can be kept alone
    /// (`--keep-on-failure`) and `kiln cleanup` reaps it after a crash.
    async fn launch_artifact(
        &self,
        _ctx: &JobContext,
        _undo: &Undo,
        artifact: &ArtifactInfo,
    ) -> Result<Box<dyn ArtifactInstance>, BuildError> {
        Err(BuildError::NotSupported(format!(
            "`[[build.test]]` on a `{}` artifact is not supported yet (OCI images, QEMU disks and AMIs only)",
            artifact.kind
        )))
    }
}

/// A fresh instance of an artifact, for its tests: looked at, never
/// snapshotted; removed by its undo stack.
pub trait ArtifactInstance: Send + Sync {
    /// How the tests reach the instance.
    fn communicator(&self) -> &dyn Communicator;

    /// The content digest of what was started (`sha256:…`), when the
    /// builder resolved it (a tag given to `kiln test`).
    fn digest(&self) -> Option<String> {
        None
    }
}

/// A running throw-away instance.
#[async_trait]
pub trait Instance: Send + Sync {
    /// How provisioners reach the instance.
    fn communicator(&self) -> &dyn Communicator;

    /// Turns the provisioned instance into artifacts. The instance itself
    /// is released afterwards by the undo stack, not here. An artifact
    /// that is distributed further (copies to other places, sharing) is
    /// only made here: what goes out waits for [`Instance::distribute`].
    async fn snapshot(&mut self, ctx: &JobContext) -> Result<Vec<ArtifactInfo>, BuildError>;

    /// Whether [`Instance::distribute`] has anything to do (the engine
    /// runs it as a step of its own then).
    fn distributes(&self) -> bool {
        false
    }

    /// After `snapshot` and the artifact's `[[build.test]]` passed: copies,
    /// shares and protects what `snapshot` made, and returns every
    /// artifact (those of `snapshot` first). Never reached when a test
    /// failed, so a failing artifact goes nowhere. The default distributes
    /// nothing: OCI images and disk files are complete after `snapshot`.
    async fn distribute(
        &mut self,
        _ctx: &JobContext,
        artifacts: Vec<ArtifactInfo>,
    ) -> Result<Vec<ArtifactInfo>, BuildError> {
        Ok(artifacts)
    }

    /// Keeps the instance for a person to enter (`--on-error=abort` after
    /// a failed provisioner): makes sure it outlives kiln, and returns the
    /// command that gives a shell in it. It stays journaled, with anything
    /// that command needs, for `kiln cleanup`.
    async fn keep_for_inspection(&mut self, ctx: &JobContext) -> Option<String> {
        way_in(self.communicator(), ctx).await
    }
}

/// The command that enters the instance `comm` reaches (its private
/// files stay journaled under the job); problems are told, not fatal.
pub async fn way_in(comm: &dyn Communicator, ctx: &JobContext) -> Option<String> {
    match crate::communicator::way_in::open(comm, ctx).await {
        Ok(way) => way.map(|w| w.command),
        Err(e) => {
            ctx.message(format!("no way into the kept instance: {e}"));
            None
        }
    }
}

/// A builder that exists in the template schema but cannot run: not built
/// yet, or left out of this binary by a cargo feature.
pub struct Unavailable {
    pub reason: String,
}

#[async_trait]
impl Builder for Unavailable {
    fn preflight(&self, _job: &JobPlan) -> Result<(), BuildError> {
        Err(BuildError::NotSupported(self.reason.clone()))
    }

    async fn launch(&self, _ctx: &JobContext) -> Result<Box<dyn Instance>, BuildError> {
        Err(BuildError::NotSupported(self.reason.clone()))
    }
}

/// The source types this binary knows, and the reapers of the resource
/// kinds their builders (and communicators) create.
#[derive(Clone, Default)]
pub struct Builders {
    entries: Vec<(&'static str, &'static [Field], Arc<dyn Builder>)>,
    reapers: Reapers,
}

impl Builders {
    /// kiln's own builders.
    pub fn standard() -> Builders {
        Builders::default()
            .with("null", null::FIELDS, Arc::new(null::NullBuilder))
            .with("oci", oci::FIELDS, oci::builder())
            .with("qemu", qemu::FIELDS, qemu::builder())
            .with("ami", ami::FIELDS, ami::builder())
            .reaping(oci::reaper())
            .reaping(ami::reaper())
    }

    /// Adds the owner of resource kinds a builder creates: the undo stack
    /// and `kiln cleanup` hand it those kinds.
    pub fn reaping(mut self, owner: Arc<dyn Reap>) -> Builders {
        self.reapers = self.reapers.with(owner);
        self
    }

    /// Every registered owner's reaper, for an undo stack or `kiln cleanup`.
    pub fn reapers(&self) -> Reapers {
        self.reapers.clone()
    }

    /// Adds (or replaces) a source type.
    pub fn with(
        mut self,
        ty: &'static str,
        fields: &'static [Field],
        builder: Arc<dyn Builder>,
    ) -> Builders {
        self.entries.retain(|(t, _, _)| *t != ty);
        self.entries.push((ty, fields, builder));
        self
    }

    pub fn get(&self, ty: &str) -> Option<Arc<dyn Builder>> {
        self.entries
            .iter()
            .find(|(t, _, _)| *t == ty)
            .map(|(_, _, b)| b.clone())
    }

    /// The template schema: these source types and every provisioner type.
    pub fn schema(&self) -> TemplateSchema {
        TemplateSchema {
            sources: self.entries.iter().map(|(t, f, _)| (*t, *f)).collect(),
            provisioners: crate::provisioner::SCHEMAS.to_vec(),
            tests: crate::imagetest::SCHEMAS.to_vec(),
            provisioner_checks: crate::provisioner::settings_problems,
            source_checks: source_settings_problems,
        }
    }
}

/// Each source type's checks of its settings beyond their types, for
/// `kiln validate` (`TemplateSchema::source_checks`).
fn source_settings_problems(
    ty: &str,
    settings: &std::collections::BTreeMap<String, crate::template::Value>,
) -> Vec<crate::template::schema::SettingProblem> {
    match ty {
        "qemu" => qemu::settings_problems(settings),
        _ => vec![],
    }
}

/// The reason a feature-gated builder is unavailable.
#[cfg_attr(
    all(feature = "oci", feature = "qemu", feature = "ami"),
    allow(dead_code)
)]
pub(crate) fn unavailable(ty: &str, feature_enabled: bool, issue: &str) -> Arc<dyn Builder> {
    let reason = if feature_enabled {
        format!("the `{ty}` builder is not supported yet ({issue}); this version of kiln can validate and inspect `[source.{ty}.*]` but not build it")
    } else {
        format!("this kiln was compiled without the `{ty}` cargo feature; rebuild with `--features {ty}`")
    };
    Arc::new(Unavailable { reason })
}

#[cfg(test)]
mod tests {
    use crate::template::schema::{templates_doc, undocumented};

    /// Every field a source or provisioner accepts is named in
    /// docs/templates.md (as `` `key` `` or `key =`).
    #[test]
    fn every_source_and_provisioner_field_is_documented() {
        let docs = templates_doc();
        let schema = super::Builders::standard().schema();
        let mut missing = vec![];
        let all = schema.sources.iter().chain(&schema.provisioners);
        for (ty, fields) in all.chain(&schema.tests) {
            missing.extend(undocumented(&format!("{ty}: "), fields, &docs));
        }
        assert!(
            missing.is_empty(),
            "fields missing from docs/templates.md:\n{}",
            missing.join("\n")
        );
    }
}
