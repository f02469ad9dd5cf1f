//! Credentials and region: from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_DEFAULT_REGION`) or from the shared credentials and config files
//! (`~/.aws/credentials`, `~/.aws/config`, or `AWS_SHARED_CREDENTIALS_FILE`
//! and `AWS_CONFIG_FILE`) with profiles (`--profile`, else `AWS_PROFILE`,
//! else `default`).
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show the
//! value; [`Redactor`] scrubs them from any text that reaches an error or a
//! log line (a server echoing a header back, say).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the credentials came from, for messages ("environment variables",
/// "profile `ci` in /root/.aws/credentials").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub source: String,
}

impl Credentials {
    /// Scrubs this identity's secrets from text.
    pub fn redactor(&self) -> Redactor {
        let mut secrets = vec![self.secret_access_key.expose().to_string()];
        if let Some(t) = &self.session_token {
            secrets.push(t.expose().to_string());
        }
        Redactor { secrets }
    }
}

/// Replaces every secret in a text with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            // Too short to be a real secret; replacing it would mangle text.
            if s.len() >= 8 {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// An environment to read from: the process's, or a fixed one in tests.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned().filter(|v| !v.is_empty())
    }
}

fn home(env: &dyn Env) -> PathBuf {
    PathBuf::from(env.var("HOME").unwrap_or_else(|| "/root".to_string()))
}

fn credentials_file(env: &dyn Env) -> PathBuf {
    env.var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home(env).join(".aws/credentials"))
}

fn config_file(env: &dyn Env) -> PathBuf {
    env.var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home(env).join(".aws/config"))
}

/// Sections of an AWS shared file: `[name]` (credentials) or `[profile
/// name]` / `[default]` (config), each a map of lower-case keys. Indented
/// lines (nested service settings) and comments are skipped.
fn parse_profiles(text: &str, config_style: bool) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            current = if config_style {
                match section.strip_prefix("profile ") {
                    Some(name) => Some(name.trim().to_string()),
                    None if section == "default" => Some("default".to_string()),
                    // `[sso-session x]`, `[services x]`: not profiles.
                    None => None,
                }
            } else {
                Some(section.to_string())
            };
            if let Some(c) = &current {
                out.entry(c.clone()).or_default();
            }
            continue;
        }
        let (Some(profile), Some((k, v))) = (&current, line.split_once('=')) else {
            continue;
        };
        out.entry(profile.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    out
}

fn read_profiles(
    path: &Path,
    config_style: bool,
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_profiles(&text, config_style)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The profile to use: the flag, else `AWS_PROFILE`, else `default`.
pub fn profile_name(flag: Option<&str>, env: &dyn Env) -> String {
    flag.map(str::to_string)
        .or_else(|| env.var("AWS_PROFILE"))
        .unwrap_or_else(|| "default".to_string())
}

/// Credentials: with an explicit `--profile`, from the profile; else from
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` when set; else from the
/// profile `AWS_PROFILE` (or `default`) in the credentials file, then the
/// config file.
pub fn load(profile_flag: Option<&str>, env: &dyn Env) -> Result<Credentials> {
    if profile_flag.is_none() {
        match (env.var("AWS_ACCESS_KEY_ID"), env.var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                return Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: Secret::new(secret),
                    session_token: env.var("AWS_SESSION_TOKEN").map(Secret::new),
                    source: "environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        .to_string(),
                })
            }
            (Some(_), None) => bail!(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both, or neither to use a profile"
            ),
            (None, Some(_)) => bail!(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both, or neither to use a profile"
            ),
            (None, None) => {}
        }
    }
    let profile = profile_name(profile_flag, env);
    let cred_path = credentials_file(env);
    let conf_path = config_file(env);
    for (path, config_style) in [(&cred_path, false), (&conf_path, true)] {
        let profiles = read_profiles(path, config_style)?;
        let Some(p) = profiles.get(&profile) else {
            continue;
        };
        let id = p.get("aws_access_key_id");
        let secret = p.get("aws_secret_access_key");
        match (id, secret) {
            (Some(id), Some(secret)) => {
                return Ok(Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: Secret::new(secret.clone()),
                    session_token: p.get("aws_session_token").cloned().map(Secret::new),
                    source: format!("profile `{profile}` in {}", path.display()),
                })
            }
            (Some(_), None) | (None, Some(_)) => bail!(
                "profile `{profile}` in {} needs both aws_access_key_id and aws_secret_access_key",
                path.display()
            ),
            (None, None) => {}
        }
    }
    bail!(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put profile `{profile}` with aws_access_key_id and aws_secret_access_key in {} (or {})",
        cred_path.display(),
        conf_path.display()
    )
}

/// The region from the environment (`AWS_REGION`, `AWS_DEFAULT_REGION`) or
/// the profile's `region` in the config file.
pub fn region(profile_flag: Option<&str>, env: &dyn Env) -> Result<Option<String>> {
    if let Some(r) = env
        .var("AWS_REGION")
        .or_else(|| env.var("AWS_DEFAULT_REGION"))
    {
        return Ok(Some(r));
    }
    let profile = profile_name(profile_flag, env);
    let profiles = read_profiles(&config_file(env), true)?;
    Ok(profiles
        .get(&profile)
        .and_then(|p| p.get("region").cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_wins_without_a_profile_flag() {
        let e = env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret123"),
            ("AWS_SESSION_TOKEN", "envtoken1234"),
            ("HOME", "/nonexistent"),
        ]);
        let c = load(None, &e).unwrap();
        assert_eq!(c.access_key_id, "AKIDENV");
        assert_eq!(c.secret_access_key.expose(), "envsecret123");
        assert_eq!(c.session_token.as_ref().unwrap().expose(), "envtoken1234");
        assert!(c.source.contains("environment"));
        assert!(!format!("{c:?}").contains("envsecret123"));
        assert!(!format!("{c:?}").contains("envtoken1234"));
    }

    #[test]
    fn profiles_from_both_files() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("credentials");
        let config = d.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKIDDEF\naws_secret_access_key = defsecret123\n\n# comment\n[ci]\nAWS_ACCESS_KEY_ID=AKIDCI\naws_secret_access_key=cisecret1234\naws_session_token = citoken12345\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n[profile ci]\nregion = us-west-2\ns3 =\n  addressing_style = path\n[profile other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = othersecret1\n[sso-session x]\nregion = nowhere\n",
        )
        .unwrap();
        let base = [
            ("HOME", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ];
        let e = env(&base);
        let c = load(None, &e).unwrap();
        assert_eq!(c.access_key_id, "AKIDDEF");
        assert_eq!(region(None, &e).unwrap().as_deref(), Some("eu-west-1"));

        let c = load(Some("ci"), &e).unwrap();
        assert_eq!(c.access_key_id, "AKIDCI");
        assert_eq!(c.session_token.unwrap().expose(), "citoken12345");
        assert!(c.source.contains("profile `ci`"), "{}", c.source);
        assert_eq!(
            region(Some("ci"), &e).unwrap().as_deref(),
            Some("us-west-2")
        );

        let mut e2 = env(&base);
        e2.insert("AWS_PROFILE".into(), "other".into());
        let c = load(None, &e2).unwrap();
        assert_eq!(c.access_key_id, "AKIDOTHER");
        assert!(c.source.contains("config"), "{}", c.source);

        // An explicit profile beats environment keys.
        let mut e3 = env(&base);
        e3.insert("AWS_ACCESS_KEY_ID".into(), "AKIDENV".into());
        e3.insert("AWS_SECRET_ACCESS_KEY".into(), "envsecret123".into());
        assert_eq!(load(Some("ci"), &e3).unwrap().access_key_id, "AKIDCI");
        assert_eq!(load(None, &e3).unwrap().access_key_id, "AKIDENV");
        e3.insert("AWS_REGION".into(), "ap-south-1".into());
        assert_eq!(
            region(Some("ci"), &e3).unwrap().as_deref(),
            Some("ap-south-1")
        );

        let err = load(Some("missing"), &e).unwrap_err().to_string();
        assert!(err.contains("profile `missing`"), "{err}");
    }

    #[test]
    fn half_set_environment_is_an_error() {
        let e = env(&[("AWS_ACCESS_KEY_ID", "AKID"), ("HOME", "/nonexistent")]);
        let err = load(None, &e).unwrap_err().to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
    }

    #[test]
    fn redactor_scrubs_secrets() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: Secret::new("verysecretvalue"),
            session_token: Some(Secret::new("tokentokentoken")),
            source: "test".into(),
        };
        let r = c.redactor();
        assert_eq!(
            r.redact("a verysecretvalue b tokentokentoken"),
            "a *** b ***"
        );
    }
}
