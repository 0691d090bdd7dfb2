//! Loading the configuration through figment (defaults, the file, then `CLARION_*`
//! environment variables), the checks serde cannot make, and errors that name the file or
//! variable and the key of a bad value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clarion_domain::app::SenderKind;
use clarion_domain::ids::AppId;
use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use figment::value::{Uncased, UncasedStr};

use crate::config::{Config, MAX_TEMPLATE_NESTING, MIN_HEADER_BYTES, MIN_RENDER_MEMORY_MB};

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "CLARION_CONFIG";
/// The prefix of every configuration environment variable.
const ENV_PREFIX: &str = "CLARION_";
/// The file read when no other is named and it exists.
const DEFAULT_FILE: &str = "clarion.toml";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named configuration file does not exist.
    #[error("configuration file {} not found", .0.display())]
    FileNotFound(PathBuf),
    /// A value is malformed, unknown or refused; `origin` is the file or environment variable
    /// it came from, `key` its dotted path.
    #[error("{origin}: {key}: {detail}")]
    Invalid {
        origin: String,
        key: String,
        detail: String,
    },
    /// A source could not be read at all, such as a file with a TOML syntax error.
    #[error("{origin}: {detail}")]
    Unreadable { origin: String, detail: String },
}

impl Config {
    /// Loads the configuration: defaults, then the file (`path`, else `$CLARION_CONFIG`, else
    /// `./clarion.toml` if it exists), then `CLARION_*` environment variables; then validates
    /// it.
    ///
    /// # Errors
    /// [`ConfigError::FileNotFound`] when the named file is missing, and
    /// [`ConfigError::Invalid`] naming the source and key of the first bad value, and
    /// [`ConfigError::Unreadable`] for a file that is not TOML.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => Some(path.to_path_buf()),
            None => match std::env::var_os(CONFIG_ENV) {
                Some(named) if !named.is_empty() => Some(PathBuf::from(named)),
                _ => {
                    let default = PathBuf::from(DEFAULT_FILE);
                    default.is_file().then_some(default)
                }
            },
        };
        let mut figment = Figment::new();
        if let Some(file) = &file {
            if !file.is_file() {
                return Err(ConfigError::FileNotFound(file.clone()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(env_provider());
        let mut config: Config = figment.extract().map_err(|error| from_figment(&error))?;
        config.file = file;
        config.add_default_app();
        config.validate_with(&figment)?;
        Ok(config)
    }

    /// Checks the values serde cannot: application ids, retry policies, the listen address,
    /// the database scheme, worker numbers and sender sections.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&Figment::new())
    }

    fn validate_with(&self, figment: &Figment) -> Result<(), ConfigError> {
        let invalid = &|key: &str, detail: String| ConfigError::Invalid {
            origin: origin_of(figment, key, self.file.as_deref()),
            key: key.to_owned(),
            detail,
        };
        self.listen.parse::<SocketAddr>().map_err(|error| {
            invalid(
                "listen",
                format!("{error}: expected an address such as 127.0.0.1:8080"),
            )
        })?;
        self.database
            .kind()
            .map_err(|detail| invalid("database.url", detail))?;
        // The numbers that must be at least 1, in the order they are checked.
        let (worker, http) = (&self.worker, &self.http);
        let at_least_one = [
            (
                "database.max_connections",
                self.database.max_connections == Some(0),
            ),
            ("worker.poll_interval_secs", worker.poll_interval_secs == 0),
            ("worker.batch_size", worker.batch_size == 0),
            (
                "worker.message_concurrency",
                worker.message_concurrency == 0,
            ),
            ("worker.app_concurrency", worker.app_concurrency == Some(0)),
            (
                "worker.delivery_concurrency",
                worker.delivery_concurrency == 0,
            ),
            ("worker.lease_secs", worker.lease_secs == 0),
            ("http.body_limit_bytes", http.body_limit_bytes == 0),
            (
                "http.bulk_body_limit_bytes",
                http.bulk_body_limit_bytes == 0,
            ),
            ("http.send_wait_secs", http.send_wait_secs == 0),
            (
                "http.header_read_timeout_secs",
                http.header_read_timeout_secs == 0,
            ),
            ("http.idle_timeout_secs", http.idle_timeout_secs == 0),
            (
                "http.body_read_timeout_secs",
                http.body_read_timeout_secs == 0,
            ),
            ("http.max_connections", http.max_connections == 0),
        ];
        first_zero(&at_least_one, invalid)?;
        if self.http.max_header_bytes < MIN_HEADER_BYTES {
            return Err(invalid(
                "http.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        self.validate_templates(invalid)?;
        for (id, app) in &self.apps {
            let key = format!("apps.{id}");
            AppId::parse(id)
                .map_err(|error| invalid(&key, format!("invalid application id: {error}")))?;
            app.retry
                .validate()
                .map_err(|error| invalid(&format!("{key}.retry"), error.to_string()))?;
            if app.client_token_max_lifetime_secs == 0 {
                return Err(invalid(
                    &format!("{key}.client_token_max_lifetime_secs"),
                    "must be at least 1".to_owned(),
                ));
            }
            if app.sender == SenderKind::Onesignal && app.onesignal.is_none() {
                return Err(invalid(
                    &format!("{key}.sender"),
                    "sender \"onesignal\" needs an [apps.<id>.onesignal] section".to_owned(),
                ));
            }
        }
        Ok(())
    }

    fn validate_templates(
        &self,
        invalid: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let templates = &self.templates;
        let at_least_one = [
            (
                "templates.max_source_bytes",
                templates.max_source_bytes == 0,
            ),
            (
                "templates.max_output_bytes",
                templates.max_output_bytes == 0,
            ),
            ("templates.fuel", templates.fuel == 0),
            (
                "templates.render_timeout_ms",
                templates.render_timeout_ms == 0,
            ),
            ("templates.render_workers", templates.render_workers == 0),
        ];
        first_zero(&at_least_one, invalid)?;
        if !(1..=MAX_TEMPLATE_NESTING).contains(&templates.max_nesting) {
            return Err(invalid(
                "templates.max_nesting",
                format!("must be between 1 and {MAX_TEMPLATE_NESTING}"),
            ));
        }
        if templates.render_memory_mb < MIN_RENDER_MEMORY_MB {
            return Err(invalid(
                "templates.render_memory_mb",
                format!("must be at least {MIN_RENDER_MEMORY_MB}"),
            ));
        }
        Ok(())
    }
}

/// Refuses the first key whose value is zero (`true` beside it) with "must be at least 1".
fn first_zero(
    checks: &[(&str, bool)],
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    match checks.iter().find(|(_, zero)| *zero) {
        Some((key, _)) => Err(invalid(key, "must be at least 1".to_owned())),
        None => Ok(()),
    }
}

/// The environment provider: the explicit top-level variables, and `__` as the nesting
/// separator for the rest.
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter_map(|key: &UncasedStr| env_key(key.as_str()).map(Uncased::from))
}

/// The configuration key of an environment variable without its prefix, if it is one.
fn env_key(raw: &str) -> Option<String> {
    let key = raw.to_ascii_lowercase();
    match key.as_str() {
        "listen" | "debug" => Some(key),
        "database_url" => Some("database.url".to_owned()),
        _ if key.contains("__") => Some(key.replace("__", ".")),
        _ => None,
    }
}

/// The environment variable that sets `key`.
fn env_name(key: &str) -> String {
    if key == "database.url" {
        return "CLARION_DATABASE_URL".to_owned();
    }
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// Where the value of `key` came from: the environment variable, the file, or the defaults.
fn origin_of(figment: &Figment, key: &str, file: Option<&Path>) -> String {
    let metadata = figment.find_metadata(key);
    describe_origin(metadata, key, file)
}

fn describe_origin(metadata: Option<&figment::Metadata>, key: &str, file: Option<&Path>) -> String {
    if let Some(metadata) = metadata {
        if let Some(figment::Source::File(path)) = &metadata.source {
            return path.display().to_string();
        }
        if metadata.name.contains("environment") {
            return format!("environment variable {}", env_name(key));
        }
    }
    match file {
        Some(file) => file.display().to_string(),
        None => "configuration".to_owned(),
    }
}

/// The first figment error as a [`ConfigError::Invalid`] naming its source and key.
fn from_figment(error: &figment::Error) -> ConfigError {
    use figment::error::Kind;

    let mut path = error.path.clone();
    let detail = match &error.kind {
        // Figment's path already ends with an unknown field, but not with a missing one.
        Kind::UnknownField(field, expected) => {
            if expected.is_empty() {
                format!("unknown key {field:?}")
            } else {
                format!(
                    "unknown key {field:?}; expected one of {}",
                    expected.join(", ")
                )
            }
        }
        Kind::MissingField(field) => {
            path.push(field.to_string());
            format!("missing key {field:?}")
        }
        // A file's syntax error quotes the offending line, which may hold a secret: keep the
        // position and the message only.
        Kind::Message(message) => strip_snippets(message),
        other => other.to_string(),
    };
    let key = path.join(".");
    let origin = describe_origin(error.metadata.as_ref(), &key, None);
    if key.is_empty() {
        return ConfigError::Unreadable { origin, detail };
    }
    ConfigError::Invalid {
        origin,
        key,
        detail,
    }
}

/// Drops the source lines that TOML parse errors quote (`12 | key = "..."`).
fn strip_snippets(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with('|')
                && !line
                    .split_once('|')
                    .is_some_and(|(before, _)| before.trim().chars().all(|c| c.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join(": ")
}
