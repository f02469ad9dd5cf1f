//! A local stand-in for the EC2 instance metadata service (IMDSv2), so a
//! test boot of an EC2 disk meets its data source as on EC2: cloud-init
//! finds an "Amazon EC2" machine (SMBIOS), asks 169.254.169.254 for a
//! session token (PUT /latest/api/token) and reads the metadata, the public
//! key and the user data with it.
//!
//! QEMU's user networking runs `biovm imds-serve --state DIR` for every
//! connection the guest opens to 169.254.169.254:80 (`guestfwd=...-cmd:`),
//! with the connection on its stdin and stdout; it answers from
//! `DIR/imds.json` and appends one line per request to `DIR/imds.log`, from
//! which the host judges whether the guest used IMDSv2 for every read.
//! Without a valid token a read gets 401, as on EC2 with IMDSv2 required.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The guest's address of the metadata service.
pub const ADDRESS: &str = "169.254.169.254";

/// The MAC address of a test guest's one network interface: QEMU's default
/// for the first NIC, which biovm's guests do not change.
macro_rules! guest_mac {
    () => {
        "52:54:00:12:34:56"
    };
}
/// [`guest_mac!`] as a constant.
pub const GUEST_MAC: &str = guest_mac!();

/// What the service tells the instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub token: String,
    pub instance_id: String,
    pub ami_id: String,
    pub instance_type: String,
    pub region: String,
    pub public_key: String,
    pub user_data: String,
}

impl Config {
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        fs::write(dir.join("imds.json"), serde_json::to_vec_pretty(self)?)?;
        let _ = fs::remove_file(dir.join("imds.log"));
        Ok(())
    }

    fn read(dir: &Path) -> Result<Config> {
        let p = dir.join("imds.json");
        let b = fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_slice(&b).with_context(|| format!("{}: not an IMDS config", p.display()))
    }

    /// The meta-data tree: folders end with `/`.
    ///
    /// With the instance's network interface under `network/`, as EC2
    /// always serves it: cloud-init (22.4) reads the metadata of an AWS
    /// machine without `network` as stale and crawls the whole service
    /// again each time it asks for the network configuration, twice a
    /// boot (63 requests, not 29). The guest's one NIC has QEMU's default
    /// address ([`GUEST_MAC`]); the image's cloud-init does not apply the
    /// configuration (biovm's images configure DHCP themselves).
    fn meta_data(&self) -> BTreeMap<&'static str, String> {
        let az = format!("{}a", self.region);
        [
            ("ami-id", self.ami_id.clone()),
            ("ami-launch-index", "0".into()),
            ("hostname", "ip-169-254-0-15.ec2.internal".into()),
            ("instance-id", self.instance_id.clone()),
            ("instance-type", self.instance_type.clone()),
            ("local-hostname", "ip-169-254-0-15.ec2.internal".into()),
            ("local-ipv4", "169.254.0.15".into()),
            ("mac", GUEST_MAC.into()),
            (
                concat!("network/interfaces/macs/", guest_mac!(), "/device-number"),
                "0".into(),
            ),
            (
                concat!("network/interfaces/macs/", guest_mac!(), "/local-ipv4s"),
                "169.254.0.15".into(),
            ),
            (
                concat!("network/interfaces/macs/", guest_mac!(), "/vpc-id"),
                "vpc-0b1a5e5e0b1a5e5e0".into(),
            ),
            ("placement/availability-zone", az),
            ("placement/region", self.region.clone()),
            ("public-keys/0/openssh-key", self.public_key.clone()),
            ("services/domain", "amazonaws.com".into()),
            ("services/partition", "aws".into()),
        ]
        .into_iter()
        .collect()
    }

    fn identity_document(&self) -> String {
        serde_json::json!({
            "accountId": "000000000000",
            "architecture": "x86_64",
            "availabilityZone": format!("{}a", self.region),
            "imageId": self.ami_id,
            "instanceId": self.instance_id,
            "instanceType": self.instance_type,
            "privateIp": "169.254.0.15",
            "region": self.region,
            "version": "2017-09-30",
        })
        .to_string()
    }

    /// The answer to `GET path` (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        let path = path.split('?').next().unwrap_or("");
        if path == "/" || path.is_empty() {
            return (
                200,
                "2009-04-04\n2016-09-02\n2018-09-24\n2021-03-23\nlatest".into(),
            );
        }
        let rest = path.trim_start_matches('/');
        let Some((_version, rest)) = rest.split_once('/') else {
            return (200, "dynamic\nmeta-data\nuser-data".into());
        };
        if rest == "user-data" {
            return (200, self.user_data.clone());
        }
        match rest.trim_end_matches('/') {
            "dynamic" => return (200, "instance-identity/".into()),
            "dynamic/instance-identity" => return (200, "document".into()),
            "dynamic/instance-identity/document" => return (200, self.identity_document()),
            _ => {}
        }
        let Some(key) = rest
            .strip_prefix("meta-data")
            .map(|k| k.trim_start_matches('/'))
        else {
            return (404, "not found".into());
        };
        if key == "public-keys" || key == "public-keys/" {
            return (200, "0=biovm-test".into());
        }
        let tree = self.meta_data();
        if let Some(v) = tree.get(key) {
            return (200, v.clone());
        }
        // A folder: list its children, folders with a trailing `/`.
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{}/", key.trim_end_matches('/'))
        };
        let mut children: Vec<String> = tree
            .keys()
            .filter_map(|k| k.strip_prefix(prefix.as_str()))
            .map(|k| match k.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => k.to_string(),
            })
            .collect();
        children.dedup();
        if children.is_empty() {
            (404, "not found".into())
        } else {
            (200, children.join("\n"))
        }
    }
}

/// Serve the HTTP requests of one connection (`input`, `output`) until the
/// guest closes it, logging each to `dir/imds.log`.
pub fn serve(dir: &Path, input: impl Read, mut output: impl Write) -> Result<()> {
    let cfg = Config::read(dir)?;
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("imds.log"))?;
    let mut r = BufReader::new(input);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let path = words.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        let token_ok = headers.get("x-aws-ec2-metadata-token") == Some(&cfg.token);
        let (status, text) = match (method.as_str(), path.as_str()) {
            ("PUT", "/latest/api/token") => {
                if headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
                    (200, cfg.token.clone())
                } else {
                    (400, "missing x-aws-ec2-metadata-token-ttl-seconds".into())
                }
            }
            ("GET", p) if token_ok => cfg.get(p),
            ("GET", _) => (401, "IMDSv2 session token required".into()),
            _ => (405, "method not allowed".into()),
        };
        writeln!(
            log,
            "{method} {path} token={} {status}",
            if token_ok { "yes" } else { "no" }
        )?;
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Method Not Allowed",
        };
        write!(
            output,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
        output.flush()?;
        if headers
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return Ok(());
        }
    }
}

/// What the log says about the guest's use of the service: one line for a
/// judged check (`IMDSv2: ...`), listing any read made without a token.
pub fn audit(dir: &Path) -> String {
    let log = fs::read_to_string(dir.join("imds.log")).unwrap_or_default();
    let tokens = log
        .lines()
        .filter(|l| l.starts_with("PUT /latest/api/token "))
        .count();
    let reads: Vec<&str> = log.lines().filter(|l| l.starts_with("GET ")).collect();
    let without: Vec<&str> = reads
        .iter()
        .copied()
        .filter(|l| l.contains(" token=no "))
        .collect();
    let ok_reads = reads.iter().filter(|l| l.ends_with(" 200")).count();
    let mut s = format!(
        "{tokens} token requests, {} reads ({ok_reads} answered), {} without a token\n",
        reads.len(),
        without.len()
    );
    for l in without.iter().take(5) {
        s.push_str(&format!("without a token: {l}\n"));
    }
    if tokens > 0 && ok_reads > 0 && without.is_empty() {
        s.push_str("IMDSv2: every read carried a session token\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            token: "tok".into(),
            instance_id: "i-0123".into(),
            ami_id: "ami-1".into(),
            instance_type: "t3.micro".into(),
            region: "us-east-1".into(),
            public_key: "ssh-ed25519 AAAA k".into(),
            user_data: "#cloud-config\n".into(),
        }
    }

    fn exchange(dir: &Path, requests: &str) -> String {
        let mut out = Vec::new();
        serve(dir, requests.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_token_first_then_reads_with_it() {
        let d = tempfile::tempdir().unwrap();
        cfg().write(d.path()).unwrap();
        let out = exchange(
            d.path(),
            "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n\
GET /2021-03-23/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n\
GET /2021-03-23/meta-data/public-keys/0/openssh-key HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n\
GET /2021-03-23/meta-data/placement/ HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n\
GET /2021-03-23/user-data HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n\
GET /2021-03-23/dynamic/instance-identity HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n\
GET /2021-03-23/dynamic/instance-identity/document HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n",
        );
        let bodies: Vec<&str> = out.split("\r\n\r\n").skip(1).collect();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(bodies[0].starts_with("tok"), "{out}");
        assert!(
            bodies[1].starts_with("ami-id\nami-launch-index\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-keys/\nservices/"),
            "{out}"
        );
        assert!(bodies[2].starts_with("ssh-ed25519 AAAA k"), "{out}");
        assert!(bodies[3].starts_with("availability-zone\nregion"), "{out}");
        assert!(bodies[4].starts_with("#cloud-config\n"), "{out}");
        assert!(bodies[5].starts_with("document"), "{out}");
        let doc: serde_json::Value =
            serde_json::from_str(bodies[6].split("HTTP/1.1").next().unwrap()).unwrap();
        assert_eq!(doc["instanceId"], "i-0123");
        assert_eq!(doc["region"], "us-east-1");
        // The network interface, as EC2 serves it.
        let out = exchange(
            d.path(),
            "PUT /latest/api/token HTTP/1.1\r\n\r\n\
GET /2021-03-23/meta-data/network/interfaces/macs/ HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n\
GET /2021-03-23/meta-data/network/interfaces/macs/52:54:00:12:34:56/ HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n\
GET /2021-03-23/meta-data/network/interfaces/macs/52:54:00:12:34:56/vpc-id HTTP/1.1\r\nX-aws-ec2-metadata-token: tok\r\n\r\n",
        );
        let bodies: Vec<&str> = out.split("\r\n\r\n").skip(1).collect();
        assert!(bodies[1].starts_with("52:54:00:12:34:56/"), "{out}");
        assert!(
            bodies[2].starts_with("device-number\nlocal-ipv4s\nvpc-id"),
            "{out}"
        );
        assert!(bodies[3].starts_with("vpc-"), "{out}");
        assert!(audit(d.path()).ends_with("IMDSv2: every read carried a session token\n"));
    }

    #[test]
    fn a_read_without_the_token_is_refused_and_the_audit_says_so() {
        let d = tempfile::tempdir().unwrap();
        cfg().write(d.path()).unwrap();
        let out = exchange(
            d.path(),
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{out}");
        let a = audit(d.path());
        assert!(a.contains("1 without a token"), "{a}");
        assert!(!a.contains("IMDSv2: every read"), "{a}");
        // A token request without its TTL header is refused too.
        let out = exchange(d.path(), "PUT /latest/api/token HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }
}
