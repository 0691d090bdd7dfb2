//! The template renderer: MiniJinja with plain-text output and strict undefined variables,
//! bounded in size, nesting, work, output, time and memory whatever the template's text.
//!
//! - Before MiniJinja parses anything, the source's size and a conservative nesting measure
//!   are checked (`render/nesting.rs`): deep nesting would otherwise overflow the stack.
//! - Fuel bounds the instructions, the output writer stops at the output limit, and the
//!   built-in filters that can build large values are capped (`render/filters.rs`).
//! - Templates never compile or render on the async runtime's threads: with
//!   [`Isolation::Process`] both happen in worker processes with a memory limit that are
//!   killed after the time budget (`render/process.rs`; compiling belongs there too, because
//!   MiniJinja folds constant expressions such as `'x' * 100000000` while it compiles); with
//!   [`Isolation::Thread`] on render threads, without the memory bound (`render/thread.rs`).
//!
//! ```
//! use clarion_adapters::render::{MiniJinjaRenderer, RenderLimits};
//! use clarion_domain::ports::TemplateRenderer as _;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let renderer = MiniJinjaRenderer::new(RenderLimits::default());
//! let context = serde_json::json!({ "name": "Ada" });
//! let text = renderer
//!     .render("body", "Hello {{ name }}", context.as_object().unwrap())
//!     .await;
//! assert_eq!(text.as_deref(), Ok("Hello Ada"));
//! # });
//! ```

mod engine;
mod filters;
mod nesting;
mod process;
mod thread;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clarion_domain::ports::{RenderError, TemplateRenderer};
use serde_json::{Map, Value as JsonValue};

use crate::render::engine::{Engine, EngineLimits};
use crate::render::process::ProcessPool;
use crate::render::thread::ThreadRunner;

pub use crate::render::process::WORKER_ENV;

/// How much one template may be and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// The largest source of one template field, in bytes.
    pub max_source_bytes: usize,
    /// The deepest nesting of blocks, brackets and chained operators, filters and
    /// attributes (see `render/nesting.rs`).
    pub max_nesting: usize,
    /// MiniJinja fuel: roughly the number of instructions one render may execute.
    pub fuel: u64,
    /// The largest output one render may produce, and the longest string a filter may
    /// build, in bytes.
    pub max_output_bytes: usize,
    /// How long one render may take.
    pub timeout: Duration,
}

impl Default for RenderLimits {
    fn default() -> Self {
        Self {
            max_source_bytes: 64 * 1024,
            max_nesting: 64,
            fuel: 50_000,
            max_output_bytes: 64 * 1024,
            timeout: Duration::from_millis(1000),
        }
    }
}

impl RenderLimits {
    fn engine(&self) -> EngineLimits {
        EngineLimits {
            max_source_bytes: self.max_source_bytes,
            max_nesting: self.max_nesting,
            fuel: self.fuel,
            max_output_bytes: self.max_output_bytes,
        }
    }
}

/// Where renders run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// In worker processes of this executable, each limited to `memory_mb` MiB of address
    /// space and killed when a render outlives its time. Needs the executable's `main` to
    /// call [`run_worker_if_requested`] first; otherwise the renderer uses threads.
    Process { memory_mb: u64 },
    /// On render threads of this process: every limit but the memory budget.
    Thread,
}

/// Everything that configures a [`MiniJinjaRenderer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderSettings {
    pub limits: RenderLimits,
    pub isolation: Isolation,
    /// How many renders run at once (threads or worker processes); more wait in a bounded
    /// queue.
    pub workers: usize,
}

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            limits: RenderLimits::default(),
            isolation: Isolation::Thread,
            workers: 2,
        }
    }
}

/// Serves render requests and exits when this process was started as a render worker (the
/// [`WORKER_ENV`] variable is set); otherwise returns at once and records that this
/// executable can be started as one. Call it first thing in `main`, before any runtime or
/// thread starts.
pub fn run_worker_if_requested() {
    process::run_worker_if_requested();
}

/// Renders templates with MiniJinja.
#[derive(Debug, Clone)]
pub struct MiniJinjaRenderer {
    settings: RenderSettings,
    engine: Arc<Engine>,
    /// Checks, and renders without process isolation.
    threads: Arc<ThreadRunner>,
    processes: Option<Arc<ProcessPool>>,
}

impl MiniJinjaRenderer {
    /// A renderer with these limits that renders on threads.
    #[must_use]
    pub fn new(limits: RenderLimits) -> Self {
        Self::with_settings(RenderSettings {
            limits,
            ..RenderSettings::default()
        })
    }

    /// A renderer with these settings. Process isolation falls back to threads, with a
    /// warning, in a program whose `main` did not call [`run_worker_if_requested`].
    #[must_use]
    pub fn with_settings(settings: RenderSettings) -> Self {
        let limits = settings.limits;
        let processes = match settings.isolation {
            Isolation::Process { memory_mb } if process::can_spawn_workers() => Some(Arc::new(
                ProcessPool::new(limits.engine(), limits.timeout, memory_mb, settings.workers),
            )),
            Isolation::Process { .. } => {
                tracing::warn!(
                    "templates.isolation = \"process\" needs a program that calls \
                     run_worker_if_requested first; templates render on threads instead"
                );
                None
            }
            Isolation::Thread => None,
        };
        Self {
            settings,
            engine: Arc::new(Engine::new(limits.engine())),
            threads: Arc::new(ThreadRunner::new(settings.workers, limits.timeout)),
            processes,
        }
    }

    /// The limits this renderer enforces.
    #[must_use]
    pub fn limits(&self) -> RenderLimits {
        self.settings.limits
    }

    /// Where this renderer renders: [`Isolation::Thread`] also when process isolation was
    /// asked for but is not available.
    #[must_use]
    pub fn isolation(&self) -> Isolation {
        match self.processes {
            Some(_) => self.settings.isolation,
            None => Isolation::Thread,
        }
    }
}

impl Default for MiniJinjaRenderer {
    fn default() -> Self {
        Self::new(RenderLimits::default())
    }
}

#[async_trait]
impl TemplateRenderer for MiniJinjaRenderer {
    async fn render(
        &self,
        field: &str,
        source: &str,
        context: &Map<String, JsonValue>,
    ) -> Result<String, RenderError> {
        if let Some(processes) = &self.processes {
            // The worker checks the nesting itself; the size is checked here so that an
            // oversized source is not even sent.
            nesting::check_size(field, source, self.settings.limits.max_source_bytes)?;
            return processes.render(field, source, context).await;
        }
        let engine = self.engine.clone();
        let (owned_field, source, context) = (field.to_owned(), source.to_owned(), context.clone());
        self.threads
            .run(field, move || {
                engine.render(&owned_field, &source, &context)
            })
            .await
    }

    async fn check(&self, field: &str, source: &str) -> Result<(), RenderError> {
        if let Some(processes) = &self.processes {
            nesting::check_size(field, source, self.settings.limits.max_source_bytes)?;
            return processes.check(field, source).await;
        }
        let engine = self.engine.clone();
        let (owned_field, source) = (field.to_owned(), source.to_owned());
        self.threads
            .run(field, move || engine.check(&owned_field, &source))
            .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn context(value: JsonValue) -> Map<String, JsonValue> {
        match value {
            JsonValue::Object(map) => map,
            _ => Map::new(),
        }
    }

    async fn render(source: &str, ctx: JsonValue) -> Result<String, RenderError> {
        MiniJinjaRenderer::default()
            .render("body", source, &context(ctx))
            .await
    }

    fn limited(max_output_bytes: usize) -> MiniJinjaRenderer {
        MiniJinjaRenderer::new(RenderLimits {
            max_output_bytes,
            ..RenderLimits::default()
        })
    }

    fn is_limit(result: &Result<String, RenderError>, setting: &str) -> bool {
        matches!(result, Err(RenderError::Limit { field, limit, .. })
            if field == "body" && limit == setting)
    }

    #[tokio::test]
    async fn plain_text_is_not_html_escaped() {
        let out = render("{{ text }} <i>", json!({"text": "<b>&"})).await;

        assert_eq!(out, Ok("<b>& <i>".to_owned()));
    }

    #[tokio::test]
    async fn an_undefined_variable_is_an_error_naming_the_field_and_the_variable() {
        let err = render("Hello {{ name }}", json!({"other": 1})).await;

        assert!(
            matches!(&err, Err(RenderError::Undefined { field, detail })
                if field == "body" && detail.contains("`name`")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_undefined_nested_attribute_is_named_by_its_path() {
        let err = render("{{ order.total }}", json!({"order": {"id": 7}})).await;

        assert!(
            matches!(&err, Err(RenderError::Undefined { detail, .. })
                if detail.contains("`order.total`")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_runaway_loop_runs_out_of_fuel() {
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            json!({}),
        )
        .await;

        // Either bound may stop it first: the fuel, or the output limit.
        assert!(
            err == Err(RenderError::OutOfFuel {
                field: "body".to_owned()
            }) || is_limit(&err, "templates.max_output_bytes"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_loop_without_output_runs_out_of_fuel() {
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            json!({}),
        )
        .await;

        assert_eq!(
            err,
            Err(RenderError::OutOfFuel {
                field: "body".to_owned()
            })
        );
    }

    #[tokio::test]
    async fn output_over_the_limit_is_refused_naming_the_setting() {
        let err = limited(10)
            .render("body", "{{ 'x' * 11 }}", &Map::new())
            .await;

        assert!(is_limit(&err, "templates.max_output_bytes"), "{err:?}");
    }

    #[tokio::test]
    async fn output_at_the_limit_is_accepted() {
        let out = limited(10)
            .render("body", "{{ 'x' * 10 }}", &Map::new())
            .await;

        assert_eq!(out, Ok("x".repeat(10)));
    }

    #[tokio::test]
    async fn a_syntax_error_names_the_field_and_the_line() {
        let err = MiniJinjaRenderer::default()
            .render("url", "ok\n{{ broken", &Map::new())
            .await;

        assert!(
            matches!(&err, Err(RenderError::Syntax { field, detail })
                if field == "url" && detail.contains("syntax error") && detail.contains("line 2")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn check_reports_a_syntax_error_and_accepts_valid_source() {
        let renderer = MiniJinjaRenderer::default();

        let bad = renderer.check("heading", "{% if %}").await;
        let good = renderer.check("heading", "Hi {{ name|upper }}").await;

        assert!(
            matches!(bad, Err(RenderError::Syntax { ref field, .. }) if field == "heading"),
            "{bad:?}"
        );
        assert_eq!(good, Ok(()));
    }

    #[tokio::test]
    async fn filters_work() {
        let out = render("{{ name|upper }}", json!({"name": "ada"})).await;

        assert_eq!(out, Ok("ADA".to_owned()));
    }

    #[tokio::test]
    async fn nested_context_values_are_reachable() {
        let out = render(
            "Order {{ order.id }} for {{ order.customer.name }}",
            json!({"order": {"id": 42, "customer": {"name": "Ada"}}}),
        )
        .await;

        assert_eq!(out, Ok("Order 42 for Ada".to_owned()));
    }

    #[tokio::test]
    async fn globals_such_as_range_are_not_reported_as_missing() {
        let err = render(
            "{% for i in range(2) %}{{ missing }}{% endfor %}",
            json!({}),
        )
        .await;

        assert!(
            matches!(&err, Err(RenderError::Undefined { detail, .. })
                if detail.contains("`missing`") && !detail.contains("range")),
            "{err:?}"
        );
    }

    // ----- hostile templates, on render threads -----

    /// Chains MiniJinja nests without a recursion guard, `n` deep.
    fn deep(n: usize) -> Vec<String> {
        vec![
            format!("{{{{ {}1 }}}}", "not ".repeat(n)),
            format!("{{{{ {}1 }}}}", "- ".repeat(n)),
            format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n)),
            format!("{{{{ {}1{} }}}}", "[".repeat(n), "]".repeat(n)),
            format!("{{{{ 1{} }}}}", "|abs".repeat(n)),
            format!("{{{{ 1{} }}}}", " ~ 1".repeat(n)),
            format!("{}x{}", "{% if 1 %}".repeat(n), "{% endif %}".repeat(n)),
            format!(
                "{}x{}",
                "{% for i in [1] %}".repeat(n),
                "{% endfor %}".repeat(n)
            ),
        ]
    }

    #[tokio::test]
    async fn deep_nesting_is_refused_at_save_and_at_render_naming_the_limit() {
        let renderer = MiniJinjaRenderer::new(RenderLimits {
            max_source_bytes: 4_000_000,
            ..RenderLimits::default()
        });
        for n in [1_000, 100_000] {
            for source in deep(n) {
                let checked = renderer.check("body", &source).await;
                let rendered = renderer.render("body", &source, &Map::new()).await;

                let shown = &source[..40.min(source.len())];
                assert!(
                    matches!(&checked, Err(RenderError::Limit { limit, .. })
                        if limit == "templates.max_nesting"),
                    "{shown} x{n}: {checked:?}"
                );
                assert!(
                    is_limit(&rendered, "templates.max_nesting"),
                    "{shown} x{n}: {rendered:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn shallow_nesting_renders() {
        for source in deep(10) {
            let rendered = MiniJinjaRenderer::default()
                .render("body", &source, &Map::new())
                .await;

            assert!(rendered.is_ok(), "{source}: {rendered:?}");
        }
    }

    #[tokio::test]
    async fn a_source_over_the_size_limit_is_refused_naming_the_limit() {
        let renderer = MiniJinjaRenderer::new(RenderLimits {
            max_source_bytes: 100,
            ..RenderLimits::default()
        });
        let source = "x".repeat(101);

        let checked = renderer.check("body", &source).await;
        let rendered = renderer.render("body", &source, &Map::new()).await;

        assert!(
            matches!(&checked, Err(RenderError::Limit { limit, .. })
                if limit == "templates.max_source_bytes"),
            "{checked:?}"
        );
        assert!(
            is_limit(&rendered, "templates.max_source_bytes"),
            "{rendered:?}"
        );
    }

    #[tokio::test]
    async fn string_building_filters_are_capped_at_the_output_limit() {
        let attacks = [
            "{{ ('x\n' * 200)|indent(1000000) }}",
            "{{ 'a\nb'|indent(width=100000000) }}",
            "{{ (('x' * 100000)|replace('x', 'yyyyyyyyyy'))|length }}",
            "{{ ('abc'|replace('', 'x' * 60000))|length }}",
            "{{ range(100000)|join('x' * 1000)|length }}",
            "{{ ('%100000000s'|format(1))|length }}",
            "{{ (([1] * 100000000)|string)|length }}",
            "{{ (([1] * 100000000)|pprint)|length }}",
        ];
        for source in attacks {
            let result = render(source, json!({})).await;

            assert!(
                is_limit(&result, "templates.max_output_bytes"),
                "{source}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn filters_that_walk_a_huge_lazy_sequence_are_refused() {
        let attacks = [
            "{{ ([1] * 100000000)|list|length }}",
            "{{ ([1] * 100000000)|sort|length }}",
            "{{ ([1] * 100000000)|unique|length }}",
            "{{ ([1] * 100000000)|sum }}",
            "{{ ([1] * 100000000)|join(',')|length }}",
            "{{ ([1, 2]|batch(100000000, 0))|length }}",
            "{{ ([1, 2]|slice(100000000))|length }}",
        ];
        for source in attacks {
            let result = render(source, json!({})).await;

            assert!(
                matches!(&result, Err(RenderError::Limit { .. })),
                "{source}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn capped_filters_still_work_on_ordinary_input() {
        let cases = [
            ("{{ 'a\nb'|indent(2) }}", "a\n  b"),
            ("{{ 'a\nb'|indent(width=2, first=true) }}", "  a\n  b"),
            (
                "{{ 'Hello World'|replace('Hello', 'Goodbye') }}",
                "Goodbye World",
            ),
            ("{{ [1, 2, 3]|join(', ') }}", "1, 2, 3"),
            ("{{ items|join(', ', attribute='name') }}", "a, b"),
            ("{{ '%s-%05d'|format('x', 42) }}", "x-00042"),
            ("{{ [3, 1, 2]|sort|list }}", "[1, 2, 3]"),
            ("{{ range(5)|sum }}", "10"),
            ("{{ [1, 2, 3]|batch(2, 0)|list }}", "[[1, 2], [3, 0]]"),
            ("{{ 42|string ~ '!' }}", "42!"),
            ("{{ items|map(attribute='name')|join }}", "ab"),
        ];
        let ctx = json!({"items": [{"name": "a"}, {"name": "b"}]});
        for (source, expected) in cases {
            let out = render(source, ctx.clone()).await;

            assert_eq!(out.as_deref(), Ok(expected), "{source}");
        }
    }

    #[tokio::test]
    async fn a_render_that_outlives_its_time_budget_is_answered_with_the_time_limit() {
        let renderer = MiniJinjaRenderer::new(RenderLimits {
            fuel: 1_000_000_000_000,
            timeout: Duration::from_millis(20),
            ..RenderLimits::default()
        });

        let result = renderer
            .render(
                "body",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                &Map::new(),
            )
            .await;

        assert!(
            is_limit(&result, "templates.render_timeout_ms"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_format_key_that_is_not_ascii_is_refused_instead_of_panicking() {
        // MiniJinja 3.0.5's `format` slices `%(…)` keys by bytes: a multi-byte character in
        // one panicked (found by the `templates` fuzz target).
        let result = render("{{ \"%(é)s\"|format(1) }}", json!({})).await;

        assert!(
            matches!(&result, Err(RenderError::Other { field, detail })
                if field == "body" && detail.contains("%(")),
            "{result:?}"
        );
    }

    #[test]
    fn process_isolation_falls_back_to_threads_in_a_program_that_cannot_serve_as_a_worker() {
        let renderer = MiniJinjaRenderer::with_settings(RenderSettings {
            isolation: Isolation::Process { memory_mb: 256 },
            ..RenderSettings::default()
        });

        assert_eq!(renderer.isolation(), Isolation::Thread);
    }
}
