//! Checks of single values shared by recipes and images. Each returns a
//! message saying what is wrong (and sometimes a help), or the parsed value.

use std::ops::Range;
use std::path::Path;

use base64::Engine;
use regex::Regex;
use toml::Spanned;

use super::access::HostAccess;
use super::diag::{Diagnostic, Diagnostics};
use super::model::{DebPackage, PypiPackage};

/// What is wrong with a value: a message and an optional help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) message: String,
    pub(crate) help: Option<String>,
}

impl Invalid {
    pub(crate) fn new(message: impl Into<String>) -> Invalid {
        Invalid {
            message: message.into(),
            help: None,
        }
    }
    pub(crate) fn help(mut self, help: impl Into<String>) -> Invalid {
        self.help = Some(help.into());
        self
    }
}

/// The file being validated and the problems found so far.
pub(crate) struct Ctx<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
    pub(crate) diags: Diagnostics,
    /// Which host files the file may name.
    pub(crate) access: &'a HostAccess,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str, access: &'a HostAccess) -> Ctx<'a> {
        Ctx {
            path,
            text,
            diags: Diagnostics::new(),
            access,
        }
    }

    /// The problems found, in the order they appear in the file.
    pub(crate) fn finish(mut self) -> Diagnostics {
        self.diags.sort_by_location();
        self.diags
    }

    /// A diagnostic at `span` of this file (not yet recorded).
    pub(crate) fn diag(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.path, self.text, span, message)
    }

    pub(crate) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.diag(span, message);
        self.diags.push(d);
    }

    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Record `invalid` at the span of `value`.
    pub(crate) fn invalid<T>(&mut self, value: &Spanned<T>, invalid: Invalid) {
        let mut d = self.diag(value.span(), invalid.message);
        d.help = invalid.help;
        self.diags.push(d);
    }

    /// Run `check` on a spanned value, recording any problem; `None` on error.
    pub(crate) fn check<T, U>(
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
    pub(crate) fn non_empty(&mut self, value: &Spanned<String>, what: &str) -> String {
        if value.get_ref().trim().is_empty() {
            self.error(value.span(), format!("{what} must not be empty"));
        }
        value.get_ref().clone()
    }
}

/// `[a-z0-9][a-z0-9._+-]*`: recipe names.
pub(crate) fn recipe_name(s: &str) -> Result<(), Invalid> {
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
pub(crate) fn category_name(s: &str) -> Result<(), Invalid> {
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
pub(crate) fn image_name(s: &str) -> Result<(), Invalid> {
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
pub(crate) fn http_url(s: &str) -> Result<(), Invalid> {
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
pub(crate) fn mirror_url(s: &str) -> Result<(), Invalid> {
    if (s.starts_with("file:/") || s.starts_with("copy:/")) && !s.chars().any(char::is_whitespace) {
        return Ok(());
    }
    http_url(s).map_err(|_| {
        Invalid::new(format!("`{s}` is not a mirror URL"))
            .help("use an http(s) URL, or file:/// or copy:/// for a local archive")
    })
}

/// 64 lowercase hexadecimal digits.
pub(crate) fn sha256(s: &str) -> Result<(), Invalid> {
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
pub(crate) fn absolute_path(s: &str, what: &str) -> Result<(), Invalid> {
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

/// An absolute path inside the image that names where to write: no `..`
/// (which could only mean climbing out of the image's tree).
pub(crate) fn image_path(s: &str, what: &str) -> Result<(), Invalid> {
    absolute_path(s, what)?;
    if s.split('/').any(|c| c == "..") {
        return Err(
            Invalid::new(format!("{what} `{s}` contains `..`")).help(
                "write the path from the root of the image without `..`; biovm never writes outside the image",
            ),
        );
    }
    Ok(())
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
pub(crate) fn deb_package(s: &str) -> Result<DebPackage, Invalid> {
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

/// A recipe's own PyPI environment: `/opt/biovm/<name>`, a plain name
/// other than the shared environment's and biovm's own folders.
pub(crate) fn pypi_env(s: &str) -> Result<String, Invalid> {
    let ok = s.len() <= 40
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(Invalid::new(format!("`{s}` is not an environment name"))
            .help("use lowercase letters, digits and `-` (at most 40), starting with a letter"));
    }
    if matches!(s, "venv" | "bin" | "lib" | "share" | "workbench" | "data") {
        return Err(Invalid::new(format!("`{s}` is reserved"))
            .help("pick another name; leave `pypi-env` out for the shared environment"));
    }
    Ok(s.to_string())
}

/// A PyPI package pinned exactly: `name==version`.
pub(crate) fn pypi_package(s: &str) -> Result<PypiPackage, Invalid> {
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
pub(crate) fn expect_regex(s: &str) -> Result<Regex, Invalid> {
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
pub(crate) fn timeout(v: &i64) -> Result<u32, Invalid> {
    if (1..=3600).contains(v) {
        Ok(*v as u32)
    } else {
        Err(Invalid::new(format!("timeout {v} is out of range"))
            .help("give a number of seconds from 1 to 3600"))
    }
}

/// An exit status, 0 to 255.
pub(crate) fn exit_status(v: &i64) -> Result<i32, Invalid> {
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
#[cfg(test)]
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    size(s).map_err(|e| match e.help {
        Some(h) => format!("{}: {h}", e.message),
        None => e.message,
    })
}

/// [`parse_size`], with the problem and a help apart.
pub(crate) fn size(s: &str) -> Result<u64, Invalid> {
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
pub(crate) fn hostname(s: &str) -> Result<(), Invalid> {
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

/// Debian suites and code names mmdebstrap can bootstrap from an archive
/// mirror: the releases still on the mirrors and the moving aliases.
pub(crate) const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// A known Debian suite (see [`DEBIAN_SUITES`]).
pub(crate) fn suite(s: &str) -> Result<(), Invalid> {
    if DEBIAN_SUITES.contains(&s) {
        return Ok(());
    }
    let help = match super::diag::did_you_mean(s, DEBIAN_SUITES.iter().copied()) {
        Some(m) => format!("did you mean `{m}`?"),
        None => format!("known suites: {}", super::diag::quoted_list(DEBIAN_SUITES)),
    };
    Err(Invalid::new(format!("unknown Debian suite `{s}`")).help(help))
}

/// Where the build host lists the locales glibc can build (package
/// `locales`); the image's own copy is checked again during the build.
pub(crate) const SUPPORTED_LOCALES: &str = "/usr/share/i18n/SUPPORTED";

/// Locales every image has without the `locales` package.
pub(crate) const BUILTIN_LOCALES: &[&str] = &["C", "C.UTF-8", "C.utf8", "POSIX"];

/// A locale: one of [`BUILTIN_LOCALES`] or a name in the first column of
/// the `supported` list. `Ok(Some(note))` when that list cannot be read
/// (the note says so; the value is then only checked for its shape).
pub(crate) fn locale(s: &str, supported: &Path) -> Result<Option<String>, Invalid> {
    if BUILTIN_LOCALES.contains(&s) {
        return Ok(None);
    }
    let re = Regex::new(r"^[a-z]{2,3}(_[A-Z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?$")
        .expect("locale pattern");
    if !re.is_match(s) {
        return Err(Invalid::new(format!("invalid locale `{s}`"))
            .help("write e.g. \"C.UTF-8\" or \"en_US.UTF-8\""));
    }
    let text = match std::fs::read_to_string(supported) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Some(format!(
                "cannot check locale `{s}`: {} cannot be read ({e}); install the Debian package `locales` on this host to check it before the build",
                supported.display()
            )));
        }
    };
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !n.starts_with('#'))
        .collect();
    if names.contains(&s) {
        return Ok(None);
    }
    let help = match super::diag::did_you_mean(
        s,
        names.iter().copied().chain(BUILTIN_LOCALES.iter().copied()),
    ) {
        Some(m) => format!("did you mean `{m}`?"),
        None => format!(
            "write \"C.UTF-8\" or a locale listed in {}, e.g. \"en_US.UTF-8\"",
            supported.display()
        ),
    };
    Err(Invalid::new(format!("unknown locale `{s}`")).help(help))
}

/// Where the build host keeps the time zone database (package `tzdata`).
pub(crate) const ZONEINFO: &str = "/usr/share/zoneinfo";

/// A time zone: a TZif file below `zoneinfo` (after symlinks), named
/// without `..`. `Ok(Some(note))` when `zoneinfo` is missing (the note says
/// so; the value is then only checked for its shape, and the build checks
/// it against the image's own tzdata).
pub(crate) fn timezone(s: &str, zoneinfo: &Path) -> Result<Option<String>, Invalid> {
    let shape =
        Regex::new(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$").expect("timezone pattern");
    if s.split('/').any(|c| c == "..") {
        return Err(Invalid::new(format!("time zone `{s}` contains `..`"))
            .help("write \"UTC\" or an Area/City name such as \"Europe/Berlin\""));
    }
    if !shape.is_match(s) {
        return Err(Invalid::new(format!("invalid time zone `{s}`"))
            .help("write \"UTC\" or an Area/City name such as \"Europe/Berlin\""));
    }
    let Ok(base) = zoneinfo.canonicalize() else {
        return Ok(Some(format!(
            "cannot check time zone `{s}`: {} does not exist; install the Debian package `tzdata` on this host to check it before the build",
            zoneinfo.display()
        )));
    };
    // Resolved beneath zoneinfo only: `localtime` there is a link to the
    // host's own /etc/localtime, which in the image would point at itself.
    let is_zone = |p: &Path| -> bool {
        let mut magic = [0u8; 4];
        crate::confined::open_beneath(&base, p)
            .and_then(|mut f| {
                let regular = f.metadata()?.is_file();
                std::io::Read::read_exact(&mut f, &mut magic)?;
                Ok(regular)
            })
            .is_ok_and(|regular| regular && &magic == b"TZif")
    };
    if is_zone(Path::new(s)) {
        return Ok(None);
    }
    let names = zone_names(&base);
    // A typo, or a city without its area ("Berlin" for "Europe/Berlin").
    let suggestion = super::diag::did_you_mean(s, names.iter().map(String::as_str)).or_else(|| {
        names
            .iter()
            .find(|n| {
                n.rsplit('/')
                    .next()
                    .is_some_and(|c| c.eq_ignore_ascii_case(s))
            })
            .map(String::as_str)
    });
    let help = match suggestion {
        Some(m) => format!("did you mean `{m}`?"),
        None => format!(
            "write \"UTC\" or a name below {}, such as \"Europe/Berlin\"",
            zoneinfo.display()
        ),
    };
    Err(Invalid::new(format!("unknown time zone `{s}`")).help(help))
}

/// The zone names below `base` (`Area/City`, without the `posix/` and
/// `right/` copies), for suggestions.
fn zone_names(base: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            let rel = p
                .strip_prefix(base)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if t.is_dir() {
                if rel != "posix" && rel != "right" {
                    walk(base, &p, out);
                }
            } else if rel.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                out.push(rel);
            }
        }
    }
    let mut v = Vec::new();
    walk(base, base, &mut v);
    v.sort();
    v
}

/// A Unix user name for the login user.
pub(crate) fn user_name(s: &str) -> Result<(), Invalid> {
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
pub(crate) fn ssh_key(s: &str) -> Result<(), Invalid> {
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
pub(crate) fn file_mode(s: &str) -> Result<u32, Invalid> {
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

    /// Against a small zoneinfo tree and locale list like the host's.
    #[test]
    fn time_zones_and_locales_against_the_host_lists() {
        let d = tempfile::tempdir().unwrap();
        let zi = d.path().join("zoneinfo");
        std::fs::create_dir_all(zi.join("Europe")).unwrap();
        std::fs::create_dir_all(zi.join("Etc")).unwrap();
        std::fs::write(zi.join("Europe/Berlin"), b"TZif2...").unwrap();
        std::fs::write(zi.join("Etc/UTC"), b"TZif2...").unwrap();
        std::os::unix::fs::symlink("Etc/UTC", zi.join("UTC")).unwrap();
        std::fs::write(zi.join("zone.tab"), b"# not a zone").unwrap();
        std::fs::write(d.path().join("host"), b"TZif2 outside").unwrap();
        std::os::unix::fs::symlink(d.path().join("host"), zi.join("Outside")).unwrap();
        assert_eq!(timezone("UTC", &zi), Ok(None));
        assert_eq!(timezone("Europe/Berlin", &zi), Ok(None));
        let e = timezone("Europe/Berln", &zi).unwrap_err();
        assert_eq!(e.message, "unknown time zone `Europe/Berln`");
        assert_eq!(e.help.unwrap(), "did you mean `Europe/Berlin`?");
        let e = timezone("berlin", &zi).unwrap_err();
        assert_eq!(e.help.unwrap(), "did you mean `Europe/Berlin`?");
        assert!(timezone("zone.tab", &zi).is_err(), "not a TZif file");
        assert!(timezone("Outside", &zi).is_err(), "a link out of zoneinfo");
        std::os::unix::fs::symlink("../zoneinfo/Etc/UTC", zi.join("Around")).unwrap();
        assert!(
            timezone("Around", &zi).is_err(),
            "a link that leaves zoneinfo and comes back"
        );
        assert!(timezone("Europe", &zi).is_err(), "a folder");
        let sup = d.path().join("SUPPORTED");
        std::fs::write(&sup, "de_DE ISO-8859-1\nen_US.UTF-8 UTF-8\n").unwrap();
        assert_eq!(locale("en_US.UTF-8", &sup), Ok(None));
        assert_eq!(locale("de_DE", &sup), Ok(None));
        assert_eq!(locale("POSIX", &sup), Ok(None));
        let e = locale("en_US.utf8", &sup).unwrap_err();
        assert_eq!(e.help.unwrap(), "did you mean `en_US.UTF-8`?");
        assert!(locale("xx_YY.UTF-8", &sup).is_err());
    }

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
        // No tzdata or locale list: the shape is checked, and a note says
        // what could not be.
        let none = Path::new("/nonexistent");
        assert!(timezone("UTC", none).unwrap().is_some());
        assert!(timezone("Europe/Berlin", none)
            .unwrap()
            .unwrap()
            .contains("tzdata"));
        assert!(timezone("Europe/../../etc/passwd", none).is_err());
        assert!(timezone("/etc/passwd", none).is_err());
        assert!(locale("C.UTF-8", none).unwrap().is_none());
        assert!(locale("en_US.UTF-8", none)
            .unwrap()
            .unwrap()
            .contains("`locales`"));
        assert!(locale("utf8", none).is_err());
        assert!(suite("bookworm").is_ok());
        assert_eq!(
            suite("bookwrom").unwrap_err().help.unwrap(),
            "did you mean `bookworm`?"
        );
        assert!(suite("bookworm-backports").is_err());
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
