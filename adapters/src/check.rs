//! `clarion config check`: every check of a configuration, in the order they are shown. Each
//! part is checked by the code that uses it (the database by the stores, the credentials and
//! trusted roots by the providers); this module only calls them in turn and adds the checks
//! that need no adapter (the sender of each application, whether each secret can be read).
//!
//! The arrows go one way: this module depends on the configuration and on the adapters, and
//! the configuration ([`crate::config`]) depends on neither.

use clarion_domain::app::SenderKind;

use crate::config::{AppConfig, CheckItem, Config, Secret};

/// Checks the database (a PostgreSQL server is connected to; nothing is migrated), that
/// every secret and extra CA certificate can be read, and that service-account files look
/// like one. No detail holds a secret's value or the database password.
pub async fn run(config: &Config) -> Vec<CheckItem> {
    let mut items = Vec::new();
    items.push(CheckItem::ok(
        "config file".to_owned(),
        match &config.file {
            Some(file) => format!("read {}", file.display()),
            None => "none: defaults and environment variables".to_owned(),
        },
    ));
    items.push(crate::store::check_database(&config.database).await);
    for (id, app) in &config.apps {
        items.push(check_sender(config.debug, id, app));
        for (subject, secret) in app.secrets(id) {
            items.push(check_secret(subject, secret));
        }
        items.extend(crate::providers::check_credentials(id, app));
    }
    items.extend(crate::providers::http::check_extra_roots(&config.tls));
    items
}

/// Whether the application's sender has the sections it sends through.
fn check_sender(debug: bool, id: &str, app: &AppConfig) -> CheckItem {
    let subject = format!("apps.{id}");
    if debug {
        return CheckItem::ok(subject, "sender debug (debug = true)".to_owned());
    }
    match app.sender {
        SenderKind::Debug => CheckItem::ok(subject, "sender debug".to_owned()),
        SenderKind::Onesignal if app.onesignal.is_some() => {
            CheckItem::ok(subject, "sender onesignal".to_owned())
        }
        SenderKind::Onesignal => CheckItem::failed(
            subject,
            "sender onesignal without an onesignal section".to_owned(),
        ),
        SenderKind::Direct => {
            let providers: Vec<&str> = [
                app.apns.as_ref().map(|_| "apns"),
                app.fcm.as_ref().map(|_| "fcm"),
                app.webpush.as_ref().map(|_| "webpush"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if providers.is_empty() {
                CheckItem::failed(
                    subject,
                    "sender direct but no apns, fcm or webpush section".to_owned(),
                )
            } else {
                CheckItem::ok(
                    subject,
                    format!("sender direct via {}", providers.join(", ")),
                )
            }
        }
    }
}

/// Whether a secret can be read and is not blank; the detail names where it comes from.
fn check_secret(subject: String, secret: &Secret) -> CheckItem {
    match secret.expose() {
        Ok(value) if value.trim().is_empty() => {
            CheckItem::failed(subject, format!("{} is empty", secret.origin()))
        }
        Ok(_) => CheckItem::ok(subject, format!("{} is readable", secret.origin())),
        Err(error) => CheckItem::failed(subject, format!("{error:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::run;
    use crate::config::tests::{config_with_secrets, jailed};

    /// Runs a future to completion on a runtime of its own (the jailed tests are synchronous).
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn check_reports_each_secret_without_its_value() {
        jailed(|jail| {
            jail.create_file(
                "sa.json",
                r#"{"project_id": "p", "client_email": "e@p.iam.gserviceaccount.com", "private_key": "pk-secret"}"#,
            )
            .map_err(|e| e.to_string())?;
            let mut config = config_with_secrets();
            config.tls.extra_ca_certs = vec!["missing-ca.pem".into()];

            let items = block_on(run(&config));

            let find = |subject: &str| {
                items
                    .iter()
                    .find(|item| item.subject == subject)
                    .unwrap_or_else(|| panic!("no {subject} in {items:?}"))
                    .clone()
            };
            let database = find("database.url");
            assert!(!database.ok);
            assert!(
                database.detail.contains("127.0.0.1:1")
                    && !database.detail.contains("db-password")
                    && !database.detail.contains("query-password"),
                "{database:?}"
            );
            assert!(find("apps.shop.onesignal.api_key").ok);
            assert!(find("apps.shop.fcm.service_account").ok);
            let credentials = find("apps.shop.fcm (credentials)");
            assert!(!credentials.ok);
            assert!(
                credentials
                    .detail
                    .contains("private_key is not an RSA private key"),
                "{credentials:?}"
            );
            let jwt = find("apps.shop.client_token_secret");
            assert!(!jwt.ok);
            assert!(jwt.detail.contains("SHOP_JWT"));
            assert!(!find("tls.extra_ca_certs[0]").ok);
            let all = format!("{items:?}");
            assert!(
                !all.contains("inline-api-key") && !all.contains("pk-secret"),
                "{all}"
            );
            Ok(())
        });
    }

    #[test]
    fn check_refuses_a_service_account_without_its_fields() {
        jailed(|jail| {
            jail.create_file("sa.json", r#"{"type": "service_account"}"#)
                .map_err(|e| e.to_string())?;

            let items = block_on(run(&config_with_secrets()));

            let content = items
                .iter()
                .find(|item| item.subject == "apps.shop.fcm (credentials)")
                .unwrap();
            assert!(!content.ok);
            assert!(content.detail.contains("project_id"), "{content:?}");
            Ok(())
        });
    }
}
