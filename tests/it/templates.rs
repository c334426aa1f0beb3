//! `validate`, `inspect` and `fmt` on shipped and broken templates.

use crate::{assert_exit, kiln, repo, text, Scratch};

fn shipped() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(repo().join("templates"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(v.len() >= 2, "templates/ ships examples");
    v
}

#[test]
fn every_shipped_template_validates() {
    // (The files they read — base disks, signing keys — are the user's.)
    let o = kiln()
        .args(["validate", "--syntax-only"])
        .args(shipped())
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(text(&o).0.matches(": valid").count(), shipped().len());
}

#[test]
fn fmt_is_idempotent_and_shipped_templates_are_formatted() {
    let o = kiln()
        .args(["fmt", "--check"])
        .args(shipped())
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let s = Scratch::new();
    for t in shipped() {
        let original = std::fs::read_to_string(&t).unwrap();
        // Disturb the layout, format twice: the second pass changes nothing.
        let messy = original
            .replace(" = ", "=")
            .replace("\n[", "\n  [")
            .replace("\n\n", "\n\n\n");
        let p = s.write("t.toml", &messy);
        assert_exit(
            &kiln().args(["fmt", "--check"]).arg(&p).output().unwrap(),
            1,
        );
        assert_exit(&kiln().arg("fmt").arg(&p).output().unwrap(), 0);
        let once = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            once,
            original,
            "fmt restores the canonical layout of {}",
            t.display()
        );
        assert_exit(&kiln().arg("fmt").arg(&p).output().unwrap(), 0);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), once);
        let comments = |s: &str| {
            s.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .count()
        };
        assert_eq!(comments(&once), comments(&original), "comments survive");
    }
}

/// Each broken template: (file, expected `file:line:col`, words in the message).
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "unknown_key.toml",
        "unknown_key.toml:3:1",
        "did you mean `version`?",
    ),
    (
        "wrong_type.toml",
        "wrong_type.toml:9:8",
        "`cpus` must be an integer",
    ),
    (
        "bad_reference.toml",
        "bad_reference.toml:3:18",
        "unknown variable `pach`",
    ),
    (
        "cycle.toml",
        "cycle.toml:8:8",
        "cycle: local.a → local.b → local.c → local.a",
    ),
    (
        "missing_variable.toml",
        "missing_variable.toml:5:12",
        "variable `patch` has no value",
    ),
    (
        "bad_interpolation.toml",
        "bad_interpolation.toml:3:18",
        "unclosed `${`",
    ),
    (
        "unknown_source.toml",
        "unknown_source.toml:12:24",
        "did you mean `null.one`?",
    ),
    ("bad_toml.toml", "bad_toml.toml:2:8", "invalid TOML"),
];

#[test]
fn broken_templates_exit_2_with_file_line_column() {
    for (file, place, words) in BROKEN {
        let path = repo().join("tests/fixtures/broken").join(file);
        let o = kiln()
            .current_dir(repo().join("tests/fixtures/broken"))
            .args(["validate", file])
            .output()
            .unwrap();
        assert_exit(&o, 2);
        let err = text(&o).1;
        assert!(err.contains(place), "{file}: expected `{place}` in\n{err}");
        assert!(err.contains(words), "{file}: expected `{words}` in\n{err}");
        // The offending source line is shown.
        let line: usize = place.split(':').nth(1).unwrap().parse().unwrap();
        let src = std::fs::read_to_string(&path).unwrap();
        let shown = src.lines().nth(line - 1).unwrap().trim();
        assert!(
            err.contains(shown),
            "{file}: source line `{shown}` not shown in\n{err}"
        );
        // One mistake, one error: no follow-on noise.
        assert_eq!(
            err.matches("\nerror: ").count() + usize::from(err.starts_with("error: ")),
            2,
            "{file}: one error and the count line\n{err}"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let s = Scratch::new();
    let p = s.write(
        "many.toml",
        r#"[image]
name = "x"
versoin = "1.0.0"

[source.null.a]
colour = "red"

[[build]]
sources = ["null.a"]

[[build.provisioner]]
type = "shell"
inline = ["echo ${var.nope}"]
timeout = "soon"
"#,
    );
    let o = s
        .kiln()
        .args(["validate", "--json"])
        .arg(&p)
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let v: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    let errors = v["errors"].as_array().unwrap();
    let lines: Vec<u64> = errors.iter().filter_map(|e| e["line"].as_u64()).collect();
    assert!(errors.len() >= 4, "{errors:#?}");
    for want in [3, 6, 13, 14] {
        assert!(
            lines.contains(&want),
            "an error on line {want}: {errors:#?}"
        );
    }
}

#[test]
fn variable_precedence_default_file_env_cli() {
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        "[image]\nname = \"x\"\nversion = \"1.0.${var.n}\"\n[variables.n]\ntype = \"number\"\ndefault = 1\nmax = 50\n[source.null.a]\n[[build]]\nsources = [\"null.a\"]\n",
    );
    let vf = s.write("vars.toml", "n = 2\n");
    let version = |cmd: &mut std::process::Command| {
        let o = cmd.output().unwrap();
        assert_exit(&o, 0);
        let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
        v["image"]["version"].as_str().unwrap().to_string()
    };
    assert_eq!(
        version(s.kiln().args(["inspect", "--json"]).arg(&t)),
        "1.0.1"
    );
    assert_eq!(
        version(
            s.kiln()
                .args(["inspect", "--json", "--var-file"])
                .arg(&vf)
                .arg(&t)
        ),
        "1.0.2"
    );
    assert_eq!(
        version(
            s.kiln()
                .args(["inspect", "--json", "--var-file"])
                .arg(&vf)
                .arg(&t)
                .env("KILN_VAR_n", "3")
        ),
        "1.0.3"
    );
    assert_eq!(
        version(
            s.kiln()
                .args(["inspect", "--json", "--var-file"])
                .arg(&vf)
                .arg(&t)
                .env("KILN_VAR_n", "3")
                .args(["--var", "n=4"])
        ),
        "1.0.4"
    );
    // Out of range and unknown names are input errors.
    let o = s
        .kiln()
        .args(["validate", "--var", "n=99"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("above the maximum 50"));
    let o = s
        .kiln()
        .args(["validate", "--var", "m=1"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("unknown variable `m`"));
}

const SECRET: &str = "Tr0ub4dor&3 'quoted' \"x\"/+=";

#[test]
fn inspect_never_shows_sensitive_values_in_any_encoding() {
    use base64::Engine as _;
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        r#"[image]
name = "x"
version = "1.0.0"
[variables.password]
type = "string"
sensitive = true
[secrets.token]
env = "KILN_TEST_TOKEN"
[locals]
derived = "${upper(var.password)}"
encoded = "${base64encode(var.password)}"
hash = "${sha256(var.password)}"
[source.null.a]
[[build]]
sources = ["null.a"]
[[build.provisioner]]
type = "shell"
inline = ["true"]
env = { PW = "${var.password}", TOKEN = "${secret.token}", MIX = "a-${var.password}-b" }
"#,
    );
    let o = s
        .kiln()
        .args(["inspect", "--json", "--var"])
        .arg(format!("password={SECRET}"))
        .arg(&t)
        .env("KILN_TEST_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let out = text(&o).0;
    let b64 = base64::engine::general_purpose::STANDARD;
    let forms = [
        SECRET.to_string(),
        SECRET.to_uppercase(),
        b64.encode(SECRET),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET),
        percent_encode(SECRET),
        serde_json::to_string(SECRET)
            .unwrap()
            .trim_matches('"')
            .to_string(),
        shell_quote(SECRET),
        "Tr0ub4dor".to_string(),
    ];
    for f in &forms {
        assert!(!out.contains(f.as_str()), "inspect leaked {f:?}:\n{out}");
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["variables"][0]["value"], "<sensitive>");
    assert_eq!(v["locals"]["derived"], "<sensitive>");
    assert_eq!(
        v["locals"]["hash"], "<sensitive>",
        "values derived from secrets are sensitive too"
    );
    assert_eq!(
        v["jobs"][0]["provisioners"][0]["config"]["env"]["MIX"],
        "<sensitive>"
    );
    // The human form too.
    let o = s
        .kiln()
        .args(["inspect", "--var"])
        .arg(format!("password={SECRET}"))
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(!text(&o).0.contains("Tr0ub4dor"), "{}", text(&o).0);
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn secrets_cannot_flow_into_commands_or_paths() {
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        "[image]\nname = \"x\"\nversion = \"1.0.0\"\n[secrets.t]\nenv = \"X\"\n[source.null.a]\n[[build]]\nsources = [\"null.a\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo ${secret.t}\"]\n",
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    let err = text(&o).1;
    assert!(
        err.contains("t.toml:11:11") && err.contains("sensitive value cannot be used in `inline`"),
        "{err}"
    );
}

#[test]
fn validate_reports_missing_input_files_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("m.toml");
    std::fs::write(
        &t,
        "[image]\nname = \"m\"\nversion = \"1.0.0\"\n[source.qemu.q]\ndisk = \"images/base.qcow2\"\ninsecure_skip_checksum = true\noutput = \"out/m.qcow2\"\n[[build]]\nsources = [\"qemu.q\"]\n[[build.provisioner]]\ntype = \"file\"\nsource = \"files/app.conf\"\ndestination = \"/etc/app.conf\"\n[[build.provisioner]]\ntype = \"file\"\nsource = \"/etc/hostname\"\ndestination = \"out.txt\"\ndirection = \"download\"\n[build.sign]\nkey = \"cosign.key\"\n",
    )
    .unwrap();
    let o = kiln()
        .arg("validate")
        .arg(&t)
        .env_remove("KILN_SIGNING_KEY")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let err = text(&o).1;
    for want in [
        "m.toml:5:8: `source.qemu.q.disk`: the file",
        "m.toml:12:10: `build.provisioner[1]` (file): the source `files/app.conf` does not exist",
        "m.toml:20:7: `build.sign.key`: the signing key `cosign.key` does not exist",
        "error: 3 errors found",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    // A download's source is on the instance; `--syntax-only` skips files.
    assert!(!err.contains("/etc/hostname"), "{err}");
    let o = kiln()
        .args(["validate", "--syntax-only"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    // With the files there, it is valid; so is a key given in KILN_SIGNING_KEY.
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("images/base.qcow2"), "x").unwrap();
    std::fs::write(dir.path().join("files/app.conf"), "x").unwrap();
    let o = kiln()
        .arg("validate")
        .arg(&t)
        .env(
            "KILN_SIGNING_KEY",
            "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----",
        )
        .output()
        .unwrap();
    assert_exit(&o, 0);
    // The shipped web.toml names a disk and a key that are the user's.
    let o = kiln()
        .arg("validate")
        .arg(repo().join("templates/web.toml"))
        .env_remove("KILN_SIGNING_KEY")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let err = text(&o).1;
    assert!(
        err.contains("web.toml:44:8: `source.qemu.debian.disk`"),
        "{err}"
    );
    assert!(err.contains("web.toml:90:7: `build.sign.key`"), "{err}");
    assert!(err.contains("error: 2 errors found"), "{err}");
}

#[test]
fn one_mistake_gives_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, body: &str, want: &[&str]| {
        let t = dir.path().join(name);
        std::fs::write(&t, body).unwrap();
        let o = kiln()
            .args(["validate", "--syntax-only"])
            .arg(&t)
            .output()
            .unwrap();
        assert_exit(&o, 2);
        let err = text(&o).1;
        for w in want {
            assert!(err.contains(w), "{name}: {w}: {err}");
        }
        assert!(
            err.contains(&format!(
                "error: {} error{} found",
                want.len(),
                if want.len() == 1 { "" } else { "s" }
            )),
            "{name}: one error per mistake: {err}"
        );
    };
    // Misspelled keys are unknown (with a hint), not also missing.
    check(
        "a.toml",
        "[image]\nnmae = \"x\"\nversion = \"1.0.0\"\n[source.null.n]\n[[build]]\nsourcse = [\"null.n\"]\n",
        &["a.toml:2:1: unknown key `nmae` in `image`", "a.toml:6:1: unknown key `sourcse` in `build`"],
    );
    // A malformed secret is that one error; its uses are not "unknown".
    let uses = "[source.null.n]\n[[build]]\nsources = [\"null.n\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"true\"]\nenv = { A = \"${secret.db}\" }\n";
    check(
        "b.toml",
        &format!(
            "[image]\nname = \"x\"\nversion = \"1.0.0\"\n[secrets.db]\nvault = \"nohash\"\n{uses}"
        ),
        &["b.toml:5:9: `vault` must be `mount/path#key`, found `nohash`"],
    );
    check(
        "c.toml",
        &format!(
            "[image]\nname = \"x\"\nversion = \"1.0.0\"\n[secrets.db]\nvualt = \"a/b#c\"\n{uses}"
        ),
        &["c.toml:5:1: unknown key `vualt` in `secrets.db`"],
    );
    check(
        "d.toml",
        &format!("[image]\nname = \"x\"\nversion = \"1.0.0\"\n[secrets.db]\nenv = \"A\"\nfile = \"/x\"\n{uses}"),
        &["d.toml:4:10: secret `db` needs exactly one source, found env and file"],
    );
}

/// A `boot_command` that does not parse is refused by `kiln validate`
/// at the character in the template: a misspelt key, a `<waitX>` whose X
/// is no duration (inside a string with an escape before it), a key left
/// unclosed in a multi-line string. A string built with `${…}` is shown
/// at its start, and the message says so.
#[test]
fn validate_points_at_the_bad_character_of_a_boot_command() {
    let s = Scratch::new();
    let zeros = "0".repeat(64);
    let t = s.write(
        "b.toml",
        &[
            "[image]",
            "name = \"b\"",
            "version = \"1.0.0\"",
            "[variables.kw]",
            "type = \"string\"",
            "default = \"auto\"",
            "[source.qemu.i]",
            "iso_url = \"x.iso\"",
            &format!("iso_checksum = \"sha256:{zeros}\""),
            "disk_size = \"1G\"",
            "output = \"out/i.qcow2\"",
            "boot_command = [",
            "  \"linux auto<entr>\",",
            "  \"\\tx <wait5x>\",",
            "  \"\"\"",
            "multi <enter\"\"\",",
            "  \"${var.kw}<entr>\",",
            "  \"fine <enter><wait2s>\",",
            "]",
            "[[build]]",
            "sources = [\"qemu.i\"]",
            "",
        ]
        .join("\n"),
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    let err = text(&o).1;
    for want in [
        "b.toml:13:14: `source.qemu.i`: `boot_command[0]`: unknown key `<entr>`",
        "did you mean `<enter>`?",
        "b.toml:14:13: `source.qemu.i`: `boot_command[1]`: `<wait5x>`: `5x` is not a duration",
        "b.toml:16:7: `source.qemu.i`: `boot_command[2]`: `<enter` is not closed",
        "b.toml:17:3: `source.qemu.i`: `boot_command[3]`: unknown key `<entr>` (at byte 4 of the string's value",
        "error: 4 errors found",
    ] {
        assert!(err.contains(want), "{want}:\n{err}");
    }
    let o = s
        .kiln()
        .args(["validate", "--json"])
        .arg(&t)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    let places: Vec<_> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(places, vec![(13, 14), (14, 13), (16, 7), (17, 3)], "{v}");
}
