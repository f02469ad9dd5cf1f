//! The SBOM of a release made with `--sources`: the build's SBOM plus one
//! package per source (purpose SOURCE, its file in the release folder and
//! that file's sha256), and a GENERATED_FROM relationship from each binary
//! package to the source it was built from (SPDX 2.3, clauses 7.4
//! "Package file name", 7.24 "Primary package purpose" and 11.1
//! "Relationship").

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::Sources;
use crate::formats::spdx::{id_part, purl_encode};

/// `sbom` (an SPDX 2.3 JSON document written by the build) with the
/// sources of `sources` added; `suite` is the purl `distro`.
pub(crate) fn with_sources(sbom: &str, sources: &Sources, suite: &str) -> Result<String> {
    let mut doc: Value = serde_json::from_str(sbom).context("the build's SBOM is not JSON")?;
    // The binary packages by (kind, name, version).
    let mut binaries: HashMap<(&str, String, String), String> = HashMap::new();
    for p in doc["packages"]
        .as_array()
        .context("the SBOM has no packages")?
    {
        let id = p["SPDXID"].as_str().unwrap_or_default();
        let kind = if id.starts_with("SPDXRef-deb-") {
            "deb"
        } else if id.starts_with("SPDXRef-pypi-") {
            "pypi"
        } else {
            continue;
        };
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let version = p["versionInfo"].as_str().unwrap_or_default().to_string();
        binaries.insert((kind, name, version), id.to_string());
    }
    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    for (n, d) in sources.debian.iter().enumerate() {
        let id = format!("SPDXRef-debsrc-{}-{n}", id_part(&d.package));
        let dsc = d.files.iter().find(|f| f.file.ends_with(".dsc"));
        packages.push(source_package(
            &id,
            &d.package,
            &d.version,
            dsc.map(|f| (f.file.as_str(), f.sha256.as_str())),
            format!(
                "Debian source package; its files in the release: {}",
                d.files
                    .iter()
                    .map(|f| f.file.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            format!(
                "pkg:deb/debian/{}@{}?arch=source&distro={}",
                purl_encode(&d.package),
                purl_encode(&d.version),
                purl_encode(suite)
            ),
        ));
        for b in &d.binaries {
            let mut w = b.split(' ');
            let (name, version) = (w.next().unwrap_or_default(), w.next().unwrap_or_default());
            if let Some(bin) = binaries.get(&("deb", name.to_string(), version.to_string())) {
                relationships.push(generated_from(bin, &id));
            }
        }
    }
    for (n, p) in sources.pypi.iter().enumerate() {
        let id = format!("SPDXRef-pypisrc-{}-{n}", id_part(&p.name));
        let file_name = p.file.file.rsplit('/').next().unwrap_or_default();
        packages.push(source_package(
            &id,
            &p.name,
            &p.version,
            Some((p.file.file.as_str(), p.file.sha256.as_str())),
            "PyPI source distribution".to_string(),
            format!(
                "pkg:pypi/{}@{}?file_name={}",
                purl_encode(&p.name),
                purl_encode(&p.version),
                purl_encode(file_name)
            ),
        ));
        if let Some(bin) = binaries.get(&("pypi", p.name.clone(), p.version.clone())) {
            relationships.push(generated_from(bin, &id));
        }
    }
    doc["packages"]
        .as_array_mut()
        .context("the SBOM has no packages")?
        .extend(packages);
    doc["relationships"]
        .as_array_mut()
        .context("the SBOM has no relationships")?
        .extend(relationships);
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

fn source_package(
    id: &str,
    name: &str,
    version: &str,
    file: Option<(&str, &str)>,
    comment: String,
    purl: String,
) -> Value {
    let mut p = json!({
        "name": name,
        "SPDXID": id,
        "versionInfo": version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": comment,
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl,
        }],
        "primaryPackagePurpose": "SOURCE",
    });
    if let Some((f, sha)) = file {
        p["packageFileName"] = json!(f);
        p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sha}]);
    }
    p
}

fn generated_from(binary: &str, source: &str) -> Value {
    json!({
        "spdxElementId": binary,
        "relationshipType": "GENERATED_FROM",
        "relatedSpdxElement": source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::spdx::{sbom_json, SbomInput};
    use crate::lock::LockedDeb;
    use crate::sources::{DebianSource, PypiSdist, SourceFile};

    #[test]
    fn every_binary_is_generated_from_its_source() {
        let debs = [
            LockedDeb {
                name: "libhts3".into(),
                version: "1.16+ds-3".into(),
                architecture: "amd64".into(),
                sha256: "11".repeat(32),
            },
            LockedDeb {
                name: "tabix".into(),
                version: "1.16+ds-3".into(),
                architecture: "amd64".into(),
                sha256: "22".repeat(32),
            },
        ];
        let sbom = sbom_json(&SbomInput {
            image: "x",
            description: "",
            suite: "bookworm",
            tool_version: "0",
            seed: "s",
            source_date_epoch: 1,
            debian: &debs,
            pypi: vec![("pysam-0.22.0-cp311-none-any.whl".into(), "33".repeat(32))],
            downloads: vec![],
            data: &[],
        });
        let f = |n: &str, s: &str| SourceFile {
            file: n.into(),
            sha256: s.repeat(32),
            size: 1,
        };
        let sources = Sources {
            debian: vec![DebianSource {
                package: "htslib".into(),
                version: "1.16+ds-3".into(),
                binaries: vec![
                    "libhts3 1.16+ds-3 amd64".into(),
                    "tabix 1.16+ds-3 amd64".into(),
                ],
                files: vec![
                    f("sources/debian/htslib_1.16+ds-3.dsc", "44"),
                    f("sources/debian/htslib_1.16+ds.orig.tar.xz", "55"),
                ],
            }],
            pypi: vec![PypiSdist {
                name: "pysam".into(),
                version: "0.22.0".into(),
                wheels: vec!["pysam-0.22.0-cp311-none-any.whl".into()],
                file: f("sources/pypi/pysam-0.22.0.tar.gz", "66"),
            }],
        };
        let out: Value =
            serde_json::from_str(&with_sources(&sbom, &sources, "bookworm").unwrap()).unwrap();
        let src = out["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "htslib")
            .unwrap();
        assert_eq!(src["primaryPackagePurpose"], "SOURCE");
        assert_eq!(
            src["packageFileName"],
            "sources/debian/htslib_1.16+ds-3.dsc"
        );
        assert_eq!(src["checksums"][0]["checksumValue"], "44".repeat(32));
        let gen: Vec<(&str, &str)> = out["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["relationshipType"] == "GENERATED_FROM")
            .map(|r| {
                (
                    r["spdxElementId"].as_str().unwrap(),
                    r["relatedSpdxElement"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(gen.len(), 3, "{gen:?}");
        assert!(gen
            .iter()
            .any(|(b, s)| b.starts_with("SPDXRef-deb-tabix")
                && s.starts_with("SPDXRef-debsrc-htslib")));
        assert!(gen
            .iter()
            .any(|(b, s)| b.starts_with("SPDXRef-pypi-pysam")
                && s.starts_with("SPDXRef-pypisrc-pysam")));
    }
}
