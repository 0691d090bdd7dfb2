//! Output: one JSON document with `--json`, human-readable tables otherwise.

use std::io::Write as _;

use clarion_domain::auth::{ApiKey, CreatedApiKey};
use clarion_domain::device::{Device, Registration};
use clarion_domain::message::{Delivery, Message};
use clarion_domain::template::{Rendered, Template};
use clarion_domain::token::DeviceToken;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::CliError;

/// Prints `value` as pretty JSON on stdout.
///
/// # Errors
/// When serialisation or writing fails.
pub fn json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Failure(anyhow::Error::new(e).context("failed to write JSON")))?;
    line(&text);
    Ok(())
}

/// Prints one line on stdout. A closed stdout (`clarion ... | head`) is not an error.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    table
}

fn time(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

fn opt(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

pub fn registration(device: &Device, registration: Registration) {
    let verb = match registration {
        Registration::Created => "created",
        Registration::Updated => "updated",
    };
    line(&format!("{verb} device {}", device.id));
    device_detail(device);
}

pub fn devices(devices: &[Device]) {
    let mut t = table(&[
        "id", "platform", "user", "name", "active", "token", "created",
    ]);
    for d in devices {
        t.add_row(vec![
            d.id.to_string(),
            d.platform().to_string(),
            opt(d.user_id.as_ref().map(|u| u.as_str())),
            opt(d.name.as_deref()),
            if d.active { "yes" } else { "no" }.to_owned(),
            short(d.token.key(), 40),
            time(d.created_at),
        ]);
    }
    line(&t.to_string());
}

pub fn device_detail(d: &Device) {
    let mut t = table(&["field", "value"]);
    t.add_row(vec!["id".to_owned(), d.id.to_string()]);
    t.add_row(vec!["app".to_owned(), d.app.to_string()]);
    t.add_row(vec!["platform".to_owned(), d.platform().to_string()]);
    t.add_row(vec!["token".to_owned(), d.token.key().to_owned()]);
    if let DeviceToken::Webpush { subscription: s } = &d.token {
        t.add_row(vec!["p256dh".to_owned(), s.p256dh().to_owned()]);
        t.add_row(vec!["auth".to_owned(), s.auth().to_owned()]);
    }
    t.add_row(vec![
        "user".to_owned(),
        opt(d.user_id.as_ref().map(|u| u.as_str())),
    ]);
    t.add_row(vec!["name".to_owned(), opt(d.name.as_deref())]);
    t.add_row(vec!["device_id".to_owned(), opt(d.device_id.as_deref())]);
    t.add_row(vec!["active".to_owned(), d.active.to_string()]);
    t.add_row(vec!["created".to_owned(), time(d.created_at)]);
    t.add_row(vec!["updated".to_owned(), time(d.updated_at)]);
    if let Some(at) = d.deactivated_at {
        t.add_row(vec!["deactivated".to_owned(), time(at)]);
        t.add_row(vec![
            "reason".to_owned(),
            opt(d.deactivation_reason.as_deref()),
        ]);
    }
    line(&t.to_string());
}

fn target_text(message: &Message) -> String {
    use clarion_domain::message::Target;
    match &message.spec.target {
        Target::User { user_id } => format!("user {user_id}"),
        Target::Devices { device_ids } => format!(
            "devices {}",
            device_ids
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Target::Broadcast { platform: None } => "broadcast".to_owned(),
        Target::Broadcast {
            platform: Some(platform),
        } => format!("broadcast to {platform}"),
    }
}

fn related_text(message: &Message) -> String {
    let related: Vec<String> = message
        .spec
        .related_objects
        .iter()
        .map(ToString::to_string)
        .collect();
    if related.is_empty() {
        "-".to_owned()
    } else {
        related.join(", ")
    }
}

pub fn messages(messages: &[Message]) {
    let mut t = table(&[
        "id",
        "state",
        "target",
        "heading",
        "body",
        "tag",
        "template",
        "related",
        "deliveries",
        "created",
    ]);
    for m in messages {
        t.add_row(vec![
            m.id.to_string(),
            m.state().to_string(),
            target_text(m),
            short(m.spec.content.heading.as_deref().unwrap_or("-"), 30),
            short(&m.spec.content.body, 40),
            opt(m.spec.tag.as_ref().map(|t| t.as_str())),
            opt(m.spec.template_slug.as_ref().map(|s| s.as_str())),
            related_text(m),
            m.deliveries.len().to_string(),
            time(m.created_at),
        ]);
    }
    line(&t.to_string());
}

pub fn message_detail(m: &Message) {
    let spec = &m.spec;
    let mut t = table(&["field", "value"]);
    let mut row = |k: &str, v: String| {
        t.add_row(vec![k.to_owned(), v]);
    };
    row("id", m.id.to_string());
    row("app", spec.app.to_string());
    row("state", m.state().to_string());
    row("error", opt(m.error()));
    row("sender", m.sender.to_string());
    row("target", target_text(m));
    row("heading", opt(spec.content.heading.as_deref()));
    row("body", spec.content.body.clone());
    row("url", opt(spec.content.url.as_deref()));
    row(
        "template",
        opt(spec.template_slug.as_ref().map(|s| s.as_str())),
    );
    row("tag", opt(spec.tag.as_ref().map(|t| t.as_str())));
    row("related", related_text(m));
    row("priority", spec.priority.as_str().to_owned());
    if let Some(data) = &spec.content.extra_data {
        row(
            "extra_data",
            serde_json::Value::Object(data.clone()).to_string(),
        );
    }
    let options = serde_json::to_value(&spec.options).unwrap_or_default();
    if options.as_object().is_some_and(|o| !o.is_empty()) {
        row("options", options.to_string());
    }
    row("retry_sending", spec.retry_sending.to_string());
    row("attempts", m.number_of_send_attempts().to_string());
    if let Some(at) = m.next_attempt_at() {
        row("next_attempt_at", time(at));
    }
    if let Some(at) = m.progress().sent_at {
        row("sent_at", time(at));
    }
    row("created", time(m.created_at));
    row("changed", time(m.changed_at));
    line(&t.to_string());
    deliveries(&m.deliveries);
}

fn deliveries(deliveries: &[Delivery]) {
    if deliveries.is_empty() {
        line("no deliveries");
        return;
    }
    let mut t = table(&[
        "delivery",
        "device",
        "channel",
        "state",
        "attempts",
        "provider id",
        "error",
    ]);
    for d in deliveries {
        let error = match (d.error_code(), d.error_text()) {
            (Some(code), Some(text)) => format!("{code}: {text}"),
            (Some(one), None) | (None, Some(one)) => one.to_owned(),
            (None, None) => "-".to_owned(),
        };
        t.add_row(vec![
            d.id.to_string(),
            d.device_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            d.channel.as_str().to_owned(),
            d.state().as_str().to_owned(),
            d.attempts().to_string(),
            opt(d.provider_id()),
            error,
        ]);
    }
    line(&t.to_string());
}

pub fn templates(templates: &[Template]) {
    let mut t = table(&[
        "slug",
        "heading",
        "body",
        "url",
        "active",
        "duplicates",
        "updated",
    ]);
    for tpl in templates {
        t.add_row(vec![
            tpl.slug.to_string(),
            short(tpl.heading.as_deref().unwrap_or("-"), 30),
            short(&tpl.body, 40),
            short(tpl.url.as_deref().unwrap_or("-"), 30),
            if tpl.is_active { "yes" } else { "no" }.to_owned(),
            if tpl.allow_duplicates {
                "allowed"
            } else {
                "blocked"
            }
            .to_owned(),
            time(tpl.updated_at),
        ]);
    }
    line(&t.to_string());
}

pub fn template_detail(tpl: &Template) {
    let mut t = table(&["field", "value"]);
    t.add_row(vec!["slug".to_owned(), tpl.slug.to_string()]);
    t.add_row(vec!["app".to_owned(), tpl.app.to_string()]);
    t.add_row(vec!["heading".to_owned(), opt(tpl.heading.as_deref())]);
    t.add_row(vec!["body".to_owned(), tpl.body.clone()]);
    t.add_row(vec!["url".to_owned(), opt(tpl.url.as_deref())]);
    t.add_row(vec!["active".to_owned(), tpl.is_active.to_string()]);
    t.add_row(vec![
        "allow_duplicates".to_owned(),
        tpl.allow_duplicates.to_string(),
    ]);
    t.add_row(vec!["created".to_owned(), time(tpl.created_at)]);
    t.add_row(vec!["updated".to_owned(), time(tpl.updated_at)]);
    line(&t.to_string());
}

pub fn rendered(r: &Rendered) {
    let mut t = table(&["field", "value"]);
    t.add_row(vec!["heading".to_owned(), opt(r.heading.as_deref())]);
    t.add_row(vec!["body".to_owned(), r.body.clone()]);
    t.add_row(vec!["url".to_owned(), opt(r.url.as_deref())]);
    line(&t.to_string());
}

/// A table of (subject, ok, detail) rows, for `config check`.
pub fn checks<'a>(rows: impl IntoIterator<Item = (&'a str, bool, &'a str)>) {
    let mut t = table(&["subject", "ok", "detail"]);
    for (subject, ok, detail) in rows {
        t.add_row(vec![
            subject.to_owned(),
            if ok { "ok" } else { "FAILED" }.to_owned(),
            detail.to_owned(),
        ]);
    }
    line(&t.to_string());
}

/// A new key with its secret: the only time it is printed.
pub fn created_key(created: &CreatedApiKey) {
    line(&format!(
        "created API key {} ({}, scope {})",
        created.key.id, created.key.name, created.key.scope
    ));
    line(&format!("secret (shown once): {}", created.secret));
}

/// The keys, never their secrets.
pub fn keys(keys: &[ApiKey]) {
    let mut t = table(&["id", "name", "scope", "prefix", "created", "revoked"]);
    for k in keys {
        t.add_row(vec![
            k.id.to_string(),
            k.name.clone(),
            k.scope.to_text(),
            k.prefix.clone(),
            time(k.created_at),
            k.revoked_at.map_or_else(|| "-".to_owned(), time),
        ]);
    }
    line(&t.to_string());
}
