//! Where a publish or launch setting comes from: the command-line flag,
//! else the image file's `[targets.*]` table, else the environment. Every
//! command that talks to a cloud looks its settings up this one way.

use super::credentials::Env;
use super::http::Service;

/// The first of: the flag, the image file's value, what `from_env` finds.
pub fn flag_file_or_env<T>(
    flag: Option<T>,
    file: Option<T>,
    from_env: impl FnOnce() -> Option<T>,
) -> Option<T> {
    flag.or(file).or_else(from_env)
}

/// The first of the environment variables `names` that is set.
pub fn env_var(env: &dyn Env, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env.var(n))
}

/// An API endpoint of `service`: the flag, the image file's,
/// `AWS_ENDPOINT_URL_<SERVICE>` or `AWS_ENDPOINT_URL`, else `default`.
pub fn endpoint(
    flag: Option<String>,
    file: Option<String>,
    service: Service,
    env: &dyn Env,
    default: impl FnOnce() -> String,
) -> String {
    flag_file_or_env(flag, file, || endpoint_from_env(service, env)).unwrap_or_else(default)
}

/// A per-service endpoint from the environment, as the AWS SDKs read it:
/// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`.
pub fn endpoint_from_env(service: Service, env: &dyn Env) -> Option<String> {
    env.var(&format!(
        "AWS_ENDPOINT_URL_{}",
        service.signing_name().to_ascii_uppercase()
    ))
    .or_else(|| env.var("AWS_ENDPOINT_URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_file_then_the_environment() {
        let env = || Some("env");
        assert_eq!(
            flag_file_or_env(Some("flag"), Some("file"), env),
            Some("flag")
        );
        assert_eq!(flag_file_or_env(None, Some("file"), env), Some("file"));
        assert_eq!(flag_file_or_env(None, None, env), Some("env"));
        assert_eq!(flag_file_or_env::<&str>(None, None, || None), None);
    }

    #[test]
    fn endpoints_from_environment() {
        let e: std::collections::BTreeMap<String, String> = [
            ("AWS_ENDPOINT_URL", "http://all"),
            ("AWS_ENDPOINT_URL_EBS", "http://ebs"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            endpoint_from_env(Service::Ebs, &e).as_deref(),
            Some("http://ebs")
        );
        assert_eq!(
            endpoint_from_env(Service::Ec2, &e).as_deref(),
            Some("http://all")
        );
    }
}
