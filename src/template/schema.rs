//! The declarative shape of a template: which keys a table takes and what
//! each key's value must be. Builders and provisioners declare their own
//! fields with these types; the template engine checks them all the same
//! way (unknown keys with "did you mean", types, required keys).

use std::collections::BTreeMap;

use super::value::Value;

/// One key of a table.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// May this field receive a sensitive value? Only fields that hand the
    /// value to a process environment or a credential API may; everything
    /// else (command lines, scripts, paths, tags) would put it somewhere it
    /// can be read.
    pub sensitive_ok: bool,
}

impl Field {
    pub const fn req(name: &'static str, kind: Kind) -> Field {
        Field {
            name,
            kind,
            required: true,
            sensitive_ok: false,
        }
    }
    pub const fn opt(name: &'static str, kind: Kind) -> Field {
        Field {
            name,
            kind,
            required: false,
            sensitive_ok: false,
        }
    }
    /// Marks the field as one that may receive secrets.
    pub const fn sensitive_ok(mut self) -> Field {
        self.sensitive_ok = true;
        self
    }
}

/// What a value must be.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Str,
    /// A path; relative paths resolve against the template's folder.
    Path,
    /// A path to a file that must exist when the template is validated.
    ExistingFile,
    /// A path to a local file the build reads (a base disk, a kernel): it
    /// may be made after the template is written, so only `kiln validate`
    /// and `kiln build` require it ([`super::inputs`]).
    InputFile,
    Int,
    Number,
    Bool,
    /// `30s`, `10m`, `1h30m`.
    Duration,
    /// `512MiB`, `20G`.
    Size,
    /// An octal file mode such as `0644`.
    Mode,
    Enum(&'static [&'static str]),
    List(&'static Kind),
    Map(&'static Kind),
    Table(&'static [Field]),
    /// A string, or a table with these fields (e.g. an AMI `from`).
    StrOrTable(&'static [Field]),
    /// Any TOML value.
    Any,
}

pub const STR: Kind = Kind::Str;
pub const ANY: Kind = Kind::Any;
pub const STR_LIST: Kind = Kind::List(&STR);
pub const STR_MAP: Kind = Kind::Map(&STR);

impl Kind {
    /// How the kind is named in "expected …" messages.
    pub fn describe(&self) -> String {
        match self {
            Kind::Str => "a string".into(),
            Kind::Path | Kind::ExistingFile | Kind::InputFile => "a path (string)".into(),
            Kind::Int => "an integer".into(),
            Kind::Number => "a number".into(),
            Kind::Bool => "a boolean".into(),
            Kind::Duration => "a duration such as \"10m\"".into(),
            Kind::Size => "a size such as \"1GiB\"".into(),
            Kind::Mode => "an octal mode such as \"0644\"".into(),
            Kind::Enum(v) => format!(
                "one of {}",
                v.iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::List(k) => format!(
                "a list of {}",
                k.describe()
                    .trim_start_matches("a ")
                    .trim_start_matches("an ")
            ),
            Kind::Map(_) | Kind::Table(_) => "a table".into(),
            Kind::StrOrTable(_) => "a string or a table".into(),
            Kind::Any => "a value".into(),
        }
    }
}

/// Parses a size such as `1GiB`, `512M` or `1073741824` into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "KB" => 1000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        "T" | "TiB" => 1 << 40,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

/// Parses a duration such as `10m` or `1h30m`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    humantime::parse_duration(s.trim()).ok()
}

/// Image family and channel names: they become OCI tags, file names and
/// catalog keys. Letters, digits, `-`, `_`, `.`, starting with a letter or
/// digit, at most 64 characters, never `..`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// The source and provisioner types kiln knows, with their fields.
#[derive(Debug, Clone)]
pub struct TemplateSchema {
    pub sources: Vec<(&'static str, &'static [Field])>,
    pub provisioners: Vec<(&'static str, &'static [Field])>,
    /// The `[[build.test]]` types (`file`, `package`, `command`, …).
    pub tests: Vec<(&'static str, &'static [Field])>,
    /// The provisioners' own checks of their settings beyond the types.
    pub provisioner_checks: ProvisionerCheck,
    /// The source types' own checks of their settings beyond the types.
    pub source_checks: SourceCheck,
}

/// A problem a source type finds in its resolved settings: the key, the
/// list item, and the bytes of that string value it is about, so the
/// error points at the character in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub key: &'static str,
    /// The item of a list value.
    pub item: Option<usize>,
    /// Byte range inside the (string) value.
    pub bytes: Option<std::ops::Range<usize>>,
    pub message: String,
    pub help: Option<String>,
}

/// Problems with a source's settings (its type, its resolved table).
pub type SourceCheck = fn(&str, &BTreeMap<String, Value>) -> Vec<SettingProblem>;

/// Problems with a provisioner's settings (its type, its resolved table)
/// beyond their types, as `(key, message)`, reported as input errors.
pub type ProvisionerCheck = fn(&str, &BTreeMap<String, Value>) -> Vec<(&'static str, String)>;

impl Default for TemplateSchema {
    fn default() -> TemplateSchema {
        TemplateSchema {
            sources: vec![],
            provisioners: vec![],
            tests: vec![],
            provisioner_checks: |_, _| vec![],
            source_checks: |_, _| vec![],
        }
    }
}

/// The keys under `fields` (nested tables included, as `parent.key`) that
/// `docs` never names as `` `key` `` or `key =`: the test that every field
/// the schema accepts is documented in docs/templates.md.
#[cfg(test)]
pub(crate) fn undocumented(prefix: &str, fields: &[Field], docs: &str) -> Vec<String> {
    fn nested(k: &Kind) -> Option<&'static [Field]> {
        match k {
            Kind::Table(f) | Kind::StrOrTable(f) => Some(f),
            Kind::List(inner) | Kind::Map(inner) => nested(inner),
            _ => None,
        }
    }
    let mut out = vec![];
    for f in fields {
        let named = docs.contains(&format!("`{}`", f.name))
            || docs.contains(&format!("`{} =", f.name))
            || docs
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{} =", f.name)));
        if !named {
            out.push(format!("{prefix}{}", f.name));
        }
        if let Some(inner) = nested(&f.kind) {
            out.extend(undocumented(&format!("{prefix}{}.", f.name), inner, docs));
        }
    }
    out
}

/// docs/templates.md, for [`undocumented`].
#[cfg(test)]
pub(crate) fn templates_doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/templates.md");
    std::fs::read_to_string(&path).expect("docs/templates.md")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(
            parse_duration("10m"),
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(parse_duration("soon"), None);
    }
}
