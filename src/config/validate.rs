//! Checks of single values shared by recipes and images. Each returns a
//! message saying what is wrong (and sometimes a help), or the parsed value.

use std::ops::Range;
use std::path::Path;

use base64::Engine;
use regex::Regex;
use toml::Spanned;

use super::diag::{Diagnostic, Diagnostics};
use super::model::{DebPackage, PypiPackage};

/// What is wrong with a value: a message and an optional help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub help: Option<String>,
}

impl Invalid {
    fn new(message: impl Into<String>) -> Invalid {
        Invalid {
            message: message.into(),
            help: None,
        }
    }
    fn help(mut self, help: impl Into<String>) -> Invalid {
        self.help = Some(help.into());
        self
    }
}

/// The file being validated and the problems found so far.
pub(crate) struct Ctx<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub diags: Diagnostics,
}

impl<'a> Ctx<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Ctx<'a> {
        Ctx {
            path,
            text,
            diags: Diagnostics::new(),
        }
    }

    /// The problems found, in the order they appear in the file.
    pub fn finish(mut self) -> Diagnostics {
        self.diags.sort_by_location();
        self.diags
    }

    /// A diagnostic at `span` of this file (not yet recorded).
    pub fn diag(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.path, self.text, span, message)
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diag(span, message);
        self.diags.push(d);
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Record `invalid` at the span of `value`.
    pub fn invalid<T>(&mut self, value: &Spanned<T>, invalid: Invalid) {
        let mut d = self.diag(value.span(), invalid.message);
        d.help = invalid.help;
        self.diags.push(d);
    }

    /// Run `check` on a spanned value, recording any problem; `None` on error.
    pub fn check<T, U>(
        &mut self,
        value: &Spanned<T>,
        check: impl FnOnce(&T) -> Result<U, Invalid>,
    ) -> Option<U> {
        match check(value.get_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.invalid(value, e);
                None
            }
        }
    }

    /// A string that must not be empty (or only white space).
    pub fn non_empty(&mut self, value: &Spanned<String>, what: &str) -> String {
        if value.get_ref().trim().is_empty() {
            self.error(value.span(), format!("{what} must not be empty"));
        }
        value.get_ref().clone()
    }
}

/// `[a-z0-9][a-z0-9._+-]*`: recipe names.
pub fn recipe_name(s: &str) -> Result<(), Invalid> {
    let ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '+' | '-')
        });
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!("invalid recipe name `{s}`")).help(
            "a name starts with a lowercase letter or digit, followed by lowercase letters, digits, `.`, `_`, `+` or `-`",
        ))
    }
}

/// `[a-z0-9][a-z0-9-]*`: category folder names.
pub fn category_name(s: &str) -> Result<(), Invalid> {
    let ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!("invalid category `{s}`"))
            .help("a category is lowercase letters, digits and `-`"))
    }
}

/// `[a-z0-9][a-z0-9._-]*`: image names (they become file names).
pub fn image_name(s: &str) -> Result<(), Invalid> {
    let ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!("invalid image name `{s}`")).help(
            "an image name starts with a lowercase letter or digit, followed by lowercase letters, digits, `.`, `_` or `-`",
        ))
    }
}

/// An `http://` or `https://` URL with a host.
pub fn http_url(s: &str) -> Result<(), Invalid> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.chars().any(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(Invalid::new(format!("`{s}` is not an http(s) URL"))
            .help("write a full URL such as \"https://example.org/tool\"")),
    }
}

/// A mirror: an http(s) URL, or `file:` / `copy:` for a local archive.
pub fn mirror_url(s: &str) -> Result<(), Invalid> {
    if (s.starts_with("file:/") || s.starts_with("copy:/")) && !s.chars().any(char::is_whitespace) {
        return Ok(());
    }
    http_url(s).map_err(|_| {
        Invalid::new(format!("`{s}` is not a mirror URL"))
            .help("use an http(s) URL, or file:/// or copy:/// for a local archive")
    })
}

/// 64 lowercase hexadecimal digits.
pub fn sha256(s: &str) -> Result<(), Invalid> {
    if s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Ok(());
    }
    let help = if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        "write the digest in lowercase"
    } else {
        "a sha256 digest is 64 lowercase hexadecimal digits, as `sha256sum` prints it"
    };
    Err(Invalid::new(format!("invalid sha256 `{s}`")).help(help))
}

/// An absolute path inside the image.
pub fn absolute_path(s: &str, what: &str) -> Result<(), Invalid> {
    if s.starts_with('/') && !s.contains('\0') {
        Ok(())
    } else {
        Err(
            Invalid::new(format!("{what} `{s}` is not an absolute path")).help(format!(
                "write it from the root of the image, e.g. \"/{}\"",
                s.trim_start_matches("./")
            )),
        )
    }
}

fn deb_name_ok(n: &str) -> bool {
    n.len() >= 2
        && n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

fn deb_version_ok(v: &str) -> bool {
    v.chars().next().is_some_and(|c| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':'))
}

/// A Debian package: `name` or `name=version`.
pub fn deb_package(s: &str) -> Result<DebPackage, Invalid> {
    let (name, version) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    let help = "write `name` or `name=version`, e.g. \"samtools\" or \"samtools=1.16.1-1\"";
    if !deb_name_ok(name) {
        return Err(Invalid::new(format!("invalid Debian package `{s}`")).help(help));
    }
    if let Some(v) = version {
        if !deb_version_ok(v) {
            return Err(Invalid::new(format!("invalid Debian version in `{s}`")).help(help));
        }
    }
    Ok(DebPackage {
        name: name.to_string(),
        version: version.map(str::to_string),
    })
}

/// A PyPI package pinned exactly: `name==version`.
pub fn pypi_package(s: &str) -> Result<PypiPackage, Invalid> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let version_ok = |v: &str| {
        v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '!' | '_' | '-'))
    };
    if let Some((n, v)) = s.split_once("==") {
        let (n, v) = (n.trim(), v.trim());
        if name_ok(n) && version_ok(v) {
            return Ok(PypiPackage {
                name: n.to_string(),
                version: v.to_string(),
            });
        }
    }
    let stem: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    let stem = if stem.is_empty() {
        "name".to_string()
    } else {
        stem
    };
    Err(Invalid::new(format!(
        "PyPI package `{s}` is not pinned to an exact version"
    ))
    .help(format!("write `name==version`, e.g. \"{stem}==1.0\"")))
}

/// Compile an `expect` pattern in multi-line mode.
pub fn expect_regex(s: &str) -> Result<Regex, Invalid> {
    if s.is_empty() {
        return Err(Invalid::new("`expect` must not be empty")
            .help("give a regular expression the output must match, e.g. '^tool 1\\.\\d+'"));
    }
    Regex::new(&format!("(?m){s}")).map_err(|e| {
        let summary = match &e {
            regex::Error::Syntax(msg) => msg
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or("syntax error")
                .to_string(),
            regex::Error::CompiledTooBig(_) => "the compiled pattern is too big".to_string(),
            _ => e.to_string(),
        };
        Invalid::new(format!("invalid regular expression: {summary}"))
            .help("patterns use Rust regex syntax; escape literal characters such as `.`, `(` and `[` with `\\`")
    })
}

/// A timeout in seconds, 1 to 3600.
pub fn timeout(v: &i64) -> Result<u32, Invalid> {
    if (1..=3600).contains(v) {
        Ok(*v as u32)
    } else {
        Err(Invalid::new(format!("timeout {v} is out of range"))
            .help("give a number of seconds from 1 to 3600"))
    }
}

/// An exit status, 0 to 255.
pub fn exit_status(v: &i64) -> Result<i32, Invalid> {
    if (0..=255).contains(v) {
        Ok(*v as i32)
    } else {
        Err(Invalid::new(format!("exit status {v} is out of range"))
            .help("an exit status is from 0 to 255"))
    }
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Parse a disk size such as `"3GiB"` into bytes. Units are binary:
/// `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`; the size must be a whole
/// number of MiB and at least 1 GiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    size(s).map_err(|e| match e.help {
        Some(h) => format!("{}: {h}", e.message),
        None => e.message,
    })
}

/// [`parse_size`], with the problem and a help apart.
pub fn size(s: &str) -> Result<u64, Invalid> {
    let t = s.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let unit = unit.trim();
    let usage =
        "write a whole number and a binary unit: K, M, G, T (or KiB, MiB, GiB, TiB), e.g. \"3GiB\"";
    if num.is_empty() {
        return Err(Invalid::new(format!("invalid size `{s}`")).help(usage));
    }
    let shift = match unit {
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        "" => return Err(Invalid::new(format!("size `{s}` has no unit")).help(usage)),
        "kB" | "KB" | "MB" | "GB" | "TB" => {
            return Err(
                Invalid::new(format!("size `{s}` uses the decimal unit `{unit}`")).help(usage),
            )
        }
        _ => {
            return Err(
                Invalid::new(format!("size `{s}` has an unknown unit `{unit}`")).help(usage),
            )
        }
    };
    let too_large = || Invalid::new(format!("size `{s}` is too large")).help("at most 64TiB");
    let n: u64 = num.parse().map_err(|_| too_large())?;
    let bytes = n.checked_mul(1u64 << shift).ok_or_else(too_large)?;
    if bytes % MIB != 0 {
        return Err(
            Invalid::new(format!("size `{s}` is not a whole number of MiB"))
                .help("round it to whole MiB, e.g. \"1536M\""),
        );
    }
    if bytes < GIB {
        return Err(
            Invalid::new(format!("size `{s}` is too small")).help("the disk must be at least 1GiB")
        );
    }
    if bytes > (64u64 << 40) {
        return Err(too_large());
    }
    Ok(bytes)
}

/// An RFC 1123 host name label: 1 to 63 letters, digits and `-`, not
/// starting or ending with `-`.
pub fn hostname(s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!("invalid hostname `{s}`")).help(
            "a hostname is 1 to 63 letters, digits and `-`, not starting or ending with `-` (RFC 1123)",
        ))
    }
}

/// A locale such as `C.UTF-8`, `POSIX` or `en_US.UTF-8`.
pub fn locale(s: &str) -> Result<(), Invalid> {
    let re = Regex::new(r"^(C|POSIX|[a-z]{2,3}(_[A-Z]{2})?)(\.[A-Za-z0-9-]+)?(@[a-z]+)?$")
        .expect("locale pattern");
    if re.is_match(s) {
        Ok(())
    } else {
        Err(Invalid::new(format!("invalid locale `{s}`"))
            .help("write e.g. \"C.UTF-8\" or \"en_US.UTF-8\""))
    }
}

/// A time zone: `UTC` or `Area/City` (e.g. `Europe/Berlin`, `America/Argentina/Salta`).
pub fn timezone(s: &str) -> Result<(), Invalid> {
    let re = Regex::new(r"^(UTC|[A-Z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){1,2})$")
        .expect("timezone pattern");
    if re.is_match(s) {
        Ok(())
    } else {
        Err(Invalid::new(format!("invalid timezone `{s}`"))
            .help("write \"UTC\" or an Area/City name such as \"Europe/Berlin\""))
    }
}

/// A Unix user name for the login user.
pub fn user_name(s: &str) -> Result<(), Invalid> {
    let ok = s.len() <= 32
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err(Invalid::new(format!("invalid user name `{s}`")).help(
            "a user name starts with a lowercase letter or `_`, followed by up to 31 lowercase letters, digits, `_` or `-`",
        ));
    }
    if s == "root" {
        return Err(Invalid::new("the login user cannot be `root`")
            .help("pick another name; the user gets sudo with `sudo = true`"));
    }
    Ok(())
}

/// An OpenSSH public key line: `type base64 [comment]`.
pub fn ssh_key(s: &str) -> Result<(), Invalid> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut parts = s.split_whitespace();
    let kind = parts.next().unwrap_or("");
    let blob = parts.next().unwrap_or("");
    let help = "paste one line of a public key file such as ~/.ssh/id_ed25519.pub";
    if !TYPES.contains(&kind) {
        return Err(Invalid::new(format!("unknown SSH key type `{kind}`")).help(help));
    }
    if blob.is_empty() {
        return Err(Invalid::new("SSH key has no key data").help(help));
    }
    if base64::engine::general_purpose::STANDARD
        .decode(blob)
        .is_err()
    {
        return Err(Invalid::new("SSH key data is not valid base64").help(help));
    }
    Ok(())
}

/// Octal permissions as a string: `"0644"`, `"755"`.
pub fn file_mode(s: &str) -> Result<u32, Invalid> {
    if (3..=4).contains(&s.len()) && s.chars().all(|c| ('0'..='7').contains(&c)) {
        Ok(u32::from_str_radix(s, 8).expect("octal digits"))
    } else {
        Err(Invalid::new(format!("invalid file mode `{s}`"))
            .help("write octal permissions as a string, e.g. \"0644\" or \"0755\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("1024M"), Ok(1 << 30));
        assert_eq!(parse_size("1536MiB"), Ok(1536 << 20));
        assert_eq!(parse_size("2097152K"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("3GB").unwrap_err().contains("decimal unit `GB`"));
        assert!(parse_size("3").unwrap_err().contains("no unit"));
        assert!(parse_size("3 GiB").is_ok());
        assert!(parse_size("3gib").unwrap_err().contains("unknown unit"));
        assert!(parse_size("512MiB").unwrap_err().contains("at least 1GiB"));
        assert!(parse_size("1048577K")
            .unwrap_err()
            .contains("whole number of MiB"));
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("-3GiB").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn packages() {
        assert_eq!(
            deb_package("samtools=1.16.1-1").unwrap().apt_spec(),
            "samtools=1.16.1-1"
        );
        assert_eq!(deb_package("libc6").unwrap().version, None);
        assert_eq!(
            deb_package("python3=1:3.11.2-1+b1")
                .unwrap()
                .version
                .as_deref(),
            Some("1:3.11.2-1+b1")
        );
        assert!(deb_package("Samtools").is_err());
        assert!(deb_package("samtools=").is_err());
        assert!(deb_package("samtools>=1").is_err());
        let p = pypi_package("multiqc==1.14").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("multiqc", "1.14"));
        assert!(pypi_package("multiqc").is_err());
        assert!(pypi_package("multiqc>=1.14").is_err());
        assert!(pypi_package("multiqc==").is_err());
    }

    #[test]
    fn values() {
        assert!(hostname("biovm-minimal").is_ok());
        assert!(hostname("bio_vm").is_err());
        assert!(hostname("-x").is_err());
        assert!(hostname(&"a".repeat(64)).is_err());
        assert!(timezone("UTC").is_ok());
        assert!(timezone("Europe/Berlin").is_ok());
        assert!(timezone("America/Argentina/Salta").is_ok());
        assert!(timezone("Berlin").is_err());
        assert!(locale("C.UTF-8").is_ok());
        assert!(locale("en_US.UTF-8").is_ok());
        assert!(locale("utf8").is_err());
        assert_eq!(file_mode("0644"), Ok(0o644));
        assert_eq!(file_mode("755"), Ok(0o755));
        assert!(file_mode("0648").is_err());
        assert!(sha256(&"a".repeat(64)).is_ok());
        assert!(sha256(&"A".repeat(64)).is_err());
        assert!(sha256("abc").is_err());
        assert!(http_url("https://example.org/x").is_ok());
        assert!(http_url("ftp://example.org/x").is_err());
        assert!(ssh_key("ssh-ed25519 not*base64 user@host").is_err());
        assert!(ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 user@host").is_ok());
        assert!(ssh_key("ssh-foo AAAA").is_err());
        assert!(user_name("biovm").is_ok());
        assert!(user_name("root").is_err());
        assert!(expect_regex(r"^x \d+").unwrap().is_match("a\nx 12"));
        assert!(expect_regex("(unclosed")
            .unwrap_err()
            .message
            .contains("unclosed group"));
    }
}
