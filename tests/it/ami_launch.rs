//! Issue #21's launch settings end to end, with the real `kiln` binary
//! against moto: network filters (`vpc_filter`, `subnet_filter`,
//! `security_group_filter`), block device mappings (`launch_…`, `ami_…`)
//! and spot instances with their fallback to on demand. Where moto ignores
//! a parameter (CreateImage's block device mappings, RunInstances' spot
//! options) the test reads the call kiln sent, recorded by a
//! [`FaultProxy`] with no faults in front of moto; each such check says so.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::aws::{self, FaultProxy, Moto, REGION, SOURCE_NAME};
use crate::{assert_exit, text, Scratch};

fn template(endpoint: &str, extra_source: &str, provisioners: &str) -> String {
    format!(
        r#"[image]
name = "web"
version = "1.2.0"

[source.ami.base]
region = "{REGION}"
endpoint = "{endpoint}"
from = {{ owners = ["amazon"], name = "{SOURCE_NAME}", most_recent = true }}
{extra_source}

[[build]]
name = "web"
sources = ["ami.base"]
{provisioners}
"#
    )
}

fn kiln(s: &Scratch, args: &[&str]) -> std::process::Output {
    let mut c = s.kiln();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .args(args);
    c.output().unwrap()
}

fn all(out: &std::process::Output) -> String {
    let (o, e) = text(out);
    format!("{o}{e}")
}

fn tagged(kind: ResourceType, k: &str, v: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key(k).value(v).build())
        .build()
}

/// The instances kiln started (terminated ones included), newest last.
async fn kiln_instances(ec2: &aws_sdk_ec2::Client) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = ec2.describe_instances().send().await.unwrap();
    let mut v: Vec<_> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.tags().iter().any(|t| t.key() == Some("kiln:run")))
        .cloned()
        .collect();
    v.sort_by_key(|i| i.launch_time().map(|t| t.secs()));
    v
}

/// Security groups whose name starts with `kiln-` (the run's own).
async fn kiln_groups(ec2: &aws_sdk_ec2::Client) -> Vec<String> {
    aws::security_groups(ec2)
        .await
        .into_iter()
        .filter(|(_, name)| name.starts_with("kiln-"))
        .map(|(id, _)| id)
        .collect()
}

/// Volumes carrying a `kiln:run` tag (what the build made).
async fn kiln_volumes(ec2: &aws_sdk_ec2::Client) -> Vec<aws_sdk_ec2::types::Volume> {
    ec2.describe_volumes()
        .filters(Filter::builder().name("tag-key").values("kiln:run").build())
        .send()
        .await
        .unwrap()
        .volumes()
        .to_vec()
}

/// A VPC with a /24 and a /20 subnet, a second VPC with one more subnet,
/// all tagged `Class = build`, and a group `build-sg` in the first VPC:
/// the shape of an account where a filter matches several things.
#[tokio::test]
async fn network_filters_pick_one_vpc_the_most_free_subnet_and_existing_groups() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let vpc = |cidr: &'static str, class: &'static str| {
        let ec2 = ec2.clone();
        async move {
            ec2.create_vpc()
                .cidr_block(cidr)
                .tag_specifications(tagged(ResourceType::Vpc, "Class", class))
                .send()
                .await
                .unwrap()
                .vpc()
                .unwrap()
                .vpc_id()
                .unwrap()
                .to_string()
        }
    };
    let subnet = |vpc: String, cidr: &'static str| {
        let ec2 = ec2.clone();
        async move {
            ec2.create_subnet()
                .vpc_id(vpc)
                .cidr_block(cidr)
                .tag_specifications(tagged(ResourceType::Subnet, "Class", "build"))
                .send()
                .await
                .unwrap()
                .subnet()
                .unwrap()
                .subnet_id()
                .unwrap()
                .to_string()
        }
    };
    let build_vpc = vpc("10.20.0.0/16", "build").await;
    let other_vpc = vpc("10.30.0.0/16", "other").await;
    let small = subnet(build_vpc.clone(), "10.20.1.0/24").await;
    let large = subnet(build_vpc.clone(), "10.20.16.0/20").await;
    let elsewhere = subnet(other_vpc.clone(), "10.30.0.0/20").await;
    let sg = ec2
        .create_security_group()
        .group_name("build-sg")
        .description("the team's build group")
        .vpc_id(&build_vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();

    // Several subnets match and neither `most_free` nor `random`: an error
    // naming the filter and the matches, before anything is made.
    let s = Scratch::new();
    s.write(
        "t.toml",
        &template(
            &moto.endpoint(),
            "subnet_filter = { filters = { \"tag:Class\" = \"build\" } }",
            "",
        ),
    );
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 1);
    assert!(
        text.contains("3 subnets in us-east-1 match `subnet_filter` { tag:Class = \"build\" }")
            && text.contains("set `most_free = true` or `random = true`")
            && text.contains(&small)
            && text.contains(&elsewhere),
        "{text}"
    );
    assert!(kiln_instances(&ec2).await.is_empty(), "nothing launched");
    assert!(kiln_groups(&ec2).await.is_empty(), "no group made: {text}");

    // Two VPCs match: refused the same way.
    s.write(
        "t.toml",
        &template(
            &moto.endpoint(),
            "vpc_filter = { filters = { \"tag-key\" = \"Class\" } }",
            "",
        ),
    );
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 1);
    assert!(
        text.contains("2 VPCs in us-east-1 match `vpc_filter` { tag-key = \"Class\" }")
            && text.contains("exactly one must"),
        "{text}"
    );

    // The VPC by filter, the most free subnet in it (the /20, not the
    // larger-named one elsewhere), the team's group by filter: kiln makes
    // no group and says why that matters.
    s.write(
        "t.toml",
        &template(
            &moto.endpoint(),
            r#"vpc_filter = { filters = { "tag:Class" = "build" } }
subnet_filter = { filters = { "tag:Class" = "build" }, most_free = true }
security_group_filter = { filters = { "group-name" = "build-sg" } }"#,
            "",
        ),
    );
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 0);
    assert!(
        text.contains(&format!("VPC {build_vpc} (vpc_filter)"))
            && text.contains(&format!(
                "subnet {large} (subnet_filter: the most free addresses"
            ))
            && text.contains(&format!(
                "warning: security groups {sg} from `security_group_filter` are used as they are"
            )),
        "{text}"
    );
    let inst = kiln_instances(&ec2)
        .await
        .pop()
        .expect("the build instance");
    assert_eq!(inst.subnet_id(), Some(large.as_str()));
    assert_eq!(inst.vpc_id(), Some(build_vpc.as_str()));
    let groups: Vec<_> = inst
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, [sg.as_str()]);
    assert!(
        kiln_groups(&ec2).await.is_empty(),
        "kiln made a group anyway"
    );
    assert!(aws::live_instances(&ec2).await.is_empty());
    // The team's group is theirs: still there.
    assert!(aws::security_groups(&ec2)
        .await
        .iter()
        .any(|(id, _)| *id == sg));

    // A VPC alone: its most free subnet, and kiln's own no-ingress group
    // made in that VPC (and removed afterwards).
    s.write(
        "t.toml",
        &template(
            &moto.endpoint(),
            "vpc_filter = { filters = { \"tag:Class\" = \"other\" } }",
            "",
        ),
    );
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 0);
    assert!(
        text.contains(&format!("subnet {elsewhere} (vpc_filter: the only match"))
            && text.contains("no ingress"),
        "{text}"
    );
    let inst = kiln_instances(&ec2)
        .await
        .pop()
        .expect("the build instance");
    assert_eq!(inst.subnet_id(), Some(elsewhere.as_str()));
    assert!(
        kiln_groups(&ec2).await.is_empty(),
        "kiln's group was removed"
    );

    // A group filter that matches nothing in the VPC: named.
    s.write(
        "t.toml",
        &template(
            &moto.endpoint(),
            r#"subnet_id = "SUBNET"
security_group_filter = { filters = { "group-name" = "build-sg" } }"#
                .replace("SUBNET", &elsewhere)
                .as_str(),
            "",
        ),
    );
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 1);
    assert!(
        text.contains(&format!(
            "no security group in {other_vpc} (us-east-1) matches `security_group_filter` {{ group-name = \"build-sg\" }}"
        )),
        "{text}"
    );
    assert!(aws::live_instances(&ec2).await.is_empty());
}

/// Extra and changed volumes: what RunInstances made is read back from
/// moto while a failed build (`--on-error=abort`) keeps the instance, then
/// `kiln cleanup` removes it all, the volume kept past termination
/// (`delete_on_termination = false`) included. moto ignores CreateImage's
/// block device mappings (its images always have one 15 GiB snapshot):
/// those are checked in the call kiln sent.
#[tokio::test]
async fn block_device_mappings_reach_the_instance_and_the_image() {
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto.endpoint(), 0.0, 7);
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let volumes = r#"encrypted = true
kms_key_id = "alias/build"
launch_block_device_mappings = [
  { device_name = "/dev/sdb", volume_size = 20, volume_type = "gp3", iops = 4000, throughput = 250, delete_on_termination = false },
  { device_name = "/dev/sdc", volume_size = 125, volume_type = "st1", encrypted = false },
]
ami_block_device_mappings = [
  { device_name = "/dev/sdc", no_device = true },
  { device_name = "/dev/sdd", virtual_name = "ephemeral0" },
]"#;
    let s = Scratch::new();
    let failing = r#"
[[build.provisioner]]
type = "shell-local"
inline = ["exit 3"]
"#;
    s.write("t.toml", &template(&proxy.endpoint(), volumes, failing));
    let out = kiln(&s, &["build", "--on-error=abort", "t.toml"]);
    assert_exit(&out, 1);
    // It failed where meant to: in the provisioner, after the launch.
    let text = all(&out);
    assert!(text.contains("exited with code 3"), "{text}");
    let inst = kiln_instances(&ec2).await.pop().expect("the kept instance");
    let id = inst.instance_id().unwrap().to_string();
    let vols = ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(&id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let by_dev: BTreeMap<String, _> = vols
        .volumes()
        .iter()
        .map(|v| (v.attachments()[0].device().unwrap().to_string(), v.clone()))
        .collect();
    let sdb = by_dev
        .get("/dev/sdb")
        .unwrap_or_else(|| panic!("{by_dev:?}"));
    assert_eq!(sdb.size(), Some(20));
    assert_eq!(sdb.volume_type().map(|t| t.as_str()), Some("gp3"));
    // kiln's default: encrypted, with the source's key.
    assert_eq!(sdb.encrypted(), Some(true));
    assert_eq!(sdb.kms_key_id(), Some("alias/build"));
    let sdc = by_dev.get("/dev/sdc").unwrap_or_else(|| {
        panic!(
            "{:?} {:?}",
            by_dev.keys().collect::<Vec<_>>(),
            proxy.sent("RunInstances")
        )
    });
    assert_eq!((sdc.size(), sdc.encrypted()), (Some(125), Some(false)));
    assert_eq!(sdc.volume_type().map(|t| t.as_str()), Some("st1"));
    // What moto does not keep (iops, throughput), in the call kiln sent.
    let run = proxy.sent("RunInstances");
    let p = run.last().expect("a RunInstances call");
    let dev = |n: usize, k: &str| p.get(&format!("BlockDeviceMapping.{n}.{k}")).cloned();
    let n_sdb = (1..=3)
        .find(|n| dev(*n, "DeviceName").as_deref() == Some("/dev/sdb"))
        .unwrap_or_else(|| panic!("{p:?}"));
    assert_eq!(dev(n_sdb, "Ebs.Iops").as_deref(), Some("4000"), "{p:?}");
    assert_eq!(
        dev(n_sdb, "Ebs.Throughput").as_deref(),
        Some("250"),
        "{p:?}"
    );
    assert_eq!(
        dev(n_sdb, "Ebs.DeleteOnTermination").as_deref(),
        Some("false"),
        "{p:?}"
    );
    // The root stays in the mapping, encrypted: three devices.
    assert_eq!(dev(1, "DeviceName").as_deref(), Some("/dev/sda1"), "{p:?}");
    assert_eq!(dev(1, "Ebs.Encrypted").as_deref(), Some("true"), "{p:?}");

    let out = kiln(&s, &["cleanup"]);
    assert_exit(&out, 0);
    assert!(aws::live_instances(&ec2).await.is_empty());
    assert!(kiln_groups(&ec2).await.is_empty());
    assert_eq!(
        kiln_volumes(&ec2)
            .await
            .iter()
            .filter_map(|v| v.volume_id())
            .collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "the kept /dev/sdb outlived cleanup"
    );

    // A build that succeeds: the image's mappings go to CreateImage, and
    // the volume kept past termination is removed with the run.
    s.write("t.toml", &template(&proxy.endpoint(), volumes, ""));
    let out = kiln(&s, &["build", "t.toml"]);
    assert_exit(&out, 0);
    let create = proxy.sent("CreateImage");
    let p = create.last().expect("a CreateImage call");
    assert_eq!(
        p.get("BlockDeviceMapping.1.DeviceName").map(String::as_str),
        Some("/dev/sdc"),
        "{p:?}"
    );
    assert_eq!(
        p.get("BlockDeviceMapping.1.NoDevice").map(String::as_str),
        Some(""),
        "{p:?}"
    );
    assert_eq!(
        p.get("BlockDeviceMapping.2.VirtualName")
            .map(String::as_str),
        Some("ephemeral0"),
        "{p:?}"
    );
    assert!(
        !p.contains_key("BlockDeviceMapping.2.Ebs.VolumeSize"),
        "{p:?}"
    );
    assert!(
        kiln_volumes(&ec2)
            .await
            .iter()
            .all(|v| v.state().map(|s| s.as_str()) != Some("available")),
        "a volume was left"
    );
    assert!(aws::live_instances(&ec2).await.is_empty());
}

/// What the volume lists refuse before anything starts: a misspelled key
/// (with its place in the file) and settings EC2 would refuse after the
/// instance was paid for.
#[tokio::test]
async fn bad_block_device_mappings_and_spot_settings_are_refused_before_launch() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let cases: &[(&str, &str, i32)] = &[
        (
            "launch_block_device_mappings = [{ device_name = \"/dev/sdb\", volume_sise = 20 }]",
            "t.toml:9:",
            2,
        ),
        (
            "launch_block_device_mappings = [{ device_name = \"/dev/sdb\", volume_type = \"gp4\" }]",
            "t.toml:9:",
            2,
        ),
        (
            "launch_block_device_mappings = [{ device_name = \"/dev/sdb\", volume_type = \"gp2\", iops = 3000 }]",
            "`launch_block_device_mappings` device `/dev/sdb`: `iops = 3000` needs `volume_type` io1, io2 or gp3",
            1,
        ),
        (
            "ami_block_device_mappings = [{ device_name = \"/dev/sdb\", volume_type = \"st1\", throughput = 500 }]",
            "`throughput = 500` needs `volume_type = \"gp3\"`",
            1,
        ),
        (
            "spot_price = \"cheap\"",
            "`spot_price = \"cheap\"` is not \"auto\" or a price",
            1,
        ),
        (
            "spot_instance_types = [\"t3.small\"]",
            "`spot_instance_types` needs `spot_price`",
            1,
        ),
        (
            "subnet_id = \"subnet-1\"\nsubnet_filter = { filters = { \"tag:Class\" = \"build\" } }",
            "`subnet_id` and `subnet_filter` are both set",
            1,
        ),
        (
            "subnet_filter = { filters = { \"tag:Class\" = \"build\" }, most_free = true, random = true }",
            "`most_free` and `random` are both true",
            1,
        ),
    ];
    for (extra, want, code) in cases {
        let s = Scratch::new();
        s.write("t.toml", &template(&moto.endpoint(), extra, ""));
        let out = kiln(&s, &["build", "t.toml"]);
        let text = all(&out);
        assert!(text.contains(want), "{extra}: {text}");
        assert_eq!(out.status.code(), Some(*code), "{extra}: {text}");
        if extra.contains("volume_sise") {
            assert!(text.contains("volume_size"), "did you mean: {text}");
        }
        assert!(kiln_instances(&ec2).await.is_empty(), "{extra}: launched");
    }
}

/// Spot: the request kiln sends (moto starts the instance but keeps no
/// spot request for RunInstances and ignores the price, so the market
/// options are read from the call). No spot capacity cannot be provoked
/// in moto: the proxy's scripted refusal (`FaultProxy::refuse`, a test
/// double) answers spot RunInstances calls with EC2's
/// `InsufficientInstanceCapacity`. Without `spot_fallback_on_demand` the
/// build fails after trying every type; with it, it runs on demand.
#[tokio::test]
async fn spot_instances_try_each_type_and_fall_back_to_on_demand_only_when_allowed() {
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto.endpoint(), 0.0, 11);
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let spot = "spot_price = \"0.05\"\nspot_instance_types = [\"t3.small\", \"t3a.small\"]";
    let s = Scratch::new();
    s.write("t.toml", &template(&proxy.endpoint(), spot, ""));
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 0);
    assert!(text.contains("(t3.small, spot;"), "{text}");
    let calls = proxy.sent("RunInstances");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let p = &calls[0];
    let get = |k: &str| p.get(k).map(String::as_str);
    assert_eq!(
        get("InstanceMarketOptions.MarketType"),
        Some("spot"),
        "{p:?}"
    );
    assert_eq!(
        get("InstanceMarketOptions.SpotOptions.MaxPrice"),
        Some("0.05")
    );
    assert_eq!(
        get("InstanceMarketOptions.SpotOptions.SpotInstanceType"),
        Some("one-time")
    );
    assert_eq!(get("InstanceType"), Some("t3.small"));
    assert!(
        p.iter().any(|(k, v)| k.starts_with("TagSpecification.")
            && k.ends_with(".ResourceType")
            && v == "spot-instances-request"),
        "the spot request is tagged: {p:?}"
    );
    let inst = kiln_instances(&ec2).await.pop().unwrap();
    assert_eq!(inst.instance_type().map(|t| t.as_str()), Some("t3.small"));
    assert!(aws::live_instances(&ec2).await.is_empty());

    // No spot capacity anywhere, no fallback: both types tried, then a
    // clear failure, and nothing left.
    proxy.refuse(
        &[
            "Action=RunInstances",
            "InstanceMarketOptions.MarketType=spot",
        ],
        "InsufficientInstanceCapacity",
        "There is no Spot capacity available that matches your request.",
    );
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 1);
    assert!(
        text.contains("no spot capacity (t3.small: InsufficientInstanceCapacity, t3a.small: InsufficientInstanceCapacity)")
            && text.contains("spot_fallback_on_demand = true"),
        "{text}"
    );
    let calls = proxy.sent("RunInstances");
    let types: Vec<_> = calls[1..]
        .iter()
        .map(|c| c["InstanceType"].clone())
        .collect();
    assert_eq!(types, ["t3.small", "t3a.small"]);
    assert!(aws::live_instances(&ec2).await.is_empty());
    assert!(kiln_groups(&ec2).await.is_empty());

    // With the fallback: on demand, in the first type.
    s.write(
        "t.toml",
        &template(
            &proxy.endpoint(),
            &format!("{spot}\nspot_fallback_on_demand = true"),
            "",
        ),
    );
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 0);
    assert!(
        text.contains("(t3.small, on demand (no spot capacity: t3.small: InsufficientInstanceCapacity, t3a.small: InsufficientInstanceCapacity)"),
        "{text}"
    );
    let last = proxy.sent("RunInstances").pop().unwrap();
    assert!(
        !last.contains_key("InstanceMarketOptions.MarketType"),
        "{last:?}"
    );
    assert_eq!(last["InstanceType"], "t3.small");
    assert!(aws::live_instances(&ec2).await.is_empty());
    assert!(kiln_groups(&ec2).await.is_empty());
}

/// A spot build killed (SIGKILL) with its instance up, then `kiln
/// cleanup`: the instance, its kept volume and its group go, and so does
/// the run's spot request. moto records no spot request for a spot
/// RunInstances, so the test places one the way AWS would hold it — a
/// RequestSpotInstances call tagged with the run's `kiln:run` (read off
/// the killed build's instance) — and checks cleanup cancels it.
#[tokio::test]
async fn a_killed_spot_build_is_cleaned_up_with_its_spot_request_and_kept_volumes() {
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto.endpoint(), 0.0, 3);
    proxy.set_delay(std::time::Duration::from_millis(300));
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let s = Scratch::new();
    let extra = r#"spot_price = "auto"
launch_block_device_mappings = [{ device_name = "/dev/sdb", volume_size = 4, delete_on_termination = false }]"#;
    let provisioners = "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo one\"]\n";
    s.write("t.toml", &template(&proxy.endpoint(), extra, provisioners));
    let mut child = s
        .kiln()
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .args(["build", "t.toml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while aws::live_instances(&ec2).await.is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no instance started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended too soon"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.set_delay(std::time::Duration::ZERO);
    let inst = kiln_instances(&ec2).await.pop().unwrap();
    let run = inst
        .tags()
        .iter()
        .find(|t| t.key() == Some("kiln:run"))
        .and_then(|t| t.value())
        .unwrap()
        .to_string();
    let req = ec2
        .request_spot_instances()
        .instance_count(1)
        .launch_specification(
            aws_sdk_ec2::types::RequestSpotLaunchSpecification::builder()
                .image_id(aws::SOURCE_AMI)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .tag_specifications(tagged(ResourceType::SpotInstancesRequest, "kiln:run", &run))
        .send()
        .await
        .unwrap();
    let req_id = req.spot_instance_requests()[0]
        .spot_instance_request_id()
        .unwrap()
        .to_string();
    // moto fulfils a request at once: that instance is the test's own.
    let stray: Vec<String> = req
        .spot_instance_requests()
        .iter()
        .filter_map(|r| r.instance_id().map(str::to_string))
        .collect();

    let out = kiln(&s, &["cleanup"]);
    assert_exit(&out, 0);
    let left = ec2
        .describe_spot_instance_requests()
        .filters(Filter::builder().name("tag:kiln:run").values(&run).build())
        .send()
        .await
        .unwrap();
    assert!(
        left.spot_instance_requests()
            .iter()
            .all(|r| r.spot_instance_request_id() != Some(req_id.as_str())
                || r.state().map(|s| s.as_str()) == Some("cancelled")),
        "spot request {req_id} was not cancelled: {left:?}"
    );
    let live: Vec<String> = aws::live_instances(&ec2)
        .await
        .into_iter()
        .filter(|i| !stray.contains(i))
        .collect();
    assert!(live.is_empty(), "{live:?}");
    assert!(kiln_groups(&ec2).await.is_empty());
    let vols = kiln_volumes(&ec2).await;
    assert!(
        vols.iter()
            .all(|v| v.state().map(|s| s.as_str()) != Some("available")),
        "the kept /dev/sdb outlived cleanup: {vols:?}"
    );
    assert!(
        vols.iter().all(|v| v.size() != Some(4)),
        "the kept /dev/sdb outlived cleanup: {vols:?}"
    );
}

/// Only capacity errors move on to the next spot type or to on demand,
/// provoked for real: moto with instance type validation refuses a type
/// that does not exist (`InvalidInstanceType.NotFound`). Even with
/// `spot_fallback_on_demand = true` the build fails at once, naming the
/// type and moto's answer, and tries no other type.
#[tokio::test]
async fn a_spot_error_that_is_not_about_capacity_fails_without_fallback() {
    let Some(moto) = Moto::start_with(&[("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")])
    else {
        return;
    };
    let proxy = FaultProxy::start(&moto.endpoint(), 0.0, 5);
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let s = Scratch::new();
    s.write(
        "t.toml",
        &template(
            &proxy.endpoint(),
            "spot_price = \"auto\"\nspot_instance_types = [\"t9.nonexistent\", \"t3.small\"]\nspot_fallback_on_demand = true",
            "",
        ),
    );
    let out = kiln(&s, &["build", "t.toml"]);
    let text = all(&out);
    assert_exit(&out, 1);
    assert!(
        text.contains("cannot start the instance (t9.nonexistent, spot): InvalidInstanceType"),
        "{text}"
    );
    let types: Vec<String> = proxy
        .sent("RunInstances")
        .iter()
        .map(|c| c["InstanceType"].clone())
        .collect();
    assert_eq!(types, ["t9.nonexistent"], "no other type, no on-demand try");
    assert!(aws::live_instances(&ec2).await.is_empty());
    assert!(kiln_groups(&ec2).await.is_empty());
}
