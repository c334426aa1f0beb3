//! What kiln tells people and machines: structured [`Event`]s, the
//! [`EventBus`] that redacts each event once and hands it to every
//! [`Sink`] (human progress, JSON lines, log file), and the tracing setup.
//!
//! Architecture invariant: nothing writes build output except through the
//! bus, and the bus redacts before any sink sees an event.

pub mod redact;
pub mod sinks;

use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

pub use redact::Redactor;

/// Which stream a line of provisioner output came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Succeeded,
    Failed,
    Cancelled,
}

/// An artifact a job produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArtifactInfo {
    /// `oci`, `qcow2`, `raw`, `ami`, …
    pub kind: String,
    /// Reference, path or id.
    pub id: String,
    pub digest: Option<String>,
    /// What it was built from, resolved (`…@sha256:…`, an AMI id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The AWS-compatible endpoint an AMI lives behind, when not AWS's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Signatures made for it (e.g. the cosign `.sig` reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
    /// The build manifest written for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Compliance reports of the job's hardening provisioners: written to
    /// the manifest and the provenance, not into events (they are large).
    #[serde(skip)]
    pub hardening: Vec<serde_json::Value>,
    /// How each provisioner of the job ran (index, start, end, duration,
    /// status): written to the build manifest, not into events.
    #[serde(skip)]
    pub runs: Vec<serde_json::Value>,
    /// The `[[build.test]]` report of a fresh instance of it
    /// (`imagetest::TestReport`), for the manifest and the test
    /// attestation; not in events.
    #[serde(skip)]
    pub tests: Option<serde_json::Value>,
    /// What identifies an artifact that has no content digest (an AMI:
    /// `sbom::AmiIdentity`, its region, id and snapshot ids), as its
    /// builder read it; its SBOMs describe it by this (docs/sbom.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
    /// `[build.sbom]`: the artifact's package inventory
    /// (`sbom::Inventory`) after the sbom step, replaced by the record of
    /// the written documents (paths, digests, attestations) for the
    /// manifest; not in events.
    #[serde(skip)]
    pub sbom: Option<serde_json::Value>,
}

/// One job's line in the final summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobSummary {
    pub job: String,
    pub status: JobStatus,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub artifacts: Vec<ArtifactInfo>,
}

/// Everything a build reports. Serialized as one JSON object per line
/// with an `event` field naming the variant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BuildStarted {
        build_id: String,
        template: String,
        jobs: Vec<String>,
    },
    JobStarted {
        job: String,
    },
    StepStarted {
        job: String,
        step: String,
    },
    StepFinished {
        job: String,
        step: String,
        ok: bool,
        duration_ms: u64,
    },
    Output {
        job: String,
        stream: Stream,
        line: String,
    },
    Artifact {
        job: String,
        // Boxed: the record is large, the other events small.
        artifact: Box<ArtifactInfo>,
    },
    Message {
        job: Option<String>,
        text: String,
    },
    /// A download's progress (a QEMU base disk or ISO): a first report,
    /// then at most one every 500 ms, then one with `done` when the whole
    /// file is there (verified next). `bytes` counts what is on disk, so a
    /// resumed download starts above 0; it only grows, except when a
    /// download starts over (a server that ignores `Range`, a partial file
    /// that did not verify), which begins with a report of its own.
    Download {
        job: Option<String>,
        url: String,
        bytes: u64,
        /// The file's size, when the server says (`null` otherwise).
        total: Option<u64>,
        done: bool,
    },
    Error {
        job: Option<String>,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        file: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        line: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        column: Option<usize>,
    },
    JobFinished {
        job: String,
        status: JobStatus,
        duration_ms: u64,
        error: Option<String>,
    },
    Summary {
        build_id: String,
        succeeded: usize,
        failed: usize,
        cancelled: usize,
        duration_ms: u64,
        jobs: Vec<JobSummary>,
    },
}

/// Somewhere events go. Sinks only ever see redacted events.
pub trait Sink: Send {
    fn handle(&mut self, event: &Event);
    /// Called once when the command ends.
    fn finish(&mut self) {}
}

/// Redacts events once and fans them out to the sinks.
pub struct EventBus {
    redactor: Arc<RwLock<Redactor>>,
    sinks: Mutex<Vec<Box<dyn Sink>>>,
}

impl EventBus {
    pub fn new(redactor: Arc<RwLock<Redactor>>, sinks: Vec<Box<dyn Sink>>) -> Arc<EventBus> {
        Arc::new(EventBus {
            redactor,
            sinks: Mutex::new(sinks),
        })
    }

    /// The shared redactor (also used by the tracing writer and for errors).
    pub fn redactor(&self) -> Arc<RwLock<Redactor>> {
        self.redactor.clone()
    }

    /// Redacts a string with the current redactor.
    pub fn redact(&self, text: &str) -> String {
        self.redactor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .redact(text)
    }

    /// The single redaction point: every string field of the event is
    /// redacted before any sink sees it, whatever the variant.
    pub fn emit(&self, event: Event) {
        let redacted = {
            let r = self.redactor.read().unwrap_or_else(|e| e.into_inner());
            if r.is_empty() {
                event
            } else {
                let mut json = serde_json::to_value(&event).expect("events always serialize");
                redact_json(&mut json, &r);
                serde_json::from_value(json).expect("redaction keeps the event's shape")
            }
        };
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        for s in sinks.iter_mut() {
            s.handle(&redacted);
        }
    }

    /// Flushes and closes every sink.
    pub fn finish(&self) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        for s in sinks.iter_mut() {
            s.finish();
        }
    }
}

fn redact_json(v: &mut serde_json::Value, r: &Redactor) {
    match v {
        serde_json::Value::String(s) => *s = r.redact(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| redact_json(v, r)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|v| redact_json(v, r)),
        _ => {}
    }
}

/// Sets up `tracing` for diagnostics of kiln itself (`KILN_LOG=debug`),
/// written to stderr through the same redactor as events.
pub fn init_tracing(redactor: Arc<RwLock<Redactor>>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,rustify=off,vaultrs=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || sinks::RedactingWriter::stderr(redactor.clone()))
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Arc<Mutex<Vec<Event>>>);
    impl Sink for Collect {
        fn handle(&mut self, e: &Event) {
            self.0.lock().unwrap().push(e.clone());
        }
    }

    #[test]
    fn every_field_is_redacted_before_sinks() {
        let seen = Arc::new(Mutex::new(vec![]));
        let r = Arc::new(RwLock::new(Redactor::new(["hunter2"])));
        let bus = EventBus::new(r, vec![Box::new(Collect(seen.clone()))]);
        bus.emit(Event::Output {
            job: "j".into(),
            stream: Stream::Stdout,
            line: "pw=hunter2".into(),
        });
        bus.emit(Event::JobFinished {
            job: "j".into(),
            status: JobStatus::Failed,
            duration_ms: 1,
            error: Some("bad hunter2".into()),
        });
        let seen = seen.lock().unwrap();
        let text = serde_json::to_string(&*seen).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(text.matches("<redacted>").count(), 2);
    }
}
