//! The template renderer: MiniJinja with plain-text output, strict undefined variables, and
//! bounded work (fuel) and output size.

use std::io;

use clarion_domain::ports::{RenderError, TemplateRenderer};
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde_json::{Map, Value as JsonValue};

/// How much one render may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// MiniJinja fuel: roughly the number of instructions one render may execute.
    pub fuel: u64,
    /// The largest output one render may produce, in bytes.
    pub max_output_bytes: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        Self {
            fuel: 50_000,
            max_output_bytes: 64 * 1024,
        }
    }
}

/// Renders templates with MiniJinja.
#[derive(Debug)]
pub struct MiniJinjaRenderer {
    env: Environment<'static>,
    limits: RenderLimits,
}

impl MiniJinjaRenderer {
    #[must_use]
    pub fn new(limits: RenderLimits) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Notifications are plain text: `<b>&` must reach the device as written.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(limits.fuel));
        Self { env, limits }
    }

    /// The limits this renderer enforces.
    #[must_use]
    pub fn limits(&self) -> RenderLimits {
        self.limits
    }
}

impl Default for MiniJinjaRenderer {
    fn default() -> Self {
        Self::new(RenderLimits::default())
    }
}

impl TemplateRenderer for MiniJinjaRenderer {
    fn render(
        &self,
        field: &str,
        source: &str,
        context: &Map<String, JsonValue>,
    ) -> Result<String, RenderError> {
        let template = self
            .env
            .template_from_named_str(field, source)
            .map_err(|err| syntax_error(field, &err))?;
        let mut out = LimitedWriter::new(self.limits.max_output_bytes);
        let rendered = template.render_captured_to(Value::from(Serde(context)), &mut out);
        if out.overflowed {
            return Err(RenderError::OutOfFuel {
                field: field.to_owned(),
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

    fn check(&self, field: &str, source: &str) -> Result<(), RenderError> {
        self.env
            .template_from_named_str(field, source)
            .map(drop)
            .map_err(|err| syntax_error(field, &err))
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;

    fn context(value: JsonValue) -> Map<String, JsonValue> {
        match value {
            JsonValue::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn render(source: &str, ctx: JsonValue) -> Result<String, RenderError> {
        MiniJinjaRenderer::default().render("body", source, &context(ctx))
    }

    #[test]
    fn plain_text_is_not_html_escaped() {
        let out = render("{{ text }} <i>", json!({"text": "<b>&"}));

        assert_eq!(out, Ok("<b>& <i>".to_owned()));
    }

    #[test]
    fn an_undefined_variable_is_an_error_naming_the_field_and_the_variable() {
        let err = render("Hello {{ name }}", json!({"other": 1}));

        assert!(
            matches!(&err, Err(RenderError::Undefined { field, detail })
                if field == "body" && detail.contains("`name`")),
            "{err:?}"
        );
    }

    #[test]
    fn an_undefined_nested_attribute_is_named_by_its_path() {
        let err = render("{{ order.total }}", json!({"order": {"id": 7}}));

        assert!(
            matches!(&err, Err(RenderError::Undefined { detail, .. })
                if detail.contains("`order.total`")),
            "{err:?}"
        );
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel_quickly() {
        let started = Instant::now();

        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            json!({}),
        );

        assert_eq!(
            err,
            Err(RenderError::OutOfFuel {
                field: "body".to_owned()
            })
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn output_over_the_limit_is_refused() {
        let renderer = MiniJinjaRenderer::new(RenderLimits {
            fuel: 50_000,
            max_output_bytes: 10,
        });

        let err = renderer.render("heading", "{{ 'x' * 11 }}", &Map::new());

        assert_eq!(
            err,
            Err(RenderError::OutOfFuel {
                field: "heading".to_owned()
            })
        );
    }

    #[test]
    fn output_at_the_limit_is_accepted() {
        let renderer = MiniJinjaRenderer::new(RenderLimits {
            fuel: 50_000,
            max_output_bytes: 10,
        });

        let out = renderer.render("heading", "{{ 'x' * 10 }}", &Map::new());

        assert_eq!(out, Ok("x".repeat(10)));
    }

    #[test]
    fn a_syntax_error_names_the_field_and_the_line() {
        let err = MiniJinjaRenderer::default().render("url", "ok\n{{ broken", &Map::new());

        assert!(
            matches!(&err, Err(RenderError::Syntax { field, detail })
                if field == "url" && detail.contains("syntax error") && detail.contains("line 2")),
            "{err:?}"
        );
    }

    #[test]
    fn check_reports_a_syntax_error_and_accepts_valid_source() {
        let renderer = MiniJinjaRenderer::default();

        let bad = renderer.check("heading", "{% if %}");
        let good = renderer.check("heading", "Hi {{ name|upper }}");

        assert!(
            matches!(bad, Err(RenderError::Syntax { ref field, .. }) if field == "heading"),
            "{bad:?}"
        );
        assert_eq!(good, Ok(()));
    }

    #[test]
    fn filters_work() {
        let out = render("{{ name|upper }}", json!({"name": "ada"}));

        assert_eq!(out, Ok("ADA".to_owned()));
    }

    #[test]
    fn nested_context_values_are_reachable() {
        let out = render(
            "Order {{ order.id }} for {{ order.customer.name }}",
            json!({"order": {"id": 42, "customer": {"name": "Ada"}}}),
        );

        assert_eq!(out, Ok("Order 42 for Ada".to_owned()));
    }

    #[test]
    fn globals_such_as_range_are_not_reported_as_missing() {
        let err = render(
            "{% for i in range(2) %}{{ missing }}{% endfor %}",
            json!({}),
        );

        assert!(
            matches!(&err, Err(RenderError::Undefined { detail, .. })
                if detail.contains("`missing`") && !detail.contains("range")),
            "{err:?}"
        );
    }
}
