//! RPM header blobs, as the rpm database stores one per installed package
//! (the `blob` column of rpmdb.sqlite's `Packages` table): the fields an
//! SBOM needs — name, epoch, version, release, arch, license, source rpm.
//!
//! Hand-written: no maintained crate exposes a parser for a bare header
//! blob (the `rpm` crate reads whole package files, lead and signature
//! included). The blob comes from an untrusted image, so every count,
//! offset and length is checked against the blob before it is used:
//! a truncated or hostile blob is an error, never a panic, and nothing is
//! allocated beyond the strings returned.
//!
//! Layout (big-endian): `il` (index entries), `dl` (data bytes), `il`
//! entries of 16 bytes (tag, type, offset, count), then `dl` bytes of data.

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_LICENSE: u32 = 1014;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// rpm's own limits (`HEADER_TAGS_MAX`, `HEADER_DATA_MAX`).
const MAX_ENTRIES: usize = 0xffff;
const MAX_DATA: usize = 0x0fff_ffff;

/// The package fields of one header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmHeader {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: Option<String>,
    pub license: Option<String>,
    pub source_rpm: Option<String>,
}

struct Entry {
    tag: u32,
    ty: u32,
    offset: usize,
    count: usize,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses a header blob; `Err` says what is wrong with it.
pub fn parse(blob: &[u8]) -> Result<RpmHeader, String> {
    let il = be32(blob, 0).ok_or("header blob shorter than 8 bytes")? as usize;
    let dl = be32(blob, 4).ok_or("header blob shorter than 8 bytes")? as usize;
    if il == 0 || il > MAX_ENTRIES {
        return Err(format!("header blob with {il} index entries"));
    }
    if dl > MAX_DATA {
        return Err(format!("header blob with {dl} bytes of data"));
    }
    let data_start = 8 + il * 16;
    let data = blob.get(data_start..data_start + dl).ok_or_else(|| {
        format!(
            "header blob truncated: {il} entries and {dl} data bytes need {} bytes, it has {}",
            data_start + dl,
            blob.len()
        )
    })?;
    let entries: Vec<Entry> = (0..il)
        .map(|i| {
            let at = 8 + i * 16;
            // In range: `data_start` covers every entry.
            let f = |k: usize| be32(blob, at + k * 4).unwrap_or(0);
            Entry {
                tag: f(0),
                ty: f(1),
                offset: f(2) as usize,
                count: f(3) as usize,
            }
        })
        .collect();
    let find = |tag: u32| entries.iter().find(|e| e.tag == tag);
    let string = |tag: u32| -> Result<Option<String>, String> {
        let Some(e) = find(tag) else {
            return Ok(None);
        };
        if !matches!(e.ty, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) || e.count == 0 {
            return Err(format!("tag {tag}: type {} is not a string", e.ty));
        }
        let rest = data
            .get(e.offset..)
            .ok_or_else(|| format!("tag {tag}: offset {} outside the data", e.offset))?;
        // The first string (of an array: the first element; of an i18n
        // string: the default locale's).
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("tag {tag}: string not terminated"))?;
        Ok(Some(String::from_utf8_lossy(&rest[..end]).into_owned()))
    };
    let epoch = match find(TAG_EPOCH) {
        None => None,
        Some(e) if e.ty == TYPE_INT32 && e.count >= 1 => Some(
            be32(data, e.offset)
                .ok_or_else(|| format!("epoch: offset {} outside the data", e.offset))?,
        ),
        Some(e) => return Err(format!("epoch: type {} count {}", e.ty, e.count)),
    };
    let required = |tag: u32, what: &str| {
        string(tag)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("header without a {what}"))
    };
    Ok(RpmHeader {
        name: required(TAG_NAME, "name")?,
        epoch,
        version: required(TAG_VERSION, "version")?,
        release: required(TAG_RELEASE, "release")?,
        arch: string(TAG_ARCH)?.filter(|s| !s.is_empty()),
        license: string(TAG_LICENSE)?.filter(|s| !s.is_empty()),
        source_rpm: string(TAG_SOURCERPM)?.filter(|s| !s.is_empty() && s != "(none)"),
    })
}

impl RpmHeader {
    /// `[EPOCH:]VERSION-RELEASE`, as `rpm -q` compares them; an epoch of 0
    /// is no epoch.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) if e > 0 => format!("{e}:{}-{}", self.version, self.release),
            _ => format!("{}-{}", self.version, self.release),
        }
    }
}

/// The source package's name and `VERSION-RELEASE` from a source rpm file
/// name (`NAME-VERSION-RELEASE.src.rpm`).
pub fn source_of(source_rpm: &str) -> Option<(String, String)> {
    let base = source_rpm
        .strip_suffix(".src.rpm")
        .or_else(|| source_rpm.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = base.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    (!name.is_empty() && !version.is_empty() && !release.is_empty())
        .then(|| (name.to_string(), format!("{version}-{release}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header blob with `tags` (tag, type, count, data) laid out as rpm
    /// lays them out.
    pub(crate) fn blob(tags: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = vec![];
        let mut data = vec![];
        for (tag, ty, count, bytes) in tags {
            if *ty == TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
            }
            for v in [*tag, *ty, data.len() as u32, *count] {
                index.extend(v.to_be_bytes());
            }
            data.extend(bytes);
        }
        let mut b = vec![];
        b.extend((tags.len() as u32).to_be_bytes());
        b.extend((data.len() as u32).to_be_bytes());
        b.extend(index);
        b.extend(data);
        b
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    pub(crate) fn hello() -> Vec<u8> {
        blob(&[
            (TAG_NAME, TYPE_STRING, 1, s("hello")),
            (TAG_VERSION, TYPE_STRING, 1, s("2.1")),
            (TAG_RELEASE, TYPE_STRING, 1, s("3.fc40")),
            (TAG_EPOCH, TYPE_INT32, 1, 2u32.to_be_bytes().to_vec()),
            (TAG_LICENSE, TYPE_STRING, 1, s("MIT")),
            (TAG_ARCH, TYPE_STRING, 1, s("noarch")),
            (
                TAG_SOURCERPM,
                TYPE_STRING,
                1,
                s("hello-src-2.1-3.fc40.src.rpm"),
            ),
            (1004, TYPE_I18NSTRING, 1, s("a summary")),
        ])
    }

    #[test]
    fn reads_the_package_fields() {
        let h = parse(&hello()).unwrap();
        assert_eq!(h.name, "hello");
        assert_eq!(h.evr(), "2:2.1-3.fc40");
        assert_eq!(h.arch.as_deref(), Some("noarch"));
        assert_eq!(h.license.as_deref(), Some("MIT"));
        assert_eq!(
            source_of(h.source_rpm.as_deref().unwrap()),
            Some(("hello-src".into(), "2.1-3.fc40".into()))
        );
        let no_epoch = blob(&[
            (TAG_NAME, TYPE_STRING, 1, s("a")),
            (TAG_VERSION, TYPE_STRING, 1, s("1")),
            (TAG_RELEASE, TYPE_STRING, 1, s("1")),
            (TAG_EPOCH, TYPE_INT32, 1, 0u32.to_be_bytes().to_vec()),
        ]);
        assert_eq!(parse(&no_epoch).unwrap().evr(), "1-1");
    }

    /// Every truncation of a real-shaped blob, and blobs whose counts and
    /// offsets point anywhere, give an error or a header — never a panic,
    /// never a huge allocation.
    #[test]
    fn truncated_and_hostile_blobs_are_errors() {
        let good = hello();
        for n in 0..good.len() {
            assert!(parse(&good[..n]).is_err(), "truncated to {n} bytes parsed");
        }
        // Huge counts in the preamble.
        let mut b = good.clone();
        b[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&b).unwrap_err().contains("index entries"));
        let mut b = good.clone();
        b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&b).unwrap_err().contains("bytes of data"));
        // Offsets and counts of every entry set to hostile values.
        for entry in 0..8 {
            for (field, value) in [(2usize, u32::MAX), (2, 0x7fff_fff0), (3, u32::MAX), (1, 99)] {
                let mut b = good.clone();
                let at = 8 + entry * 16 + field * 4;
                b[at..at + 4].copy_from_slice(&value.to_be_bytes());
                let _ = parse(&b);
            }
        }
        // A string without its terminating NUL at the end of the data.
        let b = blob(&[(TAG_NAME, TYPE_STRING, 1, b"hello".to_vec())]);
        assert!(parse(&b).unwrap_err().contains("not terminated"));
        // A name that is an integer.
        let b = blob(&[(TAG_NAME, TYPE_INT32, 1, vec![0, 0, 0, 1])]);
        assert!(parse(&b).unwrap_err().contains("not a string"));
        // Pseudo-random bytes.
        let mut x: u32 = 0x1234_5678;
        for len in [0usize, 7, 8, 24, 64, 300] {
            for _ in 0..200 {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let _ = parse(&v);
            }
        }
    }

    #[test]
    fn source_rpm_names() {
        assert_eq!(
            source_of("glibc-2.39-17.fc40.src.rpm"),
            Some(("glibc".into(), "2.39-17.fc40".into()))
        );
        assert_eq!(source_of("not-a-source"), None);
        assert_eq!(source_of("-1.src.rpm"), None);
    }
}
