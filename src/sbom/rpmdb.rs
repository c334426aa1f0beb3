//! rpm databases of an artifact, read through any [`Communicator`]: the
//! sqlite database (`rpmdb.sqlite`, rpm ≥ 4.16: Fedora ≥ 33, RHEL ≥ 9)
//! copied out as bytes — size-capped, since the instance is untrusted —
//! and opened on the host with SQLite (rusqlite, bundled), each row of its
//! `Packages` table an RPM header blob ([`super::rpmheader`]). Older
//! databases (Berkeley DB `Packages`, SUSE's ndb `Packages.db`) are read by
//! the image's own `rpm -qa --qf …` when it has one; without it they are
//! "not supported yet". The database label says which way was taken.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use super::rpmheader::{self, RpmHeader};
use crate::communicator::{sh_quote, Communicator, RemoteCommand};
use crate::ui::Stream;

/// Where rpm keeps its sqlite database (newer systems first; on Fedora
/// `/var/lib/rpm` links to the first).
pub const SQLITE_DBS: &[&str] = &[
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];
/// Databases kiln does not open itself (Berkeley DB, ndb).
pub const OTHER_DBS: &[&str] = &[
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/Packages",
    "/usr/lib/sysimage/rpm/Packages.db",
];

/// The largest database (and write-ahead log) copied out of an instance.
pub const MAX_DB_BYTES: usize = 256 << 20;
/// The most packages one database may list.
const MAX_PACKAGES: usize = 200_000;
/// The largest header blob SQLite hands over (rpm's own limit is 256 MiB
/// of data; real headers are well under 1 MiB).
const MAX_BLOB: i32 = 64 << 20;
/// How long copying a database out may take.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// How the rpm packages of an instance were read.
pub struct RpmRead {
    /// The database and the method, for the SBOM: `PATH (sqlite, read by
    /// kiln)` or `PATH (rpm -qa in the instance)`.
    pub label: String,
    pub packages: Vec<RpmHeader>,
}

/// The instance's rpm packages; `Ok(None)` when it has no rpm database.
/// A sqlite database is copied into a private folder inside `scratch`
/// (a folder of the job, journaled, so `kiln cleanup` removes the copy
/// after a SIGKILL).
pub async fn read(comm: &dyn Communicator, scratch: &Path) -> Result<Option<RpmRead>, String> {
    for path in SQLITE_DBS {
        let Some(db) = read_bytes(comm, path, MAX_DB_BYTES).await? else {
            continue;
        };
        let wal = read_bytes(comm, &format!("{path}-wal"), MAX_DB_BYTES).await?;
        let scratch = scratch.to_path_buf();
        let packages =
            tokio::task::spawn_blocking(move || headers_of_sqlite(&db, wal.as_deref(), &scratch))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("`{path}`: {e}"))?;
        return Ok(Some(RpmRead {
            label: format!("{path} (sqlite, read by kiln)"),
            packages,
        }));
    }
    for path in OTHER_DBS {
        if !crate::imagetest::checks::path_exists(comm, path).await? {
            continue;
        }
        return match query_rpm(comm).await? {
            Some(packages) => Ok(Some(RpmRead {
                label: format!("{path} (rpm -qa in the instance)"),
                packages,
            })),
            None => Err(format!(
                "the artifact has an rpm database kiln cannot open (`{path}`: Berkeley DB or ndb) and no `rpm` to query it: SBOMs of such images are not supported yet"
            )),
        };
    }
    Ok(None)
}

/// A regular file of the instance as bytes (through `head -c` and
/// `base64` there), `Ok(None)` when there is none; refused when it is
/// larger than `cap` — counted here, as it arrives, not taken from the
/// instance's word.
pub async fn read_bytes(
    comm: &dyn Communicator,
    path: &str,
    cap: usize,
) -> Result<Option<Vec<u8>>, String> {
    let cmd = RemoteCommand {
        script: format!(
            "f={}\n[ -f \"$f\" ] || exit 3\nhead -c {} \"$f\" | base64\n",
            sh_quote(path),
            cap + 1
        ),
        timeout: Some(READ_TIMEOUT),
        ..Default::default()
    };
    let max_chars = (cap + 1).div_ceil(3) * 4;
    let (mut text, mut over, mut errors) = (String::new(), false, vec![]);
    let code = comm
        .exec(&cmd, &mut |s, line| match s {
            Stream::Stdout => {
                let line = line.trim();
                if over || text.len() + line.len() > max_chars {
                    over = true;
                } else {
                    text.push_str(line);
                }
            }
            Stream::Stderr => {
                if errors.len() < 5 {
                    errors.push(line);
                }
            }
        })
        .await
        .map_err(|e| format!("cannot read `{path}` in the instance: {e}"))?;
    if code == 3 {
        return Ok(None);
    }
    let too_large = || format!("`{path}` is larger than the limit of {cap} bytes: not read");
    if over {
        return Err(too_large());
    }
    if code != 0 || !errors.is_empty() {
        return Err(format!(
            "cannot read `{path}` in the instance (exit {code}; it needs `head` and `base64`): {}",
            errors.join("; ")
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| format!("`{path}` came out garbled: {e}"))?;
    if bytes.len() > cap {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

/// The packages of an rpm sqlite database given as bytes (and its
/// write-ahead log, when the instance had one): written to a private
/// temporary folder inside `scratch` (removed on return), opened there by SQLite with untrusted-schema
/// defences on, each `Packages` row parsed as a header blob.
pub fn headers_of_sqlite(
    db: &[u8],
    wal: Option<&[u8]>,
    scratch: &Path,
) -> Result<Vec<RpmHeader>, String> {
    use rusqlite::{config::DbConfig, limits::Limit, Connection, OpenFlags};
    let dir = tempfile::Builder::new()
        .prefix("rpmdb-")
        .tempdir_in(scratch)
        .map_err(|e| {
            format!(
                "cannot make a temporary folder in `{}`: {e}",
                scratch.display()
            )
        })?;
    let file = dir.path().join("rpmdb.sqlite");
    fs_err::write(&file, db).map_err(|e| e.to_string())?;
    if let Some(w) = wal {
        fs_err::write(dir.path().join("rpmdb.sqlite-wal"), w).map_err(|e| e.to_string())?;
    }
    // Read-write on kiln's own copy: SQLite applies the write-ahead log
    // when it opens a database in WAL mode.
    let conn = Connection::open_with_flags(
        &file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("not an SQLite database: {e}"))?;
    let sql = |e: rusqlite::Error| format!("not an rpm database: {e}");
    for (c, on) in [
        (DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
        (DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false),
        (DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false),
        (DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false),
    ] {
        conn.set_db_config(c, on).map_err(sql)?;
    }
    let _ = conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_BLOB);
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    let mut out = vec![];
    while let Some(row) = rows.next().map_err(sql)? {
        if out.len() >= MAX_PACKAGES {
            return Err(format!("more than {MAX_PACKAGES} packages"));
        }
        let hnum: i64 = row.get(0).map_err(sql)?;
        let blob = row
            .get_ref(1)
            .map_err(sql)?
            .as_blob()
            .map_err(|e| format!("package row {hnum}: {e}"))?;
        let h = rpmheader::parse(blob).map_err(|e| format!("package row {hnum}: {e}"))?;
        // The keys rpm imported (`rpm --import`) are headers too; they
        // are not software.
        if h.name != "gpg-pubkey" {
            out.push(h);
        }
    }
    Ok(out)
}

/// The query format of the `rpm -qa` fallback: one tab-separated line per
/// package (`%|TAG?{…}:{}|` prints nothing for an absent tag).
const QUERY_FORMAT: &str = "%{NAME}\\t%|EPOCH?{%{EPOCH}}:{}|\\t%{VERSION}\\t%{RELEASE}\\t%|ARCH?{%{ARCH}}:{}|\\t%|LICENSE?{%{LICENSE}}:{}|\\t%|SOURCERPM?{%{SOURCERPM}}:{}|\\n";

/// `rpm -qa` in the instance; `Ok(None)` when it has no `rpm`.
async fn query_rpm(comm: &dyn Communicator) -> Result<Option<Vec<RpmHeader>>, String> {
    let cmd = RemoteCommand {
        script: format!(
            "command -v rpm >/dev/null 2>&1 || exit 3\nrpm -qa --qf '{QUERY_FORMAT}'\n"
        ),
        timeout: Some(READ_TIMEOUT),
        ..Default::default()
    };
    let (mut lines, mut errors) = (vec![], vec![]);
    let code = comm
        .exec(&cmd, &mut |s, line| match s {
            Stream::Stdout if lines.len() <= MAX_PACKAGES => lines.push(line),
            Stream::Stdout => {}
            Stream::Stderr if errors.len() < 5 => errors.push(line),
            Stream::Stderr => {}
        })
        .await
        .map_err(|e| format!("cannot run `rpm -qa` in the instance: {e}"))?;
    match code {
        3 => Ok(None),
        0 => parse_query(&lines).map(Some),
        c => Err(format!(
            "`rpm -qa` in the instance failed (exit {c}: {}): reading this rpm database is not supported yet",
            errors.join("; ")
        )),
    }
}

/// The packages of `rpm -qa --qf QUERY_FORMAT` output.
pub fn parse_query(lines: &[String]) -> Result<Vec<RpmHeader>, String> {
    if lines.len() > MAX_PACKAGES {
        return Err(format!("`rpm -qa` lists more than {MAX_PACKAGES} packages"));
    }
    let mut out = vec![];
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [name, epoch, version, release, arch, license, srpm] = f[..] else {
            return Err(format!(
                "`rpm -qa` line {}: expected 7 tab-separated fields: {line:?}",
                i + 1
            ));
        };
        if name.is_empty() || version.is_empty() || name == "gpg-pubkey" {
            continue;
        }
        let epoch = match epoch {
            "" => None,
            e => Some(
                e.parse::<u32>()
                    .map_err(|_| format!("`rpm -qa` line {}: epoch {e:?}", i + 1))?,
            ),
        };
        let opt = |s: &str| (!s.is_empty() && s != "(none)").then(|| s.to_string());
        out.push(RpmHeader {
            name: name.into(),
            epoch,
            version: version.into(),
            release: release.into(),
            arch: opt(arch),
            license: opt(license),
            source_rpm: opt(srpm),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_query_lines() {
        let lines: Vec<String> = [
            "bash\t\t5.2.26\t3.fc40\tx86_64\tGPL-3.0-or-later\tbash-5.2.26-3.fc40.src.rpm",
            "shadow-utils\t2\t4.15.1\t4.fc40\tx86_64\tBSD-3-Clause\tshadow-utils-4.15.1-4.fc40.src.rpm",
            "gpg-pubkey\t\ta15b79cc\t63d04c2c\t\tpubkey\t",
            "",
        ]
        .map(String::from)
        .to_vec();
        let p = parse_query(&lines).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].evr(), "5.2.26-3.fc40");
        assert_eq!(p[1].evr(), "2:4.15.1-4.fc40");
        assert_eq!(p[1].license.as_deref(), Some("BSD-3-Clause"));
        let bad = parse_query(&["a\tb".to_string()]).unwrap_err();
        assert!(
            bad.contains("line 1") && bad.contains("7 tab-separated"),
            "{bad}"
        );
        let bad = parse_query(&["a\tx\t1\t1\t\t\t".to_string()]).unwrap_err();
        assert!(bad.contains("epoch"), "{bad}");
    }

    /// Bytes through a real communicator (the host's, running `head` and
    /// `base64`): binary content intact, the cap counted here, a missing
    /// file `None`.
    #[tokio::test]
    async fn bytes_come_out_whole_and_capped() {
        use crate::communicator::local::LocalCommunicator;
        use crate::job::{Journal, Reapers, Undo};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        let undo = Undo::new(
            Journal::new(&tmp.path().join("state")),
            Reapers::default(),
            "b",
            "j",
        );
        let c = LocalCommunicator::new(root, tmp.path().join("scripts"), undo);
        let data: Vec<u8> = (0..300_001u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let file = tmp.path().join("db");
        std::fs::write(&file, &data).unwrap();
        let f = file.to_str().unwrap();
        assert_eq!(read_bytes(&c, f, 1 << 20).await.unwrap().unwrap(), data);
        assert_eq!(read_bytes(&c, f, data.len()).await.unwrap().unwrap(), data);
        let e = read_bytes(&c, f, data.len() - 1).await.unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        let missing = tmp.path().join("none");
        assert_eq!(
            read_bytes(&c, missing.to_str().unwrap(), 10).await.unwrap(),
            None
        );
    }

    /// A real SQLite database in rpm's schema, made here with SQLite
    /// itself, holding a header blob; and files that are not one.
    #[test]
    fn sqlite_database_rows_are_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO Packages (blob) VALUES (?1)",
            [rpmheader::tests::hello()],
        )
        .unwrap();
        drop(conn);
        let bytes = std::fs::read(&path).unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let headers_of_sqlite = |db: &[u8], wal| headers_of_sqlite(db, wal, &scratch);
        let p = headers_of_sqlite(&bytes, None).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "hello");
        // Not a database, an empty file, a database without the table, a
        // truncated database: errors.
        assert!(headers_of_sqlite(b"SQLite format 3\0garbage", None).is_err());
        assert!(headers_of_sqlite(b"", None).is_err());
        assert!(headers_of_sqlite(&bytes[..bytes.len() / 2], None).is_err());
        let other = dir.path().join("other");
        rusqlite::Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x);")
            .unwrap();
        let e = headers_of_sqlite(&std::fs::read(&other).unwrap(), None).unwrap_err();
        assert!(e.contains("Packages"), "{e}");
    }

    /// The copy is made in the job's scratch folder it is given (which
    /// the journal covers), never in the host's `/tmp`, and is gone once
    /// read; a scratch folder that cannot hold it is named.
    #[test]
    fn the_database_copy_lives_in_the_scratch_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB);")
            .unwrap();
        drop(conn);
        let bytes = std::fs::read(&path).unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        assert!(headers_of_sqlite(&bytes, None, &scratch)
            .unwrap()
            .is_empty());
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
        // Not a folder: nowhere else is used instead.
        let e = headers_of_sqlite(&bytes, None, &path).unwrap_err();
        assert!(e.contains(&format!("`{}`", path.display())), "{e}");
    }
}
