//! AMI bundles as `ec2-bundle-image` and euca2ools make them: the raw disk
//! in a tar archive, gzipped, encrypted with AES-128-CBC under a random key
//! and IV (PKCS#7 padding, as `openssl enc` does), split into parts of
//! 10 MiB, and described by `<name>.manifest.xml`: the SHA-1 of the tar
//! stream, each part's SHA-1, the key and IV (as hex text) encrypted with
//! RSA PKCS#1 v1.5 for the cloud's certificate and for the user's, and an
//! RSA-SHA1 signature by the user's key over the `<machine_configuration>`
//! and `<image>` elements exactly as written.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use anyhow::{bail, Context, Result};
use rand::RngCore;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{Pkcs1v15Encrypt, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha1::{Digest, Sha1};

use crate::fsutil;
use crate::publish::xml::escape;

pub const PART_SIZE: usize = 10 << 20;
pub const MANIFEST_VERSION: &str = "2007-10-10";

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

/// The public key of a PEM certificate.
pub fn cert_public_key(path: &Path) -> Result<RsaPublicKey> {
    use x509_cert::der::{DecodePem, Encode};
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read certificate {}", path.display()))?;
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes())
        .with_context(|| format!("{} is not a PEM X.509 certificate", path.display()))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .with_context(|| format!("{}: cannot read its public key", path.display()))?;
    RsaPublicKey::from_public_key_der(&spki).with_context(|| {
        format!(
            "{}: the certificate's key is not an RSA key",
            path.display()
        )
    })
}

/// An RSA private key in PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
pub fn private_key(path: &Path) -> Result<RsaPrivateKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read private key {}", path.display()))?;
    RsaPrivateKey::from_pkcs1_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs8_pem(&pem))
        .map_err(|_| {
            anyhow::anyhow!(
                "{} is not an unencrypted RSA private key in PEM",
                path.display()
            )
        })
}

/// Who the bundle is for and who signs it.
pub struct Keys {
    pub cloud: RsaPublicKey,
    pub user: RsaPublicKey,
    pub user_private: RsaPrivateKey,
    /// The user's 12-digit account number.
    pub account_id: String,
}

impl Keys {
    pub fn load(
        cloud_cert: &Path,
        user_cert: &Path,
        user_key: &Path,
        account_id: &str,
    ) -> Result<Keys> {
        let keys = Keys {
            cloud: cert_public_key(cloud_cert)?,
            user: cert_public_key(user_cert)?,
            user_private: private_key(user_key)?,
            account_id: account_id.to_string(),
        };
        if RsaPublicKey::from(&keys.user_private) != keys.user {
            bail!(
                "the private key {} does not belong to the certificate {}",
                user_key.display(),
                user_cert.display()
            );
        }
        Ok(keys)
    }
}

/// A finished bundle in a folder.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    /// `<name>.manifest.xml`.
    pub manifest: String,
    /// Part file names, in order.
    pub parts: Vec<String>,
    pub bundled_size: u64,
}

/// Passes bytes through, hashing them.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha1,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// AES-128-CBC over a stream; `finish` pads the last block (PKCS#7).
struct CbcWriter<W: Write> {
    inner: W,
    enc: Aes128CbcEnc,
    pending: Vec<u8>,
}

impl<W: Write> CbcWriter<W> {
    fn finish(mut self) -> io::Result<W> {
        let n = self.pending.len();
        let mut last = self.pending.clone();
        last.resize(n + 16, 0);
        let ct = self
            .enc
            .encrypt_padded_mut::<Pkcs7>(&mut last, n)
            .map_err(|_| io::Error::other("padding failed"))?;
        self.inner.write_all(ct)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for CbcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let full = self.pending.len() / 16 * 16;
        if full >= 64 << 10 {
            let mut chunk: Vec<u8> = self.pending.drain(..full).collect();
            for block in chunk.chunks_exact_mut(16) {
                self.enc.encrypt_block_mut(block.into());
            }
            self.inner.write_all(&chunk)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Splits a stream into part files of `size` bytes, hashing each.
struct PartWriter {
    dir: PathBuf,
    name: String,
    size: usize,
    current: Option<(File, Sha1, usize)>,
    parts: Vec<(String, String)>,
    total: u64,
}

impl PartWriter {
    fn part_name(&self, i: usize) -> String {
        format!("{}.part.{i:02}", self.name)
    }
    fn close_current(&mut self) -> io::Result<()> {
        if let Some((f, h, _)) = self.current.take() {
            f.sync_all()?;
            let name = self.part_name(self.parts.len());
            self.parts.push((name, fsutil::hex(&h.finalize())));
        }
        Ok(())
    }
    fn finish(mut self) -> io::Result<(Vec<(String, String)>, u64)> {
        self.close_current()?;
        Ok((self.parts, self.total))
    }
}

impl Write for PartWriter {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            if self.current.is_none() {
                let path = self.dir.join(self.part_name(self.parts.len()));
                self.current = Some((File::create(&path)?, Sha1::new(), 0));
            }
            let (f, h, used) = self.current.as_mut().expect("a part is open");
            let take = (self.size - *used).min(buf.len());
            f.write_all(&buf[..take])?;
            h.update(&buf[..take]);
            *used += take;
            self.total += take as u64;
            buf = &buf[take..];
            if *used == self.size {
                self.close_current()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn rsa_hex(key: &RsaPublicKey, data: &[u8]) -> Result<String> {
    let ct = key
        .encrypt(&mut rand::thread_rng(), Pkcs1v15Encrypt, data)
        .context("RSA encryption failed")?;
    Ok(fsutil::hex(&ct))
}

/// Bundle the raw disk `raw` as `name` into `out`, a folder that is
/// written under a temporary name and renamed when complete (an earlier
/// bundle there is replaced).
pub fn bundle(raw: &Path, name: &str, out: &Path, keys: &Keys) -> Result<Bundle> {
    let tmp = fsutil::Scratch::beside(out)?;
    let b = write_bundle(raw, name, tmp.path(), keys)?;
    tmp.replace(out)?;
    Ok(Bundle {
        dir: out.to_path_buf(),
        ..b
    })
}

fn write_bundle(raw: &Path, name: &str, dir: &Path, keys: &Keys) -> Result<Bundle> {
    let mut key = [0u8; 16];
    let mut iv = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut key);
    rand::thread_rng().fill_bytes(&mut iv);
    let (key_hex, iv_hex) = (fsutil::hex(&key), fsutil::hex(&iv));

    let mut input = File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let image_size = input.metadata()?.len();
    let file_name = raw
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{name}.img"));

    let parts = PartWriter {
        dir: dir.to_path_buf(),
        name: name.to_string(),
        size: PART_SIZE,
        current: None,
        parts: Vec::new(),
        total: 0,
    };
    let cbc = CbcWriter {
        inner: parts,
        enc: Aes128CbcEnc::new(&key.into(), &iv.into()),
        pending: Vec::new(),
    };
    let gz = flate2::write::GzEncoder::new(cbc, flate2::Compression::fast());
    let hashing = HashingWriter {
        inner: gz,
        hash: Sha1::new(),
    };
    let mut tar = tar::Builder::new(hashing);
    let mut header = tar::Header::new_gnu();
    header.set_size(image_size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    let io_err = |e: io::Error| {
        anyhow::anyhow!(
            "bundling {} into {} failed: {e}",
            raw.display(),
            dir.display()
        )
    };
    tar.append_data(&mut header, &file_name, (&mut input).take(image_size))
        .map_err(io_err)?;
    let hashing = tar.into_inner().map_err(io_err)?;
    let digest = fsutil::hex(&hashing.hash.finalize());
    let cbc = hashing.inner.finish().map_err(io_err)?;
    let parts = cbc.finish().map_err(io_err)?;
    let (part_list, bundled_size) = parts.finish().map_err(io_err)?;

    let mc = "<machine_configuration><architecture>x86_64</architecture>\
<block_device_mapping><mapping><virtual>ami</virtual><device>sda</device></mapping>\
<mapping><virtual>root</virtual><device>/dev/sda</device></mapping></block_device_mapping>\
</machine_configuration>"
        .to_string();
    let mut image = format!(
        "<image><name>{}</name><user>{}</user><digest algorithm=\"SHA1\">{digest}</digest>\
<size>{image_size}</size><bundled_size>{bundled_size}</bundled_size><type>machine</type>",
        escape(&file_name),
        escape(&keys.account_id)
    );
    image.push_str(&format!(
        "<ec2_encrypted_key algorithm=\"AES-128-CBC\">{}</ec2_encrypted_key>\
<user_encrypted_key algorithm=\"AES-128-CBC\">{}</user_encrypted_key>\
<ec2_encrypted_iv>{}</ec2_encrypted_iv><user_encrypted_iv>{}</user_encrypted_iv>",
        rsa_hex(&keys.cloud, key_hex.as_bytes())?,
        rsa_hex(&keys.user, key_hex.as_bytes())?,
        rsa_hex(&keys.cloud, iv_hex.as_bytes())?,
        rsa_hex(&keys.user, iv_hex.as_bytes())?,
    ));
    image.push_str(&format!("<parts count=\"{}\">", part_list.len()));
    for (i, (file, sha1)) in part_list.iter().enumerate() {
        image.push_str(&format!(
            "<part index=\"{i}\"><filename>{}</filename><digest algorithm=\"SHA1\">{sha1}</digest></part>",
            escape(file)
        ));
    }
    image.push_str("</parts></image>");
    let signed = Sha1::digest(format!("{mc}{image}").as_bytes());
    let signature = keys
        .user_private
        .sign(Pkcs1v15Sign::new::<Sha1>(), &signed)
        .context("signing the manifest failed")?;
    let manifest = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<manifest><version>{MANIFEST_VERSION}</version>\
<bundler><name>biovm</name><version>{}</version><release>0</release></bundler>{mc}{image}\
<signature>{}</signature></manifest>\n",
        env!("CARGO_PKG_VERSION"),
        fsutil::hex(&signature)
    );
    let manifest_name = format!("{name}.manifest.xml");
    std::fs::write(dir.join(&manifest_name), manifest)
        .with_context(|| format!("cannot write {}", dir.join(&manifest_name).display()))?;
    Ok(Bundle {
        dir: dir.to_path_buf(),
        manifest: manifest_name,
        parts: part_list.into_iter().map(|(n, _)| n).collect(),
        bundled_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockDecryptMut;

    #[test]
    fn cbc_writer_matches_one_shot_encryption() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        for len in [0usize, 1, 15, 16, 17, 70_000, 200_003] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut w = CbcWriter {
                inner: Vec::new(),
                enc: Aes128CbcEnc::new(&key.into(), &iv.into()),
                pending: Vec::new(),
            };
            for chunk in data.chunks(4099) {
                w.write_all(chunk).unwrap();
            }
            let ct = w.finish().unwrap();
            assert_eq!(ct.len(), (len / 16 + 1) * 16);
            let mut buf = ct.clone();
            let pt = cbc::Decryptor::<aes::Aes128>::new(&key.into(), &iv.into())
                .decrypt_padded_mut::<Pkcs7>(&mut buf)
                .unwrap();
            assert_eq!(pt, &data[..], "length {len}");
        }
    }

    #[test]
    fn parts_split_at_the_part_size() {
        let d = tempfile::tempdir().unwrap();
        let mut w = PartWriter {
            dir: d.path().to_path_buf(),
            name: "x".into(),
            size: 10,
            current: None,
            parts: Vec::new(),
            total: 0,
        };
        w.write_all(&[1u8; 25]).unwrap();
        let (parts, total) = w.finish().unwrap();
        assert_eq!(total, 25);
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x.part.00", "x.part.01", "x.part.02"]);
        assert_eq!(std::fs::read(d.path().join("x.part.02")).unwrap().len(), 5);
        assert_eq!(parts[0].1, fsutil::hex(&Sha1::digest([1u8; 10])));
    }
}
