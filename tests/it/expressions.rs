//! Expressions end to end: an OCI build of a busybox image whose template
//! uses conditionals, `try`, `merge`, `lookup`, `length`, `contains`,
//! indexing, `templatefile` and `formatdate`; what they computed is checked
//! in the image and its config, and a secret passed through `merge`,
//! `lookup` and `templatefile` stays sensitive (refused outside `env`,
//! redacted in the output). Needs root and runc.

use std::path::Path;

use crate::oci::busybox_rootfs;
use crate::{assert_exit, text, Scratch};

const SECRET: &str = "expr-s3cr3t-7f3a";

const TEMPLATE: &str = r#"[image]
name = "expr"
version = "1.0.0"

[variables.env]
default = "prod"

[variables.tags]
type = "map"
default = { team = "web" }

[variables.pkgs]
type = "list"
default = ["curl", "jq"]

[secrets.token]
env = "KILN_EXPR_TOKEN"

[locals]
labels = "${merge(var.tags, { env = var.env, tier = var.env == \"prod\" ? \"gold\" : \"silver\" })}"
owner = "${try(var.tags.owner, \"nobody\")}"
creds = "${merge(var.tags, { token = secret.token })}"
motd = "${templatefile(\"motd.tpl\", { name = image.name, labels = local.labels, pkgs = var.pkgs })}"
stamp = "${formatdate(\"YYYYMMDD-EEE\", \"2024-03-09T07:05:03Z\")}"

[source.oci.img]
from = "rootfs:base.tar"
to = ["oci-layout:out/e:1"]
network = "none"

[source.oci.img.config]
labels = "${local.labels}"

[[build]]
sources = ["oci.img"]

[[build.provisioner]]
type = "shell"
inline = [
  "printf '%s' \"$MOTD\" > /etc/motd",
  "echo ${local.owner} ${length(var.pkgs)} ${contains(var.pkgs, \"jq\")} ${lookup(local.labels, \"tier\")} ${var.pkgs[1]} ${local.stamp} > /etc/facts",
  "echo \"token is $TOKEN\"",
  "echo \"$CRED\" | grep -q '^password=' && echo cred rendered",
  "test \"$(echo \"$CRED\" | cut -d= -f2)\" = \"$TOKEN\"",
]
env = { MOTD = "${local.motd}", TOKEN = "${lookup(local.creds, \"token\")}", CRED = "${templatefile(\"cred.tpl\", { token = local.creds.token })}" }
"#;

/// The image config of the first manifest of an OCI layout.
fn image_config(layout: &Path) -> serde_json::Value {
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    blob(manifest["config"]["digest"].as_str().unwrap())
}

#[test]
fn a_build_uses_every_expression_and_keeps_the_secret_sensitive() {
    if !crate::require("expressions", &["runc", "busybox", "umoci"], true) {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    s.write(
        "motd.tpl",
        "Welcome to ${name} (${labels.tier}, team ${labels[\"team\"]})\n${length(pkgs) > 1 ? \"packages\" : \"package\"}: ${join(\" \", pkgs)}\n",
    );
    s.write("cred.tpl", "password=${token}\n");
    let t = s.write("t.toml", TEMPLATE);
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_EXPR_TOKEN", SECRET)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_exit(&o, 0);
    assert!(
        !out.contains(SECRET) && !err.contains(SECRET),
        "the secret leaked: {out}{err}"
    );
    assert!(out.contains("token is <redacted>"), "{out}");
    assert!(out.contains("cred rendered"), "{out}");
    // What the expressions computed, in the image.
    let bundle = s.path().join("bundle");
    let o = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", s.path().join("out/e").display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci: {}", text(&o).1);
    let root = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd")).unwrap(),
        "Welcome to expr (gold, team web)\npackages: curl jq\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/facts")).unwrap(),
        "nobody 2 true gold jq 20240309-Sat\n"
    );
    let config = image_config(&s.path().join("out/e"));
    let labels = &config["config"]["Labels"];
    for (k, v) in [("env", "prod"), ("team", "web"), ("tier", "gold")] {
        assert_eq!(labels[k], v, "{labels}");
    }
    // --var changes the conditional's branch.
    let o = s
        .kiln()
        .args(["inspect", "--var", "env=dev"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("silver"), "{}", text(&o).0);
}

#[test]
fn a_secret_through_merge_lookup_or_templatefile_is_refused_outside_env() {
    let s = Scratch::new();
    s.write("cred.tpl", "password=${token}\n");
    for (i, value) in [
        "${lookup(merge({ a = \"x\" }, { token = secret.token }), \"token\")}",
        "${merge({ a = \"x\" }, { token = secret.token }).token}",
        "${templatefile(\"cred.tpl\", { token = secret.token })}",
        "${try(secret.token, \"x\")}",
        "${secret.token == \"\" ? \"empty\" : \"set\"}",
    ]
    .iter()
    .enumerate()
    {
        let t = s.write(
            &format!("t{i}.toml"),
            &format!("[image]\nname = \"x\"\nversion = \"1.0.0\"\n\n[secrets.token]\nenv = \"KILN_EXPR_TOKEN\"\n\n[source.oci.img]\nfrom = \"scratch\"\nto = [\"oci-layout:out/x:1\"]\n\n[[build]]\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo {}\"]\n", value.replace('"', "\\\"")),
        );
        let o = s
            .kiln()
            .arg("validate")
            .arg(&t)
            .env("KILN_EXPR_TOKEN", SECRET)
            .output()
            .unwrap();
        let err = text(&o).1;
        assert_exit(&o, 2);
        assert!(
            err.contains("a sensitive value cannot be used in `inline`")
                && err.contains(&format!("t{i}.toml:17:")),
            "{value}: {err}"
        );
        assert!(!err.contains(SECRET), "{err}");
    }
}

#[test]
fn lists_computed_by_expressions_are_checked_item_by_item() {
    let s = Scratch::new();
    s.write("a.sh", "echo a\n");
    let t = s.write(
        "t.toml",
        "[image]\nname = \"x\"\nversion = \"1.0.0\"\n\n[variables.full]\ntype = \"bool\"\ndefault = false\n\n[locals]\nscripts = \"${var.full ? [\\\"a.sh\\\", \\\"b.sh\\\"] : [\\\"a.sh\\\"]}\"\n\n[source.oci.img]\nfrom = \"scratch\"\nto = [\"oci-layout:out/x:1\"]\n\n[[build]]\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\nscripts = \"${local.scripts}\"\n",
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 0);
    // The other branch names a file that does not exist: an error at the
    // field, naming the file.
    let o = s
        .kiln()
        .args(["validate", "--var", "full=true"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let err = text(&o).1;
    assert!(
        err.contains("t.toml:21:11") && err.contains("b.sh` does not exist"),
        "{err}"
    );
}
