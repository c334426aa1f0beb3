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
