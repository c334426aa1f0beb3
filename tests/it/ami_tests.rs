//! `[[build.test]]` on AMIs end to end: the real `kiln` binary against
//! moto (`moto_server` from PyPI). The test instance must be started from
//! the new AMI (not the build instance) and terminated; copies, sharing
//! and channel parameters only come after a passing test; a failing test
//! leaves no image anywhere; SIGKILL during the test phase and then
//! `kiln cleanup` leave nothing.
//!
//! moto runs no SSM command: every command "succeeds" (ResponseCode 0)
//! with empty output (its GetCommandInvocation always returns
//! `StandardOutputContent: ""`). So a check kiln passes here is one whose
//! command exits 0 (`file … exists`, `command … exit_status = 0`), and
//! what is asserted about the checks is the commands kiln sent to the test
//! instance, read back from SSM's command history. A `command` check
//! expecting some stdout is one moto makes fail: that is the failing test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::ami::{
    artifacts, assert_nothing_left, build, kiln, scripts_of, template, ACCOUNT, COPY_REGION,
};
use crate::aws::{self, FaultProxy, Moto, REGION};
use crate::{assert_exit, text, Scratch};

/// Checks whose commands exit 0 under moto (a `file` check needs the
/// `stat` line moto does not return, so the file is checked by command).
const PASSING: &str = r#"
[[build.test]]
type = "command"
run = "test -s /etc/os-release"

[[build.test]]
type = "shell"
inline = ["systemctl is-enabled amazon-ssm-agent"]
"#;

/// moto returns empty stdout for every command: this cannot pass there.
const FAILING: &str = r#"
[[build.test]]
type = "command"
run = "cat /etc/kiln-ready"
stdout_contains = ["ready"]
"#;

/// moto does not implement deregistration protection: not asked for here.
const DISTRIBUTION: &str =
    "copy_to = [\"us-west-2\"]\nshare_with = [\"123456789012\"]\nencrypted = false";

/// Every instance moto knows (terminated ones stay listed): id, image id,
/// state and its `kiln:job` tag.
async fn all_instances(ec2: &aws_sdk_ec2::Client) -> Vec<(String, String, String, String)> {
    let out = ec2.describe_instances().send().await.unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.image_id().unwrap_or_default().to_string(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some("kiln:job"))
                    .and_then(|t| t.value())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// The scripts kiln sent to `instance` over SSM.
async fn scripts_sent_to(endpoint: &str, instance: &str) -> String {
    let ssm = aws::ssm(endpoint, REGION);
    let out = ssm.list_commands().send().await.unwrap();
    let history: Vec<String> = out
        .commands()
        .iter()
        .filter(|c| c.instance_ids().iter().any(|i| i == instance))
        .map(|c| {
            let parameters: std::collections::BTreeMap<&String, &Vec<String>> =
                c.parameters().into_iter().flatten().collect();
            serde_json::json!({ "parameters": parameters }).to_string()
        })
        .collect();
    scripts_of(&history)
}

#[tokio::test]
async fn an_ami_is_tested_in_a_fresh_instance_of_itself_before_it_is_copied_shared_and_published() {
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    s.keygen("cosign", "pw");
    s.write(
        "t.toml",
        &format!(
            "{}{PASSING}\n[build.sign]\nkey = \"cosign.key\"\n",
            template(&moto.endpoint(), "", DISTRIBUTION)
        ),
    );
    let out = build(&s, &[("KILN_PASSWORD", "pw")]);
    assert_exit(&out, 0);
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    let made = artifacts(&all);
    assert_eq!(made.len(), 2, "the AMI and its copy\n{all}");
    let (_, ami) = made.iter().find(|(r, _)| r == REGION).unwrap().clone();

    // The test instance: launched from the new AMI, terminated.
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let instances = all_instances(&ec2).await;
    let tested: Vec<_> = instances.iter().filter(|i| i.1 == ami).collect();
    assert_eq!(tested.len(), 1, "one instance of {ami}: {instances:?}");
    let (test_instance, _, state, job) = tested[0].clone();
    assert_eq!(state, "terminated", "the test instance is terminated");
    assert_eq!(job, "web.ami.base test");
    assert_nothing_left(&moto.endpoint()).await;

    // The checks kiln sent. (Which instance a command went to cannot be
    // read back from moto: with no `Targets` it files every command under
    // every instance it has. kiln names the instance it tested in, below.)
    let scripts = scripts_sent_to(&moto.endpoint(), &test_instance).await;
    assert!(
        scripts.contains("test -s /etc/os-release"),
        "the command check: {scripts}"
    );
    assert!(
        scripts.contains("systemctl is-enabled amazon-ssm-agent"),
        "the shell test: {scripts}"
    );
    assert!(
        all.contains(&format!(
            "test instance {test_instance} running from {ami} in {REGION}"
        )),
        "{all}"
    );
    // Ordering: the test, then the copy and the sharing.
    let at = |needle: &str| {
        all.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in\n{all}"))
    };
    assert!(at("testing `us-east-1:") < at("test pass: command test -s /etc/os-release"));
    assert!(at("test pass: shell test") < at(&format!("copying {ami} to {COPY_REGION}")));
    // Distributed: shared, copied, protected, published on the channel.
    let perms = ec2
        .describe_image_attribute()
        .image_id(&ami)
        .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
        .send()
        .await
        .unwrap();
    let users: Vec<_> = perms
        .launch_permissions()
        .iter()
        .filter_map(|p| p.user_id())
        .collect();
    assert_eq!(users, [ACCOUNT]);
    let copy_images = aws::own_images(&aws::ec2(&moto.endpoint(), COPY_REGION)).await;
    assert_eq!(copy_images.len(), 1, "{copy_images:?}");
    let ssm = aws::ssm(&moto.endpoint(), REGION);
    assert_eq!(
        aws::parameter(&ssm, "/kiln/web/dev").await.as_deref(),
        Some(ami.as_str())
    );

    let audit = kiln(&s).arg("audit").output().unwrap();
    assert_exit(&audit, 0);
    assert!(
        text(&audit)
            .0
            .contains("tests: PASSED (2 passed, 0 warned, 0 failed)"),
        "{}",
        text(&audit).0
    );

    // `verify --require-tests`: the passing report in the signed manifest,
    // for the AMI and for its copy.
    for (region, id) in &made {
        let v = kiln(&s)
            .args([
                "verify",
                "--key",
                "cosign.pub",
                "--require-tests",
                &format!("{region}:{id}"),
            ])
            .output()
            .unwrap();
        assert_exit(&v, 0);
        assert!(
            text(&v).0.contains("tests: PASSED (2 tests of us-east-1:"),
            "{}",
            text(&v).0
        );
    }
}

#[tokio::test]
async fn a_failing_ami_test_leaves_no_image_copy_share_or_channel_parameter() {
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    s.write(
        "t.toml",
        &format!("{}{FAILING}", template(&moto.endpoint(), "", DISTRIBUTION)),
    );
    let out = build(&s, &[]);
    assert_exit(&out, 1);
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    assert!(
        all.contains("stdout_contains: expected `ready`, observed ``"),
        "the failed check with what was observed:\n{all}"
    );
    assert!(all.contains("1 of 1 tests of `us-east-1:ami-"), "{all}");
    assert!(!all.contains("copying "), "nothing copied:\n{all}");
    // The failing image is deregistered; no copy was ever made.
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    assert_eq!(aws::own_images(&ec2).await, vec![], "image deregistered");
    assert_eq!(
        aws::own_images(&aws::ec2(&moto.endpoint(), COPY_REGION)).await,
        vec![],
        "no copy"
    );
    let ssm = aws::ssm(&moto.endpoint(), REGION);
    assert_eq!(aws::parameter(&ssm, "/kiln/web/dev").await, None);
    // The test instance existed (from the image) and is terminated.
    let instances = all_instances(&ec2).await;
    assert!(
        instances
            .iter()
            .any(|i| i.3 == "web.ami.base test" && i.2 == "terminated"),
        "{instances:?}"
    );
    assert_nothing_left(&moto.endpoint()).await;
    let images = kiln(&s).args(["images", "list"]).output().unwrap();
    assert!(
        !text(&images).0.contains("1.2.0"),
        "nothing registered: {}",
        text(&images).0
    );

    // `--keep-on-failure`: the test instance stays (the image still goes)
    // until `kiln cleanup`.
    let kept = kiln(&s)
        .args(["build", "--keep-on-failure", "t.toml"])
        .output()
        .unwrap();
    assert_exit(&kept, 1);
    let (o, e) = text(&kept);
    assert!(
        format!("{o}{e}").contains("kept the failed test instance for inspection"),
        "{o}{e}"
    );
    let live = aws::live_instances(&ec2).await;
    assert_eq!(live.len(), 1, "the test instance is kept: {live:?}");
    let instances = all_instances(&ec2).await;
    assert!(
        instances
            .iter()
            .any(|i| i.0 == live[0] && i.3 == "web.ami.base test"),
        "{instances:?}"
    );
    assert_eq!(aws::own_images(&ec2).await, vec![], "image deregistered");
    let clean = kiln(&s).arg("cleanup").output().unwrap();
    assert_exit(&clean, 0);
    assert_nothing_left(&moto.endpoint()).await;
}

#[tokio::test]
async fn sigkill_during_the_ami_test_then_cleanup_leaves_no_instance_image_or_group() {
    let Some(moto) = Moto::start() else { return };
    // A slow endpoint, so the kill lands while the test instance is up.
    let proxy = FaultProxy::start(&moto.endpoint(), 0.0, 7);
    proxy.set_delay(Duration::from_millis(200));
    let s = Scratch::new();
    s.write(
        "t.toml",
        &format!("{}{PASSING}", template(&proxy.endpoint(), "", "")),
    );
    let mut child = kiln(&s)
        .args(["build", "t.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let start = Instant::now();
    loop {
        let test_up = all_instances(&ec2)
            .await
            .iter()
            .any(|i| i.3 == "web.ami.base test" && i.2 == "running");
        if test_up {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no test instance started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before its test instance was up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        aws::live_instances(&ec2).await.len(),
        2,
        "the kill left the build and the test instance"
    );
    assert_eq!(aws::own_images(&ec2).await.len(), 1, "and the new image");
    proxy.set_delay(Duration::ZERO);
    let clean = kiln(&s).arg("cleanup").output().unwrap();
    assert_exit(&clean, 0);
    assert_nothing_left(&moto.endpoint()).await;
    assert_eq!(
        aws::own_images(&ec2).await,
        vec![],
        "the untested image is deregistered"
    );
}

#[tokio::test]
async fn kiln_test_runs_a_templates_tests_against_an_existing_ami() {
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    s.write("t.toml", &template(&moto.endpoint(), "", ""));
    let out = build(&s, &[]);
    assert_exit(&out, 0);
    let (o, e) = text(&out);
    let (_, ami) = artifacts(&format!("{o}{e}")).pop().unwrap();
    s.keygen("cosign", "pw");
    s.write(
        "t.toml",
        &format!(
            "{}{PASSING}\n[build.sign]\nkey = \"cosign.key\"\n",
            template(&moto.endpoint(), "", "")
        ),
    );
    let t = kiln(&s)
        .args(["test", "t.toml", "--artifact", &ami])
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&t, 0);
    assert!(
        text(&t).0.contains(&format!("us-east-1:{ami}: PASSED")),
        "{}",
        text(&t).0
    );
    // An AMI has no content digest to sign a statement about: said.
    assert!(
        text(&t)
            .1
            .contains("no signed test attestation for `us-east-1:ami-"),
        "{}",
        text(&t).1
    );
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let instances = all_instances(&ec2).await;
    assert!(
        instances
            .iter()
            .any(|i| i.1 == ami && i.2 == "terminated" && i.3 == "web.ami.base test"),
        "{instances:?}"
    );
    assert_nothing_left(&moto.endpoint()).await;
    s.write(
        "t.toml",
        &format!("{}{FAILING}", template(&moto.endpoint(), "", "")),
    );
    let f = kiln(&s)
        .args(["test", "t.toml", "--artifact", &format!("{REGION}:{ami}")])
        .output()
        .unwrap();
    assert_exit(&f, 1);
    assert!(text(&f).0.contains("FAILED"), "{}", text(&f).0);
    assert_nothing_left(&moto.endpoint()).await;
}
