//! Uploading a raw disk to an EBS snapshot with the EBS direct APIs:
//! StartSnapshot (which says the block size), PutSnapshotBlock for every
//! block that is not all zeros (with its SHA-256, from a bounded pool of
//! workers), CompleteSnapshot with the count of blocks written and the
//! linear aggregate checksum (SHA-256 over the blocks' SHA-256 digests in
//! block order).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use rand::Rng;
use reqwest::Method;
use sha2::{Digest, Sha256};

use crate::publish::http::{ApiError, Client, Request, Service};

const GIB: u64 = 1 << 30;

/// What an upload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadReport {
    pub snapshot_id: String,
    pub block_size: u64,
    pub blocks_total: u64,
    pub blocks_written: u64,
    /// Block data sent in successful PutSnapshotBlock requests.
    pub block_bytes: u64,
    pub seconds: f64,
}

pub struct Ebs<'a> {
    pub client: &'a Client,
    pub endpoint: String,
}

#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub volume_size_gib: u64,
    pub description: String,
    pub tags: Vec<(String, String)>,
    /// Blocks in flight at once.
    pub jobs: usize,
    /// Minutes the cloud keeps a pending snapshot open (StartSnapshot's `Timeout`).
    pub timeout_minutes: u32,
}

/// The linear aggregate checksum of per-block SHA-256 digests, in block order.
pub fn linear_checksum<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> String {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// The smallest volume, in GiB, that holds `bytes`.
pub fn volume_size_gib(bytes: u64) -> u64 {
    bytes.div_ceil(GIB).max(1)
}

impl<'a> Ebs<'a> {
    pub fn new(client: &'a Client, endpoint: &str) -> Ebs<'a> {
        Ebs {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
        }
    }

    fn json_request(
        &self,
        action: &'static str,
        method: Method,
        path: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
        what: String,
    ) -> Result<serde_json::Value, ApiError> {
        let mut headers = headers;
        if !body.is_empty() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let url = format!("{}{path}", self.endpoint);
        let r = self.client.send(&Request {
            service: Service::Ebs,
            action,
            method,
            url: url.clone(),
            headers,
            body,
            unsigned_payload: false,
            what: what.clone(),
        })?;
        if r.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&r.body).map_err(|e| ApiError::Transport {
            what,
            url,
            message: format!("the answer is not JSON: {e}"),
        })
    }

    /// Start a snapshot; returns its ID and the block size the API uses.
    pub fn start_snapshot(&self, s: &UploadSettings) -> Result<(String, u64)> {
        // One token for every retry of this call, so a retried start whose
        // first answer was lost does not open a second snapshot.
        let token: String = {
            let mut r = rand::thread_rng();
            (0..32)
                .map(|_| format!("{:x}", r.gen_range(0..16u8)))
                .collect()
        };
        let body = serde_json::json!({
            "VolumeSize": s.volume_size_gib,
            "Description": s.description,
            "Timeout": s.timeout_minutes,
            "ClientToken": token,
            "Tags": s.tags.iter().map(|(k, v)| serde_json::json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
        });
        let v = self.json_request(
            "ebs:StartSnapshot",
            Method::POST,
            "/snapshots",
            Vec::new(),
            body.to_string().as_bytes(),
            "StartSnapshot".to_string(),
        )?;
        let id = v
            .get("SnapshotId")
            .and_then(|i| i.as_str())
            .ok_or_else(|| anyhow!("StartSnapshot: the answer has no SnapshotId: {v}"))?
            .to_string();
        let block_size = v
            .get("BlockSize")
            .and_then(|b| b.as_u64())
            .ok_or_else(|| anyhow!("StartSnapshot: the answer has no BlockSize: {v}"))?;
        if block_size < 512 || !block_size.is_power_of_two() || block_size > (64 << 20) {
            bail!("StartSnapshot: the cloud answered an unusable block size {block_size} for {id}");
        }
        Ok((id, block_size))
    }

    fn put_block(
        &self,
        snapshot: &str,
        index: u64,
        data: &[u8],
        checksum: &str,
        progress: u64,
    ) -> Result<(), ApiError> {
        let headers = vec![
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
            ("x-amz-data-length".to_string(), data.len().to_string()),
            ("x-amz-checksum".to_string(), checksum.to_string()),
            ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
            ("x-amz-progress".to_string(), progress.to_string()),
        ];
        self.client.send(&Request {
            service: Service::Ebs,
            action: "ebs:PutSnapshotBlock",
            method: Method::PUT,
            url: format!("{}/snapshots/{snapshot}/blocks/{index}", self.endpoint),
            headers,
            body: data,
            // The block's integrity is carried by its SHA-256 header, as the
            // API defines; the signature does not cover the data.
            unsigned_payload: true,
            what: format!("PutSnapshotBlock {index} of {snapshot}"),
        })?;
        Ok(())
    }

    pub fn complete_snapshot(
        &self,
        snapshot: &str,
        changed: u64,
        checksum: &str,
    ) -> Result<String> {
        let headers = vec![
            ("x-amz-changedblockscount".to_string(), changed.to_string()),
            ("x-amz-checksum".to_string(), checksum.to_string()),
            ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
            (
                "x-amz-checksum-aggregation-method".to_string(),
                "LINEAR".to_string(),
            ),
        ];
        let v = self.json_request(
            "ebs:CompleteSnapshot",
            Method::POST,
            &format!("/snapshots/completion/{snapshot}"),
            headers,
            b"",
            format!("CompleteSnapshot {snapshot}"),
        )?;
        Ok(v.get("Status")
            .and_then(|s| s.as_str())
            .unwrap_or("pending")
            .to_string())
    }

    /// Upload `disk` into a new snapshot and complete it.
    pub fn upload(
        &self,
        disk: &Path,
        s: &UploadSettings,
        progress: &crate::progress::Stage<'_>,
    ) -> Result<UploadReport> {
        let started = Instant::now();
        let file = File::open(disk).with_context(|| format!("cannot open {}", disk.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot stat {}", disk.display()))?
            .len();
        if size > s.volume_size_gib * GIB {
            bail!(
                "{} is {} bytes, more than the {} GiB volume",
                disk.display(),
                size,
                s.volume_size_gib
            );
        }
        let (snapshot, block_size) = self.start_snapshot(s)?;
        log::info!("snapshot {snapshot} started, block size {block_size}");
        let blocks = size.div_ceil(block_size);
        progress.set_total(size);

        let next = AtomicU64::new(0);
        let done = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        let digests: Mutex<BTreeMap<u64, [u8; 32]>> = Mutex::new(BTreeMap::new());
        let bytes = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..s.jobs.max(1) {
                scope.spawn(|| {
                    let mut buf = vec![0u8; block_size as usize];
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= blocks {
                            return;
                        }
                        let off = i * block_size;
                        let n = (size - off).min(block_size) as usize;
                        let result = (|| -> Result<()> {
                            buf.fill(0);
                            file.read_exact_at(&mut buf[..n], off).with_context(|| {
                                format!("cannot read {} at offset {off}", disk.display())
                            })?;
                            if buf.iter().all(|&b| b == 0) {
                                return Ok(());
                            }
                            // A short last block goes up padded with zeros
                            // to the full block size.
                            let digest: [u8; 32] = Sha256::digest(&buf).into();
                            let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
                            let pct = (done.load(Ordering::Relaxed) * 100) / blocks.max(1);
                            self.put_block(&snapshot, i, &buf, &checksum, pct)?;
                            bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                            digests.lock().unwrap().insert(i, digest);
                            Ok(())
                        })();
                        match result {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                                progress.inc(n as u64);
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                first_error.lock().unwrap().get_or_insert(e);
                                return;
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e.context(format!(
                "uploading {} to snapshot {snapshot} failed (the unfinished snapshot expires after {} minutes)",
                disk.display(),
                s.timeout_minutes
            )));
        }
        let digests = digests.into_inner().unwrap();
        let changed = digests.len() as u64;
        let checksum = linear_checksum(digests.values());
        let status = self.complete_snapshot(&snapshot, changed, &checksum)?;
        log::info!("snapshot {snapshot}: {changed} of {blocks} blocks written, {status}");
        Ok(UploadReport {
            snapshot_id: snapshot,
            block_size,
            blocks_total: blocks,
            blocks_written: changed,
            block_bytes: bytes.into_inner(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_checksum_is_sha256_of_concatenated_digests() {
        let a: [u8; 32] = Sha256::digest(b"a").into();
        let b: [u8; 32] = Sha256::digest(b"b").into();
        let mut cat = Vec::new();
        cat.extend_from_slice(&a);
        cat.extend_from_slice(&b);
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&cat));
        assert_eq!(linear_checksum([&a, &b]), expected);
        assert_ne!(linear_checksum([&b, &a]), expected);
    }

    #[test]
    fn volume_sizes_round_up_to_gib() {
        assert_eq!(volume_size_gib(1), 1);
        assert_eq!(volume_size_gib(GIB), 1);
        assert_eq!(volume_size_gib(GIB + 1), 2);
        assert_eq!(volume_size_gib(3 * GIB), 3);
    }
}
