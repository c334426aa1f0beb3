//! The README's promise to a newcomer: exactly two commands, "Run" and
//! "Test", that work on a fresh machine. `.ci/run` must run the "Test" one;
//! the "Run" one (scripts/demo.sh) must bake, sign, verify and audit a real
//! image — checked here end to end, with skopeo as an independent reader of
//! the OCI layout it writes.

use std::process::Command;

use crate::{text, Scratch};

/// The one command in the ```sh block under `## {section}` of README.md.
fn readme_command(section: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(crate::repo().join("README.md")).unwrap();
    let start = readme
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("README.md has no `## {section}` section"));
    let body = &readme[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
    let block = body
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("`## {section}` has no ```sh block"));
    assert_eq!(
        body.matches("```sh").count(),
        1,
        "`## {section}` must give exactly one command block"
    );
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn readme_gives_two_commands_and_ci_runs_the_test_one() {
    assert_eq!(readme_command("Run"), ["scripts/demo.sh"]);
    assert_eq!(readme_command("Test"), ["scripts/test.sh"]);
    let ci = std::fs::read_to_string(crate::repo().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "exec bash scripts/test.sh"),
        ".ci/run must run the README's test command:\n{ci}"
    );
    for script in ["scripts/demo.sh", "scripts/test.sh"] {
        let p = crate::repo().join(script);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert!(mode & 0o111 != 0, "{script} must be executable");
    }
}

#[cfg(feature = "oci")]
#[test]
fn readme_run_command_bakes_signs_verifies_and_audits_an_image() {
    if !crate::require(
        "README run",
        &["runc", "busybox", "docker-registry", "skopeo"],
        true,
    ) {
        return;
    }
    let s = Scratch::new();
    let work = s.path().join("demo");
    let o = Command::new("bash")
        .arg(crate::repo().join("scripts/demo.sh"))
        .current_dir(crate::repo())
        .env("KILN_BIN", env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_DEMO_DIR", &work)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "scripts/demo.sh failed:\n{out}\n{err}");
    // Build progress goes to stderr, command results to stdout.
    let out = format!("{out}\n{err}");
    // Hardened: the demo profile's four rules ran and passed.
    assert!(out.contains("4 passed, 0 failed"), "{out}");
    // Signed, and `kiln verify` checked signature and provenance.
    assert!(
        out.contains("1 valid signature(s) and 1 signed provenance statement(s)"),
        "{out}"
    );
    // Registered, promoted, and the catalog's log verifies.
    assert!(out.contains("promoted to dev"), "{out}");
    assert!(out.contains("the chain of 2 entries is intact"), "{out}");
    assert!(
        out.contains("demo                 1.0.0+1          active      dev"),
        "{out}"
    );
    // The OCI layout is real: skopeo reads it and sees the provisioned image.
    let layout = work.join("out/demo");
    let o = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:1.0.0", layout.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo: {}", text(&o).1);
    let inspect: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2, "{inspect}");
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.title"],
        "kiln demo"
    );
    // The key's password never reaches the output.
    let password = std::fs::read_to_string(work.join("password")).unwrap();
    assert!(!out.contains(password.trim()));
}

#[test]
fn every_command_is_in_the_contract_copy() {
    let spec = std::fs::read_to_string(crate::repo().join("docs/spec.md")).unwrap();
    let o = crate::kiln().arg("--help").output().unwrap();
    let help = text(&o).0;
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A long description wraps onto lines indented further: not commands.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 10, "{help}");
    for c in commands {
        assert!(
            spec.contains(&format!("kiln {c} ")),
            "docs/spec.md does not name `kiln {c}`: document every command there"
        );
    }
}
