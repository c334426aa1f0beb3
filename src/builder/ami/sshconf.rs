//! The settings of `communicator = "ssh"` on an AMI source and their
//! checks, made before anything is launched: `ssh_username` and
//! `ssh_source_cidrs` are required, each CIDR must parse, the whole world
//! (`0.0.0.0/0`, `::/0`) only with `ssh_allow_world = true`, and the
//! settings of one communicator are refused with the other.

use std::net::IpAddr;

use super::AmiSettings;
use crate::builder::BuildError;

/// Settings that only mean something with `communicator = "ssh"`.
const SSH_ONLY: &[&str] = &[
    "ssh_source_cidrs",
    "ssh_allow_world",
    "ssh_interface",
    "ssh_username",
    "ssh_timeout",
    "ssh_host_key_timeout",
];

/// Settings that only mean something with `communicator = "ssm"`.
const SSM_ONLY: &[&str] = &["ssm_timeout", "vault_address", "vault_wrap_ttl"];

/// Whether the source reaches its instance over SSH.
pub fn is_ssh(s: &AmiSettings) -> bool {
    s.communicator.as_deref() == Some("ssh")
}

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = |why: &str| {
            format!("`ssh_source_cidrs`: `{text}` is not a CIDR block ({why}; e.g. `203.0.113.0/24` or `2001:db8::/32`)")
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(|| bad("no `/PREFIX`"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad(&format!("the prefix length must be 0 to {max}")))?;
        Ok(Cidr { addr, prefix })
    }

    /// `0.0.0.0/0` or `::/0` (any block with prefix 0 is the whole world).
    pub fn is_world(&self) -> bool {
        self.prefix == 0
    }
}

/// The parsed `ssh_source_cidrs` (checked by [`check`]).
pub fn source_cidrs(s: &AmiSettings) -> Vec<Cidr> {
    s.ssh_source_cidrs
        .iter()
        .filter_map(|c| Cidr::parse(c).ok())
        .collect()
}

/// Checks the communicator's settings: see the module comment.
pub fn check(s: &AmiSettings) -> Result<(), BuildError> {
    let given = |k: &str| match k {
        "ssh_source_cidrs" => !s.ssh_source_cidrs.is_empty(),
        "ssh_allow_world" => s.ssh_allow_world,
        "ssh_interface" => s.ssh_interface.is_some(),
        "ssh_username" => s.ssh_username.is_some(),
        "ssh_timeout" => s.ssh_timeout.is_some(),
        "ssh_host_key_timeout" => s.ssh_host_key_timeout.is_some(),
        "ssm_timeout" => s.ssm_timeout.is_some(),
        "vault_address" => s.vault_address.is_some(),
        "vault_wrap_ttl" => s.vault_wrap_ttl.is_some(),
        _ => false,
    };
    if !is_ssh(s) {
        if let Some(k) = SSH_ONLY.iter().find(|k| given(k)) {
            return Err(BuildError::Config(format!(
                "`{k}` is set but the instance is reached over SSM; set `communicator = \"ssh\"` to use SSH"
            )));
        }
        return Ok(());
    }
    if let Some(k) = SSM_ONLY.iter().find(|k| given(k)) {
        return Err(BuildError::Config(format!(
            "`{k}` is set but `communicator = \"ssh\"`: it applies to SSM only (over SSH, secrets travel in the session's environment)"
        )));
    }
    if s.ssh_username.as_deref().is_none_or(str::is_empty) {
        return Err(BuildError::Config(
            "`communicator = \"ssh\"` needs `ssh_username`, the user the base image's cloud-init gives the key to (e.g. `admin` on Debian, `ec2-user` on Amazon Linux, `ubuntu` on Ubuntu)".into(),
        ));
    }
    if let Some(k) = [
        ("security_group_id", s.security_group_id.is_some()),
        ("security_group_filter", s.security_group_filter.is_some()),
    ]
    .iter()
    .find_map(|(k, set)| set.then_some(k))
    {
        return Err(BuildError::NotSupported(format!(
            "`{k}` with `communicator = \"ssh\"` is not supported yet: kiln opens port 22 only on its own temporary group; leave `{k}` out and set `ssh_source_cidrs`"
        )));
    }
    if s.ssh_source_cidrs.is_empty() {
        return Err(BuildError::Config(
            "`communicator = \"ssh\"` needs `ssh_source_cidrs`: the networks the temporary security group lets reach port 22 (e.g. your build host's `203.0.113.7/32`); there is no default".into(),
        ));
    }
    for text in &s.ssh_source_cidrs {
        let cidr = Cidr::parse(text).map_err(BuildError::Config)?;
        if cidr.is_world() && !s.ssh_allow_world {
            return Err(BuildError::Config(format!(
                "`ssh_source_cidrs`: `{text}` lets the whole internet reach the build instance's SSH port; give your build host's network, or set `ssh_allow_world = true` if you mean it"
            )));
        }
    }
    Ok(())
}

/// The warning printed when the group is open to the whole world.
pub fn world_warning(s: &AmiSettings) -> Option<String> {
    let world: Vec<&str> = s
        .ssh_source_cidrs
        .iter()
        .filter(|c| Cidr::parse(c).is_ok_and(|c| c.is_world()))
        .map(String::as_str)
        .collect();
    (!world.is_empty()).then(|| {
        format!(
            "warning: the build instance's SSH port is open to the whole internet ({}; `ssh_allow_world = true`)",
            world.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_the_world_is_recognised() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert_eq!((c.addr.to_string(), c.prefix), ("203.0.113.0".into(), 24));
        assert!(!c.is_world());
        assert!(Cidr::parse("0.0.0.0/0").unwrap().is_world());
        assert!(Cidr::parse("::/0").unwrap().is_world());
        assert!(!Cidr::parse("2001:db8::/32").unwrap().is_world());
        for bad in [
            "203.0.113.0",
            "203.0.113.0/33",
            "2001:db8::/129",
            "host/24",
            "1.2.3.4/x",
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }
}
