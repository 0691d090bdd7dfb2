//! OneSignal payloads: a notification to one external user id.

use serde_json::{Map, Value, json};

use crate::app::Application;
use crate::ids::UserId;
use crate::message::{MessageSpec, Priority};
use crate::payload::PayloadError;

/// The OneSignal payload limit in bytes.
pub const LIMIT: usize = 4096;

const PROVIDER: &str = "OneSignal";

/// The language OneSignal requires in `contents` and `headings`.
const REQUIRED_LANGUAGE: &str = "en";

/// One OneSignal request: the JSON body of `POST {endpoint}/notifications`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneSignalRequest {
    /// The JSON body: the OneSignal app id, the external user id alias, `contents`, `headings`
    /// and the options.
    pub body: Vec<u8>,
}

/// Builds the OneSignal request for one external user id.
///
/// The body follows OneSignal's "Create notification" API: the push goes to the user's
/// `external_id` alias. `contents` and `headings` are keyed by the application's configured
/// language and, because OneSignal requires English content, also by `en` with the same text.
/// A silent message (`content_available` without heading or body) has no `contents`, which
/// OneSignal allows only for `content_available` pushes.
///
/// # Errors
/// [`PayloadError::Invalid`] when an option is refused, [`PayloadError::MissingSetting`] without OneSignal settings, [`PayloadError::TooLarge`] over
/// the limit.
pub fn build(
    app: &Application,
    spec: &MessageSpec,
    user: &UserId,
) -> Result<OneSignalRequest, PayloadError> {
    spec.options.validate()?;
    let Some(settings) = app.onesignal.as_ref().filter(|s| !s.app_id.is_empty()) else {
        return Err(PayloadError::MissingSetting {
            app: app.id.to_string(),
            provider: PROVIDER,
            setting: "onesignal.app_id",
        });
    };
    let content = &spec.content;
    let options = &spec.options;
    let heading = content.heading.as_deref().filter(|h| !h.is_empty());
    let silent = options.content_available && heading.is_none() && content.body.is_empty();
    let localised = |text: &str| {
        let mut map = Map::new();
        map.insert(REQUIRED_LANGUAGE.into(), json!(text));
        if !settings.language.is_empty() {
            map.insert(settings.language.clone(), json!(text));
        }
        Value::Object(map)
    };

    let mut body = Map::new();
    body.insert("app_id".into(), json!(settings.app_id));
    body.insert("target_channel".into(), json!("push"));
    body.insert(
        "include_aliases".into(),
        json!({ "external_id": [user.as_str()] }),
    );
    if !silent {
        body.insert("contents".into(), localised(&content.body));
    }
    if let Some(heading) = heading {
        body.insert("headings".into(), localised(heading));
    }
    if let Some(url) = &content.url {
        body.insert("url".into(), json!(url));
    }
    if let Some(extra) = content.extra_data.as_ref().filter(|e| !e.is_empty()) {
        body.insert("data".into(), Value::Object(extra.clone()));
    }
    if let Some(badge) = options.badge {
        body.insert("ios_badgeType".into(), json!("SetTo"));
        body.insert("ios_badgeCount".into(), json!(badge));
    }
    if let Some(sound) = &options.sound {
        body.insert("ios_sound".into(), json!(sound));
    }
    if let Some(thread_id) = &options.thread_id {
        body.insert("thread_id".into(), json!(thread_id));
    }
    if let Some(category) = &options.category {
        body.insert("ios_category".into(), json!(category));
    }
    if options.content_available {
        body.insert("content_available".into(), json!(true));
    }
    if options.mutable_content {
        body.insert("mutable_content".into(), json!(true));
    }
    if let Some(key) = &options.collapse_key {
        body.insert("collapse_id".into(), json!(key));
    }
    if let Some(ttl) = options.time_to_live {
        body.insert("ttl".into(), json!(ttl));
    }
    let priority = match spec.priority {
        Priority::High => 10,
        Priority::Normal => 5,
    };
    body.insert("priority".into(), json!(priority));

    let body = Value::Object(body).to_string().into_bytes();
    if body.len() > LIMIT {
        return Err(PayloadError::TooLarge {
            provider: PROVIDER,
            limit: LIMIT,
            size: body.len(),
        });
    }
    Ok(OneSignalRequest { body })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::app::{Application, OneSignalSettings, SenderKind};
    use crate::ids::{AppId, UserId};
    use crate::message::{Content, MessageSpec, Priority, PushOptions, Target};

    const APP_ID: &str = "5eb5a37e-b458-11e3-ac11-000c2940e62c";

    fn app(language: &str) -> Application {
        let mut app = Application::new(AppId::parse("shop").unwrap(), SenderKind::Onesignal);
        app.onesignal = Some(OneSignalSettings {
            app_id: APP_ID.into(),
            language: language.into(),
        });
        app
    }

    fn user() -> UserId {
        UserId::parse("alice").unwrap()
    }

    fn spec(content: Content, options: PushOptions) -> MessageSpec {
        MessageSpec {
            app: AppId::parse("shop").unwrap(),
            target: Target::User { user_id: user() },
            content,
            template_slug: None,
            tag: None,
            priority: Priority::High,
            options,
            related_objects: Vec::new(),
            retry_sending: true,
        }
    }

    fn text(body: &str) -> Content {
        Content {
            body: body.into(),
            ..Content::default()
        }
    }

    fn body_json(request: &OneSignalRequest) -> Value {
        serde_json::from_slice(&request.body).expect("the body is JSON")
    }

    #[test]
    fn a_full_message_fills_every_field() {
        let content = Content {
            heading: Some("Order shipped".into()),
            body: "Your parcel is on its way".into(),
            url: Some("https://example.com/orders/42".into()),
            extra_data: json!({"order": 42}).as_object().cloned(),
        };
        let options = PushOptions {
            badge: Some(3),
            sound: Some("default".into()),
            thread_id: Some("orders".into()),
            category: Some("ORDER".into()),
            collapse_key: Some("order-42".into()),
            time_to_live: Some(3600),
            content_available: true,
            mutable_content: true,
        };

        let request = build(&app("en"), &spec(content, options), &user()).unwrap();

        assert_eq!(
            body_json(&request),
            json!({
                "app_id": APP_ID,
                "target_channel": "push",
                "include_aliases": {"external_id": ["alice"]},
                "contents": {"en": "Your parcel is on its way"},
                "headings": {"en": "Order shipped"},
                "url": "https://example.com/orders/42",
                "data": {"order": 42},
                "ios_badgeType": "SetTo",
                "ios_badgeCount": 3,
                "ios_sound": "default",
                "thread_id": "orders",
                "ios_category": "ORDER",
                "content_available": true,
                "mutable_content": true,
                "collapse_id": "order-42",
                "ttl": 3600,
                "priority": 10,
            })
        );
    }

    #[test]
    fn a_minimal_message_has_the_target_contents_and_priority() {
        let mut spec = spec(text("Hello"), PushOptions::default());
        spec.priority = Priority::Normal;

        let request = build(&app("en"), &spec, &user()).unwrap();

        assert_eq!(
            body_json(&request),
            json!({
                "app_id": APP_ID,
                "target_channel": "push",
                "include_aliases": {"external_id": ["alice"]},
                "contents": {"en": "Hello"},
                "priority": 5,
            })
        );
    }

    #[test]
    fn another_language_is_sent_with_an_english_fallback() {
        let content = Content {
            heading: Some("Objednávka".into()),
            body: "Balík je na cestě".into(),
            ..Content::default()
        };

        let body =
            body_json(&build(&app("cs"), &spec(content, PushOptions::default()), &user()).unwrap());

        assert_eq!(
            body["contents"],
            json!({"cs": "Balík je na cestě", "en": "Balík je na cestě"})
        );
        assert_eq!(
            body["headings"],
            json!({"cs": "Objednávka", "en": "Objednávka"})
        );
    }

    #[test]
    fn a_silent_message_has_no_contents() {
        let options = PushOptions {
            content_available: true,
            ..PushOptions::default()
        };

        let body = body_json(&build(&app("en"), &spec(text(""), options), &user()).unwrap());

        assert_eq!(body.get("contents"), None);
        assert_eq!(body["content_available"], true);
    }

    #[test]
    fn an_application_without_onesignal_settings_is_missing_a_setting() {
        let mut app = app("en");
        app.onesignal = None;

        let result = build(&app, &spec(text("Hi"), PushOptions::default()), &user());

        assert_eq!(
            result,
            Err(PayloadError::MissingSetting {
                app: "shop".into(),
                provider: "OneSignal",
                setting: "onesignal.app_id",
            })
        );
    }

    /// A message whose body is padded with ASCII letters so that the request body is `target`
    /// bytes long. The body appears once per language in `contents`, so the padding is split
    /// over them; the application's language must make that division exact.
    fn padded_spec(
        app: &Application,
        heading: Option<String>,
        prefix: &str,
        extra: Map<String, Value>,
        target: usize,
    ) -> Option<MessageSpec> {
        let content = |body: String| Content {
            heading: heading.clone(),
            body,
            url: Some("https://example.com/x".into()),
            extra_data: Some(extra.clone()),
        };
        let base = spec(content(prefix.to_owned()), PushOptions::default());
        let overhead = build(app, &base, &user()).unwrap().body.len();
        let copies = body_json(&build(app, &base, &user()).unwrap())["contents"]
            .as_object()
            .unwrap()
            .len();
        let padding = target - overhead;
        if !padding.is_multiple_of(copies) {
            return None;
        }
        let body = format!("{prefix}{}", "x".repeat(padding / copies));
        Some(spec(content(body), PushOptions::default()))
    }

    fn extra_data() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map("[a-z]{1,8}", "\\PC{0,20}", 0..5)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    }

    proptest! {
        #[test]
        fn a_payload_at_the_limit_passes_and_one_byte_over_fails(
            heading in proptest::option::of("\\PC{1,40}"),
            prefix in "\\PC{1,40}",
            extra in extra_data(),
        ) {
            let app = app("en");
            let at_limit = padded_spec(&app, heading.clone(), &prefix, extra.clone(), LIMIT).unwrap();
            let over = padded_spec(&app, heading, &prefix, extra, LIMIT + 1).unwrap();

            let ok = build(&app, &at_limit, &user());
            let too_large = build(&app, &over, &user());

            prop_assert_eq!(ok.map(|r| r.body.len()), Ok(LIMIT));
            prop_assert_eq!(too_large, Err(PayloadError::TooLarge {
                provider: "OneSignal",
                limit: LIMIT,
                size: LIMIT + 1,
            }));
        }

        #[test]
        fn the_limit_counts_every_language_copy_of_the_body(
            heading in proptest::option::of("\\PC{1,40}"),
            prefix in "\\PC{1,40}",
            extra in extra_data(),
        ) {
            let app = app("de");
            // With two copies of the body, one of the two targets has an even padding.
            let (target, spec) = [LIMIT, LIMIT - 1]
                .into_iter()
                .find_map(|t| padded_spec(&app, heading.clone(), &prefix, extra.clone(), t).map(|s| (t, s)))
                .unwrap();
            let over = padded_spec(&app, heading, &prefix, extra, target + 2).unwrap();

            let ok = build(&app, &spec, &user());
            let too_large = build(&app, &over, &user());

            prop_assert_eq!(ok.map(|r| r.body.len()), Ok(target));
            prop_assert_eq!(too_large, Err(PayloadError::TooLarge {
                provider: "OneSignal",
                limit: LIMIT,
                size: target + 2,
            }));
        }
    }
}
