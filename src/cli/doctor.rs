use std::process::ExitCode;

use clap::Args;

use super::GlobalArgs;
use crate::doctor::HOST_TOOLS;

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {}

pub(crate) fn run(g: &GlobalArgs, _a: DoctorArgs) -> anyhow::Result<ExitCode> {
    if g.json {
        let tools: Vec<_> = HOST_TOOLS
            .iter()
            .map(|t| {
                serde_json::json!({
                    "tool": t.name,
                    "present": t.present(),
                    "package": t.package,
                    "used_for": t.used_for,
                })
            })
            .collect();
        let ok = tools.iter().all(|t| t["present"] == true);
        let v = crate::smoke::kvm::current();
        crate::progress::result(
            "doctor",
            serde_json::json!({
                "tools": tools,
                "kvm": v.accel == crate::smoke::qemu::Accel::Kvm,
                "accel": v.accel,
                "accel_detail": v.detail,
                "cache": crate::fsutil::cache_dir(),
            }),
        );
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let w = HOST_TOOLS.iter().map(|t| t.name.len()).max().unwrap_or(0);
    println!(
        "{:<w$}  {:<8}  {:<20}  USED FOR",
        "TOOL", "STATUS", "DEBIAN PACKAGE"
    );
    let mut missing = Vec::new();
    for t in HOST_TOOLS {
        let ok = t.present();
        if !ok {
            missing.push(t.package);
        }
        println!(
            "{:<w$}  {:<8}  {:<20}  {}",
            t.name,
            if ok { "ok" } else { "MISSING" },
            t.package,
            t.used_for
        );
    }
    println!("\nvirtualisation: {}", crate::smoke::kvm::current().detail);
    println!("cache: {}", crate::fsutil::cache_dir().display());
    if missing.is_empty() {
        println!("all host tools present");
        Ok(ExitCode::SUCCESS)
    } else {
        missing.sort();
        missing.dedup();
        println!("missing: apt-get install {}", missing.join(" "));
        Ok(ExitCode::FAILURE)
    }
}
