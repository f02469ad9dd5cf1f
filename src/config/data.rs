//! Reference data sets: `data/<name>.toml`, one genome (or other data)
//! each: where its bytes come from and their sha256 and size, how they
//! are unpacked, the indexes tools build from it inside the image, and the
//! checks that show it works there. Images pick them with `[data]`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::access::HostAccess;
use super::diag::{from_toml_error, Diagnostic, Diagnostics};
use super::model::{DataIndex, DataOrigin, DataSet, DataSource, Unpack};
use super::raw::{RawDataSet, RawDataSource, RawIndex};
use super::recipe::{read_text, sorted_entries};
use super::validate::{self, Ctx, Invalid};

/// A file name inside a data set's folder: no folders, nothing hidden.
fn plain_file_name(s: &str, what: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!("{what} `{s}` is not a plain file name"))
            .help("name a file in the data set's own folder: letters, digits and `._-+`, no `/`, not starting with `.`"))
    }
}

/// A data set's build, which names its folder under `/data/genomes`.
fn build_name(s: &str) -> Result<(), Invalid> {
    plain_file_name(s, "build").map_err(|_| {
        Invalid::new(format!("build `{s}` cannot name a folder"))
            .help("use letters, digits and `._-+`, e.g. \"GRCh38\" or \"lambda\"")
    })
}

fn unpack(s: &str) -> Result<Unpack, Invalid> {
    match s {
        "none" => Ok(Unpack::None),
        "gzip" => Ok(Unpack::Gzip),
        _ => Err(Invalid::new(format!("unknown unpack `{s}`")).help("use \"none\" or \"gzip\"")),
    }
}

/// A data set whose `name` is written at `name_span` of `text`.
pub(crate) struct LoadedData {
    pub(crate) data: DataSet,
    pub(crate) text: String,
    pub(crate) name_span: Range<usize>,
}

/// Load and validate one data recipe.
pub(crate) fn parse_data_set(
    path: &Path,
    text: &str,
    access: &HostAccess,
) -> Result<LoadedData, Diagnostics> {
    let raw: RawDataSet = toml::from_str(text).map_err(|e| from_toml_error(path, text, &e))?;
    let mut cx = Ctx::new(path, text, access);
    let name = super::recipe::named_like_its_file(&mut cx, &raw.name, "data set");
    let summary = cx.non_empty(&raw.summary, "`summary`");
    let organism = cx.non_empty(&raw.organism, "`organism`");
    let version = cx.non_empty(&raw.version, "`version`");
    let license = cx.non_empty(&raw.license, "`license`");
    cx.check(&raw.build, |b| build_name(b));
    cx.check(&raw.file, |f| plain_file_name(f, "file"));
    cx.check(&raw.sha256, |s| validate::sha256(s));
    let source = source(&mut cx, &raw.source);
    let mut indexes = Vec::new();
    let mut written: BTreeMap<String, ()> = BTreeMap::new();
    written.insert(raw.file.get_ref().clone(), ());
    for i in &raw.index {
        indexes.push(index(&mut cx, i.get_ref(), &mut written));
    }
    let mut tests = Vec::new();
    let mut names = BTreeMap::new();
    for t in &raw.test {
        let tname = t.get_ref().name.get_ref();
        if names.insert(tname.clone(), ()).is_some() {
            cx.error(
                t.get_ref().name.span(),
                format!("duplicate test name `{tname}`"),
            );
        }
        if let Some(t) = super::recipe::test(&mut cx, t.get_ref()) {
            tests.push(t);
        }
    }
    let data = DataSet {
        name,
        summary,
        organism,
        build: raw.build.get_ref().clone(),
        version,
        license,
        redistributable: raw.redistributable,
        file: raw.file.get_ref().clone(),
        sha256: raw.sha256.get_ref().clone(),
        source: source.unwrap_or(DataSource {
            from: DataOrigin::Urls(vec![]),
            sha256: String::new(),
            size: 0,
            unpack: Unpack::None,
        }),
        indexes,
        tests,
        source_file: path.to_path_buf(),
    };
    let name_span = raw.name.span();
    cx.finish().into_result(LoadedData {
        data,
        text: text.to_string(),
        name_span,
    })
}

fn source(cx: &mut Ctx<'_>, raw: &Spanned<RawDataSource>) -> Option<DataSource> {
    let s = raw.get_ref();
    let sha = cx.check(&s.sha256, |h| validate::sha256(h));
    let size = cx.check(&s.size, |n| {
        u64::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Invalid::new(format!("size {n} is not a positive number of bytes")))
    });
    let unpack = match &s.unpack {
        Some(u) => cx.check(u, |x| unpack(x)),
        None => Some(Unpack::None),
    };
    let from = match (&s.debian, &s.path, s.urls.is_empty()) {
        (Some(pkg), Some(path), true) => {
            let p = cx.check(pkg, |x| validate::deb_package(x));
            if p.as_ref().is_some_and(|p| p.version.is_some()) {
                cx.error(
                    pkg.span(),
                    "name the package without a version: the image's lock pins it",
                );
            }
            cx.check(path, |x| validate::image_path(x, "`path`"));
            Some(DataOrigin::Debian {
                package: pkg.get_ref().clone(),
                path: path.get_ref().clone(),
            })
        }
        (None, None, false) => {
            for u in &s.urls {
                cx.check(u, |x| validate::http_url(x));
            }
            Some(DataOrigin::Urls(
                s.urls.iter().map(|u| u.get_ref().clone()).collect(),
            ))
        }
        _ => {
            let d = cx
                .diag(
                    raw.span(),
                    "the source needs either `debian` and `path`, or `urls`",
                )
                .with_help("a Debian package and the file's path in it; or a list of URLs serving the same bytes");
            cx.push(d);
            None
        }
    };
    Some(DataSource {
        from: from?,
        sha256: s.sha256.get_ref().clone(),
        size: size?,
        unpack: unpack?,
    })
    .filter(|_| sha.is_some())
}

fn index(cx: &mut Ctx<'_>, i: &RawIndex, written: &mut BTreeMap<String, ()>) -> DataIndex {
    cx.check(&i.name, |n| validate::recipe_name(n));
    cx.check(&i.recipe, |n| validate::recipe_name(n));
    let command = cx.non_empty(&i.command, "the index `command`");
    if i.outputs.is_empty() {
        cx.error(
            i.name.span(),
            format!("index `{}` declares no `outputs`", i.name.get_ref()),
        );
    }
    for o in &i.outputs {
        if cx.check(o, |f| plain_file_name(f, "output")).is_some()
            && written.insert(o.get_ref().clone(), ()).is_some()
        {
            cx.error(
                o.span(),
                format!(
                    "`{}` is already the content or another index's output",
                    o.get_ref()
                ),
            );
        }
    }
    DataIndex {
        name: i.name.get_ref().clone(),
        recipe: i.recipe.get_ref().clone(),
        command,
        outputs: i.outputs.iter().map(|o| o.get_ref().clone()).collect(),
    }
}

/// Every `<dir>/*.toml` data recipe of the folders, by name; duplicate
/// names and bad files are reported.
pub(crate) fn load_data_dirs(
    dirs: &[PathBuf],
    access: &HostAccess,
) -> (BTreeMap<String, LoadedData>, Diagnostics) {
    let mut diags = Diagnostics::new();
    let mut out: BTreeMap<String, LoadedData> = BTreeMap::new();
    for dir in dirs {
        let entries = match sorted_entries(dir) {
            Ok(e) => e,
            Err(msg) => {
                diags.push(Diagnostic::new(dir, msg));
                continue;
            }
        };
        for file in entries
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        {
            let loaded = read_text(&file)
                .map_err(|d| {
                    let mut ds = Diagnostics::new();
                    ds.push(d);
                    ds
                })
                .and_then(|text| parse_data_set(&file, &text, access));
            match loaded {
                Ok(l) => {
                    if let Some(prev) = out.get(&l.data.name) {
                        diags.push(
                            Diagnostic::at(
                                &file,
                                &l.text,
                                l.name_span.clone(),
                                format!("duplicate data set name `{}`", l.data.name),
                            )
                            .with_help(format!(
                                "`{}` is first defined in {}",
                                l.data.name,
                                prev.data.source_file.display()
                            )),
                        );
                    } else {
                        out.insert(l.data.name.clone(), l);
                    }
                }
                Err(d) => diags.extend(d),
            }
        }
    }
    (out, diags)
}

/// The data folder beside a recipe folder: `X/recipes` → `X/data`.
pub(crate) fn default_data_dir(recipe_dir: &Path) -> PathBuf {
    let parent = recipe_dir.parent().unwrap_or(Path::new(""));
    if parent.as_os_str().is_empty() {
        PathBuf::from("data")
    } else {
        parent.join("data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name = "tiny"
summary = "a tiny genome"
organism = "Escherichia phage lambda"
build = "tiny"
version = "1"
license = "public-domain"
redistributable = true
file = "tiny.fa"
sha256 = "0a04f81952deb68c204e8ae67e0573cb97d348f18ab1b527630d57c294028cf5"

[source]
urls = ["http://127.0.0.1:1/tiny.fa.gz", "https://example.org/tiny.fa.gz"]
sha256 = "08fe207fcb4bbe47e80cc7469e68d1f1d8d497a836fe1c09f5a9734d2e4cd9e0"
size = 15404
unpack = "gzip"

[[index]]
name = "bwa"
recipe = "bwa"
command = "bwa index tiny.fa"
outputs = ["tiny.fa.bwt", "tiny.fa.sa"]
"#;

    fn parse(text: &str) -> Result<DataSet, String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tiny.toml");
        std::fs::write(&p, text).unwrap();
        parse_data_set(&p, text, &HostAccess::strict())
            .map(|l| l.data)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_data_recipe_is_read_into_the_model() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d.folder(), Path::new("data/genomes/tiny"));
        assert_eq!(d.source.unpack, Unpack::Gzip);
        assert_eq!(d.source.size, 15404);
        assert!(matches!(&d.source.from, DataOrigin::Urls(u) if u.len() == 2));
        assert_eq!(d.indexes[0].outputs, ["tiny.fa.bwt", "tiny.fa.sa"]);
    }

    #[test]
    fn mistakes_are_reported_at_their_line_and_column() {
        let bad = GOOD
            .replace("build = \"tiny\"", "build = \"../etc\"")
            .replace("size = 15404", "size = 0")
            .replace("unpack = \"gzip\"", "unpack = \"zip\"")
            .replace("\"tiny.fa.sa\"", "\"../../etc/passwd\"");
        let e = parse(&bad).unwrap_err();
        for want in [
            "tiny.toml:4:9: build `../etc` cannot name a folder",
            "tiny.toml:14:8: size 0 is not a positive number of bytes",
            "tiny.toml:15:10: unknown unpack `zip`",
            "tiny.toml:21:27: output `../../etc/passwd` is not a plain file name",
        ] {
            assert!(e.contains(want), "{want}\nnot in:\n{e}");
        }
    }

    #[test]
    fn a_source_is_a_package_and_path_or_urls_never_both() {
        let both = GOOD.replace(
            "[source]\n",
            "[source]\ndebian = \"bowtie2-examples\"\npath = \"/usr/share/x.fa.gz\"\n",
        );
        let e = parse(&both).unwrap_err();
        assert!(
            e.contains("tiny.toml:11:1: the source needs either `debian` and `path`, or `urls`"),
            "{e}"
        );
        let pinned = GOOD.replace(
            "urls = [\"http://127.0.0.1:1/tiny.fa.gz\", \"https://example.org/tiny.fa.gz\"]",
            "debian = \"bowtie2-examples=2.5.0-3\"\npath = \"/usr/share/x.fa.gz\"",
        );
        let e = parse(&pinned).unwrap_err();
        assert!(e.contains("the image's lock pins it"), "{e}");
    }

    #[test]
    fn an_output_cannot_overwrite_the_content_or_another_output() {
        let e = parse(&GOOD.replace("\"tiny.fa.bwt\"", "\"tiny.fa\"")).unwrap_err();
        assert!(
            e.contains("`tiny.fa` is already the content or another index's output"),
            "{e}"
        );
    }
}
