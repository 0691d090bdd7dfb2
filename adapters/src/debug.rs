//! The debug sender: takes every notification and sends nothing, so that messages end in
//! state DEBUG.

use async_trait::async_trait;
use clarion_domain::ids::AppId;
use clarion_domain::message::SendOutcome;
use clarion_domain::payload::Payload;
use clarion_domain::ports::PushProvider;

/// A push provider that sends nothing and records nothing outside the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct DebugSender;

#[async_trait]
impl PushProvider for DebugSender {
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome {
        // Only the application and the kind of payload: a payload carries device tokens and
        // message content, which stay out of the logs.
        tracing::debug!(
            app = %app,
            kind = payload_kind(payload),
            "debug sender took a notification"
        );
        SendOutcome::Debug
    }
}

/// The provider a payload is for, as a log-safe word.
fn payload_kind(payload: &Payload) -> &'static str {
    match payload {
        Payload::Apns(_) => "apns",
        Payload::Fcm(_) => "fcm",
        Payload::Webpush(_) => "webpush",
        Payload::Onesignal(_) => "onesignal",
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::sync::{Arc, Mutex};

    use clarion_domain::payload::FcmRequest;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;

    /// Records the fields of every event, formatted, so that a test can read what was logged.
    #[derive(Debug, Clone, Default)]
    struct Capture {
        lines: Arc<Mutex<Vec<String>>>,
    }

    struct Line<'a>(&'a mut String);

    impl Visit for Line<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut line = format!("{} ", event.metadata().level());
            event.record(&mut Line(&mut line));
            if let Ok(mut lines) = self.lines.lock() {
                lines.push(line);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[tokio::test]
    async fn the_debug_sender_takes_the_notification_and_logs_no_token() {
        let capture = Capture::default();
        let _guard = tracing::subscriber::set_default(capture.clone());
        let app = AppId::parse("shop").unwrap();
        let payload = Payload::Fcm(FcmRequest {
            token: "secret-registration-token".to_owned(),
            body: br#"{"message":{"token":"secret-registration-token"}}"#.to_vec(),
        });

        let outcome = DebugSender.send(&app, &payload).await;

        assert_eq!(outcome, SendOutcome::Debug);
        let lines = capture.lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("DEBUG "), "{lines:?}");
        assert!(
            lines[0].contains("shop") && lines[0].contains("fcm"),
            "{lines:?}"
        );
        assert!(!lines[0].contains("secret"), "{lines:?}");
    }
}
