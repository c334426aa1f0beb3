//! Errors about user input, shown the way rustc shows them: message,
//! `file:line:column`, the source line with the offending span underlined,
//! and a hint. Input errors are collected, never thrown one at a time, so
//! `kiln validate` reports all of them at once. Control, bidirectional and
//! invisible characters from the input are shown escaped (`\u{202e}`), in
//! messages and source lines alike: a template cannot make an error say
//! something else on a terminal or reorder what it shows.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

/// A byte range in a source file.
pub type Span = Range<usize>;

/// A file kiln read input from (template or var-file), kept for diagnostics.
#[derive(Debug)]
pub struct SourceFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The name shown to users (the path as given).
    pub name: String,
    /// Its full text.
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

/// True for a character a terminal would act on or hide rather than show:
/// C0/C1 controls (but tab and newline), bidirectional overrides and
/// isolates, zero-width and other invisible format characters.
fn is_hostile(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{feff}')
}

/// `s` with every [hostile](is_hostile) character written as `\u{XXXX}`.
pub fn escape_controls(s: &str) -> String {
    escape_mapped(s).0
}

/// [`escape_controls`], and where each byte offset of `s` went.
fn escape_mapped(s: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(s.len());
    let mut map = Vec::with_capacity(s.len() + 1);
    for c in s.chars() {
        let at = out.len();
        map.extend(std::iter::repeat_n(at, c.len_utf8()));
        if is_hostile(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    map.push(out.len());
    (out, map)
}

/// One problem with the input, optionally located in a file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub file: Option<Arc<SourceFile>>,
    pub span: Option<Span>,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error not tied to a place in a file (a bad `--var`, a missing file).
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: escape_controls(&message.into()),
            file: None,
            span: None,
            label: None,
            help: None,
        }
    }

    /// An error at `span` in `file`.
    pub fn at(file: &Arc<SourceFile>, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            message: escape_controls(&message.into()),
            file: Some(file.clone()),
            span: Some(span),
            label: None,
            help: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(escape_controls(&label.into()));
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(escape_controls(&help.into()));
        self
    }

    /// `(file name, line, column)` when the error has a place.
    pub fn location(&self) -> Option<(String, usize, usize)> {
        let (file, span) = (self.file.as_ref()?, self.span.as_ref()?);
        let (line, col) = file.line_col(span.start);
        Some((escape_controls(&file.name), line, col))
    }

    /// Renders like rustc; `color` only when writing to a terminal.
    pub fn render(&self, color: bool) -> String {
        self.render_as("error", color)
    }

    /// Renders like rustc with another level (`warning`, `note`), for
    /// reports that are not input errors (`kiln import`).
    pub fn render_as(&self, level: &str, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut shown = Shown::from(self);
        shown.severity = match level {
            "warning" => miette::Severity::Warning,
            "note" => miette::Severity::Advice,
            _ => miette::Severity::Error,
        };
        let mut out = String::new();
        if handler.render_report(&mut out, &shown).is_err() {
            out = format!("{level}: {}\n", self.message);
        }
        // A plain `file:line:col` line first: greppable, and what editors and
        // CI log parsers pick up.
        match self.location() {
            Some((name, line, col)) => {
                format!("{level}: {name}:{line}:{col}: {}\n{out}", self.message)
            }
            None => format!("{level}: {}\n{out}", self.message),
        }
    }

    /// A JSON object for `--json` output.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "message": self.message });
        if let Some((file, line, column)) = self.location() {
            v["file"] = file.into();
            v["line"] = line.into();
            v["column"] = column.into();
        }
        if let Some(h) = &self.help {
            v["help"] = h.clone().into();
        }
        v
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location() {
            Some((name, line, col)) => write!(f, "{name}:{line}:{col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The miette view of a [`Diagnostic`].
#[derive(Debug)]
struct Shown {
    message: String,
    source: Option<NamedSource<String>>,
    span: Option<LabeledSpan>,
    help: Option<String>,
    severity: miette::Severity,
}

impl From<&Diagnostic> for Shown {
    fn from(d: &Diagnostic) -> Self {
        // The source lines are shown escaped; the span moves with them.
        let escaped = d.file.as_ref().map(|f| escape_mapped(&f.text));
        let source = d
            .file
            .as_ref()
            .zip(escaped.as_ref())
            .map(|(f, (text, _))| NamedSource::new(escape_controls(&f.name), text.clone()));
        let span = match (&d.file, &d.span, &escaped) {
            (Some(f), Some(s), Some((_, map))) => {
                let start = map[s.start.min(f.text.len())];
                let end = map[s.end.min(f.text.len())];
                Some(LabeledSpan::new(
                    d.label.clone(),
                    start,
                    end.saturating_sub(start),
                ))
            }
            _ => None,
        };
        Shown {
            message: d.message.clone(),
            source,
            span,
            help: d.help.clone(),
            severity: miette::Severity::Error,
        }
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Shown {}

impl miette::Diagnostic for Shown {
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.span
            .clone()
            .map(|s| Box::new(std::iter::once(s)) as Box<dyn Iterator<Item = _>>)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// Every input error found, in the order found.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// True when `a` looks like a misspelling of `b`.
pub fn is_close(a: &str, b: &str) -> bool {
    strsim::jaro_winkler(a, b) > 0.8
}

/// The closest candidate to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_characters_are_escaped_in_messages_and_source_lines() {
        let text = "name = \"a\u{202e}b\"\nx\u{1b}[2J = 1\n".to_string();
        let file = Arc::new(SourceFile {
            path: "t.toml".into(),
            name: "t.toml".into(),
            text: text.clone(),
        });
        let at = text.find('x').unwrap();
        let d = Diagnostic::at(&file, at..at + 8, "unknown field `x\u{1b}[2J`")
            .with_label("here \u{2066}")
            .with_help("did you mean `a\u{202e}b`?");
        let shown = d.render(false);
        assert!(
            !shown.contains('\u{202e}') && !shown.contains('\u{1b}') && !shown.contains('\u{2066}'),
            "{shown}"
        );
        assert!(shown.contains("x\\u{1b}[2J"), "{shown}");
        assert!(shown.contains("t.toml:2:1"), "{shown}");
        assert!(!d.to_json().to_string().contains('\u{1b}'));
    }

    #[test]
    fn line_and_column_are_one_based() {
        let f = SourceFile {
            path: "t.toml".into(),
            name: "t.toml".into(),
            text: "a = 1\nbé = 2\n".into(),
        };
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        assert_eq!(f.line_col(9), (2, 3), "columns count characters, not bytes");
    }

    #[test]
    fn render_names_place_and_shows_source_line() {
        let f = Arc::new(SourceFile {
            path: "t.toml".into(),
            name: "t.toml".into(),
            text: "[image]\nnme = \"x\"\n".into(),
        });
        let d = Diagnostic::at(&f, 8..11, "unknown key `nme`").with_help("did you mean `name`?");
        let out = d.render(false);
        assert!(
            out.starts_with("error: t.toml:2:1: unknown key `nme`"),
            "{out}"
        );
        assert!(out.contains("nme = \"x\""), "{out}");
        assert!(out.contains("did you mean `name`?"), "{out}");
    }

    #[test]
    fn suggestions_only_for_close_words() {
        assert_eq!(
            did_you_mean("nme", ["name", "version"]).as_deref(),
            Some("did you mean `name`?")
        );
        assert_eq!(did_you_mean("zzz", ["name", "version"]), None);
    }
}
