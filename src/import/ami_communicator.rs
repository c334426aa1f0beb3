//! How an `amazon-ebs` source reaches its instance, in kiln's terms. Packer
//! connects over SSH unless told otherwise, so a source becomes
//! `communicator = "ssh"` with `ssh_username`, `ssh_interface`,
//! `ssh_timeout` and `ssh_source_cidrs` (from
//! `temporary_security_group_source_cidrs`); without those CIDRs (Packer's
//! default opens port 22 to `0.0.0.0/0`) the report says to set them.
//! `ssh_interface = "session_manager"` becomes kiln's SSM communicator.

use toml_edit::Table;

use super::convert::Converter;
use super::model::{Attr, Block};
use super::report::Level;

/// Settings of Packer's SSH connection that change nothing in kiln's
/// (kiln picks its own key type, timeouts between attempts, keep-alives).
const SSH_COSMETIC: &[&str] = &[
    "temporary_key_pair_type",
    "temporary_key_pair_bits",
    "pause_before_connecting",
    "ssh_handshake_attempts",
    "ssh_keep_alive_interval",
    "ssh_read_write_timeout",
    "ssh_pty",
    "ssh_disable_agent_forwarding",
    "ssh_file_transfer_method",
];

/// Whether `key` is a communicator setting [`Converter::ami_communicator`]
/// handles.
pub(super) fn is_communicator_setting(key: &str) -> bool {
    key == "communicator"
        || key.starts_with("ssh_")
        || key.starts_with("winrm_")
        || key.starts_with("temporary_security_group_source_")
        || SSH_COSMETIC.contains(&key)
}

impl Converter<'_> {
    /// Converts the source's communicator settings into `t`; true when the
    /// result reaches the instance over SSH (then no instance profile is
    /// needed).
    pub(super) fn ami_communicator(&mut self, b: &Block, t: &mut Table, construct: &str) -> bool {
        let attrs: Vec<&Attr> = b
            .attrs
            .iter()
            .filter(|a| is_communicator_setting(&a.key))
            .collect();
        let value = |k: &str| b.value(k).and_then(|n| n.as_str());
        match value("communicator") {
            Some("none") | Some("winrm") => {
                let a = b.attr("communicator").expect("matched above");
                self.report.push(
                    Level::NotConverted,
                    format!("{construct}.communicator"),
                    Some(&a.loc),
                    "kiln reaches AMI instances over SSM (the default) or SSH; WinRM and no communicator are not supported",
                    "build Linux images, or keep this source in Packer",
                );
                return false;
            }
            _ => {}
        }
        if value("ssh_interface") == Some("session_manager") {
            let a = b.attr("ssh_interface").expect("matched above");
            self.report.push(
                Level::Approximate,
                format!("{construct}.ssh_interface"),
                Some(&a.loc),
                "Packer tunnels SSH through Session Manager; kiln runs the provisioners through SSM itself, with no SSH at all (the SSH settings were dropped)",
                "keep the `iam_instance_profile` allowing SSM; the base needs the SSM agent",
            );
            return false;
        }
        t.insert("communicator", toml_edit::value("ssh"));
        let mut has_cidrs = false;
        for a in attrs {
            let c = format!("{construct}.{}", a.key);
            let key = a.key.as_str();
            match key {
                "communicator" => {}
                "ssh_username" | "ssh_timeout" => {
                    self.put(t, key, &a.value, &c, false);
                }
                "ssh_wait_timeout" => {
                    self.put(t, "ssh_timeout", &a.value, &c, false);
                }
                "ssh_interface" => match a.value.as_str() {
                    Some("public_dns" | "private_dns") => {
                        let ip = a.value.as_str().unwrap_or("").replace("_dns", "_ip");
                        t.insert("ssh_interface", toml_edit::value(ip.as_str()));
                        self.report.push(
                            Level::Approximate,
                            c,
                            Some(&a.loc),
                            format!("kiln connects to the instance's IP address, not its DNS name: `{ip}`"),
                            "nothing to do unless only the DNS name is reachable",
                        );
                    }
                    _ => {
                        self.put(t, key, &a.value, &c, false);
                    }
                },
                "temporary_security_group_source_cidrs" => {
                    has_cidrs = true;
                    self.ssh_source_cidrs(t, a, &c);
                }
                "ssh_port" if a.value.as_str() == Some("22") || matches!(&a.value.expr, super::model::Expr::Num(n) if *n == 22.0) => {}
                "ssh_clear_authorized_keys" => self.report.push(
                    Level::NotConverted,
                    c,
                    Some(&a.loc),
                    "not supported yet: the run's public key stays in the user's `authorized_keys` in the image (its private half only ever existed in kiln's memory)",
                    "remove it in a last `shell` provisioner if the image must not carry it",
                ),
                "temporary_security_group_source_public_ip" => self.report.push(
                    Level::NotConverted,
                    c,
                    Some(&a.loc),
                    "kiln does not look up the build host's public address",
                    "set `ssh_source_cidrs` to the build host's address, e.g. `[\"203.0.113.7/32\"]`",
                ),
                k if SSH_COSMETIC.contains(&k) => {}
                _ => self.report.push(
                    Level::NotConverted,
                    c,
                    Some(&a.loc),
                    "kiln makes an ed25519 key pair for each run and connects to port 22 of the instance directly; other SSH credentials, ports, bastions and proxies are not supported",
                    "drop it (the run's key pair replaces any key pair or password)",
                ),
            }
        }
        if !has_cidrs {
            self.report.push(
                Level::NotConverted,
                format!("{construct}.ssh_source_cidrs"),
                Some(&b.loc),
                "Packer opens the temporary security group's port 22 to `0.0.0.0/0` by default; kiln needs the networks named (`ssh_source_cidrs`) and refuses to build without them",
                "set `ssh_source_cidrs` to the build host's network, or drop `communicator = \"ssh\"` and give an `iam_instance_profile` allowing SSM to build with no ingress at all",
            );
        }
        true
    }

    /// `temporary_security_group_source_cidrs` → `ssh_source_cidrs`; the
    /// whole world (which kiln refuses unless told) gets
    /// `ssh_allow_world = true` and a finding.
    fn ssh_source_cidrs(&mut self, t: &mut Table, a: &Attr, construct: &str) {
        let world = a
            .value
            .as_list()
            .into_iter()
            .flatten()
            .any(|n| matches!(n.as_str(), Some(s) if s.ends_with("/0")))
            || a.value
                .as_str()
                .is_some_and(|s| s.split(',').any(|c| c.trim().ends_with("/0")));
        if a.value.as_str().is_some() && !self.input.legacy_json {
            // HCL gives a list; a plain string is one block.
            let mut list = toml_edit::Array::new();
            list.push(a.value.as_str().unwrap_or_default());
            t.insert("ssh_source_cidrs", toml_edit::value(list));
        } else {
            self.string_list(t, "ssh_source_cidrs", a, construct);
        }
        if world {
            t.insert("ssh_allow_world", toml_edit::value(true));
            self.report.push(
                Level::Approximate,
                construct,
                Some(&a.loc),
                "the template lets the whole internet reach the build instance's SSH port; kiln does so only with `ssh_allow_world = true` (now set) and warns",
                "narrow `ssh_source_cidrs` to the build host's network and drop `ssh_allow_world`",
            );
        }
    }
}
