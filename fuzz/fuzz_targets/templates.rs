//! Fuzzes templates as a tenant saves and sends them: the save-time check, then a render with
//! a small context, through the adapters' MiniJinja renderer and its limits.
//!
//! It asserts that neither ever panics, overflows the stack or runs away with memory
//! (libFuzzer's `-rss_limit_mb` and `-timeout` turn those into crashes), that a render's
//! output stays within the output limit, and that a template the check refuses does not
//! render either.

#![no_main]

use std::sync::LazyLock;

use clarion_adapters::render::MiniJinjaRenderer;
use clarion_domain::ports::{RenderError, TemplateRenderer};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

static RENDERER: LazyLock<MiniJinjaRenderer> = LazyLock::new(MiniJinjaRenderer::default);

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

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let checked = RENDERER.check("body", source);
    let rendered = RENDERER.render("body", source, &CONTEXT);
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
