//! Fuzzes configuration loading: an arbitrary text as the configuration file, read by
//! `Config::load` exactly as `clarion-server` and `clarion` read theirs (figment, serde, then
//! the checks).
//!
//! It asserts that loading never panics, and that a configuration it accepts passes its own
//! checks again, shows as TOML that reads back, and has every application usable by the
//! domain (a valid id and retry policy).

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use clarion_adapters::config::Config;
use clarion_domain::app::SenderKind;
use clarion_domain::ids::{AppId, DeliveryId, DeviceId, MessageId, UserId};
use clarion_domain::message::{
    Channel, Content, Delivery, Message, MessageSpec, MessageState, Priority, PushOptions,
    SendOutcome, Target,
};
use clarion_domain::retry::RetryPolicy;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

/// The file the target writes each input to: one per process, as libFuzzer may run several.
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    std::env::temp_dir().join(format!("clarion-fuzz-config-{}.toml", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    if std::fs::write(&*FILE, data).is_err() {
        return;
    }
    let Ok(config) = Config::load(Some(&FILE)) else {
        return;
    };
    if let Err(error) = config.validate() {
        panic!("a loaded configuration fails its own checks: {error}");
    }
    let shown = config.redacted_toml();
    if let Err(error) = toml::from_str::<toml::Value>(&shown) {
        panic!("the redacted configuration is not TOML ({error}):\n{shown}");
    }
    let applications = config.applications();
    assert_eq!(applications.iter().count(), config.apps.len());
    for app in applications.iter() {
        assert!(app.retry.validate().is_ok(), "application {}", app.id);
        retry_walk(&app.retry);
    }
    // Debug output must not fail either (it redacts secrets by hand).
    let _ = format!("{config:?}");
});

/// Drives a message whose one delivery always fails for a transient reason through every
/// attempt the policy allows, as the worker would: the waits it computes must all be usable.
fn retry_walk(policy: &RetryPolicy) {
    let (Ok(app), Ok(user)) = (AppId::parse("walk"), UserId::parse("walker")) else {
        return;
    };
    let spec = MessageSpec {
        app,
        target: Target::User { user_id: user },
        content: Content {
            body: "retry".to_owned(),
            ..Content::default()
        },
        template_slug: None,
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: Vec::new(),
        retry_sending: true,
    };
    let mut now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let Ok(mut message) = Message::from_storage(
        MessageId(1),
        spec,
        SenderKind::Direct,
        Message::initial_progress(now),
        now,
        now,
    ) else {
        panic!("a new message's progress was refused");
    };
    message.deliveries = vec![Delivery::pending(
        DeliveryId(1),
        MessageId(1),
        Some(DeviceId(1)),
        Channel::Fcm,
        now,
    )];
    let failure = SendOutcome::Transient {
        code: "503".to_owned(),
        reason: "Unavailable".to_owned(),
        retry_after: None,
    };
    // A policy may allow billions of attempts; the first few hundred show the pattern.
    for _ in 0..policy.max_attempts.min(200) {
        if message.state() != MessageState::Waiting && message.state() != MessageState::ErrorRetry {
            break;
        }
        message.record_outcome(DeliveryId(1), &failure, now);
        if message.finish_attempt(policy, None, now).is_err() {
            break;
        }
        match message.next_attempt_at() {
            Some(at) if message.state() == MessageState::ErrorRetry => {
                assert!(at >= now, "a retry scheduled in the past: {at} < {now}");
                now = at;
            }
            _ => break,
        }
    }
}
