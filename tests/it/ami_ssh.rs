//! The AMI builder's `communicator = "ssh"` end to end: the real `kiln`
//! binary against moto for the AWS calls, and a real OpenSSH server
//! (Debian's `sshd`, started by the test on a free loopback port with a
//! host key the test generates) standing in for the EC2 instance.
//!
//! Test doubles, because nothing real can run here: moto's instances have
//! made-up addresses, so kiln's debug build connects to
//! `KILN_TEST_SSH_ENDPOINT` (the sshd) instead of the address it resolved
//! (which the build still names); and a task of the test plays cloud-init,
//! reading the run's public key from moto (`DescribeKeyPairs` with
//! `IncludePublicKey`) into the sshd's `authorized_keys`, as cloud-init
//! does from the instance metadata. moto's console output is a canned
//! kernel log without host keys, so most builds here take the
//! trust-on-first-use path; `host_keys_on_the_console_…` puts a proxy in
//! front of moto that answers `GetConsoleOutput` with cloud-init's host
//! key block, and `host_keys_learnt_out_of_band_…` checks the pinning
//! against the same sshd through the library.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::aws::{self, Moto, REGION, SOURCE_NAME};
pub(crate) use crate::sshd::Sshd;
use crate::{assert_exit, text, Scratch};

const SECRET: &str = "hunter2-over-ssh-7f3a";
pub(crate) const CIDR4: &str = "203.0.113.0/24";
const CIDR6: &str = "2001:db8::/32";

/// What the cloud-init stand-in saw of the running instance.
pub(crate) struct Booted {
    /// The run's public key, as installed.
    pub(crate) key_line: String,
    public_ip: Option<String>,
    private_ip: Option<String>,
}

/// Plays cloud-init on the instance: once the build instance runs (bounded
/// wait), installs its key pair's public key, read from moto, in the
/// sshd's `authorized_keys`; notes the instance's addresses on the way
/// (EC2 releases a public address at termination).
fn cloud_init_stand_in(endpoint: String, sshd_dir: PathBuf) -> tokio::task::JoinHandle<Booted> {
    tokio::spawn(async move { boot_next(&endpoint, &sshd_dir, &[]).await })
}

/// [`cloud_init_stand_in`] for `n` instances one after the other (a build
/// instance, then the test instance of its AMI), each with its own key.
fn cloud_init_stand_in_for(
    n: usize,
    endpoint: String,
    sshd_dir: PathBuf,
) -> tokio::task::JoinHandle<Vec<Booted>> {
    tokio::spawn(async move {
        let mut booted: Vec<Booted> = vec![];
        while booted.len() < n {
            let seen: Vec<String> = booted.iter().map(|b| b.key_line.clone()).collect();
            booted.push(boot_next(&endpoint, &sshd_dir, &seen).await);
        }
        booted
    })
}

/// Waits for a running kiln instance whose key is not in `seen` and
/// installs that key (alone) in `authorized_keys`.
async fn boot_next(endpoint: &str, sshd_dir: &Path, seen: &[String]) -> Booted {
    use aws_sdk_ec2::types::{Filter, InstanceStateName};
    let ec2 = aws::ec2(endpoint, REGION);
    let start = Instant::now();
    loop {
        let out = ec2
            .describe_instances()
            .filters(Filter::builder().name("tag-key").values("kiln:run").build())
            .send()
            .await
            .unwrap();
        for i in out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running))
        {
            let Some(name) = i.key_name() else { continue };
            let keys = ec2
                .describe_key_pairs()
                .key_names(name)
                .include_public_key(true)
                .send()
                .await;
            let Ok(keys) = keys else { continue };
            let Some(line) = keys.key_pairs().first().and_then(|k| k.public_key()) else {
                continue;
            };
            let line = line.trim().to_string();
            if seen.contains(&line) {
                continue;
            }
            std::fs::write(sshd_dir.join("authorized_keys"), format!("{line}\n")).unwrap();
            return Booted {
                key_line: line,
                public_ip: i.public_ip_address().map(String::from),
                private_ip: i.private_ip_address().map(String::from),
            };
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no new build instance started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn template(endpoint: &str, extra_source: &str, provisioners: &str) -> String {
    format!(
        r#"[image]
name = "web"
version = "1.2.0"

[source.ami.base]
region = "{REGION}"
endpoint = "{endpoint}"
from = {{ owners = ["amazon"], name = "{SOURCE_NAME}", most_recent = true }}
instance_type = "t3.micro"
communicator = "ssh"
ssh_username = "root"
ssh_host_key_timeout = "0s"
ssh_timeout = "2m"
{extra_source}

[[build]]
name = "web"
sources = ["ami.base"]
{provisioners}

[secrets.db]
env = "KILN_TEST_DB"
"#
    )
}

/// Runs `kiln` against `sshd` (`args` adds its arguments) while the
/// cloud-init stand-in serves `boots` instances one after the other;
/// returns kiln's output and what each boot got.
pub(crate) async fn kiln_booting(
    s: &Scratch,
    sshd: &Sshd,
    moto: &Moto,
    boots: usize,
    args: impl FnOnce(&mut Command),
) -> (Output, Vec<Booted>) {
    let stand_in = cloud_init_stand_in_for(boots, moto.endpoint(), sshd.dir.path().to_path_buf());
    let mut c = kiln(s, Some(sshd));
    args(&mut c);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    (out, stand_in.await.unwrap())
}

pub(crate) fn kiln(s: &Scratch, sshd: Option<&Sshd>) -> Command {
    let mut c = s.kiln();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("KILN_TEST_DB", SECRET)
        .args(["build", "t.toml"]);
    if let Some(d) = sshd {
        c.env("KILN_TEST_SSH_ENDPOINT", &d.addr);
    }
    c
}

/// No instance, temporary security group or key pair of the build left.
pub(crate) async fn assert_nothing_left(endpoint: &str) {
    let ec2 = aws::ec2(endpoint, REGION);
    assert_eq!(aws::live_instances(&ec2).await, Vec::<String>::new());
    assert_eq!(
        aws::security_groups(&ec2).await,
        Vec::<(String, String)>::new()
    );
    assert_eq!(
        key_pairs(&ec2).await,
        Vec::<String>::new(),
        "key pairs left"
    );
}

async fn key_pairs(ec2: &aws_sdk_ec2::Client) -> Vec<String> {
    let out = ec2.describe_key_pairs().send().await.unwrap();
    out.key_pairs()
        .iter()
        .filter_map(|k| k.key_name().map(String::from))
        .collect()
}

/// The build instance (terminated or not) as moto describes it.
async fn build_instance(ec2: &aws_sdk_ec2::Client) -> aws_sdk_ec2::types::Instance {
    let desc = ec2.describe_instances().send().await.unwrap();
    desc.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.tags().iter().any(|t| t.key() == Some("kiln:run")))
        .cloned()
        .expect("the build instance is listed")
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// No file under `dir` holds a private key (PEM or OpenSSH, armoured or
/// binary; kiln's own catalog signing key aside) or the run key's raw
/// public bytes (which an OpenSSH private key file of it carries).
fn assert_no_key_material(dir: &Path, public_line: &str) {
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(public_line.split_whitespace().nth(1).unwrap())
        .unwrap();
    let raw = &blob[blob.len() - 32..]; // the ed25519 point
    let all = files(dir);
    assert!(!all.is_empty(), "nothing to scan in {}", dir.display());
    for f in all {
        let bytes = std::fs::read(&f).unwrap();
        // kiln's own catalog signing key lives in `STATE/keys`, encrypted.
        let own_key = f.components().any(|c| c.as_os_str() == "keys");
        let pem: &[u8] = if own_key {
            b"OPENSSH PRIVATE KEY"
        } else {
            b"PRIVATE KEY"
        };
        for needle in [pem, b"openssh-key-v1", raw] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "key material in {}",
                f.display()
            );
        }
    }
}

/// The recorded requests hold `secret` in no form EC2 would have kept.
fn assert_secret_not_sent(recorded: &str) {
    use base64::Engine as _;
    assert!(
        recorded.contains("Action=RunInstances"),
        "the recording is empty?"
    );
    for needle in [
        SECRET.to_string(),
        base64::engine::general_purpose::STANDARD.encode(SECRET),
    ] {
        assert!(!recorded.contains(&needle), "secret sent to AWS");
    }
}

/// The `AuthorizeSecurityGroupIngress` requests kiln sent, decoded.
fn ingress_calls(recorded: &str) -> Vec<String> {
    recorded
        .lines()
        .filter(|l| l.contains("Action=AuthorizeSecurityGroupIngress"))
        .map(|l| l.replace("%2F", "/").replace("%3A", ":"))
        .collect()
}

#[tokio::test]
async fn ssh_build_runs_provisioners_over_ssh_with_the_secret_only_in_the_session() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(moto) = Moto::start_recording() else {
        return;
    };
    let s = Scratch::new();
    let out_dir = s.path().join("on-instance");
    std::fs::create_dir_all(&out_dir).unwrap();
    let o = out_dir.display();
    let provisioners = format!(
        r#"
[[build.provisioner]]
type = "shell"
inline = ["printf '%s' \"$DB\" > {o}/secret", "id -un > {o}/user"]
env = {{ DB = "${{secret.db}}" }}

[[build.provisioner]]
type = "file"
content = "uploaded over SFTP"
destination = "{o}/uploaded"
"#
    );
    let extra = format!("ssh_source_cidrs = [\"{CIDR4}\", \"{CIDR6}\"]");
    s.write("t.toml", &template(&moto.endpoint(), &extra, &provisioners));
    let stand_in = cloud_init_stand_in(moto.endpoint(), sshd.dir.path().to_path_buf());
    let out = tokio::task::spawn_blocking({
        let mut c = kiln(&s, Some(&sshd));
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    let booted = stand_in.await.unwrap();
    let (o_, e_) = text(&out);
    let all = format!("{o_}{e_}");
    assert!(out.status.success(), "{all}\nsshd:\n{}", sshd.log());

    // The provisioners really ran on the SSH target, the secret reaching
    // the script through the session's environment.
    assert_eq!(
        std::fs::read_to_string(out_dir.join("secret")).unwrap(),
        SECRET
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("user"))
            .unwrap()
            .trim(),
        "root"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("uploaded")).unwrap(),
        "uploaded over SFTP"
    );
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "{}",
        sshd.log()
    );
    assert!(!all.contains(SECRET), "secret in kiln's output: {all}");

    // kiln resolved the instance's public address (the default
    // interface) and said it used the test double instead.
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let inst = build_instance(&ec2).await;
    let public = booted.public_ip.expect("moto gives a public IP");
    assert!(
        all.contains(&format!(
            "connecting over SSH to {public}:22 (public_ip) as `root`"
        )),
        "{all}"
    );
    assert!(all.contains("test double: KILN_TEST_SSH_ENDPOINT"), "{all}");
    // No host keys on moto's console: trust on first use, said with the
    // fingerprint ssh-keygen computes for the stand-in's key.
    assert!(
        all.contains("trust on first use") && all.contains(&sshd.host_fingerprint()),
        "{all}"
    );
    assert_eq!(
        inst.key_name(),
        Some(format!("kiln-{}", run_of(&inst)).as_str())
    );

    // What AWS was told: port 22 from the two blocks only, and nowhere
    // the secret.
    let recorded = moto.recorded();
    assert_secret_not_sent(&recorded);
    let ingress = ingress_calls(&recorded);
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    let call = &ingress[0];
    for want in [
        "IpProtocol=tcp",
        "FromPort=22",
        "ToPort=22",
        &format!("CidrIp={CIDR4}"),
        &format!("CidrIpv6={CIDR6}"),
    ] {
        assert!(call.contains(want), "{want} missing: {call}");
    }
    assert!(
        !call.contains("0.0.0.0/0") && !call.contains("::/0"),
        "{call}"
    );
    assert!(recorded.contains("Action=ImportKeyPair"));
    assert!(recorded.contains("Action=GetConsoleOutput"));

    // The private key never reached a file: not in the state folder (the
    // journal), the template's folder, nor the stand-in's.
    assert_no_key_material(s.path(), &booted.key_line);
    assert_nothing_left(&moto.endpoint()).await;
}

fn run_of(inst: &aws_sdk_ec2::types::Instance) -> String {
    inst.tags()
        .iter()
        .find(|t| t.key() == Some("kiln:run"))
        .and_then(|t| t.value())
        .unwrap()
        .to_string()
}

/// A failing provisioner: the build fails and the instance, the group and
/// the key pair are gone. The world CIDR is accepted with
/// `ssh_allow_world`, with a warning; `ssh_interface = "private_ip"`.
#[tokio::test]
async fn a_failing_ssh_provisioner_leaves_nothing_and_the_world_cidr_warns() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["echo about to fail", "exit 3"]
"#;
    let extra = "ssh_source_cidrs = [\"0.0.0.0/0\"]\nssh_allow_world = true\nssh_interface = \"private_ip\"";
    s.write("t.toml", &template(&moto.endpoint(), extra, provisioners));
    let stand_in = cloud_init_stand_in(moto.endpoint(), sshd.dir.path().to_path_buf());
    let out = tokio::task::spawn_blocking({
        let mut c = kiln(&s, Some(&sshd));
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    let booted = stand_in.await.unwrap();
    assert_exit(&out, 1);
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    assert!(all.contains("about to fail"), "ran over SSH: {all}");
    assert!(
        all.contains("SSH port is open to the whole internet (0.0.0.0/0"),
        "{all}"
    );
    let private = booted.private_ip.unwrap();
    assert!(
        all.contains(&format!("connecting over SSH to {private}:22 (private_ip)")),
        "{all}"
    );
    assert_no_key_material(s.path(), &booted.key_line);
    assert_nothing_left(&moto.endpoint()).await;
}

#[tokio::test]
async fn sigkill_during_an_ssh_provisioner_then_cleanup_removes_the_key_pair_too() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    let gate = s.path().join("go");
    let started = s.path().join("started");
    // Waits (bounded) for the test's go-ahead, so it is still running
    // when kiln is killed and ends once the test is done with it.
    let provisioners = format!(
        r#"
[[build.provisioner]]
type = "shell"
inline = ["touch {started}", "i=0; while [ ! -e {gate} ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done"]
"#,
        started = started.display(),
        gate = gate.display()
    );
    let extra = format!("ssh_source_cidrs = [\"{CIDR4}\", \"{CIDR6}\"]");
    s.write("t.toml", &template(&moto.endpoint(), &extra, &provisioners));
    let stand_in = cloud_init_stand_in(moto.endpoint(), sshd.dir.path().to_path_buf());
    let mut child = kiln(&s, Some(&sshd))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !started.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the provisioner never started; sshd: {}",
            sshd.log()
        );
        assert!(child.try_wait().unwrap().is_none(), "the build ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::fs::write(&gate, "").unwrap();
    let booted = stand_in.await.unwrap();

    // While it is all still there: the group's only ingress rule is TCP
    // 22 from the two blocks; the instance has the run's key pair.
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let inst = build_instance(&ec2).await;
    let run = run_of(&inst);
    assert_eq!(inst.key_name(), Some(format!("kiln-{run}").as_str()));
    let group = inst.security_groups()[0].group_id().unwrap();
    let g = ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap();
    let perms = g.security_groups()[0].ip_permissions();
    assert_eq!(perms.len(), 1, "one ingress rule: {perms:?}");
    let p = &perms[0];
    assert_eq!(
        (p.ip_protocol(), p.from_port(), p.to_port()),
        (Some("tcp"), Some(22), Some(22))
    );
    let v4: Vec<_> = p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect();
    let v6: Vec<_> = p
        .ipv6_ranges()
        .iter()
        .filter_map(|r| r.cidr_ipv6())
        .collect();
    assert_eq!((v4, v6), (vec![CIDR4], vec![CIDR6]));
    let keys = ec2
        .describe_key_pairs()
        .key_names(format!("kiln-{run}"))
        .send()
        .await
        .unwrap();
    let tags: Vec<_> = keys.key_pairs()[0]
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert!(tags.contains(&("kiln:run", run.as_str())), "{tags:?}");
    // Killed mid-build, kiln left its journal: no key material in it.
    assert_no_key_material(s.path(), &booted.key_line);

    let mut clean = s.kiln();
    clean
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .arg("cleanup");
    let clean = tokio::task::spawn_blocking(move || clean.output().unwrap())
        .await
        .unwrap();
    assert_exit(&clean, 0);
    assert!(
        text(&clean)
            .0
            .contains("key pairs and security groups tagged kiln:run="),
        "{}",
        text(&clean).0
    );
    assert_nothing_left(&moto.endpoint()).await;
}

/// A console as an EC2 instance's shows it once cloud-init's
/// `write-ssh-key-fingerprints` ran (through `logger -t ec2`), holding
/// `host_key` (an `authorized_keys`-style line).
fn cloud_init_console(host_key: &str) -> String {
    let p = "<14>Dec  6 22:00:01 ec2:";
    format!(
        "[    0.000000] Linux version 6.1.0-28-cloud-amd64\r\n{p} \r\n{p} #############################################################\r\n\
         {p} -----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n{p} 256 SHA256:x root@ip-172-31-5-10 (ED25519)\r\n\
         {p} -----END SSH HOST KEY FINGERPRINTS-----\r\n{p} #############################################################\r\n\
         {p} -----BEGIN SSH HOST KEY KEYS-----\r\n{p} {host_key} root@ip-172-31-5-10\r\n{p} -----END SSH HOST KEY KEYS-----\r\n\
         Debian GNU/Linux 12 ip-172-31-5-10 ttyS0\r\n"
    )
}

/// The console's host keys decide whom kiln talks to: the stand-in's own
/// key on the console, and the build goes through pinned to it; another
/// key there, and the build fails before any provisioner runs, leaving
/// nothing. (A proxy in front of moto answers `GetConsoleOutput`: moto's
/// console is a fixed kernel log.)
#[tokio::test]
async fn host_keys_on_the_console_are_the_only_ones_accepted() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(moto) = Moto::start() else { return };
    let proxy = crate::aws::FaultProxy::start(&moto.endpoint(), 0.0, 1);
    let s = Scratch::new();
    let ran = s.path().join("ran");
    let provisioners = format!(
        "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"touch {}\"]\n",
        ran.display()
    );
    let extra = format!("ssh_source_cidrs = [\"{CIDR4}\"]");
    let t = template(&proxy.endpoint(), &extra, &provisioners).replace(
        "ssh_host_key_timeout = \"0s\"",
        "ssh_host_key_timeout = \"30s\"",
    );
    s.write("t.toml", &t);

    // The console shows the stand-in's key: pinned, connected.
    proxy.set_console_output(&cloud_init_console(&sshd.host_key()));
    let stand_in = cloud_init_stand_in(moto.endpoint(), sshd.dir.path().to_path_buf());
    let out = tokio::task::spawn_blocking({
        let mut c = kiln(&s, Some(&sshd));
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    stand_in.await.unwrap();
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    assert!(out.status.success(), "{all}");
    let print = sshd.host_fingerprint();
    assert!(
        all.contains(&format!(
            "console shows its SSH host keys: {print}; only these are accepted"
        )) && all.contains(&format!("host key {print} (from the console)")),
        "{all}"
    );
    assert!(!all.contains("trust on first use"), "{all}");
    assert!(ran.exists(), "the provisioner ran");
    assert_nothing_left(&moto.endpoint()).await;

    // Someone else's key on the console: refused, nothing ran, nothing left.
    std::fs::remove_file(&ran).unwrap();
    let other = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(s.path().join("other"))
        .output()
        .unwrap();
    assert!(other.status.success());
    let other = std::fs::read_to_string(s.path().join("other.pub")).unwrap();
    let other: String = other
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    proxy.set_console_output(&cloud_init_console(&other));
    let stand_in = cloud_init_stand_in(moto.endpoint(), sshd.dir.path().to_path_buf());
    let out = tokio::task::spawn_blocking({
        let mut c = kiln(&s, Some(&sshd));
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    stand_in.await.unwrap();
    assert_exit(&out, 1);
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    assert!(
        all.contains("offered an SSH host key that is not one of the 1 it was expected to have"),
        "{all}"
    );
    assert!(!ran.exists(), "no provisioner ran against the wrong host");
    assert_nothing_left(&moto.endpoint()).await;
}

/// `[[build.test]]` on an AMI built over SSH: the test instance is
/// started from the new AMI with a group and a key pair of its own and
/// reached over SSH too; the checks really run on the SSH target, and
/// everything of both runs is gone afterwards.
#[tokio::test]
async fn build_tests_reach_the_test_instance_over_ssh() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    let marker = s.path().join("tested-over-ssh");
    let provisioners = format!(
        r#"
[[build.provisioner]]
type = "shell"
inline = ["echo provisioned"]

[[build.test]]
type = "command"
run = "echo checked > {m}; cat {m}"
stdout_contains = ["checked"]
"#,
        m = marker.display()
    );
    let extra = format!("ssh_source_cidrs = [\"{CIDR4}\"]");
    s.write("t.toml", &template(&moto.endpoint(), &extra, &provisioners));
    let (out, booted) = kiln_booting(&s, &sshd, &moto, 2, |_| {}).await;
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    assert!(out.status.success(), "{all}\nsshd:\n{}", sshd.log());
    assert_ne!(booted[0].key_line, booted[1].key_line, "a key pair per run");
    assert!(
        all.contains("test instance ") && all.contains(&format!("SSH from {CIDR4} only")),
        "{all}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "checked\n");
    assert_nothing_left(&moto.endpoint()).await;
}

/// What `communicator = "ssh"` refuses before anything is created.
#[tokio::test]
async fn ssh_settings_refused_before_launch() {
    let Some(moto) = Moto::start() else { return };
    let cases: &[(&str, &str)] = &[
        ("", "needs `ssh_source_cidrs`"),
        (
            "ssh_source_cidrs = [\"0.0.0.0/0\"]",
            "`0.0.0.0/0` lets the whole internet reach",
        ),
        (
            "ssh_source_cidrs = [\"203.0.113.7/32\", \"::/0\"]",
            "`::/0` lets the whole internet reach",
        ),
        (
            "ssh_source_cidrs = [\"10.0.0.0/40\"]",
            "`10.0.0.0/40` is not a CIDR block",
        ),
        (
            "ssh_source_cidrs = [\"10.0.0.0/8\"]\nssm_timeout = \"5m\"",
            "`ssm_timeout` is set but `communicator = \"ssh\"`",
        ),
        (
            "ssh_source_cidrs = [\"10.0.0.0/8\"]\nsecurity_group_id = \"sg-0123\"",
            "`security_group_id` with `communicator = \"ssh\"` is not supported yet",
        ),
    ];
    let base = template(&moto.endpoint(), "", "");
    let mut all_cases: Vec<(String, &str)> = cases
        .iter()
        .map(|(extra, want)| {
            (
                base.replace(
                    "ssh_timeout = \"2m\"\n",
                    &format!("ssh_timeout = \"2m\"\n{extra}\n"),
                ),
                *want,
            )
        })
        .collect();
    all_cases.push((
        base.replace(
            "ssh_username = \"root\"\n",
            "ssh_source_cidrs = [\"10.0.0.0/8\"]\n",
        ),
        "needs `ssh_username`",
    ));
    all_cases.push((
        base.replace("communicator = \"ssh\"\n", ""),
        "`ssh_username` is set but the instance is reached over SSM",
    ));
    for (t, want) in all_cases {
        let s = Scratch::new();
        s.write("t.toml", &t);
        let out: Output = kiln(&s, None).output().unwrap();
        let (o, e) = text(&out);
        let all = format!("{o}{e}");
        assert!(all.contains(want), "{want}: {all}");
        assert_eq!(out.status.code(), Some(1), "{want}: {all}");
        assert_nothing_left(&moto.endpoint()).await;
    }
}

/// Host keys known in advance (what the console gives on EC2): the real
/// sshd's own key is accepted, any other refused before authentication,
/// whatever the client key.
#[tokio::test]
async fn host_keys_learnt_out_of_band_are_enforced_against_a_real_sshd() {
    use kiln::communicator::ssh::{self, SshAuth, SshCommunicator, SshTarget};
    use kiln::communicator::Communicator;
    use russh::keys::PublicKey;
    let Some(sshd) = Sshd::start() else { return };
    let key = ssh::ephemeral_key().unwrap();
    sshd.authorize(&ssh::authorized_key(&key).unwrap());
    let key = std::sync::Arc::new(key);
    let target = SshTarget {
        addr: sshd.addr.parse().unwrap(),
        username: "root".into(),
        auth: SshAuth::Key(key),
    };
    let other = ssh::ephemeral_key().unwrap().public_key().clone();
    let wrong = SshCommunicator::new(target.clone()).expecting_host_keys(vec![other]);
    let err = wrong
        .wait_ready(Duration::from_secs(20), &mut || Ok(()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not one of the 1 it was expected to have"),
        "{err}"
    );

    let real = PublicKey::from_openssh(&sshd.host_key()).unwrap();
    let right = SshCommunicator::new(target).expecting_host_keys(vec![real]);
    right
        .wait_ready(Duration::from_secs(20), &mut || Ok(()))
        .await
        .unwrap();
    assert_eq!(
        right.host_key_fingerprint().unwrap(),
        sshd.host_fingerprint()
    );
    let mut lines = vec![];
    let code = right
        .exec(
            &kiln::communicator::RemoteCommand {
                script: "echo over-ssh".into(),
                ..Default::default()
            },
            &mut |_, l| lines.push(l),
        )
        .await
        .unwrap();
    assert_eq!((code, lines), (0, vec!["over-ssh".to_string()]));
}

/// `kiln import packer` maps an `amazon-ebs` source's SSH settings onto
/// `communicator = "ssh"` (shaped as real templates write them: a
/// narrowed temporary group, `ssh_interface`, cleared keys), and the
/// result validates; Packer's open-to-the-world group becomes an explicit
/// `ssh_allow_world`; `session_manager` becomes kiln's SSM.
#[test]
fn imported_amazon_ebs_ssh_settings_become_kiln_ssh_fields() {
    let s = Scratch::new();
    let source = |body: &str| {
        format!(
            "source \"amazon-ebs\" \"golden\" {{\n  region = \"eu-west-1\"\n  source_ami = \"ami-0123456789abcdef0\"\n  instance_type = \"t3.micro\"\n{body}}}\nbuild {{\n  sources = [\"source.amazon-ebs.golden\"]\n}}\n"
        )
    };
    let import = |name: &str, body: &str| {
        s.write(&format!("{name}.pkr.hcl"), &source(body));
        let o = s
            .kiln()
            .args([
                "import",
                "packer",
                "--json",
                &format!("{name}.pkr.hcl"),
                "-o",
            ])
            .arg(format!("{name}.toml"))
            .output()
            .unwrap();
        // The findings' constructs and reasons, one per line.
        let report: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
        let findings: Vec<String> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| format!("{} {}: {}", f["level"], f["construct"], f["why"]))
            .collect();
        let out = std::fs::read_to_string(s.path().join(format!("{name}.toml"))).unwrap();
        let v = s
            .kiln()
            .args(["validate", &format!("{name}.toml")])
            .output()
            .unwrap();
        assert_exit(&v, 0);
        (out, findings.join("\n"))
    };

    let (out, report) = import(
        "narrow",
        "  communicator = \"ssh\"\n  ssh_username = \"admin\"\n  ssh_interface = \"public_dns\"\n  ssh_timeout = \"10m\"\n  temporary_key_pair_type = \"ed25519\"\n  ssh_clear_authorized_keys = true\n  associate_public_ip_address = true\n  temporary_security_group_source_cidrs = [\"198.51.100.0/24\", \"2001:db8::/48\"]\n",
    );
    for want in [
        "communicator = \"ssh\"",
        "ssh_username = \"admin\"",
        "ssh_interface = \"public_ip\"",
        "ssh_timeout = \"10m\"",
        "associate_public_ip_address = true",
        "ssh_source_cidrs = [\"198.51.100.0/24\", \"2001:db8::/48\"]",
    ] {
        assert!(out.contains(want), "{want} not in {out}");
    }
    assert!(!out.contains("ssh_allow_world"), "{out}");
    assert!(report.contains("ssh_clear_authorized_keys"), "{report}");
    assert!(report.contains("ssh_interface"), "{report}");
    assert!(
        !report.contains("iam_instance_profile"),
        "SSH needs none: {report}"
    );
    assert!(!report.contains("temporary_key_pair_type"), "{report}");

    // Packer's default (port 22 from anywhere) is not carried over silently.
    let (out, report) = import("default", "  ssh_username = \"ubuntu\"\n");
    assert!(
        out.contains("communicator = \"ssh\"") && !out.contains("ssh_source_cidrs"),
        "{out}"
    );
    assert!(report.contains("ssh_source_cidrs"), "{report}");
    let (out, report) = import(
        "world",
        "  ssh_username = \"ubuntu\"\n  temporary_security_group_source_cidrs = [\"0.0.0.0/0\"]\n",
    );
    assert!(out.contains("ssh_allow_world = true"), "{out}");
    assert!(report.contains("whole internet"), "{report}");

    let (out, report) = import(
        "ssm",
        "  ssh_username = \"ec2-user\"\n  ssh_interface = \"session_manager\"\n  iam_instance_profile = \"ssm-core\"\n",
    );
    assert!(
        !out.contains("communicator") && !out.contains("ssh_"),
        "{out}"
    );
    assert!(report.contains("Session Manager"), "{report}");
}
