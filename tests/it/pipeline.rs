//! The GitHub workflow `kiln ci github` writes, run: a small interpreter of
//! GitHub Actions (written here; `act` and the like are not available)
//! executes every job in `needs` order and every `run:` step with bash as
//! GitHub does, substituting `${{ … }}` from `vars`, `secrets`, `github`
//! and `runner`, carrying `$GITHUB_ENV` and `$GITHUB_PATH` between steps,
//! and standing in for the four actions the workflow uses (checkout: the
//! workspace is the checkout; cache: always a miss; upload/download
//! artifact: a folder per artifact). Each job gets its own `RUNNER_TEMP`
//! and a PATH without cargo or kiln, so kiln reaches a build job only as the
//! `kiln` job's artifact. The build is real: an OCI image from a busybox
//! rootfs, signed with a key whose password comes from the secret store,
//! pushed to a local docker-registry, then verified.
//! The YAML is read by PyYAML (an independent parser).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as J;

use crate::oci::{busybox_rootfs, Registry};
use crate::{assert_exit, text, Scratch};

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// YAML → JSON with PyYAML.
fn yaml_to_json(yaml: &str) -> J {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.yml");
    std::fs::write(&p, yaml).unwrap();
    let o = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "PyYAML: {}", text(&o).1);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn s(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Null => String::new(),
        other => other.to_string(),
    }
}

/// One step as it ran.
#[derive(Debug)]
struct StepRun {
    job: String,
    name: String,
    script: String,
    ok: bool,
    output: String,
}

struct Runner {
    workspace: PathBuf,
    vars: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    artifacts: tempfile::TempDir,
    runs: Vec<StepRun>,
    /// Job → succeeded.
    jobs: BTreeMap<String, bool>,
}

/// What `${{ … }}` may see inside a job.
struct JobCtx {
    temp: PathBuf,
    failed: bool,
}

impl Runner {
    fn value(&self, e: &str, ctx: &JobCtx) -> String {
        let e = e.trim();
        if let Some((a, b)) = e.split_once("!=") {
            return (self.value(a, ctx) != self.value(b, ctx)).to_string();
        }
        if let Some((a, b)) = e.split_once("==") {
            return (self.value(a, ctx) == self.value(b, ctx)).to_string();
        }
        if let Some(lit) = e.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
            return lit.to_string();
        }
        if let Some(n) = e.strip_prefix("vars.") {
            return self.vars.get(n).cloned().unwrap_or_default();
        }
        if let Some(n) = e.strip_prefix("secrets.") {
            return self.secrets.get(n).cloned().unwrap_or_default();
        }
        match e {
            "always()" => "true".into(),
            "success()" => (!ctx.failed).to_string(),
            "failure()" => ctx.failed.to_string(),
            "github.workspace" => self.workspace.display().to_string(),
            "github.actor" => "tester".into(),
            "github.ref" => "refs/heads/main".into(),
            "runner.temp" => ctx.temp.display().to_string(),
            "runner.os" => "Linux".into(),
            other => panic!("the test's interpreter does not know the expression `{other}`"),
        }
    }

    /// Replaces every `${{ … }}` in `text`.
    fn subst(&self, text: &str, ctx: &JobCtx) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${{") {
            out.push_str(&rest[..i]);
            let end = rest[i..].find("}}").expect("closed ${{") + i;
            out.push_str(&self.value(&rest[i + 3..end], ctx));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn condition(&self, cond: Option<&J>, ctx: &JobCtx) -> bool {
        let Some(c) = cond else { return !ctx.failed };
        let c = s(c);
        let c = c.trim();
        let inner = c
            .strip_prefix("${{")
            .and_then(|x| x.strip_suffix("}}"))
            .unwrap_or(c);
        self.value(inner, ctx) == "true"
    }

    fn env_map(&self, m: Option<&J>, ctx: &JobCtx, into: &mut BTreeMap<String, String>) {
        for (k, v) in m.and_then(J::as_object).into_iter().flatten() {
            into.insert(k.clone(), self.subst(&s(v), ctx));
        }
    }

    /// Runs every job of `workflow` in `needs` order; `only` limits the
    /// template jobs run (the `kiln` job always runs).
    fn run(&mut self, workflow: &J, only: Option<&str>) {
        let jobs = workflow["jobs"].as_object().unwrap();
        let mut order: Vec<&String> = vec![];
        while order.len() < jobs.len() {
            let before = order.len();
            for (id, job) in jobs {
                let needs: Vec<String> = match &job["needs"] {
                    J::String(n) => vec![n.clone()],
                    J::Array(a) => a.iter().map(s).collect(),
                    _ => vec![],
                };
                if !order.contains(&id) && needs.iter().all(|n| order.contains(&n)) {
                    order.push(id);
                }
            }
            assert!(order.len() > before, "a `needs` cycle");
        }
        for id in order {
            if only.is_some_and(|o| o != id.as_str() && id != "kiln") {
                continue;
            }
            let job = &jobs[id];
            let needs_ok = match &job["needs"] {
                J::String(n) => self.jobs.get(n).copied().unwrap_or(false),
                _ => true,
            };
            if !needs_ok {
                self.jobs.insert(id.clone(), false);
                continue;
            }
            let ok = self.run_job(workflow, id, job);
            self.jobs.insert(id.clone(), ok);
        }
    }

    fn run_job(&mut self, workflow: &J, id: &str, job: &J) -> bool {
        let temp = tempfile::tempdir().unwrap();
        let mut ctx = JobCtx {
            temp: temp.path().to_path_buf(),
            failed: false,
        };
        let mut env = BTreeMap::new();
        self.env_map(workflow.get("env"), &ctx, &mut env);
        self.env_map(job.get("env"), &ctx, &mut env);
        let github_env = temp.path().join("github_env");
        let github_path = temp.path().join("github_path");
        std::fs::write(&github_env, "").unwrap();
        std::fs::write(&github_path, "").unwrap();
        for (n, step) in job["steps"].as_array().unwrap().iter().enumerate() {
            if !self.condition(step.get("if"), &ctx) {
                continue;
            }
            let name = step.get("name").map(s).unwrap_or_else(|| s(&step["uses"]));
            let with = |k: &str| self.subst(&s(&step["with"][k]), &ctx);
            if let Some(action) = step.get("uses").map(s) {
                let store = self.artifacts.path().join(with("name"));
                match action.split('@').next().unwrap() {
                    "actions/checkout" | "actions/cache" => {}
                    "actions/upload-artifact" => {
                        let from = self.workspace.join(with("path"));
                        if from.is_file() {
                            std::fs::create_dir_all(&store).unwrap();
                            link_or_copy(&from, &store.join(from.file_name().unwrap()));
                        } else if from.is_dir() {
                            copy_dir(&from, &store);
                        } else {
                            assert_eq!(with("if-no-files-found"), "ignore", "{from:?} missing");
                        }
                    }
                    "actions/download-artifact" => {
                        assert!(store.exists(), "no artifact {store:?}");
                        copy_dir(&store, &self.workspace.join(with("path")));
                    }
                    other => panic!("the test's interpreter does not stand in for `{other}`"),
                }
                continue;
            }
            let script = self.subst(&s(&step["run"]), &ctx);
            let file = temp.path().join(format!("step-{n}.sh"));
            std::fs::write(&file, &script).unwrap();
            let mut step_env = env.clone();
            self.env_map(step.get("env"), &ctx, &mut step_env);
            // `$GITHUB_ENV` (NAME=value, NAME<<EOF … EOF) and `$GITHUB_PATH`.
            let written = std::fs::read_to_string(&github_env).unwrap();
            let mut lines = written.lines();
            while let Some(l) = lines.next() {
                if let Some((k, delim)) = l.split_once("<<") {
                    let v: Vec<&str> = lines.by_ref().take_while(|x| *x != delim).collect();
                    step_env.insert(k.into(), v.join("\n"));
                } else if let Some((k, v)) = l.split_once('=') {
                    step_env.insert(k.into(), v.into());
                }
            }
            let mut path: Vec<String> = std::fs::read_to_string(&github_path)
                .unwrap()
                .lines()
                .rev()
                .map(String::from)
                .collect();
            path.push(SYSTEM_PATH.into());
            let o = Command::new("bash")
                .args(["--noprofile", "--norc", "-eo", "pipefail"])
                .arg(&file)
                .current_dir(&self.workspace)
                .env_clear()
                .envs(&step_env)
                .env("PATH", path.join(":"))
                .env("HOME", temp.path())
                .env("CI", "true")
                .env("GITHUB_ACTIONS", "true")
                .env("GITHUB_WORKSPACE", &self.workspace)
                .env("GITHUB_ENV", &github_env)
                .env("GITHUB_PATH", &github_path)
                .env("RUNNER_TEMP", temp.path())
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            let (out, err) = text(&o);
            self.runs.push(StepRun {
                job: id.to_string(),
                name,
                script,
                ok: o.status.success(),
                output: format!("{out}{err}"),
            });
            if !o.status.success() {
                ctx.failed = true;
            }
        }
        !ctx.failed
    }

    fn log(&self) -> String {
        self.runs
            .iter()
            .map(|r| {
                format!(
                    "=== {} / {} ({})\n{}",
                    r.job,
                    r.name,
                    if r.ok { "ok" } else { "FAILED" },
                    r.output
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn step(&self, job: &str, name: &str) -> &StepRun {
        self.runs
            .iter()
            .find(|r| r.job == job && r.name.starts_with(name))
            .unwrap_or_else(|| panic!("no step {job} / {name}:\n{}", self.log()))
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            link_or_copy(&e.path(), &target);
        }
    }
}

/// Artifacts are hard links where possible: the kiln binary is large and
/// the disk is shared.
fn link_or_copy(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn the_generated_github_workflow_runs_and_builds_a_signed_image() {
    if !crate::require(
        "CI pipeline run",
        &[
            "runc",
            "docker-registry",
            "skopeo",
            "busybox",
            "curl",
            "python3",
            "setpriv",
        ],
        true,
    ) {
        return;
    }
    let pyyaml = Command::new("python3").args(["-c", "import yaml"]).status();
    assert!(
        pyyaml.is_ok_and(|s| s.success()),
        "PyYAML (python3-yaml) is needed"
    );
    let reg = Registry::start();
    let ws = Scratch::new();
    busybox_rootfs(&ws, &[]);
    ws.keygen("cosign", "pw");
    ws.write(
        "app.toml",
        &format!(
            "[image]\nname = \"app\"\nversion = \"1.0.0\"\n[secrets.token]\nenv = \"APP_TOKEN\"\n[source.oci.a]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{}/app:1\"]\n[[build]]\nsources = [\"oci.a\"]\n[build.sign]\nkey = \"cosign.key\"\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"[ \\\"$${{#TOKEN}}\\\" = 12 ]\", \"echo built > /etc/app\"]\nenv = {{ TOKEN = \"${{secret.token}}\" }}\n",
            reg.addr
        ),
    );
    std::fs::copy(
        crate::repo().join("templates/hello-null.toml"),
        ws.path().join("hello.toml"),
    )
    .unwrap();
    let o = crate::kiln()
        .args(["ci", "github", "app.toml", "hello.toml"])
        .current_dir(ws.path())
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let (yaml, warnings) = text(&o);
    assert!(!warnings.contains("warning"), "{warnings}");
    let workflow = yaml_to_json(&yaml);
    let jobs = workflow["jobs"].as_object().unwrap();
    let mut ids: Vec<&str> = jobs.keys().map(String::as_str).collect();
    ids.sort();
    assert_eq!(ids, ["build-app", "build-hello", "kiln"]);
    // kiln is compiled (or fetched) in one job only.
    for (id, job) in jobs {
        let scripts = job["steps"].to_string();
        assert_eq!(scripts.contains("cargo install"), id == "kiln", "{id}");
        if id != "kiln" {
            assert_eq!(job["needs"], "kiln", "{id}");
        }
    }
    // Each template job sees only its own secrets.
    assert_eq!(
        jobs["build-app"]["env"]["APP_TOKEN"],
        "${{ secrets.APP_TOKEN }}"
    );
    assert!(jobs["build-app"]["env"]
        .get("KILN_GREETING_TOKEN")
        .is_none());
    assert_eq!(
        jobs["build-hello"]["env"]["KILN_GREETING_TOKEN"],
        "${{ secrets.KILN_GREETING_TOKEN }}"
    );
    assert!(jobs["build-hello"]["env"].get("KILN_PASSWORD").is_none());

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
    let runner = |secrets: &[(&str, &str)]| Runner {
        workspace: ws.path().to_path_buf(),
        vars: [
            (
                "KILN_DOWNLOAD_URL".into(),
                format!("file://{}", bin.display()),
            ),
            ("KILN_SHA256".into(), sha256_hex(&bin)),
        ]
        .into(),
        secrets: secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        artifacts: tempfile::tempdir().unwrap(),
        runs: vec![],
        jobs: BTreeMap::new(),
    };

    // A secret missing from the store: the job says which, and where the
    // template needs it, before anything is built.
    let mut r = runner(&[("KILN_PASSWORD", "pw")]);
    r.run(&workflow, Some("build-app"));
    assert!(!r.jobs["build-app"], "{}", r.log());
    let step = r.step("build-app", "Secrets from the secret store");
    assert!(!step.ok);
    assert!(
        step.output
            .contains("APP_TOKEN is not set in the repository's secret store")
            && step.output.contains("app.toml:4:10"),
        "{}",
        step.output
    );
    drop(r);

    let mut r = runner(&[
        ("APP_TOKEN", "app-token-42"),
        ("KILN_PASSWORD", "pw"),
        ("KILN_GREETING_TOKEN", "greet-token"),
    ]);
    r.run(&workflow, None);
    let log = r.log();
    assert!(r.jobs.values().all(|ok| *ok), "{log}");
    assert_eq!(r.runs.iter().filter(|x| x.job == "kiln").count(), 1);
    assert!(r.step("kiln", "Get kiln").output.contains("kiln "), "{log}");
    let build = r.step("build-app", "Build");
    assert!(
        build.script.contains("$KILN_AS_ROOT kiln build"),
        "{}",
        build.script
    );
    assert!(
        build.output.contains("registered app 1.0.0+1"),
        "{}",
        build.output
    );
    assert!(
        r.step("build-hello", "Build")
            .output
            .contains("token has 11 characters"),
        "{log}"
    );
    assert!(
        !log.contains("app-token-42") && !log.contains("greet-token"),
        "{log}"
    );
    // The image is in the registry, signed with the key the secret store
    // unlocked; the manifests were uploaded.
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/app:1", reg.addr))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let o = crate::kiln()
        .args(["verify", "--key"])
        .arg(ws.path().join("cosign.pub"))
        .arg(format!("registry:{}/app:1", reg.addr))
        .env("KILN_STATE_DIR", ws.path().join(".kiln"))
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let uploaded = r.artifacts.path().join("kiln-manifests-build-app");
    // (`.kiln/manifests/BUILD_ID/JOB-N.json`)
    let manifests: Vec<PathBuf> = std::fs::read_dir(&uploaded)
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert!(!manifests.is_empty(), "{uploaded:?}");
    let m: J = serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(m["image"]["name"], "app", "{m}");
    let root_script = r.step("build-app", "Root for the OCI").script.clone();
    drop(r);
    // A second run has nothing due: the catalog in `.kiln` says so.
    let mut again = runner(&[
        ("APP_TOKEN", "app-token-42"),
        ("KILN_PASSWORD", "pw"),
        ("KILN_GREETING_TOKEN", "greet-token"),
    ]);
    again.run(&workflow, Some("build-app"));
    assert!(
        again.step("build-app", "Build").output.contains("skipped"),
        "{}",
        again.log()
    );

    // Without root and without sudo, the OCI job stops with a clear error.
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-eo",
            "pipefail",
            "-c",
        ])
        .arg(&root_script)
        .env_clear()
        .env("PATH", "/nonexistent:/usr/bin:/bin")
        .env("GITHUB_ENV", "/dev/null")
        .output()
        .unwrap();
    // (`sudo -n` fails too where sudo exists: nobody may not use it.)
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).1);
    assert!(
        text(&o).0.contains("::error title=kiln needs root::") && text(&o).0.contains("app.toml"),
        "{}",
        text(&o).0
    );
}

#[test]
fn what_a_pipeline_cannot_wire_is_a_warning_naming_the_template_line() {
    let ws = Scratch::new();
    ws.write(
        "w.toml",
        "[image]\nname = \"w\"\nversion = \"1.0.0\"\n[secrets.cert]\nfile = \"/run/secrets/cert\"\n[secrets.odd]\nenv = \"MY-TOKEN\"\n[secrets.ok]\nenv = \"OK_TOKEN\"\n[source.null.n]\n[[build]]\nsources = [\"null.n\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"true\"]\nenv = { A = \"${secret.cert}\", B = \"${secret.odd}\", C = \"${secret.ok}\" }\n",
    );
    for system in ["github", "gitlab"] {
        let o = crate::kiln()
            .args(["ci", system, "w.toml"])
            .current_dir(ws.path())
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let (yaml, err) = text(&o);
        assert!(
            err.contains(
                "warning: w.toml:4:10: secret `cert` is read from the file `/run/secrets/cert`"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "warning: w.toml:6:10: secret `odd` reads the environment variable `MY-TOKEN`"
            ),
            "{err}"
        );
        assert_eq!(err.matches("warning:").count(), 2, "{err}");
        assert!(yaml.contains("# NOT WIRED: w.toml:4:10"), "{yaml}");
        assert!(yaml.contains("OK_TOKEN"), "{yaml}");
        // A null build needs no root.
        assert!(!yaml.contains("KILN_AS_ROOT"), "{yaml}");
    }
}
