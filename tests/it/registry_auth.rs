//! Registry credentials in the template (`[source.oci.*] auth`), per
//! registry, from `[secrets]`: a real `docker-registry` with htpasswd
//! (bcrypt) auth on 127.0.0.1 is pushed to and pulled from with them, with
//! no docker config.json at all; a wrong password is refused naming the
//! template's `auth`; a password written in the template is refused; the
//! password is in no output and no file kiln wrote. Also `USER` by name
//! (resolved in the image's /etc/passwd, unknown names refused) and
//! `volumes`. Needs root, runc, docker-registry and htpasswd.

use std::path::Path;

use crate::oci::{busybox_rootfs, Registry};
use crate::{assert_exit, text, Scratch};

const PASSWORD: &str = "reg-pa55-9c1e";

fn ready() -> bool {
    crate::require(
        "registry auth",
        &["runc", "busybox", "docker-registry", "htpasswd", "skopeo"],
        true,
    )
}

/// A template from `from` to `to` whose `auth` table covers `registry`
/// with `password` (a `${…}` expression or a literal).
fn template(registry: &str, from: &str, to: &str, password: &str, extra: &str) -> String {
    format!(
        r#"[image]
name = "auth"
version = "1.0.0"

[secrets.registry]
env = "KILN_TEST_REGISTRY_PASSWORD"

[source.oci.img]
from = "{from}"
to = ["{to}"]
network = "none"

[source.oci.img.auth."{registry}"]
username = "kiln"
password = "{password}"

[source.oci.img.config]
cmd = ["/bin/sh"]
{extra}
[[build]]
sources = ["oci.img"]

[[build.provisioner]]
type = "shell"
inline = ["id -u", "grep -q '^svc:' /etc/passwd || echo 'svc:x:1000:1000::/:/bin/sh' >> /etc/passwd"]
"#
    )
}

fn build(s: &Scratch, t: &Path, password: &str) -> std::process::Output {
    s.kiln()
        .args(["build", "--json"])
        .arg(t)
        .env("KILN_TEST_REGISTRY_PASSWORD", password)
        .env("DOCKER_CONFIG", s.path().join("no-docker-config"))
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap()
}

/// Fails if `needle` is in any file under `dir`.
fn assert_in_no_file(dir: &Path, needle: &str) {
    let o = std::process::Command::new("grep")
        .args(["-rlF", needle])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        o.stdout.is_empty(),
        "found in {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn template_credentials_push_and_pull_without_a_docker_config() {
    if !ready() {
        return;
    }
    let reg = Registry::start_with(Some(("kiln", PASSWORD)));
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let base = format!("{}/auth/base:1", reg.addr);
    let secret = "${secret.registry}";
    let user = "user = \"svc\"\nvolumes = [\"/data\", \"/var/log/app\"]\n";
    let t = s.write(
        "base.toml",
        &template(
            &reg.addr,
            "rootfs:base.tar",
            &format!("registry:{base}"),
            secret,
            user,
        ),
    );
    // The right password: pushed (no config.json exists).
    let o = build(&s, &t, PASSWORD);
    let (out, err) = text(&o);
    assert_exit(&o, 0);
    assert!(
        out.contains(&format!("credentials accepted: {}", reg.addr)),
        "{out}"
    );
    // A child pulls it with the same credentials (`from` and `to` on the
    // registry); its provisioners run as the base's USER, by name.
    let child = format!("{}/auth/child:1", reg.addr);
    let t2 = s.write(
        "child.toml",
        &template(
            &reg.addr,
            &format!("registry:{base}"),
            &format!("registry:{child}"),
            secret,
            "",
        ),
    );
    let o = build(&s, &t2, PASSWORD);
    let (out2, err2) = text(&o);
    assert_exit(&o, 0);
    assert!(out2.contains("\"line\":\"1000\""), "runs as svc: {out2}");
    for text in [&out, &err, &out2, &err2] {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }
    assert_in_no_file(&s.state(), PASSWORD);
    assert_in_no_file(s.path(), PASSWORD);
    // skopeo, with the credentials on its own command line (the test's,
    // not kiln's), sees USER and Volumes in the config.
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--config", "--tls-verify=false", "--creds"])
        .arg(format!("kiln:{PASSWORD}"))
        .arg(format!("docker://{base}"))
        .output()
        .unwrap();
    if o.status.success() {
        let config: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(config["config"]["User"], "svc");
        assert_eq!(
            config["config"]["Volumes"],
            serde_json::json!({ "/data": {}, "/var/log/app": {} })
        );
    } else {
        panic!("skopeo inspect: {}", text(&o).1);
    }

    // A wrong password: refused before anything runs, naming the template.
    let o = build(&s, &t, "wrong-password");
    let (out, err) = text(&o);
    assert_exit(&o, 1);
    assert!(
        out.contains("refused the credentials") && out.contains("template's `auth` table"),
        "{out}{err}"
    );
    assert!(!out.contains("\"line\":\"0\""), "no provisioner ran: {out}");

    // A password written in the template is refused, not used.
    let t3 = s.write(
        "plain.toml",
        &template(
            &reg.addr,
            "rootfs:base.tar",
            &format!("registry:{base}"),
            PASSWORD,
            "",
        ),
    );
    let o = build(&s, &t3, PASSWORD);
    assert_exit(&o, 1);
    assert!(
        text(&o).0.contains("must come from `[secrets]`"),
        "{}",
        text(&o).0
    );
}

#[test]
fn an_unknown_user_name_is_refused_never_root() {
    if !crate::require("oci user", &["runc", "busybox"], true) {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let t = s.write(
        "t.toml",
        "[image]\nname = \"u\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/u:1\"]\nnetwork = \"none\"\n\n[source.oci.img.config]\nuser = \"nosuchuser\"\n\n[[build]]\nsources = [\"oci.img\"]\n",
    );
    let o = s.kiln().args(["build", "--json"]).arg(&t).output().unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o)
            .0
            .contains("there is no user `nosuchuser` in the image's /etc/passwd"),
        "{}",
        text(&o).0
    );
    assert!(!s.path().join("out/u/index.json").exists());
}
