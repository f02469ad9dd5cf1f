//! `biovm show TOOL`: everything about one recipe.

use std::process::ExitCode;

use clap::Args;

use super::list::{emit, pattern, recipe_json};
use super::GlobalArgs;
use crate::config::{self, Diagnostic, Diagnostics, Recipe};

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The recipe's name, e.g. `samtools`.
    #[arg(value_name = "TOOL")]
    pub(crate) tool: String,
}

pub(crate) fn run(g: &GlobalArgs, a: ShowArgs) -> anyhow::Result<ExitCode> {
    let dir = config::default_recipe_dir(None, g.recipes.as_deref());
    let catalog = config::load_catalog(std::slice::from_ref(&dir))?;
    let Some(r) = catalog.recipes.get(&a.tool) else {
        let d = Diagnostic::new(&dir, format!("unknown recipe `{}`", a.tool))
            .with_suggestion(&a.tool, catalog.recipes.keys().map(String::as_str));
        let d = if d.help.is_none() {
            d.with_help("`biovm list` shows the recipes in the catalogue")
        } else {
            d
        };
        return Err(anyhow::Error::new(Diagnostics::from(d)));
    };
    if g.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&recipe_json(r))?
        ))?;
    } else {
        emit(&recipe_text(r))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Indent every line but the first of a multi-line value.
fn block(s: &str, indent: &str) -> String {
    let s = s.trim_end_matches('\n');
    s.lines().collect::<Vec<_>>().join(&format!("\n{indent}"))
}

fn recipe_text(r: &Recipe) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| {
        out.push_str(&format!("{:<11}{}\n", format!("{k}:"), v));
    };
    line("name", &r.name);
    line("summary", &r.summary);
    line("category", &r.category);
    line("homepage", &r.homepage);
    line("license", &r.license);
    line("file", &r.source.display().to_string());
    out.push_str("install:\n");
    if !r.install.debian.is_empty() {
        let pkgs: Vec<String> = r.install.debian.iter().map(|p| p.apt_spec()).collect();
        out.push_str(&format!("  debian:  {}\n", pkgs.join(" ")));
    }
    if !r.install.pypi.is_empty() {
        let pkgs: Vec<String> = r
            .install
            .pypi
            .iter()
            .map(|p| format!("{}=={}", p.name, p.version))
            .collect();
        out.push_str(&format!("  pypi:    {}\n", pkgs.join(" ")));
    }
    for d in &r.install.downloads {
        out.push_str(&format!(
            "  download: {}\n    sha256 {}\n    {} {}\n",
            d.url,
            d.sha256,
            if d.unpack {
                "unpacked into"
            } else {
                "saved as"
            },
            d.dest
        ));
    }
    out.push_str("check:\n");
    out.push_str(&format!(
        "  command: {}\n",
        block(&r.check.command, "           ")
    ));
    out.push_str(&format!("  expect:  {}\n", pattern(&r.check.expect)));
    out.push_str(&format!("  status:  {}\n", r.check.status));
    out.push_str(&format!("  timeout: {} s\n", r.check.timeout_secs));
    if r.tests.is_empty() {
        out.push_str("tests:     none\n");
    } else {
        out.push_str("tests:\n");
        for t in &r.tests {
            out.push_str(&format!("  {}:\n", t.name));
            out.push_str(&format!(
                "    script:  {}\n",
                block(&t.script, "             ")
            ));
            out.push_str(&format!("    expect:  {}\n", pattern(&t.expect)));
            out.push_str(&format!("    status:  {}\n", t.status));
            out.push_str(&format!("    timeout: {} s\n", t.timeout_secs));
            if !t.data.is_empty() {
                let data: Vec<String> = t.data.iter().map(|p| p.display().to_string()).collect();
                out.push_str(&format!("    data:    {}\n", data.join(" ")));
            }
        }
    }
    out
}
