//! Vagrant box for the `virtualbox` provider.
//!
//! Follows Vagrant's "Box File Format" documentation (a tar, here in a
//! gzip stream, whose root holds `metadata.json` naming the provider) and
//! the VirtualBox provider's "Creating a Base Box" page (the box holds the
//! exported OVF package `box.ovf` + disk, and a `Vagrantfile` setting
//! `config.vm.base_mac` to the MAC in the OVF). The gzip header carries
//! mtime = SOURCE_DATE_EPOCH and no file name; tar members are normalised
//! as in every biovm archive.

use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};

use super::ova::{add_ovf_package, temp_vmdk};
use super::tarball::DetTar;
use super::FormatContext;
use crate::fsutil::AtomicFile;

/// The box's embedded Vagrantfile.
pub(crate) fn vagrantfile(ctx: &FormatContext) -> String {
    let mut s = String::from(
        "# Written by biovm: defaults for this base box.\nVagrant.configure(\"2\") do |config|\n",
    );
    s.push_str(&format!("  config.vm.base_mac = \"{}\"\n", ctx.mac()));
    if let Some(user) = ctx.user {
        let user = user.replace(['"', '\\', '#'], "");
        s.push_str(&format!("  config.ssh.username = \"{user}\"\n"));
    }
    s.push_str("end\n");
    s
}

/// Write `raw` as a Vagrant box (`.box`) at `dest`.
pub fn write_vagrant_box(raw: &Path, dest: &Path, ctx: &FormatContext) -> Result<()> {
    let vmdk = temp_vmdk(raw, dest, ctx)?;
    write_vagrant_box_from_vmdk(vmdk.path(), dest, ctx)
}

/// Write a Vagrant box at `dest` around an existing streamOptimized VMDK.
pub fn write_vagrant_box_from_vmdk(vmdk: &Path, dest: &Path, ctx: &FormatContext) -> Result<()> {
    let (a, f) = AtomicFile::create(dest)?;
    let gz = GzBuilder::new()
        .mtime(ctx.source_date_epoch.min(u64::from(u32::MAX)) as u32)
        // Stored, not compressed: nearly all of the box is the VMDK, whose
        // grains are deflated already, so compressing it again costs a
        // core for seconds and saves next to nothing.
        .write(BufWriter::new(f), Compression::none());
    let mut t = DetTar::new(gz, ctx.source_date_epoch);
    t.add_bytes("metadata.json", br#"{"provider":"virtualbox"}"#)?;
    t.add_bytes("Vagrantfile", vagrantfile(ctx).as_bytes())?;
    add_ovf_package(&mut t, "box", vmdk, ctx)?;
    let gz = t.finish()?.finish().context("cannot finish gzip stream")?;
    super::flush_buf(gz, a.path())?;
    a.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn box_has_metadata_vagrantfile_and_ovf() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let mut ctx = FormatContext::new("bio", "1", "s", 7);
        ctx.user = Some("biouser");
        let dest = d.path().join("bio.box");
        write_vagrant_box(&raw, &dest, &ctx).unwrap();
        let bytes = std::fs::read(&dest).unwrap();
        assert_eq!(&bytes[4..8], &7u32.to_le_bytes(), "gzip mtime");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let n = e.path().unwrap().to_string_lossy().into_owned();
            if n == "Vagrantfile" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert!(s.contains("config.ssh.username = \"biouser\""), "{s}");
                assert!(
                    s.contains(&format!("config.vm.base_mac = \"{}\"", ctx.mac())),
                    "{s}"
                );
            }
            if n == "box.ovf" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert!(s.contains(&ctx.mac()), "OVF MAC matches base_mac");
            }
            names.push(n);
        }
        assert_eq!(
            names,
            [
                "metadata.json",
                "Vagrantfile",
                "box.ovf",
                "box-disk001.vmdk",
                "box.mf"
            ]
        );
    }
}
