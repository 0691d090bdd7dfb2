//! The commands: each parses its input into domain values, builds the runtime only when the
//! input is valid, calls the service and prints the result.

use std::io::IsTerminal as _;

use clarion_adapters::check;
use clarion_adapters::config::Config;
use clarion_adapters::keys::generate_secret;
use clarion_adapters::wiring::{self, Runtime};
use clarion_adapters::worker::WorkerSettings;
use clarion_domain::auth::ApiKeyId;
use clarion_domain::device::DeviceFilter;
use clarion_domain::ids::{AppId, DeviceId, MessageId};
use clarion_domain::message::{Content, Message, PushOptions, Target};
use clarion_domain::ports::MessageFilter;
use clarion_domain::service::{
    Dispatch, PushService, RegisterDevice, SendRequest, TemplateSend, TemplateSendRequest,
};
use clarion_domain::template::TemplateSpec;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

use crate::args::{
    AddDeviceArgs, BatchArgs, Cli, Command, ConfigCommand, DevicesCommand, KeysCommand,
    ListDevicesArgs, ListMessagesArgs, MessageOptions, MessagesCommand, PutTemplateArgs, SendArgs,
    SendTemplateArgs, TargetArgs, TemplatesCommand,
};
use crate::error::CliError;
use crate::{bulk, output, parse};

/// Runs one command.
///
/// # Errors
/// A [`CliError`] whose kind gives the exit code.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let config = Config::load(cli.config.as_deref())
        .map_err(|e| CliError::Failure(anyhow::anyhow!("invalid configuration: {e}")))?;
    let out = Out {
        json: cli.json,
        app: cli.app,
    };
    match cli.command {
        Command::Config(command) => config_command(&out, &config, command).await,
        Command::Migrate => migrate(&out, config).await,
        Command::Devices(command) => devices(&out, config, command).await,
        Command::Send(args) => send(&out, config, args).await,
        Command::SendTemplate(args) => send_template(&out, config, args).await,
        Command::Templates(command) => templates(&out, config, command).await,
        Command::Messages(command) => messages(&out, config, command).await,
        Command::Batch(args) => batch(&out, config, args).await,
        Command::Keys(command) => keys(&out, config, command).await,
    }
}

/// The global flags every command reads.
struct Out {
    json: bool,
    app: String,
}

/// Builds the adapters and the service from the configuration.
async fn runtime(config: Config) -> Result<Runtime, CliError> {
    Ok(wiring::build(config, &wiring::worker_id("cli")).await?)
}

/// The runtime, after checking that the application named by `--app` is configured.
async fn runtime_for(out: &Out, config: Config) -> Result<(Runtime, AppId), CliError> {
    let runtime = runtime(config).await?;
    let app = runtime
        .service
        .applications()
        .get(&out.app)
        .map_err(|e| CliError::Input(e.to_string()))?
        .id
        .clone();
    Ok((runtime, app))
}

// ----- config and migrate -----

async fn config_command(
    out: &Out,
    config: &Config,
    command: ConfigCommand,
) -> Result<(), CliError> {
    match command {
        ConfigCommand::Show => {
            let text = config.redacted_toml();
            if out.json {
                output::json(&json!({ "toml": text }))?;
            } else {
                output::line(text.trim_end());
            }
            Ok(())
        }
        ConfigCommand::Check => {
            let items = check::run(config).await;
            if out.json {
                let rows: Vec<Value> = items
                    .iter()
                    .map(|i| json!({ "subject": i.subject, "ok": i.ok, "detail": i.detail }))
                    .collect();
                output::json(&rows)?;
            } else {
                output::checks(
                    items
                        .iter()
                        .map(|i| (i.subject.as_str(), i.ok, i.detail.as_str())),
                );
            }
            let failed = items.iter().filter(|i| !i.ok).count();
            if failed > 0 {
                return Err(CliError::Failure(anyhow::anyhow!(
                    "{failed} configuration check(s) failed"
                )));
            }
            Ok(())
        }
    }
}

async fn migrate(out: &Out, config: Config) -> Result<(), CliError> {
    let url = config.database.redacted_url();
    // Building the runtime opens the database, creating and migrating it.
    runtime(config).await?;
    if out.json {
        output::json(&json!({ "database": url, "migrated": true }))?;
    } else {
        output::line(&format!("database {url} is migrated"));
    }
    Ok(())
}

// ----- devices -----

async fn devices(out: &Out, config: Config, command: DevicesCommand) -> Result<(), CliError> {
    let (runtime, app) = runtime_for(out, config).await?;
    let service = &runtime.service;
    let app = app.as_str();
    match command {
        DevicesCommand::Add(args) => add_device(out, service, app, args).await,
        DevicesCommand::List(args) => list_devices(out, service, app, args).await,
        DevicesCommand::Show { id } => {
            let device = service.get_device(app, DeviceId(id)).await?;
            if out.json {
                output::json(&device)
            } else {
                output::device_detail(&device);
                Ok(())
            }
        }
        DevicesCommand::Deactivate { id, reason } => {
            let device = service
                .deactivate_device(app, DeviceId(id), &reason)
                .await?;
            if out.json {
                output::json(&device)
            } else {
                output::line(&format!("deactivated device {id}: {reason}"));
                Ok(())
            }
        }
        DevicesCommand::Delete { id } => {
            service.delete_device(app, DeviceId(id)).await?;
            if out.json {
                output::json(&json!({ "deleted": id }))
            } else {
                output::line(&format!("deleted device {id}"));
                Ok(())
            }
        }
        DevicesCommand::Prune {
            delete_inactive_older_than,
        } => {
            let report = service.prune(app, delete_inactive_older_than).await?;
            if out.json {
                output::json(&report)
            } else {
                output::line(&format!(
                    "deactivated {} device(s) with dead tokens, deleted {} inactive device(s)",
                    report.deactivated, report.deleted
                ));
                Ok(())
            }
        }
    }
}

async fn add_device(
    out: &Out,
    service: &PushService,
    app: &str,
    args: AddDeviceArgs,
) -> Result<(), CliError> {
    let request = RegisterDevice {
        platform: args.platform,
        token: args.token,
        p256dh: args.p256dh,
        auth: args.auth,
        name: args.name,
        user_id: args.user,
        device_id: args.device_id,
    };
    let (device, registration) = service.register_device(app, request).await?;
    if out.json {
        output::json(&json!({ "registration": registration, "device": device }))
    } else {
        output::registration(&device, registration);
        Ok(())
    }
}

async fn list_devices(
    out: &Out,
    service: &PushService,
    app: &str,
    args: ListDevicesArgs,
) -> Result<(), CliError> {
    let filter = DeviceFilter {
        user_id: args.user,
        platform: args.platform,
        active: args.active,
        token_prefix: None,
        after: args.after.map(DeviceId),
        limit: args.limit,
    };
    let devices = service.list_devices(app, &filter).await?;
    if out.json {
        output::json(&devices)
    } else {
        output::devices(&devices);
        Ok(())
    }
}

// ----- sending -----

fn target(args: &TargetArgs, options: &MessageOptions) -> Result<Target, CliError> {
    if let Some(user_id) = &args.user {
        return Ok(Target::User {
            user_id: user_id.clone(),
        });
    }
    if let Some(ids) = &args.devices {
        return Ok(Target::Devices {
            device_ids: ids.iter().copied().map(DeviceId).collect(),
        });
    }
    if args.broadcast {
        return Ok(Target::Broadcast {
            platform: options.platform,
        });
    }
    Err(CliError::Input(
        "a message needs --user, --devices or --broadcast".to_owned(),
    ))
}

/// The platform options, checked against the providers' limits.
fn push_options(options: &MessageOptions) -> Result<PushOptions, CliError> {
    let push = PushOptions {
        badge: options.badge,
        sound: options.sound.clone(),
        thread_id: options.thread_id.clone(),
        category: options.category.clone(),
        collapse_key: options.collapse_key.clone(),
        time_to_live: options.ttl,
        content_available: options.content_available,
        mutable_content: options.mutable_content,
    };
    push.validate()
        .map_err(|e| CliError::Input(format!("invalid message: {e}")))?;
    Ok(push)
}

fn extra_data(options: &MessageOptions) -> Result<Option<Map<String, Value>>, CliError> {
    options
        .extra_data
        .as_deref()
        .map(|raw| parse::json_object("--extra-data", raw))
        .transpose()
}

fn dispatch(options: &MessageOptions) -> Dispatch {
    if options.queue {
        Dispatch::Queue
    } else {
        Dispatch::Now
    }
}

async fn send(out: &Out, config: Config, args: SendArgs) -> Result<(), CliError> {
    if let Some(path) = &args.file {
        // The file is opened before the database, so that a wrong path changes nothing.
        let input = bulk::Input::open(path)?;
        let (runtime, app) = runtime_for(out, config).await?;
        return bulk::send_file(&runtime.service, app.as_str(), input, out.json).await;
    }
    let Some(body) = args.body else {
        return Err(CliError::Input(
            "a message needs --body or --file".to_owned(),
        ));
    };
    let options = &args.options;
    let push = push_options(options)?;
    let content = Content {
        heading: args.heading,
        body,
        url: args.url,
        extra_data: extra_data(options)?,
    };
    content
        .validate(&push)
        .map_err(|e| CliError::Input(format!("invalid message: {e}")))?;
    let request = SendRequest {
        target: target(&args.target, options)?,
        content,
        tag: options.tag.clone(),
        priority: options.priority,
        options: push,
        related_objects: options.related.clone(),
        retry_sending: !options.no_retry,
    };
    let (runtime, app) = runtime_for(out, config).await?;
    let message = runtime
        .service
        .send(app.as_str(), request, dispatch(options))
        .await?;
    print_message(out, &message)
}

async fn send_template(out: &Out, config: Config, args: SendTemplateArgs) -> Result<(), CliError> {
    let options = &args.options;
    let context = match args.context.as_deref() {
        Some(raw) => parse::json_object("--context", raw)?,
        None => Map::new(),
    };
    let request = TemplateSendRequest {
        slug: args.slug,
        context,
        target: target(&args.target, options)?,
        extra_data: extra_data(options)?,
        tag: options.tag.clone(),
        priority: options.priority,
        options: push_options(options)?,
        related_objects: options.related.clone(),
        retry_sending: !options.no_retry,
    };
    let (runtime, app) = runtime_for(out, config).await?;
    let sent = runtime
        .service
        .send_template(app.as_str(), request, dispatch(options))
        .await?;
    match sent {
        TemplateSend::Sent(message) => print_message(out, &message),
        TemplateSend::NotSent(reason) => {
            if out.json {
                output::json(&json!({ "not_sent": reason }))?;
            }
            Err(CliError::NotSent(reason.to_string()))
        }
    }
}

fn print_message(out: &Out, message: &Message) -> Result<(), CliError> {
    if out.json {
        output::json(message)
    } else {
        output::message_detail(message);
        Ok(())
    }
}

// ----- templates -----

async fn templates(out: &Out, config: Config, command: TemplatesCommand) -> Result<(), CliError> {
    // Parse the context before anything is opened.
    let context = match &command {
        TemplatesCommand::Render {
            context: Some(raw), ..
        } => parse::json_object("--context", raw)?,
        _ => Map::new(),
    };
    let (runtime, app) = runtime_for(out, config).await?;
    let service = &runtime.service;
    match command {
        TemplatesCommand::Put(args) => put_template(out, service, app, args).await,
        TemplatesCommand::List => {
            let templates = service.list_templates(app.as_str()).await?;
            if out.json {
                output::json(&templates)
            } else {
                output::templates(&templates);
                Ok(())
            }
        }
        TemplatesCommand::Show { slug } => {
            let template = service.get_template(app.as_str(), &slug).await?;
            if out.json {
                output::json(&template)
            } else {
                output::template_detail(&template);
                Ok(())
            }
        }
        TemplatesCommand::Render { slug, .. } => {
            let rendered = service
                .render_template(app.as_str(), &slug, &context)
                .await?;
            if out.json {
                output::json(&rendered)
            } else {
                output::rendered(&rendered);
                Ok(())
            }
        }
        TemplatesCommand::Delete { slug } => {
            service.delete_template(app.as_str(), &slug).await?;
            if out.json {
                output::json(&json!({ "deleted": slug }))
            } else {
                output::line(&format!("deleted template {slug}"));
                Ok(())
            }
        }
    }
}

async fn put_template(
    out: &Out,
    service: &PushService,
    app: AppId,
    args: PutTemplateArgs,
) -> Result<(), CliError> {
    let spec = TemplateSpec {
        app,
        slug: args.slug,
        body: args.body,
        heading: args.heading,
        url: args.url,
        is_active: !args.inactive,
        allow_duplicates: args.allow_duplicates,
    };
    let (template, registration) = service.put_template(spec).await?;
    if out.json {
        output::json(&json!({ "registration": registration, "template": template }))
    } else {
        let verb = match registration {
            clarion_domain::device::Registration::Created => "created",
            clarion_domain::device::Registration::Updated => "updated",
        };
        output::line(&format!("{verb} template {}", template.slug));
        output::template_detail(&template);
        Ok(())
    }
}

// ----- messages -----

async fn messages(out: &Out, config: Config, command: MessagesCommand) -> Result<(), CliError> {
    let (runtime, app) = runtime_for(out, config).await?;
    let service = &runtime.service;
    let message = match command {
        MessagesCommand::List(args) => return list_messages(out, service, app, args).await,
        MessagesCommand::Show { id } => service.get_message(app.as_str(), MessageId(id)).await?.0,
        MessagesCommand::Retry { id } => service.retry_message(app.as_str(), MessageId(id)).await?,
        MessagesCommand::Cancel { id } => {
            service.cancel_message(app.as_str(), MessageId(id)).await?
        }
    };
    print_message(out, &message)
}

async fn list_messages(
    out: &Out,
    service: &PushService,
    app: AppId,
    args: ListMessagesArgs,
) -> Result<(), CliError> {
    let filter = MessageFilter {
        app: Some(app),
        state: args.state,
        tag: args.tag,
        recipient: args.recipient,
        related: args.related,
        created_after: args.after,
        created_before: args.before,
        before: args.before_id.map(MessageId),
        limit: Some(args.limit),
    };
    let messages = service.list_messages(&filter).await?;
    if out.json {
        output::json(&messages)
    } else {
        output::messages(&messages);
        Ok(())
    }
}

// ----- keys -----

async fn keys(out: &Out, config: Config, command: KeysCommand) -> Result<(), CliError> {
    let runtime = runtime(config).await?;
    let service = &runtime.service;
    match command {
        KeysCommand::Create { name, scope } => {
            let created = service
                .create_api_key(&name, scope, generate_secret()?)
                .await?;
            if out.json {
                output::json(&created)
            } else {
                output::created_key(&created);
                Ok(())
            }
        }
        KeysCommand::List => {
            let keys = service.list_api_keys().await?;
            if out.json {
                output::json(&keys)
            } else {
                output::keys(&keys);
                Ok(())
            }
        }
        KeysCommand::Revoke { id } => {
            let key = service.revoke_api_key(ApiKeyId(id)).await?;
            if out.json {
                output::json(&key)
            } else {
                output::line(&format!("revoked API key {id} ({})", key.name));
                Ok(())
            }
        }
    }
}

// ----- batch -----

async fn batch(out: &Out, config: Config, args: BatchArgs) -> Result<(), CliError> {
    if args.watch {
        return watch(config, &args).await;
    }
    let runtime = runtime(config).await?;
    let service = &runtime.service;
    let backlog = service.backlog().await?;
    let limit = args.limit.unwrap_or(backlog);
    let bar = if out.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(limit.min(backlog));
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} messages ({per_sec}, eta {eta})")
        {
            bar.set_style(style);
        }
        bar
    };
    let tick = |_: &Message| bar.inc(1);
    let result = service.process_batch(limit, &tick).await;
    bar.finish_and_clear();
    let report = result?;
    if out.json {
        output::json(&report)
    } else {
        let lost = if report.lost > 0 {
            format!(", taken over by another worker {}", report.lost)
        } else {
            String::new()
        };
        output::line(&format!(
            "processed {}: sent {}, debug {}, retrying {}, failed {}{lost}",
            report.processed, report.sent, report.debug, report.retrying, report.failed
        ));
        Ok(())
    }
}

/// `clarion batch --watch`: the server's worker loop without the server, until Ctrl-C or
/// SIGTERM.
async fn watch(mut config: Config, args: &BatchArgs) -> Result<(), CliError> {
    // The worker claims at most `batch_size` messages at a time, through the service the
    // runtime builds from the configuration.
    if let Some(limit) = args.limit {
        config.worker.batch_size = u32::try_from(limit.max(1)).unwrap_or(u32::MAX);
    }
    let mut settings = WorkerSettings::from_config(&config.worker);
    if let Some(seconds) = args.poll_interval {
        settings.poll_interval = std::time::Duration::from_secs(seconds);
    }
    let runtime = runtime(config).await?;
    tracing::info!(
        worker_id = runtime.service.worker_id(),
        "clarion batch --watch started"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(clarion_adapters::worker::run(
        runtime.service.clone(),
        settings,
        stopped,
    ));
    shutdown_signal().await;
    tracing::info!("stopping: the batch under way finishes, then the leases are released");
    let _ = stop.send(true);
    worker
        .await
        .map_err(|e| CliError::Failure(anyhow::anyhow!("the worker task failed: {e}")))
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
