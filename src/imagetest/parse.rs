//! Reading what an instance's own files say: the dpkg status and apk
//! databases, `/etc/passwd` and `/etc/group`, `/proc/net/tcp*`. Pure
//! functions over text, so each is tested on real samples.

/// A package's installed version from `/var/lib/dpkg/status` (only
/// entries whose status is `install ok installed`).
pub fn dpkg_version(status: &str, name: &str) -> Option<String> {
    for para in status.split("\n\n") {
        let field = |k: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        if field("Package:").as_deref() == Some(name)
            && field("Status:").is_some_and(|s| s.ends_with(" installed"))
        {
            return field("Version:");
        }
    }
    None
}

/// A package's version from apk's `/lib/apk/db/installed` (`P:` name,
/// `V:` version, entries separated by blank lines).
pub fn apk_version(db: &str, name: &str) -> Option<String> {
    for para in db.split("\n\n") {
        let field = |k: &str| para.lines().find_map(|l| l.strip_prefix(k));
        if field("P:") == Some(name) {
            return field("V:").map(str::to_string);
        }
    }
    None
}

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Passwd {
    pub name: String,
    pub uid: u64,
    pub gid: u64,
    pub home: String,
    pub shell: String,
}

pub fn passwd_entry(passwd: &str, name: &str) -> Option<Passwd> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| Passwd {
            name: f[0].into(),
            uid: f[2].parse().unwrap_or(u64::MAX),
            gid: f[3].parse().unwrap_or(u64::MAX),
            home: f[5].into(),
            shell: f[6].into(),
        })
    })
}

/// One `/etc/group` line: name, gid, members.
pub fn group_entry(group: &str, name: &str) -> Option<(u64, Vec<String>)> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| {
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            (f[2].parse().unwrap_or(u64::MAX), members)
        })
    })
}

/// A user's groups: the primary one (by gid) and every group listing them.
pub fn groups_of(group: &str, user: &str, gid: u64) -> Vec<String> {
    let mut out = vec![];
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let primary = f[2].parse::<u64>().ok() == Some(gid);
        if primary || f[3].split(',').any(|m| m == user) {
            out.push(f[0].to_string());
        }
    }
    out
}

/// The local addresses listening on `port` in `/proc/net/tcp`, `tcp6`,
/// `udp` or `udp6` text: TCP sockets in state `0A` (LISTEN), UDP ones
/// in state `07` (unconnected, bound).
pub fn listening(proc_net: &str, port: u16, udp: bool) -> Vec<String> {
    let want = if udp { "07" } else { "0A" };
    let mut out = vec![];
    for l in proc_net.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || f[0] == "sl" {
            continue;
        }
        let Some((addr, p)) = f[1].rsplit_once(':') else {
            continue;
        };
        if u16::from_str_radix(p, 16).ok() == Some(port) && f[3] == want {
            out.push(hex_addr(addr));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `/proc/net/tcp`'s address: IPv4 as one little-endian word, IPv6 as
/// four; shown as the kernel means it.
fn hex_addr(h: &str) -> String {
    let bytes: Vec<u8> = (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
        .collect();
    let words: Vec<u8> = bytes
        .chunks(4)
        .flat_map(|w| w.iter().rev().copied().collect::<Vec<_>>())
        .collect();
    match words.len() {
        4 => std::net::Ipv4Addr::new(words[0], words[1], words[2], words[3]).to_string(),
        16 => {
            let a: [u8; 16] = words.try_into().unwrap_or([0; 16]);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => h.to_string(),
    }
}

/// Compares a mode as written in a template (`0644`, `644`, `0755`) with
/// `stat -c %a` output.
pub fn same_mode(expected: &str, observed: &str) -> bool {
    let p = |s: &str| u32::from_str_radix(s.trim(), 8).ok();
    p(expected).is_some() && p(expected) == p(observed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DPKG: &str = "Package: adduser\nStatus: install ok installed\nPriority: important\nVersion: 3.134\n\nPackage: removed\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: coreutils\nEssential: yes\nStatus: install ok installed\nVersion: 9.1-1\nDescription: GNU core utilities\n multi-line\n";

    #[test]
    fn dpkg_status_gives_installed_versions_only() {
        assert_eq!(dpkg_version(DPKG, "coreutils").as_deref(), Some("9.1-1"));
        assert_eq!(dpkg_version(DPKG, "adduser").as_deref(), Some("3.134"));
        assert_eq!(dpkg_version(DPKG, "removed"), None);
        assert_eq!(dpkg_version(DPKG, "core"), None);
    }

    #[test]
    fn apk_db_versions() {
        let db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\n";
        assert_eq!(apk_version(db, "busybox").as_deref(), Some("1.36.1-r5"));
        assert_eq!(apk_version(db, "bash"), None);
    }

    #[test]
    fn users_and_groups() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000::/home/app:/bin/sh\n";
        let group = "root:x:0:\nadm:x:4:app,other\napp:x:1000:\nstaff:x:50:\n";
        let app = passwd_entry(passwd, "app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.home.as_str()),
            (1000, 1000, "/home/app")
        );
        assert_eq!(passwd_entry(passwd, "ap"), None);
        assert_eq!(groups_of(group, "app", 1000), vec!["adm", "app"]);
        assert_eq!(
            group_entry(group, "adm"),
            Some((4, vec!["app".into(), "other".into()]))
        );
        assert_eq!(group_entry(group, "nobody"), None);
    }

    #[test]
    fn listening_sockets_from_proc_net() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n   2: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n";
        assert_eq!(listening(tcp, 8080, false), vec!["127.0.0.1"]);
        assert_eq!(listening(tcp, 22, false), vec!["0.0.0.0"]);
        // Established, not listening.
        assert!(listening(tcp, 80, false).is_empty());
        let tcp6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(listening(tcp6, 22, false), vec!["::"]);
    }

    #[test]
    fn modes_and_quoting() {
        assert!(same_mode("0644", "644"));
        assert!(same_mode("0755", "755"));
        assert!(!same_mode("0644", "600"));
        assert!(!same_mode("rw", "rw"));
        assert_eq!(crate::communicator::sh_quote("a'b"), r"'a'\''b'");
    }
}
