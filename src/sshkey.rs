//! SSH public keys given to images (`biovm run`, `biovm launch`): read
//! and checked once, in one place.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine;

/// The one line of an OpenSSH public key file, checked; a private key or
/// anything else is refused without showing its content.
pub fn read_public_key(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key {}", path.display()))?;
    if text.contains("PRIVATE KEY") {
        bail!(
            "{} is a private key: pass the public one (usually the same name with .pub)",
            path.display()
        );
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let kinds = ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"];
    match lines.as_slice() {
        [l] if kinds.iter().any(|k| l.starts_with(k))
            && l.split_whitespace()
                .nth(1)
                .is_some_and(|b| base64::engine::general_purpose::STANDARD.decode(b).is_ok()) =>
        {
            Ok(l.to_string())
        }
        _ => bail!(
            "{} is not an OpenSSH public key (one line such as `ssh-ed25519 AAAA... you@host`)",
            path.display()
        ),
    }
}

/// The user's default public key: `~/.ssh/id_ed25519.pub`, then
/// `id_ecdsa.pub`, then `id_rsa.pub`.
pub fn default_public_key() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; pass --ssh-key")?;
    let ssh = Path::new(&home).join(".ssh");
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|n| ssh.join(n))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "no public key in {} (make one with `ssh-keygen -t ed25519`, or pass --ssh-key FILE.pub)",
                ssh.display()
            )
        })
}

/// The private key that goes with `FILE.pub` (FILE), for the ssh line.
pub fn private_key_for(public: &Path) -> PathBuf {
    if public.extension().is_some_and(|e| e == "pub") {
        public.with_extension("")
    } else {
        public.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_checked_and_private_keys_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYv me@host\n").unwrap();
        assert_eq!(
            read_public_key(&p).unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYv me@host"
        );
        std::fs::write(
            &p,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = read_public_key(&p).unwrap_err().to_string();
        assert!(e.contains("is a private key"), "{e}");
        assert!(!e.contains("b3BlbnNzaC1rZXktdjEAAAAA"), "{e}");
        std::fs::write(&p, "hello\n").unwrap();
        let e = read_public_key(&p).unwrap_err().to_string();
        assert!(e.contains("not an OpenSSH public key"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
        // The test boots' key is a real one.
        std::fs::write(&p, format!("{}\n", crate::smoke::seed::SEED_KEY)).unwrap();
        assert_eq!(read_public_key(&p).unwrap(), crate::smoke::seed::SEED_KEY);
    }

    #[test]
    fn the_private_key_sits_next_to_the_public_one() {
        assert_eq!(
            private_key_for(Path::new("/home/me/.ssh/id_ed25519.pub")),
            PathBuf::from("/home/me/.ssh/id_ed25519")
        );
    }
}
