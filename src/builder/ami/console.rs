//! The build instance's SSH host keys, read from its console output
//! (`GetConsoleOutput`), where cloud-init's `write-ssh-key-fingerprints`
//! prints them between `-----BEGIN SSH HOST KEY KEYS-----` and
//! `-----END SSH HOST KEY KEYS-----` (each line behind a syslog prefix such
//! as `<14>Dec  6 22:00:00 ec2: `). The console comes from EC2, not from
//! the network path to the instance, so a key found there lets the SSH
//! session refuse anyone in between.

use std::time::{Duration, Instant};

use russh::keys::PublicKey;

use super::aws::{describe, Clients};
use crate::builder::BuildError;

const BEGIN: &str = "-----BEGIN SSH HOST KEY KEYS-----";
const END: &str = "-----END SSH HOST KEY KEYS-----";

/// The key algorithms an `authorized_keys`-style line may start with.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// The host keys of the last complete block on `console` (an instance
/// that rebooted prints its keys again; the last block is the current
/// one). Lines that do not parse as a key are skipped.
pub fn host_keys(console: &str) -> Vec<PublicKey> {
    let mut done: Option<Vec<PublicKey>> = None;
    let mut open: Option<Vec<PublicKey>> = None;
    for line in console.lines() {
        if line.contains(BEGIN) {
            open = Some(vec![]);
        } else if line.contains(END) {
            if let Some(keys) = open.take() {
                done = Some(keys);
            }
        } else if let Some(keys) = open.as_mut() {
            if let Some(key) = key_in(line) {
                keys.push(key);
            }
        }
    }
    done.unwrap_or_default()
}

/// The public key on a console line, after whatever prefix the line has.
fn key_in(line: &str) -> Option<PublicKey> {
    let start = KEY_TYPES
        .iter()
        .filter_map(|t| line.find(&format!("{t} ")))
        .min()?;
    PublicKey::from_openssh(line[start..].trim_end_matches(['\r', '\n'])).ok()
}

/// Polls the instance's console output for its host keys for up to
/// `limit` (at least one look). An empty list: none were printed in time.
pub async fn wait_host_keys(
    aws: &Clients,
    instance: &str,
    limit: Duration,
) -> Result<Vec<PublicKey>, BuildError> {
    let start = Instant::now();
    let mut delay = Duration::from_secs(2);
    loop {
        let out = aws
            .ec2
            .get_console_output()
            .instance_id(instance)
            .send()
            .await
            .map_err(|e| {
                BuildError::Config(format!(
                    "cannot read the console output of {instance}: {}",
                    describe(&e)
                ))
            })?;
        let text = out
            .output()
            .and_then(|b64| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b64).ok()
            })
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let keys = host_keys(&text);
        if !keys.is_empty() || start.elapsed() + delay > limit {
            return Ok(keys);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(15));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys made with `ssh-keygen -t ed25519` and `-t ecdsa`; the lines
    // are shaped as cloud-init's `write-ssh-key-fingerprints` prints them
    // through `logger --stderr -t ec2` on an EC2 serial console.
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEgWIq+j4Ot6aRH4c7FvuaaoZeTCFmxVHhBruYr3cTS4 root@ip-172-31-5-10";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBDD4MVTEfqNIOGjOg1qWQOWcxAprV1BNQbj9DF6Z+YMs4QPhu5jFok2q4EW0CR9QYPwtNrHiQ0XRT0sZnVWcyWU= root@ip-172-31-5-10";

    fn console(blocks: &[&[&str]]) -> String {
        let mut out = String::from(
            "[    0.000000] Linux version 6.1.0-13-cloud-amd64\r\n<14>Dec  6 22:00:01 ec2: \r\n<14>Dec  6 22:00:01 ec2: #############################################################\r\n<14>Dec  6 22:00:01 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n<14>Dec  6 22:00:01 ec2: 256 SHA256:6uxCLpyMODNVsxDqHuHlLr0OgblEU9uFYTx8WP01ZrE root@ip-172-31-5-10 (ED25519)\r\n<14>Dec  6 22:00:01 ec2: -----END SSH HOST KEY FINGERPRINTS-----\r\n",
        );
        for keys in blocks {
            out.push_str("<14>Dec  6 22:00:01 ec2: -----BEGIN SSH HOST KEY KEYS-----\r\n");
            for k in *keys {
                out.push_str(&format!("<14>Dec  6 22:00:01 ec2: {k}\r\n"));
            }
            out.push_str("<14>Dec  6 22:00:01 ec2: -----END SSH HOST KEY KEYS-----\r\n");
        }
        out.push_str("Debian GNU/Linux 12 ip-172-31-5-10 ttyS0\r\n");
        out
    }

    #[test]
    fn host_keys_are_read_from_cloud_init_console_lines() {
        let keys = host_keys(&console(&[&[ECDSA, ED25519]]));
        let types: Vec<String> = keys.iter().map(|k| k.algorithm().to_string()).collect();
        assert_eq!(types, ["ecdsa-sha2-nistp256", "ssh-ed25519"]);
        let want = PublicKey::from_openssh(ED25519).unwrap();
        assert_eq!(keys[1].key_data(), want.key_data());
    }

    #[test]
    fn the_last_complete_block_counts_and_an_unfinished_one_does_not() {
        let twice = console(&[&[ECDSA], &[ED25519]]);
        let keys = host_keys(&twice);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].algorithm().to_string(), "ssh-ed25519");
        // Cut off before its END line: not trusted.
        let cut =
            format!("<14>Dec  6 22:00:01 ec2: {BEGIN}\r\n<14>Dec  6 22:00:01 ec2: {ED25519}\r\n");
        assert!(host_keys(&cut).is_empty());
        // moto's canned console (no cloud-init) and garbage lines.
        assert!(
            host_keys("Linux version 2.6.16-xenU\nBIOS-provided physical RAM map:\n").is_empty()
        );
        let junk = format!("{BEGIN}\nssh-ed25519 not-base64 x\n{END}\n");
        assert!(host_keys(&junk).is_empty());
    }
}
