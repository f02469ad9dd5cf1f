//! Diagnostics: problems in input files, reported with file, line, column,
//! the offending source line with a caret underline, and an optional help.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diagnostic {
    /// The file, as it was given (relative paths stay relative).
    pub(crate) path: PathBuf,
    /// Where in the file, when known.
    pub(crate) location: Option<Location>,
    pub(crate) message: String,
    /// A hint such as "did you mean `summary`?".
    pub(crate) help: Option<String>,
}

/// A position in a file, 1-based, with the text of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) line: usize,
    /// 1-based, counted in characters.
    pub(crate) column: usize,
    /// The whole line the problem starts on, without its line ending.
    pub(crate) source_line: String,
    /// How many characters to underline (at least 1).
    pub(crate) width: usize,
}

impl Location {
    /// Turn a byte range of `text` into a line, a column and an underline
    /// width. A span running past its first line is underlined to that
    /// line's end.
    pub(crate) fn from_span(text: &str, span: Range<usize>) -> Location {
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.clamp(start, text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let source_line = text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let width = text[start..end.min(line_end)]
            .trim_end_matches('\r')
            .chars()
            .count()
            .max(1);
        Location {
            line,
            column,
            source_line,
            width,
        }
    }
}

impl Diagnostic {
    /// A problem with no position in the file (e.g. the file cannot be read).
    pub(crate) fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            path: path.into(),
            location: None,
            message: message.into(),
            help: None,
        }
    }

    /// A problem at a byte range of `text`, the contents of `path`.
    pub(crate) fn at(
        path: impl Into<PathBuf>,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            path: path.into(),
            location: Some(Location::from_span(text, span)),
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Set the help to "did you mean `x`?" when one of `candidates` is close to `wrong`.
    pub(crate) fn with_suggestion<'a, I>(self, wrong: &str, candidates: I) -> Diagnostic
    where
        I: IntoIterator<Item = &'a str>,
    {
        match did_you_mean(wrong, candidates) {
            Some(s) => self.with_help(format!("did you mean `{s}`?")),
            None => self,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        let Some(loc) = &self.location else {
            writeln!(f, "error: {path}: {}", self.message)?;
            if let Some(help) = &self.help {
                writeln!(f, "  = help: {help}")?;
            }
            return Ok(());
        };
        writeln!(
            f,
            "error: {path}:{}:{}: {}",
            loc.line, loc.column, self.message
        )?;
        let num = loc.line.to_string();
        let pad = " ".repeat(num.len());
        // Keep tabs in the indent so the carets line up under the text.
        let indent: String = loc
            .source_line
            .chars()
            .take(loc.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        writeln!(f, "{pad} |")?;
        if loc.source_line.is_empty() {
            writeln!(f, "{num} |")?;
        } else {
            writeln!(f, "{num} | {}", loc.source_line)?;
        }
        writeln!(f, "{pad} | {indent}{}", "^".repeat(loc.width))?;
        if let Some(help) = &self.help {
            writeln!(f, "{pad} = help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in a set of input files. Displayed one block per
/// problem, blocks separated by a blank line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub(crate) Vec<Diagnostic>);

impl Diagnostics {
    pub(crate) fn new() -> Diagnostics {
        Diagnostics(Vec::new())
    }

    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub(crate) fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Order by position in the file (for the problems of one file).
    pub(crate) fn sort_by_location(&mut self) {
        self.0
            .sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
    }

    /// Drop repeats of the same problem, keeping the first of each.
    pub(crate) fn dedup(&mut self) {
        let mut seen: Vec<Diagnostic> = Vec::new();
        self.0.retain(|d| {
            if seen.contains(d) {
                false
            } else {
                seen.push(d.clone());
                true
            }
        });
    }

    /// `Ok(value)` when there are no problems, else `Err(self)`.
    pub(crate) fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Diagnostics {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The candidate closest to `wrong`, if any is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a, I>(wrong: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let wrong_lower = wrong.to_lowercase();
    let limit = (wrong.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == wrong {
            continue;
        }
        let d = if c.to_lowercase() == wrong_lower {
            0
        } else {
            strsim::damerau_levenshtein(&wrong_lower, &c.to_lowercase())
        };
        if d <= limit && best.map_or(true, |(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// A backquoted, comma-separated list: "`a`, `b`, `c`".
pub(crate) fn quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turn a TOML parse or deserialization error into a diagnostic. Serde's
/// "unknown field `x`, expected one of ..." becomes "unknown field `x`"
/// with a did-you-mean (or the list of valid fields) as help.
pub(crate) fn from_toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Diagnostic {
    let raw = e.message().trim();
    let mut lines = raw.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid TOML").to_string();
    let rest: Vec<&str> = lines.collect();
    let missing = first.starts_with("missing field");
    let (message, help) = if let Some((field, expected)) = parse_unknown(&first, "unknown field") {
        let help = match did_you_mean(&field, expected.iter().map(String::as_str)) {
            Some(s) => Some(format!("did you mean `{s}`?")),
            None if expected.is_empty() => Some("no fields are allowed here".to_string()),
            None => Some(format!("valid fields here: {}", quoted_list(&expected))),
        };
        (format!("unknown field `{field}`"), help)
    } else if let Some((variant, expected)) = parse_unknown(&first, "unknown variant") {
        let help = match did_you_mean(&variant, expected.iter().map(String::as_str)) {
            Some(s) => Some(format!("did you mean `{s}`?")),
            None => Some(format!("expected one of {}", quoted_list(&expected))),
        };
        (format!("unknown value `{variant}`"), help)
    } else if let Some(field) = first
        .strip_prefix("missing field `")
        .and_then(|f| f.strip_suffix('`'))
    {
        let message = if TABLES.contains(&field) {
            format!("missing table `[{field}]`")
        } else {
            format!("missing field `{field}`")
        };
        (message, None)
    } else if first.starts_with("invalid type:") || first.starts_with("invalid length") {
        (toml_words(&first), None)
    } else if rest.is_empty() {
        (first, None)
    } else {
        (format!("{first}: {}", rest.join(" ")), None)
    };
    let mut d = match e.span() {
        // A field missing from the top level: point at the file start.
        Some(span) if missing && span.start == 0 && (span.end == 0 || !text.starts_with('[')) => {
            Diagnostic::at(path, text, 0..0, message)
        }
        Some(span) => Diagnostic::at(path, text, span, message),
        None => Diagnostic::new(path, message),
    };
    d.help = help;
    d
}

/// Fields of the file formats that are tables, named `[x]` when missing.
const TABLES: &[&str] = &["install", "check", "base", "disk"];

/// Serde's words for types in TOML's words.
fn toml_words(msg: &str) -> String {
    msg.replace("expected i64", "expected an integer")
        .replace("expected u32", "expected an integer")
        .replace("a sequence", "an array")
        .replace("sequence", "array")
        .replace("invalid type: map", "invalid type: table")
        .replace("expected a map", "expected a table")
        .replace("struct Raw", "table ")
}

/// Parse serde's "unknown field `x`, expected one of `a`, `b`" (and the
/// "expected `a`", "expected `a` or `b`", "there are no fields" forms).
fn parse_unknown(msg: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix(prefix)?.trim_start();
    let rest = rest.strip_prefix('`')?;
    let end = rest.find('`')?;
    let name = rest[..end].to_string();
    let tail = &rest[end + 1..];
    let mut expected = Vec::new();
    let mut parts = tail.split('`');
    parts.next();
    for (i, p) in parts.enumerate() {
        if i % 2 == 0 {
            expected.push(p.to_string());
        }
    }
    Some((name, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_to_line_and_column() {
        let text = "a = 1\nsumary = \"x\"\r\nc = 3";
        let loc = Location::from_span(text, 6..12);
        assert_eq!(loc.line, 2);
        assert_eq!(loc.column, 1);
        assert_eq!(loc.source_line, "sumary = \"x\"");
        assert_eq!(loc.width, 6);
        // A span running into the next line is cut at the line end.
        let loc = Location::from_span(text, 15..30);
        assert_eq!((loc.line, loc.column, loc.width), (2, 10, 3));
        // Past the end of the text.
        let loc = Location::from_span(text, 100..200);
        assert_eq!((loc.line, loc.column, loc.width), (3, 6, 1));
        // Columns count characters, not bytes.
        let loc = Location::from_span("x = \"é\" # ü\n", 11..13);
        assert_eq!(loc.column, 11);
    }

    #[test]
    fn span_at_line_end() {
        let text = "[install\nx = 1\n";
        let loc = Location::from_span(text, 8..9);
        assert_eq!((loc.line, loc.column, loc.width), (1, 9, 1));
        assert_eq!(loc.source_line, "[install");
    }

    #[test]
    fn suggestions() {
        let names = ["summary", "name", "category", "homepage"];
        assert_eq!(did_you_mean("sumary", names), Some("summary"));
        assert_eq!(did_you_mean("nmae", names), Some("name"));
        assert_eq!(did_you_mean("Category", names), Some("category"));
        assert_eq!(did_you_mean("zzz", names), None);
        assert_eq!(did_you_mean("qcc", ["qc", "alignment"]), Some("qc"));
        assert_eq!(
            did_you_mean("samtool", ["samtools", "bcftools"]),
            Some("samtools")
        );
    }

    #[test]
    fn serde_unknown_field_messages() {
        let (f, e) = parse_unknown(
            "unknown field `sumary`, expected one of `name`, `summary`",
            "unknown field",
        )
        .unwrap();
        assert_eq!(f, "sumary");
        assert_eq!(e, ["name", "summary"]);
        let (_, e) =
            parse_unknown("unknown field `x`, expected `a` or `b`", "unknown field").unwrap();
        assert_eq!(e, ["a", "b"]);
        let (_, e) =
            parse_unknown("unknown field `x`, there are no fields", "unknown field").unwrap();
        assert!(e.is_empty());
    }

    #[test]
    fn display_format() {
        let text = "name = \"x\"\nsumary = \"x\"\n";
        let d = Diagnostic::at("recipes/qc/x.toml", text, 11..17, "unknown field `sumary`")
            .with_help("did you mean `summary`?");
        assert_eq!(
            d.to_string(),
            "error: recipes/qc/x.toml:2:1: unknown field `sumary`\n  |\n2 | sumary = \"x\"\n  | ^^^^^^\n  = help: did you mean `summary`?\n"
        );
        let d = Diagnostic::new("images", "folder not found");
        assert_eq!(d.to_string(), "error: images: folder not found\n");
    }
}
