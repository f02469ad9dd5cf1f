use super::*;

/// A recipe folder with `samtools` (package samtools) and `muscle`
/// (package muscle), and exclusions written from `exclusions`.
fn folder(exclusions: &str) -> (tempfile::TempDir, Catalog, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    for (name, package) in [("samtools", "samtools"), ("muscle", "muscle")] {
        let dir = d.path().join("alignment");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\nsummary = \"s\"\ncategory = \"alignment\"\n\
                 homepage = \"https://example.org/\"\nlicense = \"MIT\"\n\
                 [install]\ndebian = [\"{package}\"]\n\
                 [check]\ncommand = \"{name} --version\"\nexpect = '^{name}'\n"
            ),
        )
        .unwrap();
    }
    let path = exclusions_path(d.path());
    std::fs::write(&path, exclusions).unwrap();
    // The exclusions file beside the category folders is not a recipe.
    let catalog = super::super::load_catalog(&[d.path().to_path_buf()]).unwrap();
    (d, catalog, path)
}

const GOOD: &str = r#"
[[exclude]]
package = "vienna-rna"
reason = "not-in-main"
note = "in non-free"

[[exclude]]
package = "muscle3"
reason = "superseded"
superseded-by = "muscle"
note = "MUSCLE 5 does its work"
"#;

#[test]
fn each_reference_entry_is_covered_excluded_or_missing() {
    let (d, catalog, path) = folder(GOOD);
    let exclusions = read_exclusions(&path, &catalog).unwrap();
    assert_eq!(exclusions.len(), 2);
    assert_eq!(exclusions[1].superseded_by.as_deref(), Some("muscle"));
    let table = d.path().join("tools.tsv");
    std::fs::write(
        &table,
        "tool\tcategory\tdebian_bookworm_package\n\
         SAMtools\talign\tsamtools\n\
         MUSCLE 3\talign\tmuscle3\n\
         ViennaRNA\trna\tvienna-rna\n\
         EMBOSS\tsuite\temboss\n\
         GATK\tvariants\t-\n\
         BWA\talign\tbwa-mem2,samtools\n",
    )
    .unwrap();
    let rows = compare(&read_reference(&table).unwrap(), &catalog, &exclusions);
    let words: Vec<(&str, &str)> = rows
        .iter()
        .map(|(e, s)| (e.tool.as_str(), s.word()))
        .collect();
    assert_eq!(
        words,
        [
            ("SAMtools", "covered"),
            ("MUSCLE 3", "excluded"),
            ("ViennaRNA", "excluded"),
            ("EMBOSS", "missing"),
            ("GATK", "no-debian-package"),
            ("BWA", "covered"),
        ]
    );
    assert_eq!(rows[0].1, Status::Covered(vec!["samtools".into()]));

    // A plain list: one package per line, comments and blank lines skipped.
    let list = d.path().join("task.txt");
    std::fs::write(&list, "# the task\nsamtools\n\nemboss  # a suite\n").unwrap();
    let rows = compare(&read_reference(&list).unwrap(), &catalog, &exclusions);
    let words: Vec<&str> = rows.iter().map(|(_, s)| s.word()).collect();
    assert_eq!(words, ["covered", "missing"]);
    assert_eq!(rows[1].0.package.as_deref(), Some("emboss"));
}

#[test]
fn bad_exclusions_are_named_with_line_and_column() {
    let bad = r#"
[[exclude]]
package = "samtools"
reason = "library"
note = "x"

[[exclude]]
package = "vienna-rna"
reason = "non-free"
note = ""

[[exclude]]
package = "muscle3"
reason = "superseded"
note = "y"

[[exclude]]
package = "xy"
reason = "broken"
superseded-by = "muscel"
note = "z"

[[exclude]]
package = "vienna-rna"
reason = "library"
note = "again"
"#;
    let (_d, catalog, path) = folder(bad);
    let e = read_exclusions(&path, &catalog).unwrap_err().to_string();
    for needle in [
        "exclusions.toml:3:11: `samtools` is excluded, yet recipe `samtools` installs it",
        "exclusions.toml:9:10: unknown reason `non-free`",
        "one of `library`, `not-in-main`",
        "exclusions.toml:10:8: `note` must not be empty",
        "exclusions.toml:14:10: `superseded` needs `superseded-by`",
        "exclusions.toml:19:10: `broken` needs `bug`",
        "exclusions.toml:20:17: no recipe `muscel`",
        "did you mean `muscle`",
        "exclusions.toml:24:11: `vienna-rna` is excluded twice",
    ] {
        assert!(e.contains(needle), "{needle} not in:\n{e}");
    }
    // An unknown field is named too.
    std::fs::write(
        &path,
        "[[exclude]]\npackage = \"a\"\nreason = \"library\"\nnote = \"n\"\nwhy = 1\n",
    )
    .unwrap();
    let e = read_exclusions(&path, &catalog).unwrap_err().to_string();
    assert!(
        e.contains("exclusions.toml:5:1") && e.contains("why"),
        "{e}"
    );
}

#[test]
fn a_table_without_its_columns_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("t.tsv");
    std::fs::write(&t, "name\tpackage\nx\ty\n").unwrap();
    let e = read_reference(&t).unwrap_err().to_string();
    assert!(e.contains("t.tsv: line 1: no `tool` column"), "{e}");
}
