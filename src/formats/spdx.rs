//! `<image>.spdx.json`: the image's software bill of materials as an SPDX 2.3
//! JSON document (SPDX specification 2.3, clauses 6 "Document creation
//! information", 7 "Package information" and 11 "Relationships").
//!
//! One package describes the image (`SPDXRef-Image`, purpose
//! OPERATING-SYSTEM); it CONTAINS one package per Debian package (name,
//! version, architecture, the sha256 of the `.deb` from the archive's signed
//! index, purl `pkg:deb/debian/...`), per PyPI distribution file (name and
//! version from the file name, its sha256, purl `pkg:pypi/...`) and per
//! recipe download (its URL and sha256). Package archives' locations are
//! left as NOASSERTION (the purl names the package; the mirror is the
//! builder's choice). Nothing depends on when or where it is written:
//! `created` is SOURCE_DATE_EPOCH, `documentNamespace` derives from the
//! seed, packages are sorted.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::Guid;
use crate::lock::LockedDeb;

/// What goes into the SBOM.
#[derive(Debug, Clone)]
pub struct SbomInput<'a> {
    /// The image's name: the SBOM's name and its top package.
    pub image: &'a str,
    /// The image's description (left out when empty).
    pub description: &'a str,
    /// Debian suite (purl `distro` qualifier).
    pub suite: &'a str,
    /// biovm's version (the creator tool).
    pub tool_version: &'a str,
    /// The lock's seed: the document namespace derives from it.
    pub seed: &'a str,
    /// The lock's timestamp: the document's creation time.
    pub source_date_epoch: u64,
    /// The Debian packages the image has, from its lock.
    pub debian: &'a [LockedDeb],
    /// PyPI distribution files: (file name, sha256).
    pub pypi: Vec<(String, String)>,
    /// Recipe downloads: (recipe, url, sha256).
    pub downloads: Vec<(String, String, String)>,
    /// The reference data sets in the image.
    pub data: &'a [crate::data::BuiltData],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    name: String,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supplier: Option<String>,
    download_location: String,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    license_concluded: &'static str,
    license_declared: String,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

const NOASSERTION: &str = "NOASSERTION";

/// Percent-encode a purl component: everything but unreserved characters
/// (and `:`, which Debian epochs use and purl leaves as it is).
pub(crate) fn purl_encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// An SPDX identifier's idstring allows only letters, digits, `.` and `-`.
pub(crate) fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// PyPI's normalised project name (PEP 503), which purl's pypi type uses.
pub(crate) fn pypi_normalize(name: &str) -> String {
    let mut o = String::new();
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
        } else {
            if sep && !o.is_empty() {
                o.push('-');
            }
            sep = false;
            o.push(c.to_ascii_lowercase());
        }
    }
    o
}

/// Project name and version from a wheel (`name-version-...whl`, PEP 427)
/// or source distribution (`name-version.tar.gz`) file name.
pub(crate) fn pypi_name_version(file: &str) -> Option<(String, String)> {
    if let Some(stem) = file.strip_suffix(".whl") {
        let mut parts = stem.split('-');
        let (name, version) = (parts.next()?, parts.next()?);
        return Some((name.to_string(), version.to_string()));
    }
    let stem = [".tar.gz", ".zip", ".tar.bz2"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    let (name, version) = stem.rsplit_once('-')?;
    Some((name.to_string(), version.to_string()))
}

fn sha256(hex: &str) -> Vec<Checksum> {
    vec![Checksum {
        algorithm: "SHA256",
        checksum_value: hex.to_string(),
    }]
}

fn purl(locator: String) -> Vec<ExternalRef> {
    vec![ExternalRef {
        reference_category: "PACKAGE-MANAGER",
        reference_type: "purl",
        reference_locator: locator,
    }]
}

/// The SBOM as pretty-printed JSON (with a final newline): the image,
/// then its Debian packages, PyPI files and downloads, each contained in it.
pub(crate) fn sbom_json(i: &SbomInput) -> String {
    let ns_uuid = Guid::derive(
        i.seed,
        &format!("spdx-document:{}:{}", i.image, i.source_date_epoch),
    );
    let mut packages = vec![image_package(i)];
    packages.extend(debian_packages(i));
    packages.extend(pypi_packages(i));
    packages.extend(download_packages(i));
    packages.extend(data_packages(i));
    let relationships = relationships(&packages);
    let doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{}-sbom", i.image),
        document_namespace: format!("https://spdx.org/spdxdocs/biovm-{}-{ns_uuid}", i.image),
        creation_info: CreationInfo {
            created: super::rfc3339(i.source_date_epoch),
            creators: vec![format!("Tool: biovm-{}", i.tool_version)],
        },
        packages,
        relationships,
    };
    serde_json::to_string_pretty(&doc).expect("JSON of plain data") + "\n"
}

/// The image itself, the package every other one is contained in.
fn image_package(i: &SbomInput) -> Package {
    Package {
        name: i.image.to_string(),
        spdx_id: "SPDXRef-Image".into(),
        version_info: None,
        supplier: None,
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        checksums: Vec::new(),
        license_concluded: NOASSERTION,
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION,
        description: (!i.description.is_empty()).then(|| i.description.to_string()),
        comment: Some(format!(
            "Machine and container image built by biovm {} from Debian {}",
            i.tool_version, i.suite
        )),
        external_refs: Vec::new(),
        primary_package_purpose: Some("OPERATING-SYSTEM"),
    }
}

/// One package per Debian package (duplicates once), with its purl.
fn debian_packages(i: &SbomInput) -> Vec<Package> {
    let mut debs: Vec<&LockedDeb> = i.debian.iter().collect();
    debs.sort();
    debs.dedup();
    debs.iter()
        .enumerate()
        .map(|(n, d)| Package {
            name: d.name.clone(),
            spdx_id: format!("SPDXRef-deb-{}-{n}", id_part(&d.name)),
            version_info: Some(d.version.clone()),
            supplier: Some("Organization: Debian".into()),
            download_location: NOASSERTION.into(),
            files_analyzed: false,
            checksums: sha256(&d.sha256),
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION.into(),
            copyright_text: NOASSERTION,
            description: None,
            comment: Some(format!("Debian package, architecture {}", d.architecture)),
            external_refs: purl(format!(
                "pkg:deb/debian/{}@{}?arch={}&distro={}",
                purl_encode(&d.name),
                purl_encode(&d.version),
                purl_encode(&d.architecture),
                purl_encode(i.suite)
            )),
            primary_package_purpose: None,
        })
        .collect()
}

/// One package per PyPI distribution file, with its purl.
fn pypi_packages(i: &SbomInput) -> Vec<Package> {
    // One entry per distribution file, whichever recipes share it.
    let pypi: BTreeMap<&str, &str> = i
        .pypi
        .iter()
        .map(|(f, s)| (f.as_str(), s.as_str()))
        .collect();
    pypi.into_iter()
        .enumerate()
        .map(|(n, (file, sha))| {
            let (name, version) = pypi_name_version(file)
                .map(|(n, v)| (pypi_normalize(&n), Some(v)))
                .unwrap_or_else(|| (file.to_string(), None));
            let locator = match &version {
                Some(v) => format!("pkg:pypi/{}@{}", purl_encode(&name), purl_encode(v)),
                None => format!("pkg:pypi/{}", purl_encode(&name)),
            };
            Package {
                name: name.clone(),
                spdx_id: format!("SPDXRef-pypi-{}-{n}", id_part(&name)),
                version_info: version,
                supplier: None,
                download_location: NOASSERTION.into(),
                files_analyzed: false,
                checksums: sha256(sha),
                license_concluded: NOASSERTION,
                license_declared: NOASSERTION.into(),
                copyright_text: NOASSERTION,
                description: None,
                comment: Some(format!("PyPI distribution file {file}")),
                external_refs: purl(locator),
                primary_package_purpose: None,
            }
        })
        .collect()
}

/// One package per file a recipe downloads (duplicates once).
fn download_packages(i: &SbomInput) -> Vec<Package> {
    let mut downloads = i.downloads.clone();
    downloads.sort();
    downloads.dedup();
    downloads
        .iter()
        .enumerate()
        .map(|(n, (recipe, url, sha))| {
            let file = url
                .rsplit('/')
                .find(|s| !s.is_empty())
                .unwrap_or(url)
                .split(['?', '#'])
                .next()
                .unwrap_or(url)
                .to_string();
            Package {
                name: file.clone(),
                spdx_id: format!("SPDXRef-download-{}-{n}", id_part(&file)),
                version_info: None,
                supplier: None,
                download_location: url.clone(),
                files_analyzed: false,
                checksums: sha256(sha),
                license_concluded: NOASSERTION,
                license_declared: NOASSERTION.into(),
                copyright_text: NOASSERTION,
                description: None,
                comment: Some(format!("Downloaded for the recipe {recipe}")),
                external_refs: Vec::new(),
                primary_package_purpose: Some("FILE"),
            }
        })
        .collect()
}

/// One package per reference data set: its version, where its bytes came
/// from, the digest of its content, and its licence as declared.
fn data_packages(i: &SbomInput) -> Vec<Package> {
    i.data
        .iter()
        .map(|d| {
            let location = if d.source.starts_with("debian:") {
                NOASSERTION.to_string()
            } else {
                d.source.clone()
            };
            // SPDX has no identifier for the public domain.
            let license = if d.license == "public-domain" {
                "LicenseRef-public-domain".to_string()
            } else {
                d.license.clone()
            };
            let folder = d.folder();
            Package {
                name: d.name.clone(),
                spdx_id: format!("SPDXRef-data-{}", id_part(&d.name)),
                version_info: Some(d.version.clone()),
                supplier: None,
                download_location: location,
                files_analyzed: false,
                checksums: d
                    .files
                    .first()
                    .map(|f| sha256(&f.sha256))
                    .unwrap_or_default(),
                license_concluded: NOASSERTION,
                license_declared: license,
                copyright_text: NOASSERTION,
                description: Some(d.summary.clone()),
                comment: Some(format!(
                    "Reference data: {} ({}), {} files in {folder}, from {}; redistributable: {}",
                    d.organism,
                    d.build,
                    d.files.len(),
                    d.source,
                    if d.redistributable { "yes" } else { "no" }
                )),
                external_refs: Vec::new(),
                primary_package_purpose: Some("OTHER"),
            }
        })
        .collect()
}

/// The document describes the image (the first of `packages`), which
/// contains every other package.
fn relationships(packages: &[Package]) -> Vec<Relationship> {
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: "SPDXRef-Image".into(),
    }];
    for p in &packages[1..] {
        relationships.push(Relationship {
            spdx_element_id: "SPDXRef-Image".into(),
            relationship_type: "CONTAINS",
            related_spdx_element: p.spdx_id.clone(),
        });
    }
    relationships
}

/// The SBOM's path in `out`.
pub(crate) fn sbom_path(out: &Path, image: &str) -> std::path::PathBuf {
    out.join(format!("{image}.spdx.json"))
}

/// Write the SBOM to `dest`.
pub fn write_sbom(dest: &Path, i: &SbomInput) -> Result<()> {
    crate::fsutil::write_atomic(dest, sbom_json(i).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(debs: &[LockedDeb]) -> SbomInput<'_> {
        SbomInput {
            image: "bio",
            description: "d",
            suite: "bookworm",
            tool_version: "0.1.0",
            seed: "s",
            source_date_epoch: 1_700_000_000,
            debian: debs,
            pypi: vec![
                ("MultiQC-1.14-py3-none-any.whl".into(), "ab".repeat(32)),
                ("MultiQC-1.14-py3-none-any.whl".into(), "ab".repeat(32)),
            ],
            downloads: vec![(
                "tool".into(),
                "https://example.org/dl/tool-1.0.tar.gz".into(),
                "cd".repeat(32),
            )],
            data: &[],
        }
    }

    fn debs() -> Vec<LockedDeb> {
        vec![
            LockedDeb {
                name: "libstdc++6".into(),
                version: "12.2.0-14+deb12u1".into(),
                architecture: "amd64".into(),
                sha256: "11".repeat(32),
            },
            LockedDeb {
                name: "bwa".into(),
                version: "1:0.7.17-7".into(),
                architecture: "amd64".into(),
                sha256: "22".repeat(32),
            },
        ]
    }

    #[test]
    fn every_package_with_version_checksum_and_purl() {
        let d = debs();
        let v: serde_json::Value = serde_json::from_str(&sbom_json(&input(&d))).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        let p = v["packages"].as_array().unwrap();
        assert_eq!(
            p.len(),
            1 + 2 + 1 + 1,
            "image, two debs, one wheel, one download"
        );
        let refs: Vec<&str> = p
            .iter()
            .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
            .collect();
        assert_eq!(
            refs,
            [
                "pkg:deb/debian/bwa@1:0.7.17-7?arch=amd64&distro=bookworm",
                "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1?arch=amd64&distro=bookworm",
                "pkg:pypi/multiqc@1.14",
            ]
        );
        assert_eq!(p[2]["SPDXID"], "SPDXRef-deb-libstdc--6-1");
        assert_eq!(p[2]["checksums"][0]["checksumValue"], "11".repeat(32));
        assert_eq!(
            p[4]["downloadLocation"],
            "https://example.org/dl/tool-1.0.tar.gz"
        );
        assert_eq!(p[4]["name"], "tool-1.0.tar.gz");
        let rel = v["relationships"].as_array().unwrap();
        assert_eq!(rel.len(), 1 + 4);
        assert!(rel[1..].iter().all(|r| r["relationshipType"] == "CONTAINS"));
    }

    #[test]
    fn deterministic_and_seeded() {
        let d = debs();
        let mut rev = d.clone();
        rev.reverse();
        assert_eq!(sbom_json(&input(&d)), sbom_json(&input(&rev)), "order-free");
        let mut other = input(&d);
        other.seed = "t";
        let ns = |s: &str| {
            serde_json::from_str::<serde_json::Value>(s).unwrap()["documentNamespace"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_ne!(ns(&sbom_json(&input(&d))), ns(&sbom_json(&other)));
        assert!(ns(&sbom_json(&other)).starts_with("https://spdx.org/spdxdocs/biovm-bio-"));
    }

    #[test]
    fn pypi_file_names() {
        assert_eq!(
            pypi_name_version("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl"),
            Some(("numpy".into(), "1.26.4".into()))
        );
        assert_eq!(
            pypi_name_version("pysam-0.22.0.tar.gz"),
            Some(("pysam".into(), "0.22.0".into()))
        );
        assert_eq!(pypi_normalize("Foo_Bar.baz"), "foo-bar-baz");
        assert_eq!(pypi_name_version("README"), None);
    }
}
