//! The synchronous core of the renderer: a MiniJinja environment with plain-text output,
//! strict undefined variables, fuel and capped filters, and the checks and output limit
//! around one render. It runs wherever the renderer puts it: on a render thread, or in a
//! render worker process.

use std::error::Error as _;
use std::io;

use clarion_domain::ports::RenderError;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as JsonValue};

use crate::render::filters::{self, Exceeded};
use crate::render::nesting;

/// The limits the engine itself enforces; the time and memory budgets are the renderer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EngineLimits {
    pub(crate) max_source_bytes: usize,
    pub(crate) max_nesting: usize,
    pub(crate) fuel: u64,
    pub(crate) max_output_bytes: usize,
}

/// A configured MiniJinja environment.
#[derive(Debug)]
pub(crate) struct Engine {
    env: Environment<'static>,
    limits: EngineLimits,
}

impl Engine {
    pub(crate) fn new(limits: EngineLimits) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Notifications are plain text: `<b>&` must reach the device as written.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(limits.fuel));
        filters::install(&mut env, limits.max_output_bytes);
        Self { env, limits }
    }

    pub(crate) fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// The size and nesting checks, which need no parsing.
    pub(crate) fn precheck(&self, field: &str, source: &str) -> Result<(), RenderError> {
        nesting::precheck(
            field,
            source,
            self.limits.max_source_bytes,
            self.limits.max_nesting,
        )
    }

    /// Checks the limits, then that the source compiles.
    pub(crate) fn check(&self, field: &str, source: &str) -> Result<(), RenderError> {
        self.precheck(field, source)?;
        self.env
            .template_from_named_str(field, source)
            .map(drop)
            .map_err(|err| syntax_error(field, &err))
    }

    /// Checks the limits (a stored template may predate them), then renders.
    pub(crate) fn render(
        &self,
        field: &str,
        source: &str,
        context: &Map<String, JsonValue>,
    ) -> Result<String, RenderError> {
        self.precheck(field, source)?;
        let template = self
            .env
            .template_from_named_str(field, source)
            .map_err(|err| syntax_error(field, &err))?;
        let mut out = LimitedWriter::new(self.limits.max_output_bytes);
        let rendered = template.render_captured_to(Value::from(Serde(context)), &mut out);
        if out.overflowed {
            return Err(RenderError::Limit {
                field: field.to_owned(),
                limit: filters::OUTPUT_LIMIT.to_owned(),
                detail: format!(
                    "the output is longer than {} bytes",
                    self.limits.max_output_bytes
                ),
            });
        }
        if let Err(err) = rendered {
            let missing = || missing_variables(&self.env, &template, context);
            return Err(render_error(field, &err, missing));
        }
        String::from_utf8(out.buf).map_err(|err| RenderError::Other {
            field: field.to_owned(),
            detail: format!("output is not UTF-8: {err}"),
        })
    }
}

/// Any failure to compile a template is reported as a syntax error.
fn syntax_error(field: &str, err: &minijinja::Error) -> RenderError {
    RenderError::Syntax {
        field: field.to_owned(),
        detail: describe(err),
    }
}

fn render_error(
    field: &str,
    err: &minijinja::Error,
    missing: impl FnOnce() -> Vec<String>,
) -> RenderError {
    let field = field.to_owned();
    if let Some(exceeded) = exceeded(err) {
        return RenderError::Limit {
            field,
            limit: exceeded.limit.to_owned(),
            detail: match err.line() {
                Some(line) => format!("{} (line {line})", exceeded.detail),
                None => exceeded.detail.clone(),
            },
        };
    }
    match err.kind() {
        ErrorKind::OutOfFuel => RenderError::OutOfFuel { field },
        ErrorKind::SyntaxError => RenderError::Syntax {
            field,
            detail: describe(err),
        },
        ErrorKind::UndefinedError => {
            let missing = missing();
            let detail = if missing.is_empty() {
                describe(err)
            } else {
                let line = err
                    .line()
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                format!("`{}` is not defined{line}", missing.join("`, `"))
            };
            RenderError::Undefined { field, detail }
        }
        _ => RenderError::Other {
            field,
            detail: describe(err),
        },
    }
}

/// The limit a capped filter reported, anywhere in the error's chain of sources.
fn exceeded(err: &minijinja::Error) -> Option<&Exceeded> {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(exceeded) = cause.downcast_ref::<Exceeded>() {
            return Some(exceeded);
        }
        source = cause.source();
    }
    None
}

/// MiniJinja's message and the line it points at.
fn describe(err: &minijinja::Error) -> String {
    let message = err.detail().map_or_else(
        || err.kind().to_string(),
        |detail| format!("{}: {detail}", err.kind()),
    );
    match err.line() {
        Some(line) => format!("{message} (line {line})"),
        None => message,
    }
}

/// The variables the template reads that neither the context nor MiniJinja's globals
/// provide, as dotted paths (`order.id`), sorted. MiniJinja's own undefined error does not
/// name the variable, and the author of a template needs that name.
fn missing_variables(
    env: &Environment<'_>,
    template: &minijinja::Template<'_, '_>,
    context: &Map<String, JsonValue>,
) -> Vec<String> {
    let mut missing: Vec<String> = template
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| {
            let top = path.split('.').next().unwrap_or(path);
            let is_global = env.globals().any(|(name, _)| name == top);
            !is_global && !resolves(context, path)
        })
        .collect();
    missing.sort();
    missing
}

/// Whether a dotted path resolves in the context. A segment under a value that is not an
/// object (a list, a string) may be a method or an index, so the path counts as resolved.
fn resolves(context: &Map<String, JsonValue>, path: &str) -> bool {
    let mut segments = path.split('.');
    let Some(first) = segments.next() else {
        return true;
    };
    let Some(mut value) = context.get(first) else {
        return false;
    };
    for segment in segments {
        let JsonValue::Object(object) = value else {
            return true;
        };
        match object.get(segment) {
            Some(next) => value = next,
            None => return false,
        }
    }
    true
}

/// Collects output and fails once it would exceed the limit.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl LimitedWriter {
    fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            overflowed: false,
        }
    }
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("template output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
