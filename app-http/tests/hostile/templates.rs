//! Templates built to overflow the parser's stack (deep nesting of unary operators, filters,
//! parentheses and blocks), to exceed the source size, and to eat memory or time when they
//! render (doubling strings, huge repeats and paddings, nested loops). Saving may refuse them
//! with a 422; what is saved must fail to render with a 422 naming the budget it exceeded.

use reqwest::Method;
use serde_json::json;

use crate::server::Call;
use crate::suite::{Expect, Suite, expect};

/// Words a detail about too deep nesting holds.
const NESTING: &[&str] = &["nest", "depth", "deep", "recursion"];
/// Words a detail about a size limit holds.
const SIZE: &[&str] = &["max_source_bytes", "size", "bytes", "large", "limit"];
/// Words a detail about an exceeded render budget holds.
const BUDGET: &[&str] = &[
    "fuel", "output", "memory", "time", "budget", "limit", "bytes", "large", "size",
];

/// The default `templates.max_source_bytes`.
const MAX_SOURCE_BYTES: usize = 65_536;

/// A template nesting one construct `depth` times.
type Nest = fn(usize) -> String;

const NESTS: &[(&str, Nest)] = &[
    ("`not`", |n| format!("{{{{ {}1 }}}}", "not ".repeat(n))),
    ("unary `-`", |n| format!("{{{{ {}1 }}}}", "- ".repeat(n))),
    ("`|abs`", |n| format!("{{{{ 1{} }}}}", "|abs".repeat(n))),
    ("parentheses", |n| {
        format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n))
    }),
    ("`{% if %}`", |n| {
        format!("{}x{}", "{% if true %}".repeat(n), "{% endif %}".repeat(n))
    }),
];

/// Templates that parse but must not be rendered to the end.
const HEAVY: &[(&str, &str)] = &[
    (
        "namespace-doubling",
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}\
         {% endfor %}{{ ns.s|length }}",
    ),
    ("repeat-100m", "{{ 'x' * 100000000 }}"),
    ("repeat-1g", "{{ ('x' * 1000000000)|length }}"),
    (
        "replace-1g",
        "{{ (('x' * 10000)|replace('x', 'y' * 100000))|length }}",
    ),
    ("indent-huge", "{{ 'a\\nb\\nc'|indent(100000000) }}"),
    ("batch-huge", "{{ ([1]|batch(100000000, 0))|length }}"),
    ("slice-huge", "{{ ([1]|slice(100000000, 0))|length }}"),
    (
        "nested-ranges",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
    ),
    (
        "output-flood",
        "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    ),
    (
        "recursive-macro",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    ),
];

fn put(slug: &str, body: &str) -> Call {
    Call::json(
        Method::PUT,
        &format!("/v1/apps/shop/templates/{slug}"),
        &json!({ "body": body }),
    )
}

pub async fn run(suite: &mut Suite) {
    suite.area("template nesting");
    for (index, (construct, nest)) in NESTS.iter().enumerate() {
        for depth in [10, 1_000, 100_000] {
            let expected = match depth {
                10 => expect(&[200, 201], &[]),
                1_000 => expect(&[422], NESTING),
                // 100,000 levels are larger than the source limit, and may be larger than
                // the body limit: either limit may refuse them.
                _ => expect(&[413, 422], &[NESTING, SIZE].concat()),
            };
            let name = format!("{construct} nested {depth} deep");
            let slug = format!("nest-{index}-{depth}");
            suite.row(&name, put(&slug, &nest(depth)), &expected).await;
        }
    }
    suite
        .row(
            "a source one byte over templates.max_source_bytes",
            put("too-long", &"x".repeat(MAX_SOURCE_BYTES + 1)),
            &expect(&[413, 422], SIZE),
        )
        .await;

    suite.area("template render budgets");
    for (slug, source) in HEAVY {
        heavy(suite, slug, source).await;
    }
}

/// Saves `source`; a 422 refusal is fine. Otherwise its preview and a send from it must both
/// be refused with a 422 naming the budget.
async fn heavy(suite: &mut Suite, slug: &str, source: &str) {
    let refused_or_saved = expect(&[200, 201, 422], &[]);
    let saved = match suite.server.send(&put(slug, source)).await {
        Ok(reply) => match refused_or_saved.check(&reply) {
            Ok(_) if reply.status == 422 => {
                let name = format!("{slug}: refused when saved");
                suite
                    .record(&name, expect(&[422], BUDGET).check(&reply))
                    .await;
                return;
            }
            Ok(_) => true,
            Err(why) => {
                suite.record(&format!("{slug}: save"), Err(why)).await;
                false
            }
        },
        Err(why) => {
            suite.record(&format!("{slug}: save"), Err(why)).await;
            false
        }
    };
    if !saved {
        return;
    }
    let budget: Expect = expect(&[422], BUDGET);
    let preview = Call::json(
        Method::POST,
        &format!("/v1/apps/shop/templates/{slug}/preview"),
        &json!({ "context": {} }),
    );
    suite
        .row(&format!("{slug}: preview"), preview, &budget)
        .await;
    let send = Call::json(
        Method::POST,
        "/v1/apps/shop/messages/template",
        &json!({ "slug": slug, "context": {}, "target": { "user_id": "nobody" },
                 "dispatch": "now" }),
    );
    suite.row(&format!("{slug}: send now"), send, &budget).await;
}
