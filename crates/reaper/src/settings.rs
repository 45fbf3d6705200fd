//! Loading the configuration: a TOML file (or the embedded defaults), then environment
//! overrides, then validation into the catalog. Errors name the offending key.
//!
//! Environment: `REAPER_<SECTION>__<KEY>` overrides any key (`REAPER_WORKER__CONCURRENCY=4`);
//! `REAPER_DATABASE_URL`, `REAPER_QUEUE_URL` and `REAPER_API_TOKEN` are shortcuts. Secrets (the
//! API token, passwords inside the URLs) can thus stay out of files entirely. Other `REAPER_*`
//! variables without `__` (`REAPER_LOG`, `REAPER_CONFIG`, test settings) are not config keys.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use reaper_core::catalog::Catalog;
use reaper_core::config::Config;
use reaper_core::retention::Policy;

/// The embedded defaults (`config/reaper.toml`).
pub(crate) const DEFAULT_CONFIG: &str = include_str!("../../../config/reaper.toml");

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) config: Config,
    pub(crate) catalog: Catalog,
    /// `[[retention]]`, validated against the catalog.
    pub(crate) policies: Vec<Policy>,
    /// The file it was read from (`--config` or `REAPER_CONFIG`), made absolute; `None` when
    /// the embedded demo defaults are in use.
    pub(crate) path: Option<PathBuf>,
}

impl Settings {
    /// The command line that runs `reaper ARGS` with this configuration, to paste into any
    /// shell in any directory: `reaper --config '/etc/reaper.toml' purge --resume ID`.
    /// Environment overrides are not repeated (they may hold secrets).
    pub(crate) fn command_line(&self, args: &str) -> String {
        match &self.path {
            Some(path) => format!(
                "reaper --config {} {args}",
                shell_quoted(&path.to_string_lossy())
            ),
            None => format!("reaper {args}"),
        }
    }
}

/// `text` as one shell word: bare when it holds only safe characters, else single-quoted.
fn shell_quoted(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Loads `path` (or the embedded defaults) with environment overrides and validates it.
pub(crate) fn load(path: Option<&Path>) -> Result<Settings, String> {
    let figment = match path {
        Some(path) => {
            if !path.exists() {
                return Err(format!("config file `{}` does not exist", path.display()));
            }
            Figment::from(Toml::file(path))
        }
        None => Figment::from(Toml::string(DEFAULT_CONFIG)),
    };
    let figment = figment
        .merge(
            Env::prefixed("REAPER_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        )
        .merge(
            Env::raw()
                .only(&["REAPER_DATABASE_URL"])
                .map(|_| "database.url".into()),
        )
        .merge(
            Env::raw()
                .only(&["REAPER_QUEUE_URL"])
                .map(|_| "queue.url".into()),
        )
        .merge(
            Env::raw()
                .only(&["REAPER_API_TOKEN"])
                .map(|_| "api.token".into()),
        )
        .merge(
            Env::raw()
                .only(&["REAPER_API_READ_TOKEN"])
                .map(|_| "api.read_token".into()),
        );
    let config: Config = figment
        .extract()
        .map_err(|error| describe_figment_error(&figment, &error))?;
    let catalog = config.catalog().map_err(|error| error.to_string())?;
    let policies = config
        .retention_policies(&catalog, chrono::Utc::now())
        .map_err(|error| error.to_string())?;
    Ok(Settings {
        config,
        catalog,
        policies,
        path: path.map(|path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned())),
    })
}

/// One line per problem: `key.path: what is wrong (where it came from)`. A retention policy is
/// named by its `name` (`retention.old-sessions.age_colum`), as the validation names it, not by
/// its position.
fn describe_figment_error(figment: &Figment, error: &figment::Error) -> String {
    let mut text = String::from("invalid configuration:");
    for problem in error.clone() {
        let mut path = problem.path.clone();
        if let [section, index, ..] = path.as_mut_slice()
            && section == "retention"
            && let Some(name) = policy_name(figment, index)
        {
            *index = name;
        }
        let key = if path.is_empty() {
            "(top level)".to_owned()
        } else {
            path.join(".")
        };
        let origin = problem.metadata.as_ref().map(|meta| match &meta.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", meta.name),
        });
        text.push_str(&format!(
            "\n  {key}: {}{}",
            problem.kind,
            origin.unwrap_or_default()
        ));
    }
    text
}

/// The `name` of the `index`th `[[retention]]` policy, if it has one.
fn policy_name(figment: &Figment, index: &str) -> Option<String> {
    let policies = figment.find_value("retention").ok()?;
    let policy = policies.as_array()?.get(index.parse::<usize>().ok()?)?;
    Some(policy.find_ref("name")?.as_str()?.to_owned())
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail fixes the closure's error type.
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(
            shell_quoted("/etc/reaper/reaper.toml"),
            "/etc/reaper/reaper.toml"
        );
        assert_eq!(
            shell_quoted("/tmp/my dir/it's.toml"),
            "'/tmp/my dir/it'\\''s.toml'"
        );
    }

    #[test]
    fn embedded_defaults_are_valid() {
        figment::Jail::expect_with(|_| {
            let settings = load(None).map_err(figment::Error::from)?;
            assert_eq!(
                settings.catalog.names(),
                vec!["events", "sessions", "users"]
            );
            Ok(())
        });
    }

    #[test]
    fn the_managed_infrastructure_example_is_valid() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("REAPER_API_TOKEN", "a-token-of-enough-length");
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/managed.toml");
            let settings = load(Some(&path)).map_err(figment::Error::from)?;
            let queue = &settings.config.queue;
            assert!(queue.url.starts_with("rediss://"));
            assert_eq!(
                queue.tls.as_ref().and_then(|tls| tls.ca_file.as_deref()),
                Some("/etc/reaper/redis-ca.pem")
            );
            assert_eq!(
                queue
                    .sentinel
                    .as_ref()
                    .map(|sentinel| sentinel.sentinels.len()),
                Some(3)
            );
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_and_shortcuts_apply() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("REAPER_WORKER__CONCURRENCY", "7");
            jail.set_env("REAPER_LOG", "debug");
            jail.set_env("REAPER_CONFIG", "elsewhere.toml");
            jail.set_env("REAPER_TEST_POSTGRES_URL", "postgres://127.0.0.1/t");
            jail.set_env("REAPER_DATABASE_URL", "postgres://127.0.0.1/x");
            jail.set_env("REAPER_API__LISTEN", "127.0.0.1:9999");
            jail.set_env("REAPER_API_TOKEN", "a-token-of-enough-length");
            let settings = load(None).map_err(figment::Error::from)?;
            assert_eq!(settings.config.worker.concurrency, 7);
            assert_eq!(settings.config.database.url, "postgres://127.0.0.1/x");
            assert_eq!(
                settings.config.api.token.as_deref(),
                Some("a-token-of-enough-length")
            );
            assert_eq!(
                settings.config.api.listen.as_deref(),
                Some("127.0.0.1:9999")
            );
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key_path() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                &DEFAULT_CONFIG
                    .replace("batch_size = 200\n", "batch_size = \"lots\"\n")
                    .replace("[worker]", "[worker]\nthreads = 3"),
            )?;
            let error = load(Some(Path::new("bad.toml"))).unwrap_err();
            assert!(
                error.contains(
                    "targets.users.batch_size: invalid type: found string \"lots\", expected u32"
                ),
                "{error}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "unknown.toml",
                &DEFAULT_CONFIG.replace("[worker]", "[worker]\nthreads = 3"),
            )?;
            let error = load(Some(Path::new("unknown.toml"))).unwrap_err();
            assert!(
                error.contains("worker.threads: unknown field: found `threads`"),
                "{error}"
            );
            Ok(())
        });
    }
}
