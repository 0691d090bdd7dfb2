//! The command line: every command, option and flag of `clarion`, declared with clap.
//!
//! Values with a domain type (platforms, priorities, states, user ids, tags, slugs, related
//! objects) are parsed here, so that a bad value is a usage error (exit code 2) before anything
//! is opened. JSON options stay text and are parsed by `crate::parse`, which names the option.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clarion_domain::auth::KeyScope;
use clarion_domain::ids::{RelatedObject, Slug, Tag, UserId};
use clarion_domain::message::{MessageState, Priority};
use clarion_domain::token::Platform;

use crate::parse;

/// Administer Clarion and send push notifications from the command line.
#[derive(Debug, Parser)]
#[command(name = "clarion", version)]
pub struct Cli {
    /// The configuration file (default: ./clarion.toml when it exists).
    #[arg(long, global = true, env = "CLARION_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// The application (tenant) to act on.
    #[arg(
        long,
        global = true,
        env = "CLARION_APP",
        default_value = "default",
        value_name = "ID"
    )]
    pub app: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed and apply the migrations.
    Migrate,
    /// Register, list, deactivate and delete devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Send a message now (or queue it for the batch worker), or a file of messages.
    Send(SendArgs),
    /// Render a stored template and send the result.
    SendTemplate(SendTemplateArgs),
    /// Create, list, show, render and delete templates.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// List and inspect messages; retry or cancel one.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// Send the waiting messages and retry the due ERROR_RETRY ones.
    Batch(BatchArgs),
    /// Create, list and revoke the HTTP API's keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed this once and never again.
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// admin (everything) or app:<id> (one application).
        #[arg(long, value_parser = parse::scope)]
        scope: KeyScope,
    },
    /// List the keys (never their secrets).
    List,
    /// Revoke a key; it stops working at once.
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Register a device, or update the device that has the same token.
    Add(AddDeviceArgs),
    /// List devices, in id order.
    List(ListDevicesArgs),
    /// Show one device.
    Show { id: i64 },
    /// Deactivate a device; messages are no longer sent to it.
    Deactivate {
        id: i64,
        /// Why the device is deactivated.
        #[arg(long, default_value = "deactivated by an operator")]
        reason: String,
    },
    /// Delete a device; its past deliveries keep their records.
    Delete { id: i64 },
    /// Deactivate devices whose tokens are dead, and optionally delete old inactive ones.
    Prune {
        /// Delete inactive devices deactivated longer ago than this (seconds, or 30d, 12h, 15m).
        #[arg(long, value_name = "AGE", value_parser = parse::duration)]
        delete_inactive_older_than: Option<std::time::Duration>,
    },
}

#[derive(Debug, Args)]
pub struct AddDeviceArgs {
    /// apns, fcm or webpush.
    #[arg(long, value_parser = clap::value_parser!(Platform))]
    pub platform: Platform,
    /// The APNs device token, the FCM registration token, or the Web Push endpoint.
    #[arg(long)]
    pub token: String,
    /// The Web Push subscription's p256dh key (base64url).
    #[arg(long)]
    pub p256dh: Option<String>,
    /// The Web Push subscription's auth secret (base64url).
    #[arg(long)]
    pub auth: Option<String>,
    /// The user who owns the device.
    #[arg(long, value_parser = parse::user_id)]
    pub user: Option<UserId>,
    /// A name for the device.
    #[arg(long)]
    pub name: Option<String>,
    /// The client's own id for the device (a UUID, say).
    #[arg(long)]
    pub device_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListDevicesArgs {
    /// Only the devices of this user.
    #[arg(long, value_parser = parse::user_id)]
    pub user: Option<UserId>,
    /// Only devices of this platform.
    #[arg(long, value_parser = clap::value_parser!(Platform))]
    pub platform: Option<Platform>,
    /// Only active (true) or inactive (false) devices.
    #[arg(long)]
    pub active: Option<bool>,
    /// Only devices with an id greater than this (pagination).
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
    /// At most this many devices.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

/// Who a message is for: exactly one of a user, device ids, or a broadcast.
#[derive(Debug, Args)]
#[group(multiple = false, id = "target")]
pub struct TargetArgs {
    /// Every active device of this user.
    #[arg(long, value_parser = parse::user_id)]
    pub user: Option<UserId>,
    /// These devices (comma-separated ids).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub devices: Option<Vec<i64>>,
    /// Every active device of the application.
    #[arg(long)]
    pub broadcast: bool,
}

/// What a message carries besides its text, shared by `send` and `send-template`.
#[derive(Debug, Args)]
pub struct MessageOptions {
    /// With --broadcast: only devices of this platform.
    #[arg(long, requires = "broadcast", value_parser = clap::value_parser!(Platform))]
    pub platform: Option<Platform>,
    /// A tag to group messages by (a campaign, say).
    #[arg(long, value_parser = parse::tag)]
    pub tag: Option<Tag>,
    /// Custom data delivered with the notification: a JSON object.
    #[arg(long, value_name = "JSON")]
    pub extra_data: Option<String>,
    /// An object the message is about, as kind:id (repeatable).
    #[arg(long, value_name = "KIND:ID", value_parser = parse::related)]
    pub related: Vec<RelatedObject>,
    /// high or normal.
    #[arg(long, default_value = "high", value_parser = parse::priority)]
    pub priority: Priority,
    /// The app icon badge number.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub badge: Option<u32>,
    /// The sound to play.
    #[arg(long)]
    pub sound: Option<String>,
    /// The APNs thread id that groups notifications.
    #[arg(long)]
    pub thread_id: Option<String>,
    /// The APNs category (actions).
    #[arg(long)]
    pub category: Option<String>,
    /// A key that makes a newer notification replace an older one.
    #[arg(long)]
    pub collapse_key: Option<String>,
    /// Seconds the provider keeps the message for an offline device.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub ttl: Option<u32>,
    /// A silent (background) notification.
    #[arg(long)]
    pub content_available: bool,
    /// Let an iOS notification service extension change the notification.
    #[arg(long)]
    pub mutable_content: bool,
    /// Do not retry transient failures.
    #[arg(long)]
    pub no_retry: bool,
    /// Store the message for the batch worker instead of sending it now.
    #[arg(long)]
    pub queue: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The body text.
    #[arg(long, required_unless_present = "file")]
    pub body: Option<String>,
    /// Send the messages of this file instead, one JSON object a line, each as an item of
    /// `POST /v1/apps/{app}/messages/bulk` (with `body`, or a template's `slug`); `-` reads
    /// standard input. Each line is checked and sent on its own; the summary names the lines
    /// that failed.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["target", "body", "heading", "url", "MessageOptions"]
    )]
    pub file: Option<PathBuf>,
    /// The title.
    #[arg(long)]
    pub heading: Option<String>,
    /// A URL to open.
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub options: MessageOptions,
}

#[derive(Debug, Args)]
pub struct SendTemplateArgs {
    /// The template's slug.
    #[arg(value_parser = parse::slug)]
    pub slug: Slug,
    #[command(flatten)]
    pub target: TargetArgs,
    /// The template's variables: a JSON object.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    #[command(flatten)]
    pub options: MessageOptions,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Create a template, or replace the one with the same slug.
    Put(PutTemplateArgs),
    /// List the templates.
    List,
    /// Show one template.
    Show {
        #[arg(value_parser = parse::slug)]
        slug: Slug,
    },
    /// Render a template with a context, sending nothing.
    Render {
        #[arg(value_parser = parse::slug)]
        slug: Slug,
        /// The template's variables: a JSON object.
        #[arg(long, value_name = "JSON")]
        context: Option<String>,
    },
    /// Delete a template; messages sent from it keep its slug.
    Delete {
        #[arg(value_parser = parse::slug)]
        slug: Slug,
    },
}

#[derive(Debug, Args)]
pub struct PutTemplateArgs {
    #[arg(value_parser = parse::slug)]
    pub slug: Slug,
    /// The body template (MiniJinja).
    #[arg(long, value_name = "SOURCE")]
    pub body: String,
    /// The heading template.
    #[arg(long, value_name = "SOURCE")]
    pub heading: Option<String>,
    /// The URL template.
    #[arg(long, value_name = "SOURCE")]
    pub url: Option<String>,
    /// Store the template as inactive: it sends nothing.
    #[arg(long)]
    pub inactive: bool,
    /// Allow sending again for the same related objects.
    #[arg(long)]
    pub allow_duplicates: bool,
}

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List messages, newest first.
    List(ListMessagesArgs),
    /// Show a message with its deliveries and related objects.
    Show { id: i64 },
    /// Send an ERROR message again (it goes back to WAITING for the batch worker).
    Retry { id: i64 },
    /// Cancel a WAITING message.
    Cancel { id: i64 },
}

#[derive(Debug, Args)]
pub struct ListMessagesArgs {
    /// WAITING, SENT, ERROR, ERROR_RETRY or DEBUG.
    #[arg(long, value_parser = parse::state)]
    pub state: Option<MessageState>,
    #[arg(long, value_parser = parse::tag)]
    pub tag: Option<Tag>,
    /// Only messages to this user id.
    #[arg(long, value_parser = parse::user_id)]
    pub recipient: Option<UserId>,
    /// Only messages about this object, as kind:id.
    #[arg(long, value_name = "KIND:ID", value_parser = parse::related)]
    pub related: Option<RelatedObject>,
    /// Only messages created after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse::timestamp)]
    pub after: Option<time::OffsetDateTime>,
    /// Only messages created before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse::timestamp)]
    pub before: Option<time::OffsetDateTime>,
    /// Only messages with an id lower than this (pagination).
    #[arg(long, value_name = "ID")]
    pub before_id: Option<i64>,
    /// At most this many messages.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Process at most this many messages (default: every message due now). With --watch, the
    /// most messages one claim takes (default: worker.batch_size).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Keep going: send due messages and poll for new work until Ctrl-C or SIGTERM, then
    /// finish the messages under way and release the leases still held. The server's worker
    /// does the same.
    #[arg(long)]
    pub watch: bool,
    /// With --watch, the wait between polls when there is nothing to do (default:
    /// worker.poll_interval_secs).
    #[arg(long, value_name = "SECONDS", requires = "watch")]
    pub poll_interval: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Show,
    /// Check the configuration; exits 1 when a check fails.
    Check,
}
