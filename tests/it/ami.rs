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

pub(crate) const COPY_REGION: &str = "us-west-2";
pub(crate) const ACCOUNT: &str = "123456789012";

pub(crate) fn template(endpoint: &str, provisioners: &str, extra_source: &str) -> String {
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

pub(crate) fn kiln(s: &Scratch) -> Command {
    let mut c = s.kiln();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
    c
}

pub(crate) fn build(s: &Scratch, extra_env: &[(&str, &str)]) -> Output {
    let mut c = kiln(s);
    c.args(["build", "t.toml"]);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Nothing of the build is left running.
pub(crate) async fn assert_nothing_left(endpoint: &str) {
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
pub(crate) fn artifacts(out: &str) -> Vec<(String, String)> {
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
    // Where the file lands when this test plays the instance below.
    let instance_root = tempfile::tempdir().unwrap();
    let motd = instance_root.path().join("etc/motd");
    let provisioners = format!(
        r#"
[[build.provisioner]]
type = "shell"
inline = ["echo configuring", "test -n \"$DB_PASSWORD\"", "echo \"mode=$MODE length=$${{#DB_PASSWORD}}\""]
env = {{ DB_PASSWORD = "${{secret.db}}", MODE = "golden" }}

[[build.provisioner]]
type = "file"
source = "files/motd"
destination = "{}"
mode = "0640"
"#,
        motd.display()
    );
    let mut t = template(
        &moto.endpoint(),
        &provisioners,
        &format!(
            "copy_to = [\"{COPY_REGION}\"]\nshare_with = [\"{ACCOUNT}\"]\nkms_key_id = \"alias/golden\"\ncopy_kms_key_ids = {{ \"{COPY_REGION}\" = \"alias/golden\" }}\nvault_address = \"{}\"\nvault_wrap_ttl = \"10m\"",
            bao.addr
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
    let (history, all, scripts) = ssm_history_without_secret(&moto.endpoint()).await;
    use base64::Engine as _;
    assert!(
        scripts.contains("echo configuring"),
        "the shell provisioner ran: {scripts}"
    );
    let motd_b64 =
        base64::engine::general_purpose::STANDARD.encode("welcome to a kiln-built host\n");
    assert!(
        scripts.contains(&motd_b64),
        "the file was uploaded through SSM commands: {scripts}"
    );
    assert!(
        all.contains("KILN_WRAPPED_TOKEN="),
        "a wrapping token: {all}"
    );
    // moto runs nothing, so this test plays the instance: every command
    // SSM recorded, in order, under `sh` — the provisioner unwraps its
    // environment from Vault, the file is rebuilt from its chunks.
    let mut outputs = vec![];
    for h in &history {
        let doc: serde_json::Value = serde_json::from_str(h).unwrap();
        let commands = doc["parameters"]["commands"].as_array().unwrap();
        assert_eq!(commands.len(), 1, "one script per command");
        let o = Command::new("sh")
            .args(["-c", commands[0].as_str().unwrap()])
            .env_remove("VAULT_TOKEN")
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        outputs.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    let outputs = outputs.join("");
    assert!(
        outputs.contains(&format!("mode=golden length={}", KV2_SECRET.len())),
        "{outputs}"
    );
    assert_eq!(
        std::fs::read_to_string(&motd).unwrap(),
        "welcome to a kiln-built host\n"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&motd).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
    // A second run finds the wrapping token spent.
    let provisioner = history
        .iter()
        .find(|h| h.contains("KILN_WRAPPED_TOKEN="))
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(provisioner).unwrap();
    let again = Command::new("sh")
        .args(["-c", doc["parameters"]["commands"][0].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success(), "a wrapping token works once");
    // The channel parameter is an `aws:ec2:image` labelled with the version.
    let hist = aws::ssm(&moto.endpoint(), REGION)
        .get_parameter_history()
        .name("/kiln/web/dev")
        .send()
        .await
        .unwrap();
    let last = hist.parameters().last().unwrap();
    assert_eq!(last.data_type(), Some("aws:ec2:image"));
    assert_eq!(last.labels(), ["v1.2.0_1"]);

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

/// SSM's command history (each command, all of them joined, and the
/// scripts inside them), checked to hold the Vault secret nowhere, plain
/// or base64.
async fn ssm_history_without_secret(endpoint: &str) -> (Vec<String>, String, String) {
    use base64::Engine as _;
    let history = aws::command_history(&aws::ssm(endpoint, REGION)).await;
    let all = history.join("\n");
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
    (history, all, scripts)
}

/// The provisioner scripts inside the commands kiln sent (each command
/// carries its script base64-encoded into a private temp file).
pub(crate) fn scripts_of(history: &[String]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for h in history {
        let doc: serde_json::Value = serde_json::from_str(h).unwrap();
        let commands: Vec<String> = doc["parameters"]["commands"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
            .flat_map(|c| c.lines().map(String::from))
            .collect();
        for line in &commands {
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
    // What the instance was launched with, while it is still there.
    let desc = ec2.describe_instances().send().await.unwrap();
    let inst = desc
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| {
            i.state().and_then(|s| s.name())
                == Some(&aws_sdk_ec2::types::InstanceStateName::Running)
        })
        .unwrap();
    assert_eq!(inst.key_name(), None, "no key pair");
    let md = inst.metadata_options().unwrap();
    assert_eq!(
        md.http_tokens(),
        Some(&aws_sdk_ec2::types::HttpTokensState::Required),
        "IMDSv2 only"
    );
    assert_eq!(md.http_put_response_hop_limit(), Some(1));
    let tags: Vec<_> = inst.tags().iter().filter_map(|t| t.key()).collect();
    assert!(
        tags.contains(&"kiln:run") && tags.contains(&"kiln:build-id"),
        "{tags:?}"
    );
    let group = inst.security_groups()[0].group_id().unwrap();
    let groups = ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap();
    assert!(
        groups.security_groups()[0].ip_permissions().is_empty(),
        "no ingress rule: {:?}",
        groups.security_groups()[0].ip_permissions()
    );
    // moto attaches the root volume a moment after the instance is
    // listed: wait (bounded) until the instance names it.
    let instance_id = inst.instance_id().unwrap().to_string();
    let start = Instant::now();
    let volume_ids: Vec<String> = loop {
        let d = ec2
            .describe_instances()
            .instance_ids(&instance_id)
            .send()
            .await
            .unwrap();
        let ids: Vec<String> = d
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.block_device_mappings())
            .filter_map(|b| b.ebs().and_then(|e| e.volume_id()).map(String::from))
            .collect();
        if !ids.is_empty() {
            break ids;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the instance never got a root volume"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let volumes = ec2
        .describe_volumes()
        .set_volume_ids(Some(volume_ids))
        .send()
        .await
        .unwrap();
    assert!(
        !volumes.volumes().is_empty()
            && volumes
                .volumes()
                .iter()
                .all(|v| v.encrypted() == Some(true)),
        "encrypted root volume: {:?}",
        volumes.volumes()
    );
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
    s.keygen("cosign", "pw");
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
    // Built without `[[build.test]]`: `--require-tests` refuses it.
    let untested = kiln(&s)
        .args(["verify", "--key", "cosign.pub", "--require-tests", &ami])
        .output()
        .unwrap();
    assert_exit(&untested, 1);
    assert!(
        text(&untested)
            .1
            .contains("no test results in its signed build manifest"),
        "{}",
        text(&untested).1
    );
    // Another key did not sign it; an unknown AMI has nobody vouching.
    s.keygen("other", "pw");
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
    // The revoke published the catalog head in SSM; cutting the revoke
    // from the catalog folder is then refused by verify on its own.
    let ssm = aws::ssm(&moto.endpoint(), &region);
    let published = aws::parameter(&ssm, "/kiln/web/catalog-head")
        .await
        .expect("the head is published beside the AMI");
    assert!(published.contains("application/vnd.kiln.catalog-head.v1+json"));
    let log = s.state().join("catalog/log");
    let mut entries: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    std::fs::remove_file(entries.last().unwrap()).unwrap();
    let cut = verify(&format!("{region}:{ami}"));
    assert_exit(&cut, 1);
    assert!(
        text(&cut)
            .1
            .contains("does not hold the head published at `SSM parameter /kiln/web/catalog-head"),
        "{}",
        text(&cut).1
    );
}

/// An AMI of our own named `name`, made from moto's stock image.
async fn own_base(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    let run = ec2
        .run_instances()
        .image_id(aws::SOURCE_AMI)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    let img = ec2
        .create_image()
        .instance_id(&instance)
        .name(name)
        .send()
        .await
        .unwrap();
    ec2.terminate_instances()
        .instance_ids(&instance)
        .send()
        .await
        .unwrap();
    img.image_id().unwrap().to_string()
}

#[tokio::test]
async fn a_newer_ami_matching_the_source_filter_makes_plan_and_skip_unchanged_rebuild() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let first = own_base(&ec2, "kiln-base-1").await;
    let s = Scratch::new();
    let t = template(&moto.endpoint(), "", "")
        .replace(
            &format!("owners = [\"amazon\"], name = \"{SOURCE_NAME}\""),
            "owners = [\"self\"], name = \"kiln-base-*\"",
        )
        .replace(
            "[build.register]",
            "[build.rebuild]\nwhen = [\"inputs\", \"base\"]\n\n[build.register]",
        );
    s.write("t.toml", &t);
    let plan = || {
        let o = kiln(&s)
            .args(["plan", "--json", "t.toml"])
            .output()
            .unwrap();
        assert_exit(&o, 0);
        serde_json::from_str::<serde_json::Value>(text(&o).0.trim()).unwrap()
    };
    assert_exit(&build(&s, &[]), 0);
    let p = plan();
    assert_eq!(p["jobs"][0]["rebuild"], false, "{p}");
    // moto dates images to the second: the next one must be newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = own_base(&ec2, "kiln-base-2").await;
    let p = plan();
    assert_eq!(p["jobs"][0]["rebuild"], true, "{p}");
    let reasons = p["jobs"][0]["reasons"].to_string();
    assert!(
        reasons.contains(&second) && reasons.contains(&first),
        "{reasons}"
    );
    let out = kiln(&s)
        .args(["build", "--skip-unchanged", "t.toml"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let (o, e) = text(&out);
    assert_eq!(
        artifacts(&format!("{o}{e}")).len(),
        1,
        "rebuilt on the new base"
    );
    let p = plan();
    assert_eq!(p["jobs"][0]["rebuild"], false, "{p}");
}

/// Settings from real amazon-ebs templates (issue #21): the base from an
/// SSM parameter, user data, a public address, tags on the run, its
/// volumes and the snapshots, sharing with an organization and an OU.
/// What moto does not keep is named where it is checked.
#[tokio::test]
async fn ssm_parameter_base_user_data_tags_and_organization_sharing() {
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    let (ec2, ssm) = (
        aws::ec2(&moto.endpoint(), REGION),
        aws::ssm(&moto.endpoint(), REGION),
    );
    ssm.put_parameter()
        .name("/golden/debian-12/latest")
        .value(aws::SOURCE_AMI)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .data_type("aws:ec2:image")
        .send()
        .await
        .unwrap();
    let org = "arn:aws:organizations::123456789012:organization/o-abcdefghij";
    let ou = "arn:aws:organizations::123456789012:ou/o-abcdefghij/ou-ab12-cdefgh34";
    let extra = format!(
        r##"user_data = "#cloud-config\nhostname: ${{image.name}}-builder\n"
associate_public_ip_address = false
run_tags = {{ cost = "ci" }}
run_volume_tags = {{ backup = "never" }}
snapshot_tags = {{ retention = "90d" }}
encrypted = false
share_with_orgs = ["{org}"]
share_with_ous = ["{ou}"]
"##
    );
    let t = template(&moto.endpoint(), "", &extra).replace(
        &format!(
            "from = {{ owners = [\"amazon\"], name = \"{SOURCE_NAME}\", most_recent = true }}"
        ),
        "from = \"ssm:/golden/debian-12/latest\"",
    );
    // moto reserves `/aws/service/…` names for its own: the test's
    // parameter lives elsewhere (any name works the same).
    assert!(t.contains("ssm:/golden/"), "{t}");
    s.write("t.toml", &t);
    let out = build(&s, &[]);
    assert_exit(&out, 0);
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    assert!(
        all.contains(&format!("source AMI {} (", aws::SOURCE_AMI))
            && all.contains("from SSM parameter /golden/debian-12/latest"),
        "{all}"
    );
    let (_, ami) = artifacts(&all).pop().expect("an AMI");
    // The base recorded is the resolved id.
    let manifests: Vec<_> = walk(&s.state().join("manifests"));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(doc["base"], aws::SOURCE_AMI, "{doc}");

    // The (terminated) build instance: user data as rendered, run tags.
    let desc = ec2.describe_instances().send().await.unwrap();
    let inst = desc
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.tags().iter().any(|t| t.key() == Some("kiln:run")))
        .expect("the build instance is still listed");
    let id = inst.instance_id().unwrap();
    let tags: std::collections::BTreeMap<_, _> = inst
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(tags.get("cost"), Some(&"ci"), "{tags:?}");
    let ud = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = ud.user_data().and_then(|u| u.value()).expect("user data");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        "#cloud-config\nhostname: web-builder\n"
    );

    // The image: shared with the organization and the OU, and not public.
    let perms = ec2
        .describe_image_attribute()
        .image_id(&ami)
        .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
        .send()
        .await
        .unwrap();
    let p = perms.launch_permissions();
    assert!(p.iter().any(|l| l.organization_arn() == Some(org)), "{p:?}");
    assert!(
        p.iter().any(|l| l.organizational_unit_arn() == Some(ou)),
        "{p:?}"
    );
    assert!(p.iter().all(|l| l.group().is_none()), "not public: {p:?}");
    // The snapshots carry `snapshot_tags` beside the image's tags.
    let img = ec2.describe_images().image_ids(&ami).send().await.unwrap();
    let snaps: Vec<String> = img.images()[0]
        .block_device_mappings()
        .iter()
        .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(String::from))
        .collect();
    assert!(!snaps.is_empty());
    let sd = ec2
        .describe_snapshots()
        .set_snapshot_ids(Some(snaps))
        .send()
        .await
        .unwrap();
    for snap in sd.snapshots() {
        let keys: Vec<_> = snap.tags().iter().filter_map(|t| t.key()).collect();
        assert!(
            keys.contains(&"retention") && keys.contains(&"team"),
            "{keys:?}"
        );
    }
    assert_nothing_left(&moto.endpoint()).await;
}

/// What the AMI builder refuses before anything is launched: a secret in
/// user data, `public` on an encrypted image, organization ARNs that are
/// not, and the settings not built yet (each by name; issue #21's network,
/// volume and spot refusals are in `ami_launch.rs`).
#[tokio::test]
async fn refused_before_launch_user_data_secrets_public_encrypted_and_unbuilt_settings() {
    let Some(moto) = Moto::start() else { return };
    let cases: &[(&str, &str, i32)] = &[
        (
            "user_data = \"password=${secret.db}\"\n",
            "a sensitive value cannot be used in `user_data`",
            2,
        ),
        (
            "user_data_file = \"files/user-data\"\n",
            "user data holds a secret value",
            1,
        ),
        (
            "public = true\n",
            "`public = true` with an encrypted image",
            1,
        ),
        (
            "share_with_orgs = [\"o-abc\"]\n",
            "is not an organization ARN",
            1,
        ),
        (
            "communicator = \"ssh\"\n",
            "`communicator = \"ssh\"` needs `ssh_username`",
            1,
        ),
    ];
    for (extra, want, code) in cases {
        let s = Scratch::new();
        s.write(
            "files/user-data",
            "#!/bin/sh\necho hunter2-very-secret > /etc/db\n",
        );
        let t = format!(
            "{}\n[secrets.db]\nenv = \"KILN_TEST_DB\"\n",
            template(&moto.endpoint(), "", extra)
        );
        s.write("t.toml", &t);
        let out = build(&s, &[("KILN_TEST_DB", "hunter2-very-secret")]);
        let (o, e) = text(&out);
        let all = format!("{o}{e}");
        assert!(all.contains(want), "{extra}: {all}");
        assert!(!all.contains("hunter2-very-secret"), "{all}");
        // The template's own check exits 2; the builder's refusals fail
        // the job (exit 1) before its launch step makes anything.
        assert_eq!(out.status.code(), Some(*code), "{extra}: {all}");
        let ec2 = aws::ec2(&moto.endpoint(), REGION);
        assert!(
            aws::live_instances(&ec2).await.is_empty(),
            "{extra}: nothing is left running"
        );
    }
}

/// `ansible-local` on an AMI, as far as moto allows (it runs no command):
/// the commands kiln sends upload the playbook, run `ansible-playbook`
/// with `extra_vars` only through the tmpfs file, and remove the staging
/// folder; the Vault secret in `extra_vars` is in none of them, plain or
/// base64. `ansible` (host side) is refused before anything launches.
#[tokio::test]
async fn ansible_local_commands_on_an_ami_and_host_ansible_refused() {
    if !crate::vault::ready(&[]) {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bao = Bao::start();
    let s = Scratch::new();
    s.write(
        "site.yml",
        "- hosts: all\n  tasks:\n    - ansible.builtin.debug: msg=kiln-ami-playbook\n",
    );
    let provisioners = r#"
[[build.provisioner]]
type = "ansible-local"
playbook_file = "site.yml"
inventory_groups = ["web"]
extra_vars = { db_password = "${secret.db}", tier = "gold" }
"#;
    let t = template(
        &moto.endpoint(),
        provisioners,
        &format!("vault_address = \"{}\"\nvault_wrap_ttl = \"10m\"", bao.addr),
    )
    .replace(
        "[source.ami.base]",
        "[secrets.db]\nvault = \"secret/data/ci/db#password\"\n\n[source.ami.base]",
    );
    s.write("t.toml", &t);
    let out = build(
        &s,
        &[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", ROOT_TOKEN)],
    );
    assert_exit(&out, 0);
    let (_, all, scripts) = ssm_history_without_secret(&moto.endpoint()).await;
    use base64::Engine as _;
    let playbook = base64::engine::general_purpose::STANDARD
        .encode("- hosts: all\n  tasks:\n    - ansible.builtin.debug: msg=kiln-ami-playbook\n");
    assert!(
        scripts.contains(&playbook),
        "the playbook was uploaded: {scripts}"
    );
    let run = scripts
        .lines()
        .find(|l| l.starts_with("ansible-playbook "))
        .unwrap_or_else(|| panic!("no ansible-playbook run: {scripts}"));
    assert!(run.contains("-e \"@$kiln_vars\""), "{run}");
    assert!(
        scripts.contains("/dev/shm"),
        "extra_vars through tmpfs: {scripts}"
    );
    assert!(
        scripts.contains("rm -rf '/tmp/kiln-ansible-"),
        "the staging folder is removed: {scripts}"
    );
    assert!(
        all.contains("KILN_WRAPPED_TOKEN="),
        "extra_vars travel wrapped: {all}"
    );
    assert_nothing_left(&moto.endpoint()).await;

    // Host-side `ansible` cannot reach an instance over SSM.
    let s = Scratch::new();
    s.write("site.yml", "- hosts: all\n  tasks: []\n");
    s.write(
        "t.toml",
        &template(
            &moto.endpoint(),
            "\n[[build.provisioner]]\ntype = \"ansible\"\nplaybook_file = \"site.yml\"\n",
            "",
        ),
    );
    let out = build(&s, &[]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert!(format!("{o}{e}").contains("ansible-local"), "{o}{e}");
    assert!(
        aws::live_instances(&aws::ec2(&moto.endpoint(), REGION))
            .await
            .is_empty(),
        "nothing launched"
    );
}

/// `expect_disconnect` over SSM: a script reboots the instance, kiln sees
/// the boot id change while SSM still says `InProgress`, cancels the
/// stale command, waits for the agent, and the next provisioner runs in the
/// new boot. moto runs no SSM commands and no SSM agent can run here, so
/// the instance's agent is a TEST DOUBLE: `tests/fixtures/moto-ssm-agent.py`
/// (moto whose command invocations answer as the agent of a rebooting
/// instance would; it logs which boot each command ran in).
#[tokio::test]
async fn a_reboot_over_ssm_is_waited_out_and_the_next_provisioner_runs_in_the_new_boot() {
    let s = Scratch::new();
    let agent_log = s.path().join("agent.jsonl");
    let Some(moto) = Moto::start_with_ssm_agent(&agent_log) else {
        return;
    };
    s.write(
        "t.toml",
        &template(
            &moto.endpoint(),
            r#"
[[build.provisioner]]
type = "shell"
inline = ["echo updating", "sudo reboot"]
expect_disconnect = true
start_retry_timeout = "2m"

[[build.provisioner]]
type = "shell"
inline = ["echo after-the-reboot"]
"#,
            "",
        ),
    );
    let out = build(&s, &[]);
    let (o, e) = text(&out);
    assert_exit(&out, 0);
    assert!(
        format!("{o}{e}").contains("rebooted under SSM command")
            && format!("{o}{e}").contains("rebooted and answers again"),
        "{o}{e}"
    );
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&agent_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ran = |needle: &str| {
        events
            .iter()
            .find(|e| e["event"] == "ran" && e["script"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no command with `{needle}` ran: {events:#?}"))
            .clone()
    };
    let reboot = ran("sudo reboot");
    assert_eq!(reboot["boot"], 1, "{events:#?}");
    assert_eq!(ran("after-the-reboot")["boot"], 2, "{events:#?}");
    // The command SSM would have kept `InProgress` was cancelled.
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "cancel" && e["command"] == reboot["command"]),
        "{events:#?}"
    );
    assert_nothing_left(&moto.endpoint()).await;
}
