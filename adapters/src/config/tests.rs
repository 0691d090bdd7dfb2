//! The configuration's unit tests: loading from files and the environment, validation by
//! key, secrets and what is shown of them; and the fixtures the checks' tests share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use clarion_domain::app::SenderKind;
use clarion_domain::token::EndpointPolicy;
use figment::Jail;

use crate::config::{
    ApnsConfig, ApnsEnvironment, AppConfig, Config, DatabaseConfig, DatabaseKind, FcmConfig,
    OneSignalConfig, Secret, TemplateIsolation, TemplatesConfig, WorkerConfig, redact_url,
};

/// Runs `test` in a jail (its own working folder and environment), turning our errors
/// into figment's so that `?` works.
// The size of figment's error is figment's choice; `Jail` requires it.
#[allow(clippy::result_large_err)]
pub(crate) fn jailed(test: impl FnOnce(&mut Jail) -> Result<(), String>) {
    Jail::expect_with(|jail| test(jail).map_err(figment::Error::from));
}

fn load(path: Option<&Path>) -> Result<Config, String> {
    Config::load(path).map_err(|error| error.to_string())
}

#[test]
fn with_no_file_there_is_one_debug_application_on_a_local_sqlite_file() {
    jailed(|_| {
        let config = load(None)?;

        assert_eq!(config, Config::default());
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.database.url, "sqlite://clarion.db");
        assert_eq!(config.worker, WorkerConfig::default());
        assert_eq!(config.file, None);
        let apps: Vec<(String, SenderKind)> = config
            .applications()
            .iter()
            .map(|app| (app.id.to_string(), app.sender))
            .collect();
        assert_eq!(apps, [("default".to_owned(), SenderKind::Debug)]);
        Ok(())
    });
}

#[test]
fn a_toml_file_sets_every_section() {
    jailed(|jail| {
        jail.create_file(
            "clarion.toml",
            r#"
            listen = "0.0.0.0:9000"
            [database]
            url = "sqlite:///var/lib/clarion/clarion.db"
            [worker]
            enabled = false
            poll_interval_secs = 2
            batch_size = 10
            lease_secs = 30
            [tls]
            extra_ca_certs = ["ca.pem"]
            [apps.shop]
            sender = "direct"
            retry = { max_attempts = 2, base_delay = 10 }
            [apps.shop.apns]
            team_id = "TEAM123456"
            key_id = "KEY1234567"
            key = { file = "apns.p8" }
            topic = "com.example.shop"
            environment = "sandbox"
            [apps.shop.webpush]
            vapid_private_key = { env = "SHOP_VAPID" }
            subject = "mailto:ops@example.com"
            allow_private_endpoints = true
            [apps.news]
            sender = "onesignal"
            [apps.news.onesignal]
            app_id = "b2f7f966-d8cc-11e4-bed1-df8f05be55ba"
            api_key = "inline-api-key"
            "#,
        )
        .map_err(|e| e.to_string())?;

        let config = load(None)?;

        assert_eq!(config.file, Some(PathBuf::from("clarion.toml")));
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert!(!config.worker.enabled);
        assert_eq!(config.worker.batch_size, 10);
        assert_eq!(config.tls.extra_ca_certs, [PathBuf::from("ca.pem")]);
        let shop = &config.apps["shop"];
        assert_eq!(shop.retry.max_attempts, 2);
        let apns = shop.apns.as_ref().unwrap();
        assert_eq!(apns.environment, ApnsEnvironment::Sandbox);
        assert_eq!(apns.key, Some(Secret::File("apns.p8".into())));
        let news = &config.apps["news"];
        assert_eq!(news.onesignal.as_ref().unwrap().language, "en");
        let apps = config.applications();
        let shop = apps.get("shop").unwrap();
        assert_eq!(shop.endpoint_policy, EndpointPolicy::AllowPrivate);
        assert_eq!(shop.apns.as_ref().unwrap().topic, "com.example.shop");
        let news = apps.get("news").unwrap();
        assert_eq!(news.sender, SenderKind::Onesignal);
        assert_eq!(news.onesignal.as_ref().unwrap().language, "en");
        assert!(apps.get("default").is_err());
        Ok(())
    });
}

#[test]
fn environment_variables_override_the_file() {
    jailed(|jail| {
        jail.create_file(
            "custom.toml",
            "listen = \"127.0.0.1:1\"\n[apps.shop]\nsender = \"direct\"\n",
        )
        .map_err(|e| e.to_string())?;
        jail.set_env("CLARION_CONFIG", "custom.toml");
        jail.set_env("CLARION_LISTEN", "127.0.0.1:2");
        jail.set_env("CLARION_DEBUG", "true");
        jail.set_env("CLARION_WORKER__POLL_INTERVAL_SECS", "7");
        jail.set_env("CLARION_APPS__SHOP__SENDER", "debug");
        jail.set_env("CLARION_APPS__SHOP__RETRY__MAX_ATTEMPTS", "9");
        // Not configuration keys: the CLI's own variables must not be refused.
        jail.set_env("CLARION_API_KEY", "not-a-config-key");

        let config = load(None)?;

        assert_eq!(config.file, Some(PathBuf::from("custom.toml")));
        assert_eq!(config.listen, "127.0.0.1:2");
        assert!(config.debug);
        assert_eq!(config.worker.poll_interval_secs, 7);
        assert_eq!(config.apps["shop"].sender, SenderKind::Debug);
        assert_eq!(config.apps["shop"].retry.max_attempts, 9);
        Ok(())
    });
}

#[test]
fn clarion_database_url_sets_the_database_url() {
    jailed(|jail| {
        jail.set_env("CLARION_DATABASE_URL", "sqlite:///tmp/other.db");

        let config = load(None)?;

        assert_eq!(config.database.url, "sqlite:///tmp/other.db");
        Ok(())
    });
}

#[test]
fn a_named_file_that_does_not_exist_is_an_error() {
    jailed(|_| {
        let error = load(Some(Path::new("missing.toml"))).unwrap_err();

        assert_eq!(error, "configuration file missing.toml not found");
        Ok(())
    });
}

#[test]
fn an_unknown_key_is_an_error_naming_the_file_and_the_key() {
    jailed(|jail| {
        jail.create_file("clarion.toml", "[worker]\npoll_interval = 3\n")
            .map_err(|e| e.to_string())?;

        let error = load(None).unwrap_err();

        assert!(error.contains("clarion.toml"), "{error}");
        assert!(error.contains("worker.poll_interval"), "{error}");
        Ok(())
    });
}

#[test]
fn an_unknown_environment_key_names_the_variable() {
    jailed(|jail| {
        jail.set_env("CLARION_WORKER__SPEED", "3");

        let error = load(None).unwrap_err();

        assert!(error.contains("worker.speed"), "{error}");
        assert!(error.contains("environment variable"), "{error}");
        Ok(())
    });
}

#[test]
fn invalid_values_are_refused_by_key() {
    let cases = [
        ("listen = \"localhost\"\n", "listen"),
        ("[database]\nurl = \"mysql://db\"\n", "database.url"),
        (
            "[worker]\npoll_interval_secs = 0\n",
            "worker.poll_interval_secs",
        ),
        ("[apps.Shop]\nsender = \"debug\"\n", "apps.Shop"),
        (
            "[http]\nheader_read_timeout_secs = 0\n",
            "http.header_read_timeout_secs",
        ),
        ("[http]\nmax_connections = 0\n", "http.max_connections"),
        ("[http]\nmax_header_bytes = 10\n", "http.max_header_bytes"),
        (
            "[apps.shop.retry]\nmax_attempts = 0\n",
            "retry.max_attempts must be at least 1",
        ),
        ("[apps.shop]\nsender = \"onesignal\"\n", "apps.shop.sender"),
        (
            "[apps.shop]\nsender = \"carrier-pigeon\"\n",
            "apps.shop.sender",
        ),
        (
            "[apps.shop.apns]\nteam_id = \"T\"\n",
            "apps.shop.apns.topic",
        ),
    ];
    for (file, expected) in cases {
        jailed(|jail| {
            jail.create_file("clarion.toml", file)
                .map_err(|e| e.to_string())?;

            let error = load(None).unwrap_err();

            assert!(error.contains(expected), "{file}: {error}");
            assert!(error.contains("clarion.toml"), "{file}: {error}");
            Ok(())
        });
    }
}

#[test]
fn every_count_and_duration_of_zero_is_refused_by_key() {
    let keys = [
        "database.max_connections",
        "worker.poll_interval_secs",
        "worker.batch_size",
        "worker.message_concurrency",
        "worker.app_concurrency",
        "worker.delivery_concurrency",
        "worker.lease_secs",
        "http.body_limit_bytes",
        "http.bulk_body_limit_bytes",
        "http.send_wait_secs",
        "http.header_read_timeout_secs",
        "http.idle_timeout_secs",
        "http.body_read_timeout_secs",
        "http.max_connections",
    ];
    for key in keys {
        jailed(|jail| {
            let (section, name) = key.split_once('.').unwrap();
            jail.create_file("clarion.toml", &format!("[{section}]\n{name} = 0\n"))
                .map_err(|e| e.to_string())?;

            let error = load(None).unwrap_err();

            assert_eq!(error, format!("clarion.toml: {key}: must be at least 1"));
            Ok(())
        });
    }
}

#[test]
fn template_limits_out_of_range_are_refused_by_key() {
    let cases = [
        ("[templates]\nmax_nesting = 0\n", "templates.max_nesting"),
        ("[templates]\nmax_nesting = 501\n", "templates.max_nesting"),
        (
            "[templates]\nmax_source_bytes = 0\n",
            "templates.max_source_bytes",
        ),
        (
            "[templates]\nmax_output_bytes = 0\n",
            "templates.max_output_bytes",
        ),
        ("[templates]\nfuel = 0\n", "templates.fuel"),
        (
            "[templates]\nrender_timeout_ms = 0\n",
            "templates.render_timeout_ms",
        ),
        (
            "[templates]\nrender_workers = 0\n",
            "templates.render_workers",
        ),
        (
            "[templates]\nrender_memory_mb = 16\n",
            "templates.render_memory_mb",
        ),
        ("[templates]\nisolation = \"fork\"\n", "templates.isolation"),
    ];
    for (file, expected) in cases {
        jailed(|jail| {
            jail.create_file("clarion.toml", file)
                .map_err(|e| e.to_string())?;

            let error = load(None).unwrap_err();

            assert!(error.contains(expected), "{file}: {error}");
            Ok(())
        });
    }
}

#[test]
fn template_limits_default_to_the_documented_values_and_follow_the_environment() {
    jailed(|jail| {
        jail.set_env("CLARION_TEMPLATES__MAX_NESTING", "40");
        jail.set_env("CLARION_TEMPLATES__ISOLATION", "thread");

        let config = load(None)?;

        assert_eq!(
            config.templates,
            TemplatesConfig {
                max_nesting: 40,
                isolation: TemplateIsolation::Thread,
                ..TemplatesConfig::default()
            }
        );
        assert_eq!(
            TemplatesConfig::default(),
            TemplatesConfig {
                max_source_bytes: 65_536,
                max_nesting: 64,
                max_output_bytes: 65_536,
                fuel: 50_000,
                render_timeout_ms: 1000,
                render_memory_mb: 256,
                render_workers: 2,
                isolation: TemplateIsolation::Process,
            }
        );
        Ok(())
    });
}

#[test]
fn a_syntax_error_does_not_quote_the_line() {
    jailed(|jail| {
        jail.create_file(
            "clarion.toml",
            "[apps.shop.onesignal]\napi_key = \"top-secret-key\" oops\n",
        )
        .map_err(|e| e.to_string())?;

        let error = load(None).unwrap_err();

        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("top-secret-key"), "{error}");
        Ok(())
    });
}

#[test]
fn debug_true_turns_every_sender_into_debug() {
    jailed(|jail| {
        jail.create_file(
            "clarion.toml",
            r#"
            debug = true
            [apps.shop]
            sender = "direct"
            [apps.news]
            sender = "onesignal"
            onesignal = { app_id = "x", api_key = "k" }
            "#,
        )
        .map_err(|e| e.to_string())?;

        let config = load(None)?;

        let senders: Vec<SenderKind> = config.applications().iter().map(|app| app.sender).collect();
        assert_eq!(senders, [SenderKind::Debug, SenderKind::Debug]);
        Ok(())
    });
}

#[test]
fn secrets_come_inline_from_a_file_or_from_the_environment() {
    jailed(|jail| {
        jail.create_file("key.txt", "from-file\n")
            .map_err(|e| e.to_string())?;
        jail.set_env("SHOP_KEY", "from-env");

        let inline = Secret::Inline("inline".to_owned());
        let file = Secret::File("key.txt".into());
        let env = Secret::Env("SHOP_KEY".to_owned());

        assert_eq!(inline.expose().unwrap(), "inline");
        assert_eq!(file.expose().unwrap(), "from-file");
        assert_eq!(env.expose().unwrap(), "from-env");
        let missing = Secret::Env("CLARION_TEST_UNSET".to_owned())
            .expose()
            .unwrap_err()
            .to_string();
        assert_eq!(
            missing,
            "environment variable CLARION_TEST_UNSET is not set"
        );
        Ok(())
    });
}

#[test]
fn a_secret_takes_exactly_one_source() {
    jailed(|jail| {
        jail.create_file(
            "clarion.toml",
            "[apps.shop]\nclient_token_secret = { file = \"a\", env = \"B\" }\n",
        )
        .map_err(|e| e.to_string())?;

        let error = load(None).unwrap_err();

        assert!(error.contains("exactly one"), "{error}");
        assert!(error.contains("apps.shop.client_token_secret"), "{error}");
        Ok(())
    });
}

/// A configuration with a secret of each kind and a PostgreSQL URL that refuses connections.
pub(crate) fn config_with_secrets() -> Config {
    let mut config = Config::default();
    // Port 1 refuses connections at once, so `check` fails fast and offline.
    config.database.url =
        "postgres://clarion:db-password@127.0.0.1:1/clarion?sslpassword=query-password".to_owned();
    config.apps.insert(
        "shop".to_owned(),
        AppConfig {
            onesignal: Some(OneSignalConfig {
                app_id: "app".to_owned(),
                api_key: Secret::Inline("inline-api-key".to_owned()),
                language: "en".to_owned(),
                endpoint: None,
                timeout_secs: None,
            }),
            fcm: Some(FcmConfig {
                service_account: Secret::File("sa.json".into()),
                endpoint: None,
                timeout_secs: Some(5),
                connections: None,
                max_in_flight: None,
            }),
            client_token_secret: Some(Secret::Env("SHOP_JWT".to_owned())),
            ..AppConfig::default()
        },
    );
    config
}

#[test]
fn secrets_are_never_printed_by_debug_or_redacted_toml() {
    let config = config_with_secrets();

    let debug = format!("{config:?}");
    let toml = config.redacted_toml();

    for shown in [&debug, &toml] {
        assert!(!shown.contains("inline-api-key"), "{shown}");
        assert!(!shown.contains("db-password"), "{shown}");
        assert!(!shown.contains("query-password"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(shown.contains("sa.json"), "{shown}");
        assert!(shown.contains("SHOP_JWT"), "{shown}");
    }
}

#[test]
fn redacted_toml_reads_back_as_the_same_configuration_but_for_secrets() {
    let config = Config::default();

    let toml = config.redacted_toml();
    let back: Config = toml::from_str(&toml).unwrap();

    assert_eq!(back, config, "{toml}");
}

#[test]
fn the_database_url_selects_the_engine_and_a_plain_path_is_sqlite() {
    for (url, kind) in [
        ("sqlite://clarion.db", Some(DatabaseKind::Sqlite)),
        ("sqlite::memory:", Some(DatabaseKind::Sqlite)),
        ("/var/lib/clarion/clarion.db", Some(DatabaseKind::Sqlite)),
        ("data/clarion.db", Some(DatabaseKind::Sqlite)),
        (
            "postgres://clarion@db/clarion",
            Some(DatabaseKind::Postgres),
        ),
        (
            "postgresql://clarion@db/clarion",
            Some(DatabaseKind::Postgres),
        ),
        ("mysql://clarion@db/clarion", None),
        ("", None),
    ] {
        let config = DatabaseConfig {
            url: url.to_owned(),
            ..DatabaseConfig::default()
        };
        assert_eq!(config.kind().ok(), kind, "{url}");
    }
}

#[test]
fn a_password_in_a_database_url_is_redacted() {
    assert_eq!(
        redact_url("postgres://clarion:p@ss/word@db:5432/clarion"),
        "postgres://clarion:[redacted]@db:5432/clarion"
    );
    assert_eq!(redact_url("sqlite://clarion.db"), "sqlite://clarion.db");
    assert_eq!(
        redact_url("postgres://clarion@db/x"),
        "postgres://clarion@db/x"
    );
}

#[test]
fn apns_concurrency_is_still_read_as_max_in_flight() {
    let old: ApnsConfig = toml::from_str("topic = \"t\"\nconcurrency = 7").unwrap();
    let new: ApnsConfig =
        toml::from_str("topic = \"t\"\nconnections = 2\nmax_in_flight = 9").unwrap();

    assert_eq!(old.max_in_flight, Some(7));
    assert_eq!((new.connections, new.max_in_flight), (Some(2), Some(9)));
}
