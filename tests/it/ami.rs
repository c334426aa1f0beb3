//! The AMI builder end to end: the real `kiln` binary against moto (an
//! AWS-compatible server, `moto_server` from PyPI) on a free loopback port,
//! with a real OpenBao for the response-wrapped secret delivery.
//!
//! moto accepts SSM commands but does not run them (every command
//! "succeeds" with no output), so what the instance would do is checked
//! where it can be: the command history SSM keeps, which is also where a
//! leaked secret would stay.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::aws::{self, FaultProxy, Moto, REGION, SOURCE_NAME};
use crate::vault::{Bao, KV2_SECRET, ROOT_TOKEN};
use crate::{assert_exit, text, Scratch};

const COPY_REGION: &str = "us-west-2";
const ACCOUNT: &str = "123456789012";

fn template(endpoint: &str, provisioners: &str, extra_source: &str) -> String {
    format!(
        r#"[image]
name = "web"
version = "1.2.0"

[source.ami.base]
region = "{REGION}"
endpoint = "{endpoint}"
from = {{ owners = ["amazon"], name = "{SOURCE_NAME}", most_recent = true }}
instance_type = "t3.micro"
tags = {{ team = "platform" }}
{extra_source}

[[build]]
name = "web"
sources = ["ami.base"]
{provisioners}
[build.register]
channels = ["dev"]
"#
    )
}

fn kiln(s: &Scratch) -> Command {
    let mut c = s.kiln();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
    c
}

fn build(s: &Scratch, extra_env: &[(&str, &str)]) -> Output {
    let mut c = kiln(s);
    c.args(["build", "t.toml"]);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Nothing of the build is left running.
async fn assert_nothing_left(endpoint: &str) {
    let ec2 = aws::ec2(endpoint, REGION);
    assert_eq!(
        aws::live_instances(&ec2).await,
        Vec::<String>::new(),
        "instances left"
    );
    assert_eq!(
        aws::security_groups(&ec2).await,
        Vec::<(String, String)>::new(),
        "temporary security groups left"
    );
}

/// The image ids of the build's artifacts, per region, from the summary.
fn artifacts(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("web.ami.base: ami "))
        .filter_map(|id| id.split_once(':'))
        .map(|(r, a)| (r.to_string(), a.to_string()))
        .collect()
}

#[tokio::test]
async fn builds_an_ami_copies_shares_and_publishes_it_without_secrets_in_ssm() {
    if !crate::vault::ready(&[]) {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bao = Bao::start();
    let s = Scratch::new();
    s.write("files/motd", "welcome to a kiln-built host\n");
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["echo configuring", "test -n \"$DB_PASSWORD\""]
env = { DB_PASSWORD = "${secret.db}", MODE = "golden" }

[[build.provisioner]]
type = "file"
source = "files/motd"
destination = "/etc/motd"
mode = "0644"
"#;
    let mut t = template(
        &moto.endpoint(),
        provisioners,
        &format!(
            "copy_to = [\"{COPY_REGION}\"]\nshare_with = [\"{ACCOUNT}\"]\nvault_address = \"http://vault.internal:8200\"\nvault_wrap_ttl = \"10m\""
        ),
    );
    t = t.replace(
        "[source.ami.base]",
        "[secrets.db]\nvault = \"secret/data/ci/db#password\"\n\n[source.ami.base]",
    );
    s.write("t.toml", &t);
    let out = build(
        &s,
        &[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", ROOT_TOKEN)],
    );
    assert_exit(&out, 0);
    let (stdout, stderr) = text(&out);
    assert!(!stdout.contains(KV2_SECRET) && !stderr.contains(KV2_SECRET));
    let made = artifacts(&format!("{stdout}{stderr}"));
    assert_eq!(made.len(), 2, "one AMI per region\n{stdout}");

    for (region, ami) in &made {
        let ec2 = aws::ec2(&moto.endpoint(), region);
        let images = aws::own_images(&ec2).await;
        let img = images
            .iter()
            .find(|i| &i.id == ami)
            .unwrap_or_else(|| panic!("{ami} not in {region}: {images:?}"));
        assert_eq!(img.state, "available");
        assert_eq!(img.tags.get("team").map(String::as_str), Some("platform"));
        assert_eq!(img.tags.get("kiln:image").map(String::as_str), Some("web"));
        assert!(img.tags.contains_key("kiln:run") && img.tags.contains_key("kiln:build-id"));
        // Shared with the account.
        let perms = ec2
            .describe_image_attribute()
            .image_id(ami)
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .unwrap();
        let users: Vec<_> = perms
            .launch_permissions()
            .iter()
            .filter_map(|p| p.user_id())
            .collect();
        assert_eq!(users, [ACCOUNT], "launch permission in {region}");
        // The channel's SSM parameter in that region names that AMI.
        let ssm = aws::ssm(&moto.endpoint(), region);
        assert_eq!(
            aws::parameter(&ssm, "/kiln/web/dev").await.as_deref(),
            Some(ami.as_str()),
            "channel parameter in {region}"
        );
    }
    // The source was picked by the filter and recorded by id.
    let manifests: Vec<_> = walk(&s.state().join("manifests"));
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(doc["base"], aws::SOURCE_AMI, "{doc}");

    assert_nothing_left(&moto.endpoint()).await;

    // SSM's command history: the provisioners ran there, the secret never
    // did; it went as a wrapping token the instance trades once.
    let history = aws::command_history(&aws::ssm(&moto.endpoint(), REGION)).await;
    let all = history.join("\n");
    use base64::Engine as _;
    for needle in [
        KV2_SECRET.to_string(),
        base64::engine::general_purpose::STANDARD.encode(KV2_SECRET),
    ] {
        assert!(!all.contains(&needle), "secret in SSM history: {all}");
    }
    let scripts = scripts_of(&history);
    assert!(
        !scripts.contains(KV2_SECRET),
        "secret in a script: {scripts}"
    );
    assert!(
        scripts.contains("echo configuring"),
        "the shell provisioner ran: {scripts}"
    );
    let motd_b64 =
        base64::engine::general_purpose::STANDARD.encode("welcome to a kiln-built host\n");
    assert!(
        scripts.contains(&motd_b64) && scripts.contains("/etc/motd"),
        "the file was uploaded through SSM commands: {scripts}"
    );
    assert!(
        all.contains("vault.internal:8200"),
        "instance-side Vault address"
    );
    let token = all
        .split("KILN_WRAPPED_TOKEN=")
        .nth(1)
        .and_then(|rest| rest.split([' ', '\\', '\'']).find(|t| !t.is_empty()))
        .expect("a wrapping token in the command")
        .to_string();
    // Acting as the instance: the token unwraps to the provisioner's
    // environment, once.
    let unwrap = || {
        Command::new("curl")
            .args(["-s", "-X", "POST", "-H", &format!("X-Vault-Token: {token}")])
            .arg(format!("{}/v1/sys/wrapping/unwrap", bao.addr))
            .output()
            .unwrap()
    };
    let first: serde_json::Value = serde_json::from_slice(&unwrap().stdout).unwrap();
    assert_eq!(first["data"]["DB_PASSWORD"], KV2_SECRET, "{first}");
    assert_eq!(first["data"]["MODE"], "golden");
    let second: serde_json::Value = serde_json::from_slice(&unwrap().stdout).unwrap();
    assert!(
        second["data"].is_null(),
        "a wrapping token works once: {second}"
    );

    // Revocation maps to EC2 image deprecation: moto does not implement
    // EnableImageDeprecation, so the catalog records the revocation and
    // kiln says, with exit 1, that the AMI could not be deprecated.
    let revoke = kiln(&s)
        .args(["images", "revoke", "web", "1.2.0+1", "--reason", "CVE"])
        .output()
        .unwrap();
    let (rout, rerr) = text(&revoke);
    assert!(rout.contains("revoke web 1.2.0+1"), "{rout}{rerr}");
    if revoke.status.success() {
        assert!(rout.contains("deprecated"), "{rout}");
    } else {
        assert!(
            rerr.contains("cannot deprecate") && rerr.contains("does not implement"),
            "{rerr}"
        );
    }
    let show = kiln(&s)
        .args(["images", "show", "web", "1.2.0+1"])
        .output()
        .unwrap();
    assert!(text(&show).0.contains("REVOKED"), "{}", text(&show).0);
}

/// The provisioner scripts inside the commands kiln sent (each command
/// carries its script base64-encoded into a private temp file).
fn scripts_of(history: &[String]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for h in history {
        let doc: serde_json::Value = serde_json::from_str(h).unwrap();
        for line in doc["parameters"]["commands"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let line = line.as_str().unwrap_or_default();
            let Some(rest) = line.strip_prefix("printf '%s' ") else {
                continue;
            };
            if !line.contains("\"$kiln_dir/script\"") {
                continue;
            }
            let arg = rest.split(' ').next().unwrap().trim_matches('\'');
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(arg)
                .unwrap();
            out.push_str(&String::from_utf8_lossy(&bytes));
            out.push('\n');
        }
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "json")
            && !p.to_string_lossy().ends_with(".intoto.json")
            && !p.to_string_lossy().contains(".dsse")
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_build_succeeds_with_a_fifth_of_the_calls_throttled_or_failing() {
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto.endpoint(), 0.2, 7);
    let s = Scratch::new();
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["echo one"]

[[build.provisioner]]
type = "shell"
inline = ["echo two"]
"#;
    s.write(
        "t.toml",
        &template(
            &proxy.endpoint(),
            provisioners,
            &format!("copy_to = [\"{COPY_REGION}\"]"),
        ),
    );
    let out = build(&s, &[]);
    assert_exit(&out, 0);
    let (stdout, stderr) = text(&out);
    assert_eq!(artifacts(&format!("{stdout}{stderr}")).len(), 2);
    assert!(
        proxy.faults() >= 3,
        "only {} of {} calls were faulted",
        proxy.faults(),
        proxy.requests()
    );
    assert_nothing_left(&moto.endpoint()).await;
}

#[tokio::test]
async fn sigkill_mid_build_then_cleanup_leaves_no_instance_or_security_group() {
    let Some(moto) = Moto::start() else { return };
    // A slow endpoint, so the build can be caught with its instance up.
    let proxy = FaultProxy::start(&moto.endpoint(), 0.0, 1);
    proxy.set_delay(Duration::from_millis(300));
    let s = Scratch::new();
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["echo one"]
"#;
    s.write("t.toml", &template(&proxy.endpoint(), provisioners, ""));
    let mut child = kiln(&s)
        .args(["build", "t.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let start = Instant::now();
    while aws::live_instances(&ec2).await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no instance started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended too soon"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        aws::live_instances(&ec2).await.len(),
        1,
        "the kill left the instance"
    );
    assert_eq!(aws::security_groups(&ec2).await.len(), 1);
    proxy.set_delay(Duration::ZERO);

    let dry = kiln(&s).args(["cleanup", "--dry-run"]).output().unwrap();
    assert_exit(&dry, 0);
    assert!(
        text(&dry).0.contains("tagged kiln:run="),
        "{}",
        text(&dry).0
    );
    assert_eq!(
        aws::live_instances(&ec2).await.len(),
        1,
        "dry run touched nothing"
    );

    let clean = kiln(&s).arg("cleanup").output().unwrap();
    assert_exit(&clean, 0);
    assert_nothing_left(&moto.endpoint()).await;
    let again = kiln(&s).arg("cleanup").output().unwrap();
    assert!(
        text(&again).0.contains("nothing to clean up"),
        "{}",
        text(&again).0
    );
}

#[tokio::test]
async fn a_filter_that_matches_nothing_fails_before_anything_is_created() {
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    s.write(
        "t.toml",
        &template(&moto.endpoint(), "", "").replace(SOURCE_NAME, "no-such-image-*"),
    );
    let out = build(&s, &[]);
    assert_exit(&out, 1);
    let (stdout, stderr) = text(&out);
    assert!(
        format!("{stdout}{stderr}").contains("no AMI in us-east-1 matches"),
        "{stdout}{stderr}"
    );
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let all = ec2.describe_instances().send().await.unwrap();
    assert!(all.reservations().is_empty(), "nothing was launched");
    assert_nothing_left(&moto.endpoint()).await;
}

#[tokio::test]
async fn prune_deletes_amis_in_every_region_but_keeps_channel_targets_and_launch_template_images() {
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    let t = template(
        &moto.endpoint(),
        "",
        &format!("copy_to = [\"{COPY_REGION}\"]"),
    )
    .replace(
        "[source.ami.base]",
        "[image.retention]\nkeep = 1\n\n[source.ami.base]",
    );
    s.write("t.toml", &t);
    let mut versions = vec![];
    for _ in 0..4 {
        let out = build(&s, &[]);
        assert_exit(&out, 0);
        let (o, e) = text(&out);
        versions.push(artifacts(&format!("{o}{e}")));
    }
    // 1.2.0+1 is in production; 1.2.0+2's copy is what a launch template
    // in the other region starts.
    assert_exit(
        &kiln(&s)
            .args(["images", "promote", "web", "1.2.0+1", "prod"])
            .output()
            .unwrap(),
        0,
    );
    let ami_in = |v: usize, region: &str| {
        versions[v]
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, a)| a.clone())
            .unwrap()
    };
    let west = aws::ec2(&moto.endpoint(), COPY_REGION);
    west.create_launch_template()
        .launch_template_name("web-fleet")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(ami_in(1, COPY_REGION))
                .build(),
        )
        .send()
        .await
        .unwrap();

    let out = kiln(&s).args(["prune", "t.toml"]).output().unwrap();
    assert_exit(&out, 0);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("deleted web 1.2.0+3"), "{stdout}{stderr}");
    assert!(
        stdout.contains("kept web 1.2.0+2") && stdout.contains("launch template web-fleet"),
        "{stdout}"
    );
    for region in [REGION, COPY_REGION] {
        let ids: Vec<String> = aws::own_images(&aws::ec2(&moto.endpoint(), region))
            .await
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert!(
            !ids.contains(&ami_in(2, region)),
            "1.2.0+3 gone in {region}"
        );
        for kept in [0, 1, 3] {
            assert!(
                ids.contains(&ami_in(kept, region)),
                "1.2.0+{} kept in {region}",
                kept + 1
            );
        }
    }
    // The deleted AMIs' snapshots went with them.
    let snaps = aws::ec2(&moto.endpoint(), REGION)
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:kiln:image")
                .values("web")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let live_snaps = snaps.snapshots().len();
    assert_eq!(live_snaps, 3, "one snapshot per kept AMI in {REGION}");
    let audit = kiln(&s).arg("audit").output().unwrap();
    let log = text(&audit).0;
    assert!(log.contains("delete web 1.2.0+3: retention"), "{log}");
    assert!(
        log.contains(&ami_in(2, COPY_REGION)),
        "the deletion names the copy: {log}"
    );
}

#[tokio::test]
async fn verify_vouches_for_a_catalogued_signed_ami_until_it_is_revoked() {
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    let keygen = kiln(&s)
        .args(["keygen", "--out", "cosign"])
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&keygen, 0);
    s.write(
        "t.toml",
        &format!(
            "{}\n[build.sign]\nkey = \"cosign.key\"\n",
            template(&moto.endpoint(), "", "")
        ),
    );
    let out = build(&s, &[("KILN_PASSWORD", "pw")]);
    assert_exit(&out, 0);
    let (o, e) = text(&out);
    let (region, ami) = artifacts(&format!("{o}{e}")).pop().unwrap();
    let verify = |what: &str| {
        kiln(&s)
            .args(["verify", "--key", "cosign.pub", what])
            .output()
            .unwrap()
    };
    let ok = verify(&ami);
    assert_exit(&ok, 0);
    assert!(
        text(&ok)
            .0
            .contains(&format!("verified AMI {region}:{ami}: web 1.2.0+1")),
        "{}",
        text(&ok).0
    );
    // Another key did not sign it; an unknown AMI has nobody vouching.
    let other = kiln(&s)
        .args(["keygen", "--out", "other"])
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&other, 0);
    let wrong = kiln(&s)
        .args(["verify", "--key", "other.pub", &ami])
        .output()
        .unwrap();
    assert_exit(&wrong, 1);
    let unknown = verify("ami-0123456789abcdef0");
    assert_exit(&unknown, 1);
    assert!(
        text(&unknown).1.contains("not in the catalog"),
        "{}",
        text(&unknown).1
    );
    // Revoked: refused, naming the reason.
    let _ = kiln(&s)
        .args([
            "images",
            "revoke",
            "web",
            "1.2.0+1",
            "--reason",
            "CVE-2026-1",
        ])
        .output()
        .unwrap();
    let revoked = verify(&format!("{region}:{ami}"));
    assert_exit(&revoked, 1);
    assert!(
        text(&revoked).1.contains("CVE-2026-1"),
        "{}",
        text(&revoked).1
    );
}
