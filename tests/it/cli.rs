//! The command line itself: generated completions and man page, exit codes
//! of commands that are not built yet.

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
fn commands_not_built_yet_say_so_and_fail() {
    for cmd in [
        &["verify", "x"][..],
        &["images", "list"],
        &["keygen"],
        &["audit", "--json"],
    ] {
        let o = kiln().args(cmd).output().unwrap();
        assert_exit(&o, 1);
        assert!(
            text(&o).1.contains("not supported yet"),
            "{cmd:?}: {}",
            text(&o).1
        );
    }
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
