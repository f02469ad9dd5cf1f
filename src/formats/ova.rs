//! OVA: an OVF 1.0 package in one tar file, as VirtualBox imports it.
//!
//! Follows DMTF DSP0243 *Open Virtualization Format Specification* 1.0.0:
//! section 5.3 (OVA = tar of the descriptor first, then the files it
//! references, then the manifest; ustar), 5.1 (manifest lines
//! `SHA1(file)= hex`: OVF 1.x manifests carry SHA-1 digests, SHA-256 came
//! with OVF 2.0, and strict readers such as COT check 1.0 packages with
//! SHA-1; `SHA256SUMS` covers the whole OVA with SHA-256), 7 (Envelope with
//! `References`), 9.1 `DiskSection` (capacity in bytes, format URI of
//! streamOptimized VMDK), 9.2 `NetworkSection`, 9.4
//! `OperatingSystemSection` (CIM OS id 96 = Debian 64-bit, which VirtualBox
//! maps to Debian_64) and 8 `VirtualHardwareSection` with CIM RASD items
//! (ResourceType 3 CPU, 4 memory, 20 SATA controller with subtype AHCI, 17
//! disk, 10 Ethernet), elements in the alphabetical order the CIM schema
//! sequences require. System type `virtualbox-2.2`.

use std::io::{BufWriter, Read};
use std::path::Path;

use anyhow::{Context, Result};

use super::tarball::DetTar;
use super::FormatContext;
use crate::fsutil::{self, AtomicFile};

/// The format URI of a streamOptimized VMDK in an OVF `Disk`.
const VMDK_STREAM_FORMAT: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// Escape text for XML content and attribute values.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// The OVF 1.0 descriptor for one disk file `disk_file` of `file_size`
/// bytes holding a `capacity`-byte disk.
pub(crate) fn ovf_descriptor(
    ctx: &FormatContext,
    disk_file: &str,
    file_size: u64,
    capacity: u64,
) -> String {
    let name = xml_escape(ctx.name);
    let disk_file = xml_escape(disk_file);
    let nic = ctx.nic.ovf_subtype();
    let mac = ctx.mac();
    let cpus = ctx.cpus.max(1);
    let mem = ctx.memory_mib.max(4);
    let version = xml_escape(ctx.version);
    let description = xml_escape(if ctx.description.is_empty() {
        ctx.name
    } else {
        ctx.description
    });
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:id="file1" ovf:href="{disk_file}" ovf:size="{file_size}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{VMDK_STREAM_FORMAT}"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <ProductSection>
      <Info>Meta-information about the installed software</Info>
      <Product>{name}</Product>
      <Version>{version}</Version>
    </ProductSection>
    <AnnotationSection>
      <Info>A human-readable annotation</Info>
      <Annotation>{description}</Annotation>
    </AnnotationSection>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>{cpus} virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>{mem} MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{mem} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:Caption>disk1</rasd:Caption>
        <rasd:Description>Disk Image</rasd:Description>
        <rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>{mac}</rasd:Address>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>Ethernet adapter on 'NAT'</rasd:Caption>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>{nic}</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// Virtual disk size in bytes from a VMDK sparse header (capacity field).
pub(crate) fn vmdk_capacity(vmdk: &Path) -> Result<u64> {
    let mut h = [0u8; 20];
    std::fs::File::open(vmdk)
        .and_then(|mut f| f.read_exact(&mut h))
        .with_context(|| format!("cannot read {}", vmdk.display()))?;
    anyhow::ensure!(
        &h[0..4] == b"KDMV",
        "{} is not a sparse VMDK",
        vmdk.display()
    );
    Ok(u64::from_le_bytes(h[12..20].try_into().expect("8 bytes")) * 512)
}

/// Add `<base>.ovf`, `<base>-disk001.vmdk` and `<base>.mf` (in that
/// order) to `t`.
pub(crate) fn add_ovf_package<W: std::io::Write>(
    t: &mut DetTar<W>,
    base: &str,
    vmdk: &Path,
    ctx: &FormatContext,
) -> Result<()> {
    let disk_name = format!("{base}-disk001.vmdk");
    let file_size = std::fs::metadata(vmdk)
        .with_context(|| format!("cannot stat {}", vmdk.display()))?
        .len();
    let ovf = ovf_descriptor(ctx, &disk_name, file_size, vmdk_capacity(vmdk)?);
    let ovf_name = format!("{base}.ovf");
    let ovf_sha = fsutil::hex(&<sha1::Sha1 as sha1::Digest>::digest(ovf.as_bytes()));
    let vmdk_sha = sha1_file(vmdk)?;
    let mf = format!("SHA1({ovf_name})= {ovf_sha}\nSHA1({disk_name})= {vmdk_sha}\n");
    t.add_bytes(&ovf_name, ovf.as_bytes())?;
    t.add_file(&disk_name, vmdk)?;
    t.add_bytes(&format!("{base}.mf"), mf.as_bytes())
}

/// Lowercase hex SHA-1 of a file (the OVF 1.0 manifest digest).
fn sha1_file(path: &Path) -> Result<String> {
    use sha1::Digest;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = sha1::Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(fsutil::hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// A hidden temporary streamOptimized VMDK beside `dest`, removed when the
/// returned guard drops.
pub(crate) fn temp_vmdk(raw: &Path, dest: &Path, ctx: &FormatContext) -> Result<AtomicFile> {
    let (a, f) = super::temp_beside(dest, "disk.vmdk")?;
    drop(f);
    // Written through the stream writer into the temporary path, so the
    // guard (not a commit) decides its fate.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(a.path())?;
    super::vmdk::write_vmdk_stream(
        raw,
        BufWriter::new(f),
        ctx,
        &format!("{}-disk001.vmdk", ctx.name),
    )?;
    Ok(a)
}

/// Write `raw` as an OVA at `dest` (converting it to a streamOptimized VMDK
/// on the way).
pub fn write_ova(raw: &Path, dest: &Path, ctx: &FormatContext) -> Result<()> {
    let vmdk = temp_vmdk(raw, dest, ctx)?;
    write_ova_from_vmdk(vmdk.path(), dest, ctx)
}

/// Write an OVA at `dest` around an existing streamOptimized VMDK (so a
/// build that also ships the VMDK converts the disk once).
pub fn write_ova_from_vmdk(vmdk: &Path, dest: &Path, ctx: &FormatContext) -> Result<()> {
    let (a, f) = AtomicFile::create(dest)?;
    let mut t = DetTar::new(BufWriter::new(f), ctx.source_date_epoch);
    add_ovf_package(&mut t, ctx.name, vmdk, ctx)?;
    super::flush_buf(t.finish()?, a.path())?;
    a.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_bytes(tar: &[u8], name: &str) -> Vec<u8> {
        let mut ar = tar::Archive::new(tar);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some(name) {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                return v;
            }
        }
        panic!("{name} not in the archive");
    }

    #[test]
    fn descriptor_carries_hardware_and_escapes() {
        let mut ctx = FormatContext::new("a<b", "1", "s", 0);
        ctx.cpus = 4;
        ctx.memory_mib = 4096;
        let x = ovf_descriptor(&ctx, "a-disk001.vmdk", 123, 1 << 30);
        assert!(x.contains("ovf:id=\"a&lt;b\""));
        assert!(x.contains("ovf:capacity=\"1073741824\""));
        assert!(x.contains("<rasd:VirtualQuantity>4</rasd:VirtualQuantity>"));
        assert!(x.contains("<rasd:VirtualQuantity>4096</rasd:VirtualQuantity>"));
        assert!(x.contains("<rasd:ResourceSubType>AHCI</rasd:ResourceSubType>"));
        assert!(x.contains("virtualbox-2.2"));
        assert!(x.contains("ovf:size=\"123\""));
    }

    #[test]
    fn ova_members_in_order_with_manifest() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        let mut disk = vec![0u8; 2 << 20];
        disk[1000] = 7;
        std::fs::write(&raw, &disk).unwrap();
        let ctx = FormatContext::new("bio", "1", "s", 5);
        let dest = d.path().join("bio.ova");
        write_ova(&raw, &dest, &ctx).unwrap();
        let bytes = std::fs::read(&dest).unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        let mut mf = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let n = e.path().unwrap().to_string_lossy().into_owned();
            if n.ends_with(".mf") {
                e.read_to_string(&mut mf).unwrap();
            }
            names.push(n);
        }
        assert_eq!(names, ["bio.ovf", "bio-disk001.vmdk", "bio.mf"]);
        assert!(mf.starts_with("SHA1(bio.ovf)= "), "{mf}");
        assert!(mf.contains("SHA1(bio-disk001.vmdk)= "), "{mf}");
        let vmdk = tar_bytes(&bytes, "bio-disk001.vmdk");
        let want = fsutil::hex(&<sha1::Sha1 as sha1::Digest>::digest(&vmdk));
        assert!(
            mf.ends_with(&format!("SHA1(bio-disk001.vmdk)= {want}\n")),
            "{mf}"
        );
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "only the raw disk and the OVA remain");
    }
}
