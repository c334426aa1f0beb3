//! The hardening provisioner and `kiln check` end to end: busybox images
//! (no os-release, or a made-up distribution) for not-applicable rules,
//! `fail_on`, `skip` and read-only checks; one signed build of a Debian
//! bookworm minbase (cached by scripts/hardening/debian-rootfs.sh) with
//! `cis-level1` + `cleanup`, checked by kiln and measured by Lynis.
//! Needs root and runc (Debian: mmdebstrap, umoci, lynis and the mirror).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::oci::busybox_rootfs;
use crate::{assert_exit, text, Scratch};

fn ready() -> bool {
    crate::require("hardening", &["runc", "busybox"], true)
}

/// A template building `base.tar` into `out/img` with these provisioners.
fn template(s: &Scratch, provisioners: &str) -> PathBuf {
    s.write(
        "t.toml",
        &format!(
            "[image]\nname = \"h\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1.0.0\"]\nnetwork = \"none\"\n\n[[build]]\nname = \"b\"\nsources = [\"oci.img\"]\n{provisioners}\n"
        ),
    )
}

/// `kiln build --json`: exit code and the manifest of the first artifact.
fn build(s: &Scratch, t: &Path) -> (i32, Option<serde_json::Value>, String) {
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    let summary = crate::json_summary(&o);
    let manifest = summary["jobs"][0]["artifacts"][0]["manifest"]
        .as_str()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap());
    (o.status.code().unwrap_or(-1), manifest, out + &err)
}

/// A profile file with one rule per `(id, severity, check)`, for `kilntest`.
fn profile(s: &Scratch, rules: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = String::from("description = \"test rules\"\n");
    for (id, severity, check) in rules {
        text.push_str(&format!(
            "\n[[rule]]\nid = \"{id}\"\ntitle = \"rule {id}\"\nrationale = \"test\"\nseverity = \"{severity}\"\ndistros = [\"kilntest\"]\napply = \"echo applying {id}\"\ncheck = '''{check}'''\n"
        ));
    }
    s.write("p.toml", &text)
}

fn results(report: &serde_json::Value) -> Vec<(String, String)> {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn on_busybox_every_cis_rule_is_not_applicable_and_the_build_passes() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let t = template(
        &s,
        "[[build.provisioner]]\ntype = \"hardening\"\nprofile = \"cis-level1\"\n",
    );
    let (code, manifest, log) = build(&s, &t);
    assert_eq!(code, 0, "{log}");
    let report = &manifest.unwrap()["hardening"][0];
    assert_eq!(report["profile"], "cis-level1");
    assert!(report["distro"].is_null(), "busybox has no os-release");
    let rules = results(report);
    assert!(rules.len() > 40, "{rules:?}");
    for (id, result) in &rules {
        assert_eq!(result, "not-applicable", "{id} on busybox");
    }
    assert_eq!(report["summary"]["pass"], 0, "nothing is reported passed");
    // `kiln audit` shows the report of each registered version.
    let o = s.kiln().arg("audit").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(
        text(&o).0.contains("compliance: profile `cis-level1`"),
        "{}",
        text(&o).0
    );
}

#[test]
fn fail_on_and_skip_decide_the_build_and_are_recorded() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(
        &s,
        &[("etc/os-release", "ID=kilntest\nPRETTY_NAME=\"Kiln Test\"\n")],
    );
    profile(
        &s,
        &[
            ("good", "high", "echo all fine"),
            ("weak", "medium", "echo too weak; exit 1"),
            ("broken", "low", "exit 7"),
        ],
    );
    let hardening = |extra: &str| {
        format!("[[build.provisioner]]\ntype = \"hardening\"\nprofile = \"p.toml\"\n{extra}\n")
    };
    // Default fail_on = "any": the medium failure fails the build, naming it.
    let (code, _, log) = build(&s, &template(&s, &hardening("")));
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("rule(s) failed") && log.contains("weak") && log.contains("broken"),
        "{log}"
    );
    // "high": medium and low failures are recorded, the build passes.
    let (code, manifest, log) = build(&s, &template(&s, &hardening("fail_on = \"high\"")));
    assert_eq!(code, 0, "{log}");
    let manifest = manifest.unwrap();
    let report = manifest["hardening"][0].clone();
    assert_eq!(report["fail_on"], "high");
    // The profile file (with its includes) is part of the fingerprint.
    assert_eq!(
        manifest["provisioners"][0]["files"]["p.toml"],
        report["profile_digest"]
    );
    assert_eq!(
        results(&report),
        [
            ("good".to_string(), "pass".to_string()),
            ("weak".into(), "fail".into()),
            ("broken".into(), "fail".into())
        ]
    );
    assert_eq!(report["rules"][1]["evidence"], "too weak");
    assert!(report["rules"][2]["evidence"]
        .as_str()
        .unwrap()
        .contains("exited with code 7"));
    assert!(
        log.contains("[good] applying good"),
        "apply output streams: {log}"
    );
    // Skipped rules do not fail the build and keep their reason.
    let (code, manifest, log) = build(
        &s,
        &template(
            &s,
            &hardening("skip = [\"weak\", \"broken\"]\nreason = \"ticket SEC-42\""),
        ),
    );
    assert_eq!(code, 0, "{log}");
    let report = manifest.unwrap()["hardening"][0].clone();
    assert_eq!(report["skip_reason"], "ticket SEC-42");
    assert_eq!(report["summary"]["skipped"], 2);
    assert!(report["rules"][1]["evidence"]
        .as_str()
        .unwrap()
        .contains("SEC-42"));
}

/// A profile file from raw TOML rule tables (for `kilntest`).
fn raw_profile(s: &Scratch, rules: &str) -> PathBuf {
    s.write("p.toml", &format!("description = \"test rules\"\n{rules}"))
}

/// One `kilntest` rule as TOML (`applies_if` is a whole line or empty).
fn raw_rule(id: &str, applies_if: &str, apply: &str, check: &str) -> String {
    format!("\n[[rule]]\nid = \"{id}\"\ntitle = \"rule {id}\"\nrationale = \"test\"\nseverity = \"medium\"\ndistros = [\"kilntest\"]\n{applies_if}apply = '''{apply}'''\ncheck = '''{check}'''\n")
}

#[test]
fn checks_hold_after_all_rules_whatever_their_order() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[("etc/os-release", "ID=kilntest\n")]);
    // `tight` sets a folder 700; `installer`, later, re-creates it 755 as a
    // package install does (cloud-init's dependencies and Debian's
    // /etc/cron.weekly). `late` configures what `installer` brings, so it
    // is not applicable when its turn comes in the first pass.
    raw_profile(
        &s,
        &[
            raw_rule(
                "tight",
                "",
                "mkdir -p /etc/cronish && chmod 700 /etc/cronish",
                "kiln_expect_mode /etc/cronish 700",
            ),
            raw_rule(
                "late",
                "applies_if = \"test -e /etc/installed\"\n",
                "chmod 600 /etc/installed",
                "kiln_expect_mode /etc/installed 600",
            ),
            raw_rule(
                "installer",
                "",
                "rm -rf /etc/cronish && mkdir -m 755 /etc/cronish && echo x > /etc/installed && chmod 644 /etc/installed",
                "test -d /etc/cronish && echo installed",
            ),
        ]
        .concat(),
    );
    let hardening = "[[build.provisioner]]\ntype = \"hardening\"\nprofile = \"p.toml\"\n";
    let (code, manifest, log) = build(&s, &template(&s, hardening));
    assert_eq!(code, 0, "{log}");
    let report = manifest.unwrap()["hardening"][0].clone();
    assert_eq!(
        results(&report),
        [
            ("tight".to_string(), "pass".to_string()),
            ("late".into(), "pass".into()),
            ("installer".into(), "pass".into())
        ],
        "{report:#}"
    );
    assert_eq!(report["reapplied"], serde_json::json!(["tight", "late"]));
    assert!(
        log.contains("[tight] applying again: its check failed after all rules were applied"),
        "{log}"
    );
    // A rule that still fails after the re-apply fails the build.
    raw_profile(
        &s,
        &raw_rule("never", "", "true", "echo still wrong; exit 1"),
    );
    let (code, _, log) = build(&s, &template(&s, hardening));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("never"), "{log}");
}

#[test]
fn verify_policy_refuses_a_signed_manifest_with_a_failed_high_rule() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[("etc/os-release", "ID=kilntest\n")]);
    s.keygen("cosign", "pw");
    profile(
        &s,
        &[
            ("root-login", "high", "echo PermitRootLogin yes; exit 1"),
            ("banner", "low", "echo no banner; exit 1"),
        ],
    );
    let signed = |fail_on: &str| {
        template(
            &s,
            &format!("[[build.provisioner]]\ntype = \"hardening\"\nprofile = \"p.toml\"\nfail_on = \"{fail_on}\"\n\n[build.sign]\nkey = \"cosign.key\"\n"),
        )
    };
    // fail_on = "none" records the failures and builds.
    let (code, manifest, log) = build(&s, &signed("none"));
    assert_eq!(code, 0, "{log}");
    assert_eq!(manifest.unwrap()["hardening"][0]["summary"]["fail"], 2);
    let manifest_file = std::fs::read_dir(s.state().join("manifests"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-1.json"))
        .unwrap();
    let verify = |policy: bool| {
        let mut c = s.kiln();
        c.args(["verify", "--key"]).arg(s.path().join("cosign.pub"));
        if policy {
            c.args(["--policy", "no-failed-high"]);
        }
        c.arg(&manifest_file).output().unwrap()
    };
    assert_exit(&verify(false), 0);
    let o = verify(true);
    assert_exit(&o, 1);
    let err = text(&o).1;
    assert!(
        err.contains("p/root-login") && !err.contains("banner"),
        "{err}"
    );
    // The provenance with its compliance byproduct passes the in-toto
    // attestation bindings' strict parse and validation, and its envelope
    // securesystemslib and sigstore-js.
    if crate::checkers::ready() {
        s.keygen("other", "x");
        let envelope = PathBuf::from(
            manifest_file
                .to_string_lossy()
                .replace(".json", ".intoto.json"),
        );
        let work = s.path().join("checks");
        std::fs::create_dir_all(&work).unwrap();
        let payload = crate::checkers::assert_envelope(
            &s.path().join("cosign.pub"),
            &s.path().join("other.pub"),
            &envelope,
            "application/vnd.in-toto+json",
            &work,
        );
        let st = crate::checkers::assert_statement(&payload, &work);
        assert!(
            st["predicate"]["runDetails"]["byproducts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["name"].as_str().unwrap().starts_with("hardening/")),
            "{st}"
        );
    }
}

#[test]
fn skip_without_reason_and_unknown_rules_are_input_errors() {
    let s = Scratch::new();
    let t = template(
        &s,
        "[[build.provisioner]]\ntype = \"hardening\"\nprofile = \"cis-level1\"\nskip = [\"ssh-compression\"]\n",
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("needs a `reason`"), "{}", text(&o).1);
    assert!(
        text(&o).1.contains("t.toml:"),
        "names the file: {}",
        text(&o).1
    );
    let t = template(
        &s,
        "[[build.provisioner]]\ntype = \"hardening\"\nprofile = \"cis-level1\"\nskip = [\"no-such-rule\"]\nreason = \"x\"\n",
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("`no-such-rule`"), "{}", text(&o).1);
    let t = template(
        &s,
        "[[build.provisioner]]\ntype = \"hardening\"\nprofile = \"cis-level2\"\n",
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o)
            .1
            .contains("unknown hardening profile `cis-level2`"),
        "{}",
        text(&o).1
    );
    let o = s
        .kiln()
        .args(["check", "cis-level1", "disk.qcow2"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("not supported yet"), "{}", text(&o).1);
}

#[test]
fn check_runs_read_only_and_exits_by_result() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[("etc/os-release", "ID=kilntest\n")]);
    profile(
        &s,
        &[
            (
                "read-only",
                "high",
                "if echo x >/etc/kiln-probe 2>/dev/null; then echo writable; exit 1; fi; echo read-only",
            ),
            ("has-passwd", "medium", "grep -q '^root:' /etc/passwd && echo root found"),
        ],
    );
    let o = s
        .kiln()
        .args(["check", "--json", "p.toml", "rootfs:base.tar"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let report: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let evidence = report["rules"][0]["evidence"].as_str().unwrap();
    assert!(
        // stdout and stderr lines interleave in either order.
        evidence.contains("Read-only file system") && evidence.lines().any(|l| l == "read-only"),
        "{evidence}"
    );
    assert_eq!(report["mode"], "check");
    assert!(report["image"].as_str().unwrap().contains("@sha256:"));
    // A failing check: exit 1 and the failure listed with its evidence.
    profile(
        &s,
        &[(
            "missing",
            "low",
            "test -e /etc/shadow || { echo no shadow; exit 1; }",
        )],
    );
    let o = s
        .kiln()
        .args(["check", "p.toml", "rootfs:base.tar"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o).0.contains("FAIL") && text(&o).0.contains("| no shadow"),
        "{}",
        text(&o).0
    );
    // Low failures do not count with --fail-on high.
    let o = s
        .kiln()
        .args(["check", "--fail-on", "high", "p.toml", "rootfs:base.tar"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(
        kiln::job::Journal::new(&s.state())
            .entries()
            .unwrap()
            .is_empty(),
        "nothing left in the journal"
    );
    let work = s.state().join("work");
    assert!(!work.exists() || std::fs::read_dir(&work).unwrap().next().is_none());
}

#[test]
fn check_pulls_an_image_from_a_registry() {
    if !ready() || !crate::require("hardening registry", &["docker-registry"], true) {
        return;
    }
    let reg = crate::oci::Registry::start();
    let s = Scratch::new();
    busybox_rootfs(&s, &[("etc/os-release", "ID=kilntest\n")]);
    let image = format!("{}/hardening/check:1", reg.addr);
    let t = s.write(
        "push.toml",
        &format!("[image]\nname = \"h\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{image}\"]\nnetwork = \"none\"\n\n[[build]]\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hardened > /etc/motd\"]\n"),
    );
    let (code, _, log) = build(&s, &t);
    assert_eq!(code, 0, "{log}");
    profile(&s, &[("motd", "low", "grep -H hardened /etc/motd")]);
    let o = s
        .kiln()
        .args(["check", "--json", "p.toml"])
        .arg(format!("registry:{image}"))
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let report: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(report["rules"][0]["evidence"], "/etc/motd:hardened");
    assert!(report["image"]
        .as_str()
        .unwrap()
        .starts_with(&format!("registry:{image}@sha256:")));
}

/// The cached Debian bookworm minbase tarball.
pub fn debian_rootfs() -> PathBuf {
    let o = Command::new(crate::repo().join("scripts/hardening/debian-rootfs.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "debian-rootfs.sh: {}", text(&o).1);
    PathBuf::from(text(&o).0.trim())
}

#[test]
fn debian_cis_level1_and_cleanup_pass_are_signed_and_meet_lynis() {
    if !ready()
        || !crate::require(
            "Debian hardening",
            &["mmdebstrap", "umoci", "lynis", "unshare", "chroot"],
            true,
        )
    {
        return;
    }
    let s = Scratch::new();
    let rootfs = debian_rootfs();
    s.keygen("cosign", "pw");
    let shipped =
        std::fs::read_to_string(crate::repo().join("templates/debian-hardened.toml")).unwrap();
    let t = s.write(
        "debian.toml",
        &format!("{shipped}\n[build.sign]\nkey = \"cosign.key\"\n"),
    );
    let o = s
        .kiln()
        .args(["build", "--json", "--var"])
        .arg(format!("rootfs={}", rootfs.display()))
        .args(["--var", "output=out/debian"])
        .arg(&t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_exit(&o, 0);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let manifest_file = PathBuf::from(
        summary["jobs"][0]["artifacts"][0]["manifest"]
            .as_str()
            .unwrap(),
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_file).unwrap()).unwrap();
    let reports = manifest["hardening"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{err}");
    for (report, profile) in reports.iter().zip(["cis-level1", "cleanup"]) {
        assert_eq!(report["profile"], profile);
        assert_eq!(report["distro"]["id"], "debian");
        assert_eq!(report["summary"]["fail"], 0, "{report:#}");
        let pass = report["summary"]["pass"].as_u64().unwrap();
        assert_eq!(
            pass as usize,
            report["rules"].as_array().unwrap().len(),
            "every rule passes: {report:#}"
        );
    }
    // The report is signed with the manifest and in the provenance; the
    // policy holds.
    let verify = |file: &Path| {
        s.kiln()
            .args(["verify", "--json", "--policy", "no-failed-high", "--key"])
            .arg(s.path().join("cosign.pub"))
            .arg(file)
            .output()
            .unwrap()
    };
    let o = verify(&manifest_file);
    assert_exit(&o, 0);
    let verified: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(verified["detail"]["hardening"], manifest["hardening"]);
    let provenance = PathBuf::from(manifest["provenance"]["file"].as_str().unwrap());
    let o = verify(&provenance);
    assert_exit(&o, 0);
    let statement: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    let byproducts = statement["detail"]["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap();
    assert!(byproducts
        .iter()
        .any(|b| b["name"] == "hardening/cis-level1" && b["annotations"]["report"] == reports[0]));

    // kiln check: the unhardened base fails, listing failures; the image passes.
    let o = s
        .kiln()
        .arg("check")
        .arg("cis-level1")
        .arg(format!("rootfs:{}", rootfs.display()))
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o).0.contains("FAIL    high   ssh-permit-root-login"),
        "{}",
        text(&o).0
    );
    let layout = s.path().join("out/debian");
    let before = dir_digest(&layout);
    let o = s
        .kiln()
        .args(["check", "cis-level1", "oci-layout:out/debian:12.0.0"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).0.contains(" 0 failed"), "{}", text(&o).0);
    assert_eq!(dir_digest(&layout), before, "kiln check changes nothing");

    // Lynis, the independent yardstick, on the built image.
    let unpacked = s.path().join("unpacked");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:12.0.0", layout.display()))
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci: {}", text(&o).1);
    let o = Command::new(crate::repo().join("scripts/hardening/lynis-audit.sh"))
        .arg(unpacked.join("rootfs"))
        .arg(s.path().join("lynis"))
        .output()
        .unwrap();
    assert!(o.status.success(), "lynis-audit.sh: {}", text(&o).1);
    let index: u32 = text(&o)
        .0
        .lines()
        .find_map(|l| l.strip_prefix("hardening_index="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no index in {}", text(&o).0));
    eprintln!("Lynis hardening index after cis-level1 + cleanup: {index}");
    assert!(
        index >= 80,
        "Lynis hardening index {index} < 80\n{}",
        text(&o).0
    );
}

/// sha256 over every file's path and content under `dir`.
fn dir_digest(dir: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg("find . -type f | sort | xargs sha256sum | sha256sum")
        .current_dir(dir)
        .output()
        .unwrap();
    text(&o).0
}

/// The cached Debian bookworm base of `flavour` (debian-rootfs.sh).
pub(crate) fn debian_flavour(flavour: &str) -> PathBuf {
    let o = Command::new(crate::repo().join("scripts/hardening/debian-rootfs.sh"))
        .arg(flavour)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "debian-rootfs.sh {flavour}: {}",
        text(&o).1
    );
    PathBuf::from(text(&o).0.trim())
}

/// `cis-level1` holds on stock Debian bases other than the one above: a
/// plain minbase (no cron: `/etc/cron.weekly` and `/etc/cron.monthly` are
/// created 755 by packages later rules install, after `cron-permissions`
/// ran, so it is applied again) and a cloud base (cloud-init,
/// openssh-server, cron). Every applicable rule passes after all applied.
#[test]
fn cis_level1_holds_on_stock_debian_bases() {
    if !ready()
        || !crate::require(
            "Debian hardening",
            &["mmdebstrap", "unshare", "chroot"],
            true,
        )
    {
        return;
    }
    let shipped =
        std::fs::read_to_string(crate::repo().join("templates/debian-hardened.toml")).unwrap();
    for (flavour, reapplied) in [("minbase", Some("cron-permissions")), ("cloud", None)] {
        let s = Scratch::new();
        let rootfs = debian_flavour(flavour);
        let t = s.write("debian.toml", &shipped);
        let o = s
            .kiln()
            .args(["build", "--json", "--var"])
            .arg(format!("rootfs={}", rootfs.display()))
            .args(["--var", "output=out/debian"])
            .arg(&t)
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{flavour}: {err}");
        let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                summary["jobs"][0]["artifacts"][0]["manifest"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let report = &manifest["hardening"][0];
        assert_eq!(report["profile"], "cis-level1");
        assert_eq!(report["summary"]["fail"], 0, "{flavour}: {report:#}");
        assert!(
            report["summary"]["pass"].as_u64().unwrap() >= 39,
            "{flavour}: {report:#}"
        );
        if let Some(rule) = reapplied {
            assert!(
                report["reapplied"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|r| r == rule)),
                "{flavour}: `{rule}` was undone by a later rule and applied again: {report:#}"
            );
        }
        let cron = report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "cron-permissions")
            .unwrap();
        assert_eq!(cron["result"], "pass", "{flavour}: {cron:#}");
        assert!(
            cron["evidence"]
                .as_str()
                .unwrap()
                .contains("/etc/cron.weekly: mode 700"),
            "{flavour}: {cron:#}"
        );
    }
}
