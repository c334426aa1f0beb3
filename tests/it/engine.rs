//! The build engine driven through a test-only builder (`[source.test.*]`).
//! It is a test double by necessity: it stands in for a backend to observe
//! the engine's ordering, cancellation and parallelism. The resources it
//! creates are real directories, journaled like any builder's.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use kiln::builder::{BuildError, Builder, Builders, Instance};
use kiln::communicator::local::LocalCommunicator;
use kiln::communicator::Communicator;
use kiln::engine::{self, OnError, RunOptions};
use kiln::job::{JobContext, Journal, Resource};
use kiln::template::schema::{Field, Kind};
use kiln::template::{BuildPlan, PlanOptions, Template};
use kiln::ui::{ArtifactInfo, Event, EventBus, JobStatus, JobSummary, Redactor, Sink};
use tokio_util::sync::CancellationToken;

const FIELDS: &[Field] = &[
    Field::opt("resources", Kind::Int),
    Field::opt("fail_at", Kind::Enum(&["launch", "snapshot", "never"])),
    Field::opt("sleep", Kind::Duration),
];

type Log = Arc<Mutex<Vec<String>>>;

struct TestBuilder {
    log: Log,
}

struct TestInstance {
    comm: LocalCommunicator,
    fail: bool,
    job: String,
    log: Log,
}

fn setting(ctx: &JobContext, key: &str) -> Option<String> {
    ctx.plan.source.get(key).and_then(|v| v.as_interpolated())
}

#[async_trait]
impl Builder for TestBuilder {
    async fn launch(&self, ctx: &JobContext) -> Result<Box<dyn Instance>, BuildError> {
        let n: usize = setting(ctx, "resources")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let root = ctx.state_dir.join("test").join(&ctx.name);
        self.log
            .lock()
            .unwrap()
            .push(format!("start {}", ctx.plan.source_name));
        for i in 0..n {
            let dir = root.join(format!("r{i}"));
            let log = self.log.clone();
            let entry = format!("undo {} {i}", ctx.plan.source_name);
            ctx.undo
                .register_with(
                    Resource::TempDir { path: dir.clone() },
                    &format!("r{i}"),
                    Box::new(move || {
                        Box::pin(async move {
                            log.lock().unwrap().push(entry);
                            Ok(())
                        })
                    }),
                )
                .await
                .map_err(BuildError::io("journal"))?;
            std::fs::create_dir_all(&dir).map_err(BuildError::io("create"))?;
        }
        if let Some(d) =
            setting(ctx, "sleep").and_then(|s| kiln::template::schema::parse_duration(&s))
        {
            tokio::time::sleep(d).await;
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("end {}", ctx.plan.source_name));
        let fail_at = setting(ctx, "fail_at").unwrap_or_default();
        if fail_at == "launch" {
            return Err(BuildError::Config("told to fail at launch".into()));
        }
        let comm = LocalCommunicator::new(root.join("r0"), root.join("scripts"), ctx.undo.clone());
        Ok(Box::new(TestInstance {
            comm,
            fail: fail_at == "snapshot",
            job: ctx.name.clone(),
            log: self.log.clone(),
        }))
    }
}

#[async_trait]
impl Instance for TestInstance {
    fn communicator(&self) -> &dyn Communicator {
        &self.comm
    }

    async fn snapshot(&mut self, _ctx: &JobContext) -> Result<Vec<ArtifactInfo>, BuildError> {
        self.log.lock().unwrap().push("snapshot".into());
        if self.fail {
            return Err(BuildError::Config("told to fail at snapshot".into()));
        }
        Ok(vec![ArtifactInfo {
            base: None,
            endpoint: None,
            manifest: None,
            hardening: vec![],
            runs: vec![],
            tests: None,
            identity: None,
            sbom: None,
            signatures: vec![],
            kind: "test".into(),
            id: self.job.clone(),
            digest: None,
        }])
    }
}

struct Collect(Arc<Mutex<Vec<Event>>>);
impl Sink for Collect {
    fn handle(&mut self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

struct Run {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    log: Log,
    events: Arc<Mutex<Vec<Event>>>,
    builders: Builders,
    plan: BuildPlan,
}

fn setup(sources: &str, build_sources: &str, provisioners: &str) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!("[image]\nname = \"t\"\nversion = \"1.0.0\"\n{sources}\n[[build]]\nname = \"b\"\nsources = [{build_sources}]\n{provisioners}\n");
    let path = tmp.path().join("t.toml");
    std::fs::write(&path, &text).unwrap();
    let log: Log = Default::default();
    let builders =
        Builders::standard().with("test", FIELDS, Arc::new(TestBuilder { log: log.clone() }));
    let plan = Template::read(&path)
        .unwrap()
        .plan(
            &builders.schema(),
            &PlanOptions {
                build_id: "build-1".into(),
                ..Default::default()
            },
            &kiln::secrets::fetch,
        )
        .unwrap_or_else(|d| panic!("{d}"));
    Run {
        state: tmp.path().join("state"),
        _tmp: tmp,
        log,
        events: Default::default(),
        builders,
        plan,
    }
}

impl Run {
    async fn go(
        &self,
        parallel: usize,
        fail_fast: bool,
        cancel: CancellationToken,
    ) -> Vec<JobSummary> {
        let bus = EventBus::new(
            Arc::new(RwLock::new(Redactor::default())),
            vec![Box::new(Collect(self.events.clone()))],
        );
        let opts = RunOptions {
            parallel,
            on_error: OnError::Cleanup,
            keep_on_failure: false,
            fail_fast,
            state_dir: self.state.clone(),
            interactive: false,
            catalog: None,
            override_policy: None,
        };
        engine::run(&self.plan, &self.builders, &opts, bus, cancel).await
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn journal_is_empty(&self) -> bool {
        Journal::new(&self.state).entries().unwrap().is_empty()
    }

    fn dirs_left(&self) -> usize {
        walk(&self.state.join("test"))
    }
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| 1 + walk(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn undo_runs_in_reverse_on_failure() {
    let r = setup(
        "[source.test.a]\nresources = 3\nfail_at = \"snapshot\"\n",
        "\"test.a\"",
        "",
    );
    let out = r.go(1, true, CancellationToken::new()).await;
    assert_eq!(out[0].status, JobStatus::Failed);
    assert!(out[0]
        .error
        .as_deref()
        .unwrap()
        .contains("told to fail at snapshot"));
    let undo: Vec<String> = r
        .log()
        .into_iter()
        .filter(|l| l.starts_with("undo"))
        .collect();
    assert_eq!(undo, vec!["undo a 2", "undo a 1", "undo a 0"]);
    assert!(r.journal_is_empty());
    assert_eq!(
        r.dirs_left(),
        1,
        "only the job's parent folder remains, its resources are gone"
    );
}

#[tokio::test]
async fn undo_runs_on_success_and_artifacts_are_reported() {
    let r = setup(
        "[source.test.a]\nresources = 2\n",
        "\"test.a\"",
        "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo provisioned\"]\n",
    );
    let out = r.go(1, true, CancellationToken::new()).await;
    assert_eq!(out[0].status, JobStatus::Succeeded, "{:?}", out[0].error);
    assert_eq!(out[0].artifacts.len(), 1);
    let events = r.events.lock().unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Output { line, .. } if line == "provisioned")));
    let steps: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step, .. } => Some(step.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec!["launch", "provision 1 (shell)", "snapshot", "cleanup"]
    );
    assert!(r.journal_is_empty());
}

#[tokio::test]
async fn cancellation_undoes_everything_promptly() {
    let r = setup(
        "[source.test.a]\nresources = 2\nsleep = \"60s\"\n",
        "\"test.a\"",
        "",
    );
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let state = r.state.clone();
    let canceller = tokio::spawn(async move {
        // Cancel once the resources are journaled (i.e. exist).
        for _ in 0..200 {
            if Journal::new(&state).entries().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.cancel();
    });
    let out = tokio::time::timeout(Duration::from_secs(20), r.go(1, true, cancel))
        .await
        .expect("cancellation is prompt");
    canceller.await.unwrap();
    assert_eq!(out[0].status, JobStatus::Cancelled);
    let undo: Vec<String> = r
        .log()
        .into_iter()
        .filter(|l| l.starts_with("undo"))
        .collect();
    assert_eq!(undo, vec!["undo a 1", "undo a 0"]);
    assert!(r.journal_is_empty());
}

#[tokio::test]
async fn fail_fast_cancels_siblings_and_no_fail_fast_lets_them_finish() {
    let sources = "[source.test.bad]\nfail_at = \"launch\"\nsleep = \"100ms\"\n[source.test.slow]\nsleep = \"60s\"\n";
    let r = setup(sources, "\"test.bad\", \"test.slow\"", "");
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        r.go(2, true, CancellationToken::new()),
    )
    .await
    .expect("fail-fast is prompt");
    assert_eq!(out[0].status, JobStatus::Failed);
    assert_eq!(out[1].status, JobStatus::Cancelled);
    assert!(
        r.log().contains(&"undo slow 0".to_string()),
        "the cancelled sibling is cleaned up: {:?}",
        r.log()
    );
    assert!(r.journal_is_empty());

    let sources = "[source.test.bad]\nfail_at = \"launch\"\n[source.test.ok]\nsleep = \"300ms\"\n";
    let r = setup(sources, "\"test.bad\", \"test.ok\"", "");
    let out = r.go(2, false, CancellationToken::new()).await;
    assert_eq!(out[0].status, JobStatus::Failed);
    assert_eq!(out[1].status, JobStatus::Succeeded);
}

#[tokio::test]
async fn parallel_limits_concurrency() {
    let sources = "[source.test.a]\nsleep = \"200ms\"\n[source.test.b]\nsleep = \"200ms\"\n";
    let r = setup(sources, "\"test.a\", \"test.b\"", "");
    r.go(1, true, CancellationToken::new()).await;
    let seq: Vec<String> = r
        .log()
        .into_iter()
        .filter(|l| l.starts_with("start") || l.starts_with("end"))
        .collect();
    assert!(
        seq == ["start a", "end a", "start b", "end b"]
            || seq == ["start b", "end b", "start a", "end a"],
        "{seq:?}"
    );

    let r = setup(sources, "\"test.a\", \"test.b\"", "");
    r.go(2, true, CancellationToken::new()).await;
    let seq: Vec<String> = r
        .log()
        .into_iter()
        .filter(|l| l.starts_with("start") || l.starts_with("end"))
        .collect();
    assert!(
        seq[0].starts_with("start") && seq[1].starts_with("start"),
        "both run at once: {seq:?}"
    );
}

// Names the AMI builder's "not supported yet" settings: needs the `ami` feature.
#[cfg(feature = "ami")]
#[tokio::test]
async fn unsupported_features_fail_before_anything_starts() {
    let r = setup(
        // `s3_bucket` (file transfer through S3) is not built yet: refused
        // in preflight, before any call to AWS.
        "[source.test.a]\n[source.ami.x]\nregion = \"us-east-1\"\nfrom = \"ami-0123\"\ns3_bucket = \"b\"\n",
        "\"test.a\", \"ami.x\"",
        "",
    );
    let out = r.go(2, true, CancellationToken::new()).await;
    assert_eq!(out[1].status, JobStatus::Failed);
    assert!(
        out[1]
            .error
            .as_deref()
            .unwrap()
            .contains("not supported yet"),
        "{:?}",
        out[1].error
    );
    assert_eq!(out[0].status, JobStatus::Cancelled);
    assert!(r.log().is_empty(), "no job launched: {:?}", r.log());
}
