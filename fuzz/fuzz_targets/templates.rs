//! Fuzzes templates as a tenant saves and sends them: the save-time check, then a render with
//! a small context, through the adapters' MiniJinja renderer with its default limits and
//! process isolation, as `clarion-server` renders them.
//!
//! The fuzz binary is its own render worker: the `init` block serves render requests and
//! exits when the renderer started this executable as one, as `main` does in the servers. So
//! a template that passes a worker's memory or time budget costs a worker, not the fuzzer;
//! the fuzzer's process must never panic, overflow its stack or run away with memory
//! (libFuzzer's `-rss_limit_mb` and `-timeout` turn those into crashes). It also asserts that
//! a render's output stays within the output limit, and that a template the check refuses
//! does not render either.

#![no_main]

use std::sync::LazyLock;

use clarion_adapters::render::{
    Isolation, MiniJinjaRenderer, RenderSettings, run_worker_if_requested,
};
use clarion_domain::ports::{RenderError, TemplateRenderer};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;

/// The renderer `clarion-server` builds by default: render workers of 256 MiB each.
static RENDERER: LazyLock<MiniJinjaRenderer> = LazyLock::new(|| {
    MiniJinjaRenderer::with_settings(RenderSettings {
        isolation: Isolation::Process { memory_mb: 256 },
        ..RenderSettings::default()
    })
});

/// The port is async: one runtime, on this thread, drives every check and render.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("cannot start a tokio runtime: {error}"),
    }
});

/// The variables a send gives the template.
static CONTEXT: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let context = json!({
        "name": "Ada",
        "count": 3,
        "price": 12.5,
        "items": ["tea", "cake", "jam"],
        "user": {"first": "Ada", "last": "Lovelace", "vip": true},
        "empty": "",
        "nothing": null,
    });
    match context {
        Value::Object(map) => map,
        _ => Map::new(),
    }
});

fuzz_target!(
    init: {
        run_worker_if_requested();
        assert!(
            matches!(RENDERER.isolation(), Isolation::Process { .. }),
            "the renderer fell back to threads"
        );
    },
    |data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let (checked, rendered) = RUNTIME.block_on(async {
        (
            RENDERER.check("body", source).await,
            RENDERER.render("body", source, &CONTEXT).await,
        )
    });
    match (&checked, &rendered) {
        (Err(_), Ok(output)) => {
            panic!("the check refuses {source:?} but it renders to {output:?}")
        }
        (_, Ok(output)) => assert!(
            output.len() <= RENDERER.limits().max_output_bytes,
            "{} bytes of output",
            output.len()
        ),
        (_, Err(RenderError::Syntax { field, .. })) => assert_eq!(field, "body"),
        (_, Err(_)) => {}
    }
});
