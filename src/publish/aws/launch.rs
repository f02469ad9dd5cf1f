//! Starting an instance of a published image: find the AMI (by its ID, or
//! by the tags `biovm publish` put on it), RunInstances, then
//! DescribeInstances until the instance runs (or stops trying).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Serialize;

use super::ec2_api::{tag_filters, tag_params, Ec2};
use crate::publish::http::ApiError;
use crate::publish::xml::Element;
use crate::publish::{TAG_IMAGE, TAG_SHA256, TAG_VERSION};

/// The instance type when neither `--instance-type` nor the image's
/// `[targets.ec2] instance-type` names one: 2 vCPUs, 4 GiB, ENA.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.medium";

/// The tags a launched instance carries besides `Name`.
pub const TAG_AMI: &str = "biovm:ami";

/// An AMI as DescribeImages shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ami {
    pub image_id: String,
    pub name: String,
    pub state: String,
    pub creation_date: String,
    pub tags: Vec<(String, String)>,
}

impl Ami {
    fn from_xml(i: &Element) -> Ami {
        Ami {
            image_id: i.child_text("imageId").unwrap_or_default().to_string(),
            name: i.child_text("name").unwrap_or_default().to_string(),
            state: i.child_text("imageState").unwrap_or_default().to_string(),
            creation_date: i.child_text("creationDate").unwrap_or_default().to_string(),
            tags: i.tags(),
        }
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Which published AMI of an image to launch.
#[derive(Debug, Clone, Default)]
pub struct AmiQuery {
    /// The image's name (`biovm:image`).
    pub image: String,
    /// A release (`biovm:version`): only that one.
    pub release: Option<String>,
    /// The sha256 of the local build's raw disk: its AMI is preferred.
    pub sha256: Option<String>,
}

fn images(
    ec2: &Ec2<'_>,
    params: Vec<(String, String)>,
    what: String,
) -> Result<Vec<Ami>, ApiError> {
    let root = ec2.call("DescribeImages", &params, what)?;
    Ok(root
        .items("imagesSet")
        .into_iter()
        .map(Ami::from_xml)
        .collect())
}

/// The AMI with this ID; a clear error when the region has none.
pub fn ami_by_id(ec2: &Ec2<'_>, id: &str) -> Result<Ami> {
    let not_found = |said: String| {
        anyhow::anyhow!(
            "AMI {id} not found in region {} (EC2 endpoint {}): check the ID and the region (--region){said}",
            ec2.client.region,
            ec2.endpoint
        )
    };
    match images(
        ec2,
        vec![("ImageId.1".to_string(), id.to_string())],
        format!("DescribeImages {id}"),
    ) {
        Ok(list) => list
            .into_iter()
            .find(|a| a.image_id == id)
            .ok_or_else(|| not_found(String::new())),
        Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => {
            Err(not_found(format!("; the cloud answered: {e}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// The AMI `biovm publish` made of an image: the one of the local build
/// (by sha256) if it is published, else the newest one, among those of
/// `release` when given. `None` when there is none.
pub fn find_published(ec2: &Ec2<'_>, q: &AmiQuery) -> Result<Option<Ami>> {
    let mut want = vec![(TAG_IMAGE.to_string(), q.image.clone())];
    if let Some(r) = &q.release {
        want.push((TAG_VERSION.to_string(), r.clone()));
    }
    let mut params = vec![("Owner.1".to_string(), "self".to_string())];
    params.extend(tag_filters(&want));
    let mut found: Vec<Ami> = images(
        ec2,
        params,
        format!("DescribeImages (the AMIs of image {})", q.image),
    )?
    .into_iter()
    // Only AMIs that really carry the tags (a cloud that ignores filters
    // must not make biovm launch a stranger's image).
    .filter(|a| want.iter().all(|t| a.tags.contains(t)))
    .filter(|a| matches!(a.state.as_str(), "available" | "pending"))
    .collect();
    // Newest first (ISO 8601 times sort as text), then by ID for a stable pick.
    found.sort_by(|a, b| {
        b.creation_date
            .cmp(&a.creation_date)
            .then(a.image_id.cmp(&b.image_id))
    });
    if let Some(sha) = &q.sha256 {
        if let Some(a) = found.iter().find(|a| a.tag(TAG_SHA256) == Some(sha)) {
            return Ok(Some(a.clone()));
        }
        if let Some(a) = found.first() {
            log::warn!(
                "the local build of {} (sha256 {sha}) is not published; launching the newest published AMI, {} ({})",
                q.image,
                a.image_id,
                a.tag(TAG_VERSION).unwrap_or(&a.name)
            );
        }
    }
    Ok(found.into_iter().next())
}

/// Wait until the AMI is `available` (a freshly registered one may still
/// be `pending`), at most until `deadline`.
pub fn wait_for_ami(ec2: &Ec2<'_>, ami: Ami, deadline: Instant, poll: Duration) -> Result<Ami> {
    let mut ami = ami;
    loop {
        match ami.state.as_str() {
            "available" => return Ok(ami),
            "pending" => {}
            other => bail!(
                "AMI {} is `{other}`, not available: it cannot be launched",
                ami.image_id
            ),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "AMI {} is still `pending`; raise --wait-timeout or try again later",
                ami.image_id
            );
        }
        std::thread::sleep(poll.min(left));
        ami = ami_by_id(ec2, &ami.image_id)?;
    }
}

/// `#cloud-config` user data giving `user` this public key: cloud-init
/// adds it to the user's authorized keys at first boot (and creates the
/// user if the image has none by that name).
/// The instance's serial console output so far (GetConsoleOutput,
/// latest), if the cloud has any yet.
pub fn console_output(ec2: &Ec2<'_>, id: &str) -> Result<Option<String>> {
    let params = vec![
        ("InstanceId".to_string(), id.to_string()),
        ("Latest".to_string(), "true".to_string()),
    ];
    let root = ec2.call(
        "GetConsoleOutput",
        &params,
        format!("reading the console of {id}"),
    )?;
    let Some(b64) = root.child_text("output").filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let cleaned: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .with_context(|| format!("the console output of {id} is not base64"))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

pub fn ssh_key_user_data(user: &str, public_key: &str) -> String {
    // JSON strings are valid YAML scalars: no quoting surprises.
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "#cloud-config\nusers:\n  - name: {}\n    ssh_authorized_keys:\n      - {}\n",
        q(user),
        q(public_key.trim())
    )
}

/// What RunInstances is asked for.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub image_id: String,
    pub instance_type: String,
    pub key_name: Option<String>,
    /// Plain text; sent base64-encoded.
    pub user_data: Option<String>,
    pub security_groups: Vec<String>,
    pub subnet: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Makes a retried RunInstances start one instance, not two.
    pub client_token: String,
}

impl LaunchSpec {
    /// The RunInstances parameters.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = vec![
            ("ImageId".into(), self.image_id.clone()),
            ("InstanceType".into(), self.instance_type.clone()),
            ("MinCount".into(), "1".into()),
            ("MaxCount".into(), "1".into()),
            ("ClientToken".into(), self.client_token.clone()),
        ];
        if let Some(k) = &self.key_name {
            p.push(("KeyName".into(), k.clone()));
        }
        if let Some(u) = &self.user_data {
            p.push((
                "UserData".into(),
                base64::engine::general_purpose::STANDARD.encode(u),
            ));
        }
        for (i, g) in self.security_groups.iter().enumerate() {
            p.push((format!("SecurityGroupId.{}", i + 1), g.clone()));
        }
        if let Some(s) = &self.subnet {
            p.push(("SubnetId".into(), s.clone()));
        }
        for (n, kind) in ["instance", "volume"].iter().enumerate() {
            let prefix = format!("TagSpecification.{}", n + 1);
            p.push((format!("{prefix}.ResourceType"), kind.to_string()));
            p.extend(tag_params(&format!("{prefix}.Tag"), &self.tags));
        }
        p
    }
}

/// An instance as DescribeInstances shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub instance_id: String,
    pub state: String,
    /// Why it is in that state (StateReason), when the cloud says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    pub instance_type: String,
    pub image_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    fn from_xml(i: &Element) -> Instance {
        let text = |name: &str| {
            i.child_text(name)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        let state_reason = i.child("stateReason").and_then(|r| {
            let code = r.child_text("code").unwrap_or_default();
            let message = r.child_text("message").unwrap_or_default();
            match (code.is_empty(), message.is_empty()) {
                (true, true) => None,
                (false, true) => Some(code.to_string()),
                (true, false) => Some(message.to_string()),
                (false, false) => Some(format!("{code}: {message}")),
            }
        });
        Instance {
            instance_id: text("instanceId").unwrap_or_default(),
            state: i
                .child("instanceState")
                .and_then(|s| s.child_text("name"))
                .unwrap_or_default()
                .to_string(),
            state_reason,
            instance_type: text("instanceType").unwrap_or_default(),
            image_id: text("imageId").unwrap_or_default(),
            public_ip: text("ipAddress"),
            public_dns: text("dnsName"),
            private_ip: text("privateIpAddress"),
            private_dns: text("privateDnsName"),
            key_name: text("keyName"),
            tags: i.tags().into_iter().collect(),
        }
    }

    /// The address to connect to: public if it has one, else private.
    pub fn host(&self) -> Option<&str> {
        self.public_ip
            .as_deref()
            .or(self.public_dns.as_deref())
            .or(self.private_ip.as_deref())
            .or(self.private_dns.as_deref())
    }
}

/// RunInstances; the new instance as the answer describes it.
pub fn run_instance(ec2: &Ec2<'_>, spec: &LaunchSpec) -> Result<Instance> {
    let root = ec2.call(
        "RunInstances",
        &spec.params(),
        format!("RunInstances from {}", spec.image_id),
    )?;
    let items = root.items("instancesSet");
    let Some(i) = items.first() else {
        bail!(
            "RunInstances from {}: the answer lists no instance",
            spec.image_id
        );
    };
    let inst = Instance::from_xml(i);
    if inst.instance_id.is_empty() {
        bail!(
            "RunInstances from {}: the answer has no instanceId",
            spec.image_id
        );
    }
    Ok(inst)
}

/// DescribeInstances for one instance; `None` while the cloud does not
/// list it yet (EC2 is eventually consistent right after RunInstances).
pub fn describe_instance(ec2: &Ec2<'_>, id: &str) -> Result<Option<Instance>> {
    let r = ec2.call(
        "DescribeInstances",
        &[("InstanceId.1".to_string(), id.to_string())],
        format!("DescribeInstances {id}"),
    );
    let root = match r {
        Ok(root) => root,
        Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(root
        .items("reservationSet")
        .into_iter()
        .flat_map(|r| r.items("instancesSet"))
        .map(Instance::from_xml)
        .find(|i| i.instance_id == id))
}

/// Poll until the instance is `running`; a state it cannot come back from
/// (shutting-down, terminated, stopping, stopped) or the deadline fails,
/// naming the state and the cloud's reason. `on_state` hears every new state.
pub fn wait_running(
    ec2: &Ec2<'_>,
    id: &str,
    timeout: Duration,
    poll: Duration,
    mut on_state: impl FnMut(&str),
) -> Result<Instance> {
    let start = Instant::now();
    let mut last_state = String::new();
    loop {
        let seen = describe_instance(ec2, id)?;
        let state = seen
            .as_ref()
            .map_or("not listed yet", |i| i.state.as_str())
            .to_string();
        if state != last_state {
            on_state(&state);
            last_state = state.clone();
        }
        if let Some(i) = seen {
            let reason = || {
                i.state_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_else(|| " (the cloud gave no reason)".to_string())
            };
            match i.state.as_str() {
                "running" => return Ok(i),
                "shutting-down" | "terminated" | "stopping" | "stopped" => bail!(
                    "instance {id} is `{}` instead of running{}",
                    i.state,
                    reason()
                ),
                _ => {}
            }
            if start.elapsed() >= timeout {
                bail!(
                    "instance {id} is still `{}` after {} s{}; raise --wait-timeout, or look at it in the console (it keeps running and costing money until you terminate it)",
                    i.state,
                    timeout.as_secs(),
                    i.state_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
        } else if start.elapsed() >= timeout {
            bail!(
                "instance {id} was started but the cloud has not listed it after {} s; look at it in the console",
                timeout.as_secs()
            );
        }
        std::thread::sleep(
            poll.min(timeout.saturating_sub(start.elapsed()))
                .max(Duration::from_millis(100)),
        );
    }
}

/// Tag the instance (and its volumes, on clouds that took the
/// TagSpecification they will carry them already) when the cloud ignored
/// the TagSpecification of RunInstances.
pub fn ensure_tags(ec2: &Ec2<'_>, inst: &Instance, tags: &[(String, String)]) -> Result<()> {
    if tags.iter().all(|(k, v)| inst.tags.get(k) == Some(v)) {
        return Ok(());
    }
    ec2.create_tags(&[&inst.instance_id], tags)?;
    Ok(())
}

/// The shell-safe form of a word for the printed `ssh` line.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_~".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::xml::Doc;

    #[test]
    fn run_instances_parameters() {
        let spec = LaunchSpec {
            image_id: "ami-1".into(),
            instance_type: "t3.small".into(),
            key_name: Some("lab".into()),
            user_data: Some("#cloud-config\n".into()),
            security_groups: vec!["sg-1".into(), "sg-2".into()],
            subnet: Some("subnet-1".into()),
            tags: vec![("Name".into(), "n".into())],
            client_token: "tok".into(),
        };
        let p = spec.params();
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ImageId"), Some("ami-1"));
        assert_eq!(get("InstanceType"), Some("t3.small"));
        assert_eq!(get("MinCount"), Some("1"));
        assert_eq!(get("KeyName"), Some("lab"));
        assert_eq!(get("UserData"), Some("I2Nsb3VkLWNvbmZpZwo="));
        assert_eq!(get("SecurityGroupId.2"), Some("sg-2"));
        assert_eq!(get("SubnetId"), Some("subnet-1"));
        assert_eq!(get("ClientToken"), Some("tok"));
        assert_eq!(get("TagSpecification.1.ResourceType"), Some("instance"));
        assert_eq!(get("TagSpecification.2.ResourceType"), Some("volume"));
        assert_eq!(get("TagSpecification.2.Tag.1.Value"), Some("n"));
    }

    #[test]
    fn user_data_is_cloud_config_with_the_key() {
        let u = ssh_key_user_data("biovm", "ssh-ed25519 AAAAC3 me@laptop\n");
        assert_eq!(
            u,
            "#cloud-config\nusers:\n  - name: \"biovm\"\n    ssh_authorized_keys:\n      - \"ssh-ed25519 AAAAC3 me@laptop\"\n"
        );
    }

    #[test]
    fn instances_from_describe_instances() {
        let xml = r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><reservationSet><item><instancesSet><item>
<instanceId>i-1</instanceId><imageId>ami-1</imageId><instanceState><code>48</code><name>terminated</name></instanceState>
<privateDnsName>ip-10-0-0-5.ec2.internal</privateDnsName><dnsName/><keyName>lab</keyName><instanceType>t3.small</instanceType>
<privateIpAddress>10.0.0.5</privateIpAddress><stateReason><code>Server.InsufficientInstanceCapacity</code><message>Insufficient capacity.</message></stateReason>
<tagSet><item><key>Name</key><value>n</value></item></tagSet></item></instancesSet></item></reservationSet></DescribeInstancesResponse>"#;
        let doc = Doc::parse(xml).unwrap();
        let i = doc
            .root
            .items("reservationSet")
            .into_iter()
            .flat_map(|r| r.items("instancesSet"))
            .map(Instance::from_xml)
            .next()
            .unwrap();
        assert_eq!(i.instance_id, "i-1");
        assert_eq!(i.state, "terminated");
        assert_eq!(
            i.state_reason.as_deref(),
            Some("Server.InsufficientInstanceCapacity: Insufficient capacity.")
        );
        assert_eq!(i.public_dns, None);
        assert_eq!(i.host(), Some("10.0.0.5"));
        assert_eq!(i.tags["Name"], "n");
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("~/.ssh/id_ed25519"), "~/.ssh/id_ed25519");
        assert_eq!(shell_word("my key"), "'my key'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
