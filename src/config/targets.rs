//! `[targets]` of an image file: the clouds `biovm publish` puts it in.

use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::names::Named;

use super::diag::quoted_list;
use super::model::{BootMode, Ec2BootMode, Ec2Target, EucalyptusTarget, Targets, EC2_VOLUME_TYPES};
use super::paths::normalize_path;
use super::raw::{RawEc2Target, RawEucalyptusTarget, RawTargets};
use super::validate::{self, Ctx, Invalid};

fn invalid(message: String, help: &str) -> Invalid {
    Invalid {
        message,
        help: Some(help.to_string()),
    }
}

/// A region name: lowercase letters, digits and `-`.
fn region(s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid region `{s}`"),
            "a region is lowercase letters, digits and `-`, e.g. \"us-east-1\"",
        ))
    }
}

/// An S3 bucket name as path-style addressing takes it.
fn bucket(s: &str) -> Result<(), Invalid> {
    let ok = (3..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid bucket name `{s}`"),
            "a bucket name is 3 to 63 lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit",
        ))
    }
}

fn account_id(s: &str) -> Result<(), Invalid> {
    if s.len() == 12 && s.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid account id `{s}`"),
            "an account id is 12 digits, e.g. \"123456789012\"",
        ))
    }
}

fn endpoint(cx: &mut Ctx<'_>, value: &Option<Spanned<String>>) -> Option<String> {
    value.as_ref().map(|e| {
        cx.check(e, |s| validate::http_url(s));
        e.get_ref().trim_end_matches('/').to_string()
    })
}

/// A file named relative to the image file's folder, which must exist.
fn existing_file(cx: &mut Ctx<'_>, value: &Spanned<String>, image_dir: &Path) -> PathBuf {
    let p = normalize_path(&image_dir.join(value.get_ref()));
    if value.get_ref().is_empty() || !p.is_file() {
        let d = cx
            .diag(value.span(), format!("file `{}` not found", p.display()))
            .with_help("paths are relative to the image file's folder");
        cx.push(d);
    }
    p
}

pub(crate) fn targets(
    cx: &mut Ctx<'_>,
    raw: Option<&RawTargets>,
    disk_boot: &[BootMode],
    disk_size: Option<u64>,
    image_dir: &Path,
) -> Targets {
    let Some(raw) = raw else {
        return Targets::default();
    };
    Targets {
        ec2: raw
            .ec2
            .as_ref()
            .map(|e| ec2(cx, e.get_ref(), disk_boot, disk_size)),
        eucalyptus: raw
            .eucalyptus
            .as_ref()
            .map(|e| eucalyptus(cx, e.get_ref(), image_dir)),
    }
}

fn ec2(
    cx: &mut Ctx<'_>,
    r: &RawEc2Target,
    disk_boot: &[BootMode],
    disk_size: Option<u64>,
) -> Ec2Target {
    let mut t = Ec2Target::default();
    if let Some(reg) = &r.region {
        cx.check(reg, |s| region(s));
        t.region = Some(reg.get_ref().clone());
    }
    t.ec2_endpoint = endpoint(cx, &r.ec2_endpoint);
    t.ebs_endpoint = endpoint(cx, &r.ebs_endpoint);
    if let Some(vt) = &r.volume_type {
        if EC2_VOLUME_TYPES.contains(&vt.get_ref().as_str()) {
            t.volume_type = vt.get_ref().clone();
        } else {
            let d = cx
                .diag(vt.span(), format!("unknown volume type `{}`", vt.get_ref()))
                .with_suggestion(vt.get_ref(), EC2_VOLUME_TYPES);
            let d = if d.help.is_none() {
                d.with_help(format!("supported: {}", quoted_list(&EC2_VOLUME_TYPES)))
            } else {
                d
            };
            cx.push(d);
        }
    }
    if let Some(vs) = &r.volume_size {
        if let Some(bytes) = cx.check(vs, |s| validate::size(s)) {
            if bytes % (1 << 30) != 0 {
                cx.invalid(
                    vs,
                    invalid(
                        format!(
                            "volume size `{}` is not a whole number of GiB",
                            vs.get_ref()
                        ),
                        "EBS volumes come in whole GiB, e.g. \"8GiB\"",
                    ),
                );
            } else if disk_size.is_some_and(|d| bytes < d) {
                cx.invalid(
                    vs,
                    invalid(
                        format!(
                            "volume size `{}` is smaller than the disk ({})",
                            vs.get_ref(),
                            super::format_size(disk_size.unwrap_or(0))
                        ),
                        "give at least the `[disk] size`, or leave it out to use the disk's size",
                    ),
                );
            } else {
                t.volume_size_bytes = Some(bytes);
            }
        }
    }
    if let Some(bm) = &r.boot_mode {
        let names = Ec2BootMode::names();
        match Ec2BootMode::named(bm.get_ref()) {
            Some(mode) if mode.fits(disk_boot) || disk_boot.is_empty() => t.boot_mode = Some(mode),
            Some(mode) => {
                let boots: Vec<&str> = disk_boot.iter().map(|b| b.as_str()).collect();
                let d = cx
                    .diag(
                        bm.span(),
                        format!(
                            "boot mode `{}` does not fit the disk, which boots {}",
                            mode.as_str(),
                            quoted_list(&boots)
                        ),
                    )
                    .with_help(format!(
                        "use \"{}\", or leave it out to follow `[disk] boot`",
                        Ec2BootMode::for_disk(disk_boot).as_str()
                    ));
                cx.push(d);
            }
            None => {
                let d = cx
                    .diag(bm.span(), format!("unknown boot mode `{}`", bm.get_ref()))
                    .with_suggestion(bm.get_ref(), names.iter().copied());
                let d = if d.help.is_none() {
                    d.with_help(format!("supported: {}", quoted_list(&names)))
                } else {
                    d
                };
                cx.push(d);
            }
        }
    }
    t.ena = r.ena.unwrap_or(true);
    t.imds_v2 = r.imds_v2.unwrap_or(true);
    if let Some(it) = &r.instance_type {
        cx.check(it, |s| instance_type(s));
        t.instance_type = Some(it.get_ref().clone());
    }
    t
}

/// An EC2 instance type: a family and a size (`t3.medium`, `m7i-flex.large`).
fn instance_type(s: &str) -> Result<(), Invalid> {
    let ok = s.split_once('.').is_some_and(|(family, size)| {
        family.starts_with(|c: char| c.is_ascii_lowercase())
            && family
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !size.is_empty()
            && size
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("invalid instance type `{s}`"),
            "an instance type is a family and a size, e.g. \"t3.medium\"",
        ))
    }
}

/// Checks an instance type given on the command line, with the same rule.
pub(crate) fn check_instance_type(s: &str) -> Result<(), String> {
    instance_type(s).map_err(|e| format!("{}: {}", e.message, e.help.unwrap_or_default()))
}

fn eucalyptus(cx: &mut Ctx<'_>, r: &RawEucalyptusTarget, image_dir: &Path) -> EucalyptusTarget {
    let region_name = match &r.region {
        Some(reg) => {
            cx.check(reg, |s| region(s));
            reg.get_ref().clone()
        }
        None => "eucalyptus".to_string(),
    };
    cx.check(&r.ec2_endpoint, |s| validate::http_url(s));
    cx.check(&r.s3_endpoint, |s| validate::http_url(s));
    cx.check(&r.bucket, |s| bucket(s));
    let cloud_cert = existing_file(cx, &r.cloud_cert, image_dir);
    let user_cert = r
        .user_cert
        .as_ref()
        .map(|c| existing_file(cx, c, image_dir));
    let user_key = r.user_key.as_ref().map(|c| existing_file(cx, c, image_dir));
    let account = r.account_id.as_ref().map(|a| {
        cx.check(a, |s| account_id(s));
        a.get_ref().clone()
    });
    EucalyptusTarget {
        region: region_name,
        ec2_endpoint: r.ec2_endpoint.get_ref().trim_end_matches('/').to_string(),
        s3_endpoint: r.s3_endpoint.get_ref().trim_end_matches('/').to_string(),
        bucket: r.bucket.get_ref().clone(),
        cloud_cert,
        user_cert,
        user_key,
        account_id: account,
    }
}

/// Checks of values given on the command line, with the same rules.
pub(crate) fn check_bucket(s: &str) -> Result<(), String> {
    bucket(s).map_err(|e| format!("{}: {}", e.message, e.help.unwrap_or_default()))
}

pub(crate) fn check_account_id(s: &str) -> Result<(), String> {
    account_id(s).map_err(|e| format!("{}: {}", e.message, e.help.unwrap_or_default()))
}
