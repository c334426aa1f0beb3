//! `communicator = "ssh"` on EC2, for bases without the SSM agent: the
//! run's key pair (an ed25519 key made in memory, its public half imported
//! as EC2 key pair `kiln-RUN`; the private half is never written anywhere),
//! the temporary group's only ingress rule (TCP 22 from
//! `ssh_source_cidrs`), the address per `ssh_interface`, and the session
//! itself through the generic transport (`communicator::ssh`), with the
//! host key taken from the instance's console when cloud-init printed it.
//! The key pair carries the run's `kiln:*` tags, so the run's reaper
//! deletes it with the instance and the group.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, ResourceType};
use russh::keys::PrivateKey;

use super::aws::{describe, Clients};
use super::launch::{tag, RunTags};
use super::sshconf::Cidr;
use super::{console, AmiSettings};
use crate::builder::BuildError;
use crate::communicator::ssh::{self, SshAuth, SshCommunicator, SshTarget};
use crate::job::JobContext;

const DEFAULT_SSH_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_HOST_KEY_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Test double: `KILN_TEST_SSH_ENDPOINT=HOST:PORT` replaces the address
/// kiln resolved for the instance (an emulator's instances have made-up
/// addresses; `tests/it/ami_ssh.rs` puts a local sshd there). Read only by
/// debug builds: a release kiln never looks at it.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub const TEST_ENDPOINT_VAR: &str = "KILN_TEST_SSH_ENDPOINT";

/// The run's SSH key: in memory, and known to EC2 as key pair `name`.
pub struct RunKey {
    pub key: Arc<PrivateKey>,
    pub name: String,
}

/// Makes the run's key and imports its public half as an EC2 key pair,
/// tagged like every resource of the run.
pub async fn import_key(aws: &Clients, tags: &RunTags) -> Result<RunKey, BuildError> {
    let key = ssh::ephemeral_key()?;
    let line = ssh::authorized_key(&key)?;
    let name = format!("kiln-{}", tags.run);
    aws.ec2
        .import_key_pair()
        .key_name(&name)
        .public_key_material(Blob::new(line.into_bytes()))
        .tag_specifications(tags.spec(ResourceType::KeyPair, &[tag("Name", &name)]))
        .send()
        .await
        .map_err(|e| {
            BuildError::Config(format!(
                "cannot import the run's key pair: {}",
                describe(&e)
            ))
        })?;
    Ok(RunKey {
        key: Arc::new(key),
        name,
    })
}

/// Adds the temporary group's only ingress rule: TCP port 22 from each of
/// `cidrs`.
pub async fn allow_ingress(
    aws: &Clients,
    group: &str,
    cidrs: &[Cidr],
    tags: &RunTags,
) -> Result<(), BuildError> {
    let mut rule = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22);
    for c in cidrs {
        let block = format!("{}/{}", c.addr, c.prefix);
        rule = match c.addr {
            IpAddr::V4(_) => rule.ip_ranges(
                IpRange::builder()
                    .cidr_ip(block)
                    .description("kiln build: SSH")
                    .build(),
            ),
            IpAddr::V6(_) => rule.ipv6_ranges(
                Ipv6Range::builder()
                    .cidr_ipv6(block)
                    .description("kiln build: SSH")
                    .build(),
            ),
        };
    }
    aws.ec2
        .authorize_security_group_ingress()
        .group_id(group)
        .ip_permissions(rule.build())
        .tag_specifications(tags.spec(ResourceType::SecurityGroupRule, &[]))
        .send()
        .await
        .map_err(|e| {
            BuildError::Config(format!(
                "cannot let SSH into security group {group}: {}",
                describe(&e)
            ))
        })?;
    Ok(())
}

/// The instance's address per `ssh_interface`: `public_ip`, `private_ip`,
/// or (unset) the public one when it has one, else the private one.
pub async fn address(
    aws: &Clients,
    instance: &str,
    interface: Option<&str>,
) -> Result<(IpAddr, &'static str), BuildError> {
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .map_err(|e| BuildError::Config(format!("describing {instance}: {}", describe(&e))))?;
    let inst = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .ok_or_else(|| BuildError::Config(format!("{instance} is not listed")))?;
    let ip = |v: Option<&str>| v.and_then(|a| a.parse::<IpAddr>().ok());
    let (public, private) = (ip(inst.public_ip_address()), ip(inst.private_ip_address()));
    match interface {
        Some("public_ip") => public.map(|a| (a, "public_ip")).ok_or_else(|| {
            BuildError::Config(format!(
                "`ssh_interface = \"public_ip\"` but {instance} has no public IP address; set `associate_public_ip_address = true` or use `ssh_interface = \"private_ip\"`"
            ))
        }),
        Some("private_ip") => private
            .map(|a| (a, "private_ip"))
            .ok_or_else(|| BuildError::Config(format!("{instance} has no private IP address"))),
        _ => public
            .map(|a| (a, "public_ip"))
            .or(private.map(|a| (a, "private_ip")))
            .ok_or_else(|| BuildError::Config(format!("{instance} has no IP address"))),
    }
}

/// Where kiln connects: the resolved address, or the test double's.
fn endpoint(resolved: SocketAddr, ctx: &JobContext) -> Result<SocketAddr, BuildError> {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var(TEST_ENDPOINT_VAR) {
        let addr: SocketAddr = v.parse().map_err(|_| {
            BuildError::Config(format!("{TEST_ENDPOINT_VAR}=`{v}` is not HOST:PORT"))
        })?;
        ctx.message(format!(
            "test double: {TEST_ENDPOINT_VAR} sends the SSH session for {resolved} to {addr}"
        ));
        return Ok(addr);
    }
    let _ = ctx;
    Ok(resolved)
}

/// Reads the host keys from the console, then connects as `ssh_username`
/// with the run's key, waiting up to `ssh_timeout` for SSH to answer.
pub async fn connect(
    ctx: &JobContext,
    aws: &Clients,
    s: &AmiSettings,
    instance: &str,
    key: &RunKey,
) -> Result<SshCommunicator, BuildError> {
    let (ip, which) = address(aws, instance, s.ssh_interface.as_deref()).await?;
    let resolved = SocketAddr::new(ip, 22);
    let addr = endpoint(resolved, ctx)?;
    let key_limit = crate::builder::duration_or(&s.ssh_host_key_timeout, DEFAULT_HOST_KEY_TIMEOUT);
    ctx.message(format!(
        "reading {instance}'s SSH host keys from its console (up to {})",
        humantime::format_duration(key_limit)
    ));
    let keys = console::wait_host_keys(aws, instance, key_limit).await?;
    let from_console = !keys.is_empty();
    if from_console {
        let prints: Vec<String> = keys
            .iter()
            .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256).to_string())
            .collect();
        ctx.message(format!(
            "{instance}'s console shows its SSH host keys: {}; only these are accepted",
            prints.join(", ")
        ));
    }
    let username = s.ssh_username.clone().unwrap_or_default();
    let comm = SshCommunicator::new(SshTarget {
        addr,
        username: username.clone(),
        auth: SshAuth::Key(key.key.clone()),
    })
    .expecting_host_keys(keys);
    let limit = crate::builder::duration_or(&s.ssh_timeout, DEFAULT_SSH_TIMEOUT);
    ctx.message(format!(
        "connecting over SSH to {resolved} ({which}) as `{username}` with key pair {} (up to {})",
        key.name,
        humantime::format_duration(limit)
    ));
    comm.wait_ready(limit, &mut || Ok(())).await?;
    let print = comm.host_key_fingerprint().unwrap_or_default();
    if from_console {
        ctx.message(format!(
            "SSH connected; host key {print} (from the console)"
        ));
    } else {
        ctx.message(format!(
            "warning: {instance}'s console showed no SSH host keys within {}: trusted the first key offered, {print} (trust on first use); the session is encrypted but who answered was not checked",
            humantime::format_duration(key_limit)
        ));
    }
    Ok(comm)
}
