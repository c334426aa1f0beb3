//! `[[build.test]]`: checks of a produced artifact, run in a fresh
//! instance started from it (never the build instance) through any
//! [`Communicator`]. Each check yields pass, fail or skip with the value it
//! observed; `statement` turns a report into an in-toto test-result
//! predicate. The engine runs them after `snapshot`; a failed check fails
//! the job.
//!
//! Architecture invariant: a check only looks — it runs read-only commands
//! and reads files; the instance it looks at is thrown away afterwards.

pub mod checks;
mod goss;
pub mod parse;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::communicator::Communicator;
use crate::template::plan::TestPlan;
use crate::template::schema::{Field, Kind, STR, STR_LIST};

const FILE_FIELDS: &[Field] = &[
    Field::req("path", STR),
    Field::opt("exists", Kind::Bool),
    Field::opt("mode", Kind::Mode),
    Field::opt("owner", STR),
    Field::opt("group", STR),
    Field::opt("contains", STR_LIST),
    Field::opt("sha256", STR),
];
const PACKAGE_FIELDS: &[Field] = &[
    Field::req("name", STR),
    Field::opt("installed", Kind::Bool),
    Field::opt("version", STR),
];
const SERVICE_FIELDS: &[Field] = &[
    Field::req("name", STR),
    Field::opt("enabled", Kind::Bool),
    Field::opt("running", Kind::Bool),
];
const PORT_FIELDS: &[Field] = &[
    Field::req("port", Kind::Int),
    Field::opt("protocol", Kind::Enum(&["tcp", "udp"])),
    Field::opt("listening", Kind::Bool),
];
const USER_FIELDS: &[Field] = &[
    Field::req("name", STR),
    Field::opt("exists", Kind::Bool),
    Field::opt("uid", Kind::Int),
    Field::opt("gid", Kind::Int),
    Field::opt("home", STR),
    Field::opt("shell", STR),
    Field::opt("groups", STR_LIST),
];
const GROUP_FIELDS: &[Field] = &[
    Field::req("name", STR),
    Field::opt("exists", Kind::Bool),
    Field::opt("gid", Kind::Int),
];
const KERNEL_PARAM_FIELDS: &[Field] = &[Field::req("key", STR), Field::req("value", STR)];
const COMMAND_FIELDS: &[Field] = &[
    Field::req("run", STR),
    Field::opt("exit_status", Kind::Int),
    Field::opt("stdout_contains", STR_LIST),
    Field::opt("stdout_matches", STR),
    Field::opt("stderr_contains", STR_LIST),
    Field::opt("timeout", Kind::Duration),
];
const HTTP_FIELDS: &[Field] = &[
    Field::req("url", STR),
    Field::opt("status", Kind::Int),
    Field::opt("timeout", Kind::Duration),
];
const GOSS_FIELDS: &[Field] = &[
    Field::req("file", Kind::InputFile),
    Field::opt("vars", Kind::InputFile),
    Field::opt("goss_binary", Kind::InputFile),
    Field::opt("timeout", Kind::Duration),
];
const SHELL_FIELDS: &[Field] = &[
    Field::req("inline", STR_LIST),
    Field::opt("timeout", Kind::Duration),
];

/// The `[[build.test]]` types and their fields.
pub const SCHEMAS: &[(&str, &[Field])] = &[
    ("file", FILE_FIELDS),
    ("package", PACKAGE_FIELDS),
    ("service", SERVICE_FIELDS),
    ("port", PORT_FIELDS),
    ("user", USER_FIELDS),
    ("group", GROUP_FIELDS),
    ("kernel_param", KERNEL_PARAM_FIELDS),
    ("command", COMMAND_FIELDS),
    ("http", HTTP_FIELDS),
    ("shell", SHELL_FIELDS),
    ("goss", GOSS_FIELDS),
];

/// What one check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Could not be checked in this kind of instance (said why); reported
    /// as a warning, never as a pass.
    Skip,
}

/// One property of one test (`mode` of `file /etc/passwd`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub property: String,
    pub expected: String,
    pub observed: String,
    pub outcome: Outcome,
}

/// One `[[build.test]]` and its checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// `file /etc/os-release`, `command id -u`.
    pub name: String,
    /// Where it is declared (`file:line:col`).
    pub at: String,
    pub outcome: Outcome,
    pub checks: Vec<CheckResult>,
}

/// Every test of one artifact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    /// The artifact tested (`registry:…`, `oci-layout:…`).
    pub artifact: String,
    pub digest: Option<String>,
    pub tests: Vec<TestResult>,
}

impl TestReport {
    /// `PASSED`, `WARNED` (something skipped, nothing failed) or `FAILED`.
    pub fn result(&self) -> &'static str {
        let any = |o| self.tests.iter().any(|t| t.outcome == o);
        if any(Outcome::Fail) {
            "FAILED"
        } else if any(Outcome::Skip) {
            "WARNED"
        } else {
            "PASSED"
        }
    }

    pub fn failed(&self) -> bool {
        self.result() == "FAILED"
    }

    /// The names of the tests with this outcome.
    pub fn named(&self, o: Outcome) -> Vec<String> {
        self.tests
            .iter()
            .filter(|t| t.outcome == o)
            .map(|t| format!("{} ({})", t.name, t.at))
            .collect()
    }

    /// One line per test and per failed or skipped check.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.tests {
            out.push_str(&format!("{:<4} {} ({})\n", word(t.outcome), t.name, t.at));
            for c in t.checks.iter().filter(|c| c.outcome != Outcome::Pass) {
                out.push_str(&format!(
                    "       {} {}: expected {}, observed {}\n",
                    word(c.outcome),
                    c.property,
                    c.expected,
                    c.observed
                ));
            }
        }
        out
    }
}

fn word(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "FAIL",
        Outcome::Skip => "skip",
    }
}

/// Runs `tests` in the instance `comm` reaches; `scratch` is a host
/// folder for files copied out of it (hashed, then removed), and the
/// template's folder is where a test's own files (`goss`) are read.
pub async fn run_tests(
    tests: &[TestPlan],
    comm: &dyn Communicator,
    (scratch, template_dir): (&Path, &Path),
    say: &(dyn Fn(String) + Send + Sync),
) -> Vec<TestResult> {
    let mut out = vec![];
    for t in tests {
        let (name, checks) = checks::run(t, comm, scratch, template_dir).await;
        let outcome = if checks.iter().any(|c| c.outcome == Outcome::Fail) {
            Outcome::Fail
        } else if checks.iter().any(|c| c.outcome == Outcome::Skip) {
            Outcome::Skip
        } else {
            Outcome::Pass
        };
        let r = TestResult {
            name,
            at: t.at.clone(),
            outcome,
            checks,
        };
        say(format!("test {}: {} ({})", word(outcome), r.name, r.at));
        for c in r.checks.iter().filter(|c| c.outcome != Outcome::Pass) {
            say(format!(
                "  {} {}: expected {}, observed {}",
                word(c.outcome),
                c.property,
                c.expected,
                c.observed
            ));
        }
        out.push(r);
    }
    out
}
