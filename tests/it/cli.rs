//! The command line itself: generated completions and man page, exit codes
//! and messages of commands given bad input.

use crate::{assert_exit, kiln, text};

#[test]
fn completions_and_man_page_come_from_the_clap_definition() {
    let o = kiln().args(["completions", "bash"]).output().unwrap();
    assert_exit(&o, 0);
    let out = text(&o).0;
    assert!(
        out.contains("validate") && out.contains("--var-file") && out.contains("--on-error"),
        "{out}"
    );
    let o = kiln().arg("man").output().unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).0.contains(".TH kiln"), "{}", text(&o).0);
}

#[test]
fn catalog_commands_name_what_is_wrong() {
    let o = kiln()
        .args(["--catalog", "ftp://example/x", "images", "list"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o).1.contains("only postgres:// URLs and folders"),
        "{}",
        text(&o).1
    );
    let dir = tempfile::tempdir().unwrap();
    let o = kiln()
        .arg("--catalog")
        .arg(dir.path())
        .args(["images", "show", "web", "1.0.0+1"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(text(&o).1.contains("no image `web`"), "{}", text(&o).1);
    let o = kiln()
        .arg("--catalog")
        .arg(dir.path())
        .args(["images", "promote", "web", "1.0.0+1", "bad/channel"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o).1.contains("not a valid channel name"),
        "{}",
        text(&o).1
    );
    // A mistyped catalog folder is not an empty, intact catalog.
    let o = kiln()
        .arg("--catalog")
        .arg(dir.path().join("no-such-folder"))
        .arg("audit")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("no such folder"), "{}", text(&o).1);
    // The catalog URL's password never shows, not even in `--help`.
    let o = kiln()
        .args(["images", "--help"])
        .env("KILN_CATALOG", "postgres://kiln:s3cret@127.0.0.1:1/db")
        .output()
        .unwrap();
    assert!(!text(&o).0.contains("s3cret"), "{}", text(&o).0);
    let o = kiln()
        .args(["images", "list"])
        .env("KILN_CATALOG", "postgres://kiln:s3cret@127.0.0.1:1/db")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        !text(&o).1.contains("s3cret") && text(&o).1.contains("<redacted>"),
        "{}",
        text(&o).1
    );
    // An empty catalog audits clean.
    let o = kiln()
        .arg("--catalog")
        .arg(dir.path())
        .arg("audit")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("0 entries"), "{}", text(&o).0);
}

#[test]
fn verify_needs_a_key_refuses_unsigned_files_and_names_what_layouts_lack() {
    let o = kiln()
        .args(["verify", "127.0.0.1:1/a/b:1"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("--key"), "{}", text(&o).1);
    let dir = tempfile::tempdir().unwrap();
    let o = kiln()
        .args(["keygen", "--out"])
        .arg(dir.path().join("k"))
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let o = kiln()
        .args(["verify", "--key"])
        .arg(dir.path().join("k.pub"))
        .arg(dir.path().join("k.pub"))
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains("is not signed: there is no") && text(&o).1.contains("k.pub.sig"),
        "{}",
        text(&o).1
    );
    // An OCI layout: not "invalid reference format", but what is possible.
    let o = kiln()
        .args(["verify", "--key"])
        .arg(dir.path().join("k.pub"))
        .arg("oci-layout:out/web:1")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o)
            .1
            .contains("verifying OCI layouts is not supported yet")
            && text(&o).1.contains("skopeo copy"),
        "{}",
        text(&o).1
    );
}

#[test]
fn bad_arguments_exit_2() {
    assert_exit(
        &kiln()
            .args(["build", "--parallel", "many", "t.toml"])
            .output()
            .unwrap(),
        2,
    );
    assert_exit(
        &kiln()
            .args(["validate", "/nonexistent/kiln.toml"])
            .output()
            .unwrap(),
        2,
    );
}

/// A template whose secrets cannot be read: an unset variable and a Vault
/// nobody listens on.
fn unreadable_secrets_template(dir: &std::path::Path) -> std::path::PathBuf {
    let t = dir.join("s.toml");
    std::fs::write(
        &t,
        "[image]\nname = \"s\"\nversion = \"1.0.0\"\n[image.retention]\nkeep = 1\n[secrets.tok]\nenv = \"KILN_TEST_UNSET_TOKEN\"\n[secrets.db]\nvault = \"secret/data/ci/db#password\"\n[source.null.n]\n[[build]]\nsources = [\"null.n\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"true\"]\nenv = { T = \"${secret.tok}\", D = \"${secret.db}\" }\n",
    )
    .unwrap();
    t
}

#[test]
fn prune_needs_no_secrets_and_plan_names_the_secret_it_could_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let t = unreadable_secrets_template(dir.path());
    let run = |args: &[&str], token: Option<&str>| {
        let mut c = kiln();
        c.args(args)
            .arg(&t)
            .env("KILN_STATE_DIR", dir.path().join("state"))
            .env("VAULT_ADDR", format!("http://{}", crate::free_addr()))
            .env("VAULT_TOKEN", "not-a-token")
            .env_remove("KILN_TEST_UNSET_TOKEN");
        if let Some(v) = token {
            c.env("KILN_TEST_UNSET_TOKEN", v);
        }
        c.output().unwrap()
    };
    let o = run(&["prune"], None);
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("s: nothing to prune"), "{}", text(&o).0);

    let o = run(&["plan"], None);
    assert_exit(&o, 0);
    let out = text(&o).0;
    assert!(out.contains("REBUILD"), "{out}");
    assert!(
        out.contains("cannot read: ")
            && out.contains("s.toml:6:10: secret `tok`: environment variable `KILN_TEST_UNSET_TOKEN` is not set"),
        "{out}"
    );
    assert!(out.contains("s.toml:8:10: secret `db`"), "{out}");
    assert!(out.contains("the verdict stands"), "{out}");
    // It does: the fingerprint is the same with the secret readable.
    let fp = |o: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_str(text(o).0.trim()).unwrap();
        (
            v["jobs"][0]["fingerprint"].as_str().unwrap().to_string(),
            v["unread_secrets"].as_array().unwrap().len(),
        )
    };
    let without = fp(&run(&["plan", "--json"], None));
    let with = fp(&run(&["plan", "--json"], Some("t0ken")));
    assert_eq!(without.1, 2);
    assert_eq!(with.1, 1, "only the Vault secret is unread");
    assert_eq!(without.0, with.0);
}

#[test]
fn revoking_a_version_names_the_channels_still_pointing_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.json");
    std::fs::write(
        &manifest,
        r#"{"image":{"name":"web","version":"1.0.0"},"job":"b.null.n","artifact":{"kind":"file","id":"/nonexistent/web.img"},"fingerprint":"f"}"#,
    )
    .unwrap();
    let cat = dir.path().join("catalog");
    std::fs::create_dir(&cat).unwrap();
    let images = |args: &[&str]| {
        kiln()
            .arg("--catalog")
            .arg(&cat)
            .arg("images")
            .args(args)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let o = kiln()
            .arg("--catalog")
            .arg(&cat)
            .args(["images", "register"])
            .arg(&manifest)
            .args(["--channel", "prod", "--channel", "dev"])
            .output()
            .unwrap();
        assert_exit(&o, 0);
    }
    // 1.0.0+1 is no channel's target any more: no warning.
    let o = images(&["revoke", "web", "1.0.0+1", "--reason", "old"]);
    assert_exit(&o, 0);
    assert!(!text(&o).1.contains("warning"), "{}", text(&o).1);
    let o = images(&["revoke", "web", "1.0.0+2", "--reason", "CVE"]);
    assert_exit(&o, 0);
    let err = text(&o).1;
    assert!(
        err.contains(
            "warning: web 1.0.0+2 is revoked, but channels `dev`, `prod` still point at it"
        ),
        "{err}"
    );
    assert!(err.contains("kiln images rollback web CHANNEL"), "{err}");
}

#[test]
fn json_events_and_human_progress_carry_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let t = crate::repo().join("templates/hello-null.toml");
    let o = kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_STATE_DIR", dir.path())
        .env("KILN_GREETING_TOKEN", "t0ken-for-timestamps")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let lines: Vec<serde_json::Value> = text(&o)
        .0
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 3);
    let year = humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..4].to_string();
    for l in &lines {
        let time = l["time"].as_str().unwrap_or_else(|| panic!("no time: {l}"));
        assert!(
            humantime::parse_rfc3339(time).is_ok() && time.starts_with(&year),
            "{time}"
        );
    }
    let o = kiln()
        .arg("build")
        .arg(&t)
        .env("KILN_STATE_DIR", dir.path())
        .env("KILN_GREETING_TOKEN", "t0ken-for-timestamps")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let err = text(&o).1;
    let progress: Vec<&str> = err.lines().filter(|l| l.contains("==>")).collect();
    assert!(!progress.is_empty(), "{err}");
    for l in progress {
        let b = l.as_bytes();
        assert!(
            l.len() > 9
                && b[2] == b':'
                && b[5] == b':'
                && b[8] == b' '
                && l[..2].chars().all(|c| c.is_ascii_digit()),
            "no HH:MM:SS: {l}"
        );
    }
}

#[test]
fn packer_habits_get_hints_folders_and_a_scaffold() {
    let dir = tempfile::tempdir().unwrap();
    for (arg, hint) in [
        ("-var", "did you mean `--var`?"),
        ("-only=null.local", "did you mean `--only=null.local`?"),
        ("-on-error=abort", "did you mean `--on-error=abort`?"),
    ] {
        let o = kiln()
            .args(["build", arg, "x=1", "t.toml"])
            .output()
            .unwrap();
        assert_exit(&o, 2);
        assert!(text(&o).1.contains(hint), "{arg}: {}", text(&o).1);
    }

    // A folder is its templates.
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    for n in ["a", "b"] {
        std::fs::write(
            set.join(format!("{n}.toml")),
            format!("[image]\nname = \"{n}\"\nversion = \"1.0.0\"\n[source.null.n]\n[[build]]\nsources = [\"null.n\"]\n"),
        )
        .unwrap();
    }
    std::fs::write(set.join("notes.txt"), "not a template").unwrap();
    let o = kiln().arg("validate").arg(&set).output().unwrap();
    assert_exit(&o, 0);
    let out = text(&o).0;
    assert!(
        out.contains("a.toml: valid") && out.contains("b.toml: valid") && out.lines().count() == 2,
        "{out}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = kiln().arg("validate").arg(&empty).output().unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("has no templates"), "{}", text(&o).1);

    // `kiln init` scaffolds what validates (and, for null, builds).
    for builder in ["null", "oci", "ami"] {
        let p = dir.path().join(format!("proj-{builder}"));
        let o = kiln()
            .args(["init", "--builder", builder])
            .arg(&p)
            .env("KILN_PASSWORD", "pw")
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let t = p.join(format!("proj-{builder}.toml"));
        for f in [&t, &p.join("cosign.key"), &p.join("cosign.pub")] {
            assert!(f.exists(), "{f:?}");
        }
        let ignore = std::fs::read_to_string(p.join(".gitignore")).unwrap();
        assert!(ignore.contains(".kiln/") && ignore.contains("cosign.key"));
        let o = kiln().arg("validate").arg(&p).output().unwrap();
        assert_exit(&o, 0);
        // Never over what is there.
        let o = kiln()
            .args(["init", "--builder", builder])
            .arg(&p)
            .env("KILN_PASSWORD", "pw")
            .output()
            .unwrap();
        assert_exit(&o, 2);
        assert!(text(&o).1.contains("does not overwrite"), "{}", text(&o).1);
    }
    let o = kiln()
        .arg("build")
        .arg(dir.path().join("proj-null"))
        .env("KILN_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert_exit(&o, 0);
}

#[test]
fn console_evaluates_expressions_against_a_template() {
    let t = crate::repo().join("templates/hello-null.toml");
    let o = kiln()
        .args(["console", "--var", "build_number=7"])
        .args(["--expr", "local.banner", "--expr", "upper(var.greeting)"])
        .args(["--expr", "secret.token", "--expr", "${image.version}"])
        .arg(&t)
        .env("KILN_GREETING_TOKEN", "never-fetched-token")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        text(&o).0,
        "\"HELLO from hello 0.1.7\"\n\"HELLO\"\n<sensitive>\n\"0.1.7\"\n"
    );
    // One expression per line of stdin; a bad one is a template error.
    let mut c = kiln()
        .arg("console")
        .arg(&t)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"lower(\"ABC\")\nvar.nope\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert_exit(&o, 2);
    assert_eq!(text(&o).0, "\"abc\"\n");
    assert!(
        text(&o).1.contains("var.nope") || text(&o).1.contains("`nope`"),
        "{}",
        text(&o).1
    );
}
