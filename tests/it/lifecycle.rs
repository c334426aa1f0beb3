//! The image lifecycle end to end: `[build.rebuild]` decisions seen by
//! `kiln plan` and obeyed by `build --skip-unchanged`, `kiln prune` against
//! a local registry, generated CI pipelines checked against the published
//! GitHub and GitLab schemas (check-jsonschema), GitHub annotations, and the
//! run summary of a multi-template build.

use std::path::Path;
use std::process::Command;

use crate::{assert_exit, text, Scratch};

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    text(o)
        .0
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(feature = "oci")]
mod oci {
    use super::*;
    use crate::oci::{busybox_rootfs, Registry};

    fn ready() -> bool {
        crate::require(
            "lifecycle",
            &["runc", "docker-registry", "skopeo", "busybox"],
            true,
        )
    }

    fn base_template(s: &Scratch, reg: &str, content: &str) -> std::path::PathBuf {
        s.write(
            "base.toml",
            &format!(
                "[image]\nname = \"base\"\nversion = \"1.0.0\"\n[source.oci.b]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{reg}/base:latest\"]\n[[build]]\nsources = [\"oci.b\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo {content} > /etc/base-version\"]\n"
            ),
        )
    }

    fn plan(s: &Scratch, t: &Path) -> serde_json::Value {
        let o = s.kiln().args(["plan", "--json"]).arg(t).output().unwrap();
        assert_exit(&o, 0);
        serde_json::from_str(text(&o).0.trim()).unwrap()
    }

    fn reasons(p: &serde_json::Value) -> String {
        p["jobs"][0]["reasons"].to_string()
    }

    #[test]
    fn plan_and_skip_unchanged_follow_the_rebuild_policy() {
        if !ready() {
            return;
        }
        let reg = Registry::start();
        let s = Scratch::new();
        busybox_rootfs(&s, &[]);
        let base = base_template(&s, &reg.addr, "one");
        assert_exit(&s.kiln().arg("build").arg(&base).output().unwrap(), 0);
        s.write("setup.sh", "echo app > /etc/app\n");
        let app_with = |when: &str| {
            s.write(
                "app.toml",
                &format!(
                    "[image]\nname = \"app\"\nversion = \"1.0.0\"\n[source.oci.a]\nfrom = \"registry:{0}/base:latest\"\nto = [\"registry:{0}/app:1\"]\n[[build]]\nsources = [\"oci.a\"]\n[build.rebuild]\nwhen = [{when}]\n[[build.provisioner]]\ntype = \"shell\"\nscript = \"setup.sh\"\n",
                    reg.addr
                ),
            )
        };
        let app = app_with("\"inputs\", \"base\", \"age:4s\"");
        let build = || {
            s.kiln()
                .args(["build", "--skip-unchanged"])
                .arg(&app)
                .output()
                .unwrap()
        };

        let p = plan(&s, &app);
        assert_eq!(p["rebuild"], true);
        assert!(reasons(&p).contains("no active version"), "{p}");
        let o = build();
        assert_exit(&o, 0);
        assert!(
            text(&o).1.contains("registered app 1.0.0+1"),
            "{}",
            text(&o).1
        );

        let p = plan(&s, &app);
        assert_eq!(p["rebuild"], false, "{p}");
        assert!(reasons(&p).contains("unchanged since 1.0.0+1"), "{p}");
        // Human output says the same.
        let o = s.kiln().arg("plan").arg(&app).output().unwrap();
        assert!(text(&o).0.contains("up to date"), "{}", text(&o).0);

        // A changed provisioner script is an input change; changed back, it is not.
        s.write("setup.sh", "echo app2 > /etc/app\n");
        let p = plan(&s, &app);
        assert_eq!(p["rebuild"], true);
        assert!(reasons(&p).contains("inputs changed"), "{p}");
        s.write("setup.sh", "echo app > /etc/app\n");
        assert_eq!(plan(&s, &app)["rebuild"], false);

        // The base tag moves to a new digest.
        base_template(&s, &reg.addr, "two");
        assert_exit(&s.kiln().arg("build").arg(&base).output().unwrap(), 0);
        let p = plan(&s, &app);
        assert_eq!(p["rebuild"], true);
        assert!(reasons(&p).contains("base: registry:"), "{p}");
        assert!(
            !reasons(&p).contains("inputs changed"),
            "only the base: {p}"
        );
        // Without `base` in the policy the move is noted, not acted on.
        app_with("\"inputs\"");
        let p = plan(&s, &app);
        assert!(reasons(&p).contains("ignored"), "{p}");
        app_with("\"inputs\", \"base\", \"age:4s\"");
        let o = build();
        assert_exit(&o, 0);
        assert!(
            text(&o).1.contains("registered app 1.0.0+2"),
            "{}",
            text(&o).1
        );
        let o = build();
        assert!(
            text(&o)
                .0
                .contains("skipped: nothing due since app 1.0.0+2"),
            "{}",
            text(&o).0
        );

        // Older than `age`.
        std::thread::sleep(std::time::Duration::from_secs(5));
        let p = plan(&s, &app);
        assert_eq!(p["rebuild"], true);
        assert!(reasons(&p).contains("age: 1.0.0+2 was registered"), "{p}");
        let o = build();
        assert!(
            text(&o).1.contains("registered app 1.0.0+3"),
            "{}",
            text(&o).1
        );

        // Security updates are checked in a throw-away instance of the
        // newest image; busybox has no package manager: said, not ignored.
        app_with("\"security-updates\"");
        let p = plan(&s, &app);
        assert_eq!(p["rebuild"], false, "{p}");
        assert!(
            reasons(&p).contains("security-updates: cannot check 1.0.0+3: no apt-get, dnf or yum"),
            "{p}"
        );
        // The probe left nothing behind.
        let o = s.kiln().args(["cleanup", "--dry-run"]).output().unwrap();
        assert!(!text(&o).0.contains("would reap"), "{}", text(&o).0);
        // A bad trigger is a template error with its location.
        app_with("\"sometimes\"");
        let o = s.kiln().args(["validate"]).arg(&app).output().unwrap();
        assert_exit(&o, 2);
        assert!(text(&o).1.contains("app.toml:10:8"), "{}", text(&o).1);
        assert!(
            text(&o).1.contains("unknown rebuild trigger `sometimes`"),
            "{}",
            text(&o).1
        );
    }

    /// On a real Debian image the check runs apt against the security
    /// suite: pending updates trigger a rebuild and are named.
    #[test]
    fn security_updates_are_checked_in_the_newest_image() {
        if !ready() || !crate::require("security updates", &["mmdebstrap"], true) {
            return;
        }
        let reg = Registry::start();
        let s = Scratch::new();
        let rootfs = crate::hardening::debian_rootfs();
        let t = s.write(
            "deb.toml",
            &format!(
                "[image]\nname = \"deb\"\nversion = \"1.0.0\"\n[source.oci.d]\nfrom = \"rootfs:{}\"\nto = [\"registry:{}/deb:1\"]\n[[build]]\nsources = [\"oci.d\"]\n[build.rebuild]\nwhen = [\"security-updates\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo built > /etc/motd\"]\n",
                rootfs.display(),
                reg.addr
            ),
        );
        assert_exit(&s.kiln().arg("build").arg(&t).output().unwrap(), 0);
        let p = plan(&s, &t);
        let why = reasons(&p);
        assert!(why.contains("security-updates: "), "{p}");
        assert!(!why.contains("cannot check"), "apt is there: {p}");
        let none = why.contains("none pending in 1.0.0+1");
        assert_eq!(p["rebuild"], !none, "{p}");
        if !none {
            // Named, e.g. "12 pending in 1.0.0+1 (apt, libssl3, openssl, …)".
            assert!(why.contains("pending in 1.0.0+1 ("), "{p}");
        }
        // The probe's container and files are gone.
        let o = s.kiln().args(["cleanup", "--dry-run"]).output().unwrap();
        assert!(!text(&o).0.contains("would reap"), "{}", text(&o).0);
    }

    fn exists(reg: &str, digest: &str) -> bool {
        let at = if digest.starts_with("sha256-") {
            ':'
        } else {
            '@'
        };
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{reg}/app{at}{digest}"))
            .output()
            .unwrap()
            .status
            .success()
    }

    #[test]
    fn prune_deletes_exactly_what_the_retention_policy_says() {
        if !ready() {
            return;
        }
        let reg = Registry::start();
        let s = Scratch::new();
        busybox_rootfs(&s, &[]);
        let app = s.write(
            "app.toml",
            &format!(
                "[image]\nname = \"app\"\nversion = \"1.0.0\"\n[image.retention]\nkeep = 2\n[variables.n]\ntype = \"number\"\ndefault = 0\n[source.oci.a]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{}/app:1\"]\n[[build]]\nsources = [\"oci.a\"]\n[build.sign]\nkey = \"cosign.key\"\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo ${{var.n}} > /etc/n\"]\n",
                reg.addr
            ),
        );
        s.keygen("cosign", "pw");
        let mut digests = vec![];
        for n in 1..=4 {
            let o = s
                .kiln()
                .args(["build", "--json", "--var", &format!("n={n}")])
                .arg(&app)
                .env("KILN_PASSWORD", "pw")
                .output()
                .unwrap();
            assert_exit(&o, 0);
            let summary = json_lines(&o).pop().unwrap();
            digests.push(
                summary["jobs"][0]["artifacts"][0]["digest"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_exit(
            &s.kiln()
                .args(["images", "promote", "app", "1.0.0+1", "prod"])
                .output()
                .unwrap(),
            0,
        );
        let o = s
            .kiln()
            .args(["prune", "--dry-run"])
            .arg(&app)
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let out = text(&o).0;
        assert!(out.contains("would delete app 1.0.0+2"), "{out}");
        assert!(out.contains("keep app 1.0.0+1: channel prod"), "{out}");
        assert!(!out.contains("would delete app 1.0.0+1"), "{out}");
        assert!(
            digests.iter().all(|d| exists(&reg.addr, d)),
            "dry run deletes nothing"
        );

        let o = s.kiln().arg("prune").arg(&app).output().unwrap();
        assert_exit(&o, 0);
        assert!(text(&o).0.contains("deleted app 1.0.0+2"), "{}", text(&o).0);
        assert!(!exists(&reg.addr, &digests[1]), "1.0.0+2 is gone");
        // With its cosign signature and attestation images.
        let sidecar = |d: &str, suffix: &str| format!("{}.{suffix}", d.replace(':', "-"));
        for suffix in ["sig", "att"] {
            assert!(
                !exists(&reg.addr, &sidecar(&digests[1], suffix)),
                "{suffix} of 1.0.0+2"
            );
            assert!(
                exists(&reg.addr, &sidecar(&digests[2], suffix)),
                "{suffix} of 1.0.0+3"
            );
        }
        for i in [0, 2, 3] {
            assert!(exists(&reg.addr, &digests[i]), "1.0.0+{} kept", i + 1);
        }
        let o = s
            .kiln()
            .args(["images", "show", "app", "1.0.0+2", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
        assert_eq!(v["status"]["status"], "deleted");
        // Every step is in the signed log.
        let o = s.kiln().arg("audit").output().unwrap();
        assert_exit(&o, 0);
        let out = text(&o).0;
        assert!(out.contains("deprecate app 1.0.0+2: retention"), "{out}");
        assert!(out.contains("delete app 1.0.0+2: retention"), "{out}");
        assert!(out.contains(&format!("/app@{}", digests[1])), "{out}");
        // Nothing left to do.
        let o = s.kiln().arg("prune").arg(&app).output().unwrap();
        assert!(text(&o).0.contains("nothing to prune"), "{}", text(&o).0);
    }
}

#[test]
fn generated_pipelines_match_the_ci_schemas_and_run_real_commands() {
    if !crate::require("CI pipeline", &["check-jsonschema"], false) {
        return;
    }
    let s = Scratch::new();
    let templates = [
        crate::repo().join("templates/hello-null.toml"),
        crate::repo().join("templates/web.toml"),
    ];
    for (system, schema, file) in [
        ("github", "vendor.github-workflows", "kiln.yml"),
        ("gitlab", "vendor.gitlab-ci", ".gitlab-ci.yml"),
    ] {
        let o = s
            .kiln()
            .args(["ci", system])
            .args(&templates)
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let yaml = text(&o).0;
        assert!(yaml.contains("kiln build --skip-unchanged"), "{yaml}");
        assert!(yaml.contains("hello-null.toml") && yaml.contains("web.toml"));
        // Only what the templates declare comes from the secret store: the
        // greeting token (an `env` secret) and the signing key's password;
        // web.toml's Vault secret comes with the CI's OIDC identity.
        for wired in ["KILN_GREETING_TOKEN", "KILN_PASSWORD"] {
            assert!(yaml.contains(wired), "{system}: {wired}: {yaml}");
        }
        if system == "github" {
            let stored: std::collections::BTreeSet<&str> = yaml
                .match_indices("secrets.")
                .map(|(i, _)| {
                    let rest = &yaml[i + 8..];
                    &rest[..rest
                        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                        .unwrap()]
                })
                .collect();
            assert_eq!(
                stored.into_iter().collect::<Vec<_>>(),
                ["KILN_GREETING_TOKEN", "KILN_PASSWORD", "KILN_SIGNING_KEY"],
                "{yaml}"
            );
            assert!(yaml.contains("VAULT_JWT_FILE"), "{yaml}");
        }
        let path = s.write(file, &yaml);
        let o = Command::new("check-jsonschema")
            .args(["--builtin-schema", schema])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{system}: {}{}", text(&o).0, text(&o).1);
        // Every kiln command the pipeline runs exists.
        let mut seen = 0;
        for line in yaml.lines() {
            let l = line
                .trim()
                .trim_start_matches("- ")
                .trim_start_matches('\'')
                .trim_start_matches("$KILN_AS_ROOT ");
            let Some(rest) = l.strip_prefix("kiln ") else {
                continue;
            };
            let sub = rest.split_whitespace().next().unwrap();
            let o = s.kiln().args([sub, "--help"]).output().unwrap();
            assert_exit(&o, 0);
            seen += 1;
        }
        assert_eq!(seen, 6, "validate, plan and build of two templates: {yaml}");
    }
}

#[test]
fn several_templates_end_with_a_run_summary_and_github_annotations() {
    let s = Scratch::new();
    let good = crate::repo().join("templates/hello-null.toml");
    let bad = s.write("bad.toml", "[image]\nname = \"x\"\nversion = \"nope\"\n");
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&good)
        .arg(&bad)
        .env("KILN_GREETING_TOKEN", "t0ken-value")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let last = json_lines(&o).pop().unwrap();
    assert_eq!(last["event"], "run_summary", "{last}");
    let statuses: Vec<&str> = last["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["built", "invalid"]);

    let o = s
        .kiln()
        .arg("validate")
        .arg(&bad)
        .env("GITHUB_ACTIONS", "true")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let out = text(&o).0;
    assert!(
        out.contains(&format!("::error file={},line=3,col=", bad.display()))
            && out.contains("must be a semantic version"),
        "{out}"
    );
}
