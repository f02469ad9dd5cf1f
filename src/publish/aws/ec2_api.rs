//! The EC2 Query API (version 2016-11-15, which Eucalyptus speaks too):
//! form-encoded POSTs answered with XML.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use reqwest::Method;

use crate::publish::http::{ApiError, Client, Request, Service};
use crate::publish::xml::{Doc, Element};

pub const API_VERSION: &str = "2016-11-15";

/// Percent-encode the way SigV4 and the Query API expect: everything but
/// `A-Z a-z 0-9 - _ . ~`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The tags of a resource, as Query parameters under `prefix`
/// (`Tag` or `TagSpecification.1.Tag`).
pub fn tag_params(prefix: &str, tags: &[(String, String)]) -> Vec<(String, String)> {
    let mut p = Vec::new();
    for (i, (k, v)) in tags.iter().enumerate() {
        p.push((format!("{prefix}.{}.Key", i + 1), k.clone()));
        p.push((format!("{prefix}.{}.Value", i + 1), v.clone()));
    }
    p
}

/// Filters matching every tag exactly.
pub fn tag_filters(tags: &[(String, String)]) -> Vec<(String, String)> {
    let mut p = Vec::new();
    for (i, (k, v)) in tags.iter().enumerate() {
        p.push((format!("Filter.{}.Name", i + 1), format!("tag:{k}")));
        p.push((format!("Filter.{}.Value.1", i + 1), v.clone()));
    }
    p
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub image_id: String,
    pub name: String,
    pub state: String,
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    pub state: String,
    pub state_message: String,
    pub progress: String,
    pub tags: Vec<(String, String)>,
}

pub struct Ec2<'a> {
    pub client: &'a Client,
    pub endpoint: String,
}

impl<'a> Ec2<'a> {
    pub fn new(client: &'a Client, endpoint: &str) -> Ec2<'a> {
        Ec2 {
            client,
            endpoint: endpoint.to_string(),
        }
    }

    /// Call `action` with `params`; the answer's root element.
    pub fn call(
        &self,
        action: &'static str,
        params: &[(String, String)],
        what: String,
    ) -> Result<Element, ApiError> {
        let mut body = format!("Action={action}&Version={API_VERSION}");
        for (k, v) in params {
            body.push('&');
            body.push_str(&encode(k));
            body.push('=');
            body.push_str(&encode(v));
        }
        let full_action = match action {
            "RegisterImage" => "ec2:RegisterImage",
            "DescribeImages" => "ec2:DescribeImages",
            "DescribeSnapshots" => "ec2:DescribeSnapshots",
            "CreateTags" => "ec2:CreateTags",
            "RunInstances" => "ec2:RunInstances",
            "DescribeInstances" => "ec2:DescribeInstances",
            "GetConsoleOutput" => "ec2:GetConsoleOutput",
            _ => "ec2",
        };
        let req = Request {
            service: Service::Ec2,
            action: full_action,
            method: Method::POST,
            url: self.endpoint.clone(),
            headers: vec![(
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            )],
            body: body.as_bytes(),
            unsigned_payload: false,
            what: what.clone(),
        };
        let r = self.client.send(&req)?;
        let text = r.text();
        Doc::parse(&text)
            .map(|d| d.root)
            .ok_or_else(|| ApiError::Transport {
                what,
                url: self.endpoint.clone(),
                message: format!(
                    "the answer is not XML: {}",
                    self.client
                        .redact(&text.chars().take(200).collect::<String>())
                ),
            })
    }

    /// Images owned by the caller carrying every one of `tags`.
    pub fn images_with_tags(&self, tags: &[(String, String)]) -> Result<Vec<ImageInfo>, ApiError> {
        let mut params = vec![("Owner.1".to_string(), "self".to_string())];
        params.extend(tag_filters(tags));
        let root = self.call(
            "DescribeImages",
            &params,
            "DescribeImages (looking for an earlier publish)".to_string(),
        )?;
        Ok(root
            .items("imagesSet")
            .into_iter()
            .map(|i| ImageInfo {
                image_id: i.child_text("imageId").unwrap_or_default().to_string(),
                name: i.child_text("name").unwrap_or_default().to_string(),
                state: i.child_text("imageState").unwrap_or_default().to_string(),
                tags: i.tags(),
            })
            // Only images that really carry the tags (a cloud that ignores
            // filters must not make biovm reuse a stranger's image).
            .filter(|i| tags.iter().all(|t| i.tags.contains(t)))
            .filter(|i| {
                !matches!(
                    i.state.as_str(),
                    "failed" | "error" | "invalid" | "deregistered"
                )
            })
            .collect())
    }

    fn snapshots(
        &self,
        params: Vec<(String, String)>,
        what: String,
    ) -> Result<Vec<SnapshotInfo>, ApiError> {
        let root = self.call("DescribeSnapshots", &params, what)?;
        Ok(root
            .items("snapshotSet")
            .into_iter()
            .map(|s| SnapshotInfo {
                snapshot_id: s.child_text("snapshotId").unwrap_or_default().to_string(),
                state: s.child_text("status").unwrap_or_default().to_string(),
                state_message: s
                    .child_text("statusMessage")
                    .unwrap_or_default()
                    .to_string(),
                progress: s.child_text("progress").unwrap_or_default().to_string(),
                tags: s.tags(),
            })
            .collect())
    }

    /// Completed snapshots owned by the caller carrying every one of `tags`.
    pub fn completed_snapshots_with_tags(
        &self,
        tags: &[(String, String)],
    ) -> Result<Vec<SnapshotInfo>, ApiError> {
        let mut params = vec![("Owner.1".to_string(), "self".to_string())];
        params.extend(tag_filters(tags));
        Ok(self
            .snapshots(
                params,
                "DescribeSnapshots (looking for an earlier upload)".to_string(),
            )?
            .into_iter()
            .filter(|s| tags.iter().all(|t| s.tags.contains(t)) && s.state == "completed")
            .collect())
    }

    pub fn snapshot(&self, id: &str) -> Result<SnapshotInfo, ApiError> {
        let list = self.snapshots(
            vec![("SnapshotId.1".to_string(), id.to_string())],
            format!("DescribeSnapshots {id}"),
        )?;
        list.into_iter()
            .find(|s| s.snapshot_id == id)
            .ok_or_else(|| ApiError::Status {
                what: format!("DescribeSnapshots {id}"),
                url: self.endpoint.clone(),
                status: 200,
                code: "InvalidSnapshot.NotFound".to_string(),
                message: format!("the answer does not list {id}"),
            })
    }

    /// Wait until the snapshot is `completed`, at most `limit`; fail with
    /// the cloud's own status message if it goes to `error`.
    pub fn wait_for_snapshot(&self, id: &str, limit: Duration, poll: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let s = self.snapshot(id)?;
            match s.state.as_str() {
                "completed" => return Ok(()),
                "error" | "recoverable" => bail!(
                    "snapshot {id} failed ({}): {}",
                    s.state,
                    if s.state_message.is_empty() {
                        "the cloud gave no status message"
                    } else {
                        &s.state_message
                    }
                ),
                _ => {}
            }
            if start.elapsed() >= limit {
                bail!(
                    "snapshot {id} is still `{}` ({} done{}) after {} s; raise --snapshot-wait or look at it in the console",
                    s.state,
                    if s.progress.is_empty() { "?" } else { &s.progress },
                    if s.state_message.is_empty() {
                        String::new()
                    } else {
                        format!(", status message: {}", s.state_message)
                    },
                    limit.as_secs()
                );
            }
            log::info!(
                "snapshot {id}: {} {}",
                s.state,
                if s.progress.is_empty() {
                    ""
                } else {
                    &s.progress
                }
            );
            std::thread::sleep(poll);
        }
    }

    pub fn create_tags(
        &self,
        resources: &[&str],
        tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        let mut params = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            params.push((format!("ResourceId.{}", i + 1), r.to_string()));
        }
        params.extend(tag_params("Tag", tags));
        self.call(
            "CreateTags",
            &params,
            format!("CreateTags on {}", resources.join(", ")),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(encode("a b/c~d_e.f-g"), "a%20b%2Fc~d_e.f-g");
        assert_eq!(encode("tag:biovm:sha256"), "tag%3Abiovm%3Asha256");
        assert_eq!(
            tag_filters(&[("k".into(), "v".into())]),
            vec![
                ("Filter.1.Name".to_string(), "tag:k".to_string()),
                ("Filter.1.Value.1".to_string(), "v".to_string())
            ]
        );
    }
}
