//! One message of a bulk send: an item of `POST /v1/apps/{app}/messages/bulk`, or a line of
//! `clarion send --file`. Both read the same JSON with the same checks, so that a file the
//! CLI accepts is a list the API accepts, and both send it through the same service call.
//!
//! An item is the body of `POST /v1/apps/{app}/messages` (it has `body`) or of
//! `POST /v1/apps/{app}/messages/template` (it has `slug`), with its own target, content,
//! options and dispatch. A broadcast is refused: it reaches every device of the application,
//! which is not a bulk of messages but one large one, sent on its own.

use clarion_domain::ids::MessageId;
use clarion_domain::message::{Message, Target};
use clarion_domain::service::{
    Dispatch, PushService, SendError, SendRequest, TemplateSend, TemplateSendRequest,
};
use clarion_domain::template::CannotSend;
use serde_json::{Map, Value};

use crate::api::messages::{SendBody, TemplateSendBody};
use crate::error::ApiError;

/// The most messages one bulk request may hold.
pub const MAX_BULK_MESSAGES: usize = 1000;

/// The most deliveries the messages of one bulk request may reach in all: each device id
/// given counts one, and each user target counts the user's active devices.
pub const MAX_BULK_DELIVERIES: usize = 10_000;

/// A message of a bulk send, read and checked, ready for the service.
#[derive(Debug)]
pub enum BulkItem {
    /// A message with its own text.
    Send {
        request: SendRequest,
        dispatch: Dispatch,
    },
    /// A message rendered from a stored template.
    Template {
        request: TemplateSendRequest,
        dispatch: Dispatch,
    },
}

/// Why the service did not store a bulk item.
#[derive(Debug)]
pub enum Refused {
    /// As the single send would have refused it.
    Send(SendError),
    /// The template may not send (inactive, or a duplicate); nothing was stored.
    NotSent(CannotSend),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Send(error) => error.into(),
            Refused::NotSent(reason) => ApiError::Conflict(format!("not sent: {reason}")),
        }
    }
}

impl BulkItem {
    /// Reads one item from its JSON text. The error is the problem's detail, naming the
    /// field (`target.user_id: ...`) as the single send does.
    ///
    /// # Errors
    /// Text that is not a JSON object, a field that is missing, unknown or invalid, or a
    /// broadcast.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::parse_checked(raw).map_err(|error| error.problem().detail)
    }

    /// [`BulkItem::parse`] with the API's error, whose fields are named from the item.
    pub(crate) fn parse_checked(raw: &str) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_str(raw)
            .map_err(|error| ApiError::BadRequest(format!("not valid JSON: {error}")))?;
        let Value::Object(fields) = value else {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        };
        let item = if fields.contains_key("slug") {
            let body: TemplateSendBody = fields_into(fields)?;
            let (request, dispatch) = body.into_request()?;
            BulkItem::Template { request, dispatch }
        } else {
            let body: SendBody = fields_into(fields)?;
            let (request, dispatch) = body.into_request()?;
            BulkItem::Send { request, dispatch }
        };
        if matches!(item.target(), Target::Broadcast { .. }) {
            return Err(ApiError::invalid(
                "target",
                "a broadcast is not accepted in a bulk send; send it on its own",
            ));
        }
        Ok(item)
    }

    /// Who the message is for.
    #[must_use]
    pub fn target(&self) -> &Target {
        match self {
            BulkItem::Send { request, .. } => &request.target,
            BulkItem::Template { request, .. } => &request.target,
        }
    }

    /// Whether it is sent now or left to the worker.
    #[must_use]
    pub fn dispatch(&self) -> Dispatch {
        match self {
            BulkItem::Send { dispatch, .. } | BulkItem::Template { dispatch, .. } => *dispatch,
        }
    }

    /// Stores the message and, for [`Dispatch::Now`], sends it, through
    /// [`PushService::send_reporting`] or [`PushService::send_template_reporting`];
    /// `on_stored` is called with its id as soon as it is stored.
    ///
    /// # Errors
    /// [`Refused`]: what the single send would have answered.
    pub async fn send(
        self,
        service: &PushService,
        app: &str,
        on_stored: &(dyn Fn(MessageId) + Send + Sync),
    ) -> Result<Message, Refused> {
        match self {
            BulkItem::Send { request, dispatch } => service
                .send_reporting(app, request, dispatch, on_stored)
                .await
                .map_err(Refused::Send),
            BulkItem::Template { request, dispatch } => match service
                .send_template_reporting(app, request, dispatch, on_stored)
                .await
            {
                Ok(TemplateSend::Sent(message)) => Ok(*message),
                Ok(TemplateSend::NotSent(reason)) => Err(Refused::NotSent(reason)),
                Err(error) => Err(Refused::Send(error)),
            },
        }
    }
}

/// An item's fields as a request body, with a 422 naming the field's path.
fn fields_into<T: serde::de::DeserializeOwned>(fields: Map<String, Value>) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(field, error.into_inner())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_item_with_a_slug_is_a_template_send_and_one_with_a_body_a_direct_send() {
        let direct = BulkItem::parse(r#"{"target":{"user_id":"alice"},"body":"hi"}"#).unwrap();
        let template =
            BulkItem::parse(r#"{"slug":"welcome","target":{"device_ids":[1]},"dispatch":"queue"}"#)
                .unwrap();

        assert!(matches!(direct, BulkItem::Send { .. }));
        assert_eq!(direct.dispatch(), Dispatch::Now);
        assert!(matches!(template, BulkItem::Template { .. }));
        assert_eq!(template.dispatch(), Dispatch::Queue);
    }

    #[test]
    fn a_bad_item_is_refused_naming_its_field() {
        let cases = [
            (
                r#"{"target":{"user_id":"alice"}}"#,
                "body: missing field `body`",
            ),
            (r#"{"target":{"user_id":""},"body":"hi"}"#, "target.user_id"),
            (
                r#"{"target":{"user_id":"a"},"body":"hi","colour":1}"#,
                "colour",
            ),
            (
                r#"{"target":{"broadcast":{}},"body":"hi"}"#,
                "target: a broadcast",
            ),
            ("[1]", "body: must be a JSON object"),
            ("{", "not valid JSON"),
        ];
        for (raw, expected) in cases {
            let error = BulkItem::parse(raw).unwrap_err();
            assert!(error.contains(expected), "{raw}: {error}");
        }
    }

    #[test]
    fn an_item_nested_100000_deep_is_refused_without_exhausting_the_stack() {
        let nested = format!(
            r#"{{"target":{{"user_id":"a"}},"body":"b","extra_data":{{"k":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );

        let error = BulkItem::parse(&nested).unwrap_err();

        assert!(error.contains("recursion limit"), "{error}");
    }
}
