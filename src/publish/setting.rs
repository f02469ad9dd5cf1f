//! Where a publish or launch setting comes from: the command-line flag,
//! else the image file's `[targets.*]` table, else the environment. Every
//! command that talks to a cloud looks its settings up this one way.

use super::credentials::{self, Env};

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

/// An API endpoint of `service` (`ec2`, `ebs`, `s3`): the flag, the image
/// file's, `AWS_ENDPOINT_URL_<SERVICE>` or `AWS_ENDPOINT_URL`, else
/// `default`.
pub fn endpoint(
    flag: Option<String>,
    file: Option<String>,
    service: &str,
    env: &dyn Env,
    default: impl FnOnce() -> String,
) -> String {
    flag_file_or_env(flag, file, || credentials::endpoint_from_env(service, env))
        .unwrap_or_else(default)
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
}
