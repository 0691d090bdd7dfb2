//! The checks a template's source passes before MiniJinja parses it: its size, and a
//! conservative measure of how deeply it nests.
//!
//! MiniJinja's parser, compiler and value drop recurse once per level of the syntax tree, and
//! only some of those levels have a recursion guard: ten thousand `not`, `-`, `|abs`, `.a` or
//! `+ 1` in a row overflow any thread's stack and abort the process. So the source is
//! tokenised first (with MiniJinja's own lexer, so that strings, comments and raw blocks are
//! read exactly as the parser will read them) and measured:
//!
//! - every open block statement (`{% if %}`, `{% for %}`, `{% macro %}`, ...) is a level;
//! - within a tag, every bracket (`(`, `[`, `{`) opens a level; and
//! - every operator (`+`, `~`, `and`, `not`, `is`, `if`/`else`, comparisons, ...), filter
//!   (`|`), attribute (`.`) and call or subscript is a level of its own, because MiniJinja
//!   builds chains of them as a nested tree too.
//!
//! The measure of a template is the largest sum of those along any path from the outermost
//! block to the innermost bracket. It bounds the depth of the syntax tree from above (each
//! counted token adds at most two tree levels), so a template under the limit cannot exhaust
//! the stack, whatever its text; real templates stay far below it.

use minijinja::machinery::{Span, Token, tokenize};
use minijinja::syntax::SyntaxConfig;

use clarion_domain::ports::RenderError;

/// The setting that bounds the source size, named in errors.
pub(crate) const SOURCE_LIMIT: &str = "templates.max_source_bytes";
/// The setting that bounds the nesting, named in errors.
pub(crate) const NESTING_LIMIT: &str = "templates.max_nesting";

/// Refuses a source that is larger than `max_bytes` or nests deeper than `max_nesting`.
///
/// # Errors
/// [`RenderError::Limit`] naming the setting that was exceeded. A source that does not even
/// tokenise is left to the parser, which reports the syntax error.
pub(crate) fn precheck(
    field: &str,
    source: &str,
    max_bytes: usize,
    max_nesting: usize,
) -> Result<(), RenderError> {
    check_size(field, source, max_bytes)?;
    match deepest_over(source, max_nesting) {
        None => Ok(()),
        Some(line) => Err(RenderError::Limit {
            field: field.to_owned(),
            limit: NESTING_LIMIT.to_owned(),
            detail: format!(
                "the template nests more than {max_nesting} levels deep (line {line}); \
                 blocks, brackets and chained operators, filters, tests and attributes \
                 each count as a level"
            ),
        }),
    }
}

/// Refuses a source that is larger than `max_bytes`.
///
/// # Errors
/// [`RenderError::Limit`] naming `templates.max_source_bytes`.
pub(crate) fn check_size(field: &str, source: &str, max_bytes: usize) -> Result<(), RenderError> {
    if source.len() > max_bytes {
        return Err(RenderError::Limit {
            field: field.to_owned(),
            limit: SOURCE_LIMIT.to_owned(),
            detail: format!(
                "the source is {} bytes; at most {max_bytes} are allowed",
                source.len()
            ),
        });
    }
    Ok(())
}

/// The nesting measure of `source`, or `None` when it does not tokenise. For tests and for
/// the documentation of real templates' depth.
#[cfg(test)]
pub(crate) fn nesting(source: &str) -> Option<usize> {
    let mut scanner = Scanner::new(usize::MAX);
    for token in tokenize(source, false, SyntaxConfig::default()) {
        let (token, span) = token.ok()?;
        scanner.step(&token, span);
    }
    Some(scanner.deepest)
}

/// The line at which `source` first nests deeper than `limit`, if it does.
fn deepest_over(source: &str, limit: usize) -> Option<u16> {
    let mut scanner = Scanner::new(limit);
    for token in tokenize(source, false, SyntaxConfig::default()) {
        // The parser stops at the first token the lexer refuses, so what came before it is
        // all that it could nest; it then reports the syntax error itself.
        let Ok((token, span)) = token else {
            return None;
        };
        if let Some(line) = scanner.step(&token, span) {
            return Some(line);
        }
    }
    None
}

/// One bracket level of an expression: the counted tokens directly in it, and the deepest
/// measure of the brackets it closed.
#[derive(Debug, Default, Clone, Copy)]
struct Group {
    links: usize,
    deepest_child: usize,
}

impl Group {
    fn measure(self) -> usize {
        self.links.saturating_add(self.deepest_child)
    }
}

/// What the scanner is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// Template text between tags.
    Text,
    /// `{{ ... }}`.
    Variable,
    /// `{% ... %}`, with whether its keyword has been read yet and whether it assigns.
    Block,
}

/// The streaming measure. Every check it makes is a lower bound of the final measure of the
/// tag, so it can stop at the first token that goes over the limit, before the rest of a
/// large source is read.
#[derive(Debug)]
struct Scanner<'s> {
    limit: usize,
    /// The largest measure seen so far.
    deepest: usize,
    /// Open block statements.
    blocks: usize,
    tag: Tag,
    /// The open brackets of the current tag; the first entry is the tag itself.
    groups: Vec<Group>,
    /// The statement keyword of the current block tag (`if`, `endfor`, `set`).
    keyword: Option<&'s str>,
    /// Whether the current block tag holds `=` (a `set` with `=` opens no block).
    assigns: bool,
    /// Whether the last token ends an operand, so that a bracket after it is a call or a
    /// subscript.
    after_operand: bool,
}

impl<'s> Scanner<'s> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            deepest: 0,
            blocks: 0,
            tag: Tag::Text,
            groups: Vec::new(),
            keyword: None,
            assigns: false,
            after_operand: false,
        }
    }

    /// Takes one token; returns its line when the measure goes over the limit.
    fn step(&mut self, token: &Token<'s>, span: Span) -> Option<u16> {
        let is_keyword = self.tag == Tag::Block && self.keyword.is_none();
        let over = self.measure(token, span);
        self.after_operand = match token {
            Token::Ident("not" | "and" | "or" | "in" | "is" | "if" | "else") => false,
            Token::Ident(_) => !is_keyword,
            Token::Str(_)
            | Token::String(_)
            | Token::Int(_)
            | Token::Int128(_)
            | Token::Float(_)
            | Token::BracketClose
            | Token::ParenClose
            | Token::BraceClose => true,
            _ => false,
        };
        over
    }

    fn measure(&mut self, token: &Token<'s>, span: Span) -> Option<u16> {
        let candidate = match token {
            Token::TemplateData(_) => return None,
            Token::VariableStart => {
                self.open_tag(Tag::Variable);
                return None;
            }
            Token::BlockStart => {
                self.open_tag(Tag::Block);
                return None;
            }
            Token::VariableEnd | Token::BlockEnd => self.close_tag(),
            Token::BracketOpen | Token::ParenOpen | Token::BraceOpen => {
                // `f(x)` and `x[0]` are a call or subscript node on their operand, like an
                // operator; `(a + b)` and `[1, 2]` only open a level.
                if self.after_operand {
                    self.count_link();
                }
                self.groups.push(Group::default());
                self.open_path()
            }
            Token::BracketClose | Token::ParenClose | Token::BraceClose => self.close_group(),
            Token::Ident(name) if self.tag == Tag::Block && self.keyword.is_none() => {
                self.keyword = Some(*name);
                return None;
            }
            Token::Ident("not" | "and" | "or" | "in" | "is" | "if" | "else")
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::FloorDiv
            | Token::Pow
            | Token::Mod
            | Token::Dot
            | Token::Tilde
            | Token::Pipe
            | Token::Eq
            | Token::Ne
            | Token::Gt
            | Token::Gte
            | Token::Lt
            | Token::Lte => {
                self.count_link();
                self.open_path()
            }
            Token::Assign => {
                self.assigns = true;
                return None;
            }
            _ => return None,
        };
        self.deepest = self.deepest.max(candidate);
        (candidate > self.limit).then_some(span.start_line)
    }

    fn open_tag(&mut self, tag: Tag) {
        self.tag = tag;
        self.groups.clear();
        self.groups.push(Group::default());
        self.keyword = None;
        self.assigns = false;
    }

    fn count_link(&mut self) {
        if let Some(group) = self.groups.last_mut() {
            group.links = group.links.saturating_add(1);
        }
    }

    /// The measure of the path through the open brackets, counting what was read so far.
    fn open_path(&self) -> usize {
        let links = self
            .groups
            .iter()
            .fold(0usize, |sum, group| sum.saturating_add(group.links));
        self.blocks
            .saturating_add(links)
            .saturating_add(self.groups.len().saturating_sub(1))
    }

    /// Closes the innermost bracket and returns the measure of the path through its deepest
    /// part. A stray closing bracket is the parser's to report.
    fn close_group(&mut self) -> usize {
        if self.groups.len() < 2 {
            return self.open_path();
        }
        let closed = self.groups.pop().unwrap_or_default();
        let below = closed.measure().saturating_add(1);
        if let Some(parent) = self.groups.last_mut() {
            parent.deepest_child = parent.deepest_child.max(below);
        }
        let ancestors = self.open_path();
        // The open path counts the parent's links so far; the closed bracket adds its own
        // measure below them.
        ancestors.saturating_add(below)
    }

    /// Ends the tag: its whole measure, then the block it opens or closes.
    fn close_tag(&mut self) -> usize {
        // Brackets left open are a syntax error; measure them as if closed.
        while self.groups.len() > 1 {
            self.close_group();
        }
        let root = self.groups.pop().unwrap_or_default();
        let measure = self.blocks.saturating_add(root.measure());
        if self.tag == Tag::Block {
            match self.keyword {
                Some(keyword) if opens_block(keyword, self.assigns) => {
                    self.blocks = self.blocks.saturating_add(1);
                }
                Some(keyword) if keyword.starts_with("end") => {
                    self.blocks = self.blocks.saturating_sub(1);
                }
                _ => {}
            }
        }
        self.tag = Tag::Text;
        measure.max(self.blocks)
    }
}

/// Whether a block tag with this keyword opens a block that an `end...` tag closes.
fn opens_block(keyword: &str, assigns: bool) -> bool {
    match keyword {
        "if" | "for" | "macro" | "call" | "filter" | "with" | "block" | "autoescape" => true,
        // `{% set x %}...{% endset %}` captures a block; `{% set x = 1 %}` does not.
        "set" => !assigns,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMIT: usize = 32;

    fn check(source: &str) -> Result<(), RenderError> {
        precheck("body", source, 10_000_000, LIMIT)
    }

    fn is_nesting_error(result: &Result<(), RenderError>) -> bool {
        matches!(result, Err(RenderError::Limit { field, limit, .. })
            if field == "body" && limit == NESTING_LIMIT)
    }

    /// Every construct that MiniJinja turns into a chain of nested tree nodes, repeated `n`
    /// times.
    fn attacks(n: usize) -> Vec<(&'static str, String)> {
        vec![
            ("not", format!("{{{{ {}1 }}}}", "not ".repeat(n))),
            ("minus", format!("{{{{ {}1 }}}}", "- ".repeat(n))),
            (
                "parentheses",
                format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n)),
            ),
            (
                "lists",
                format!("{{{{ {}1{} }}}}", "[".repeat(n), "]".repeat(n)),
            ),
            (
                "maps",
                format!("{{{{ {}{} }}}}", "{'a': ".repeat(n), "}".repeat(n)),
            ),
            ("filters", format!("{{{{ 1{} }}}}", "|abs".repeat(n))),
            ("tests", format!("{{{{ 1{} }}}}", " is odd".repeat(n))),
            ("additions", format!("{{{{ 1{} }}}}", " + 1".repeat(n))),
            ("concatenations", format!("{{{{ 1{} }}}}", " ~ 1".repeat(n))),
            ("attributes", format!("{{{{ x{} }}}}", ".a".repeat(n))),
            ("calls", format!("{{{{ x{} }}}}", "()".repeat(n))),
            ("subscripts", format!("{{{{ x{} }}}}", "[0]".repeat(n))),
            (
                "conditionals",
                format!("{{{{ {}1 }}}}", "1 if 1 else ".repeat(n)),
            ),
            ("ands", format!("{{{{ 1{} }}}}", " and 1".repeat(n))),
            (
                "if blocks",
                format!("{}x{}", "{% if 1 %}".repeat(n), "{% endif %}".repeat(n)),
            ),
            (
                "for blocks",
                format!(
                    "{}x{}",
                    "{% for i in [1] %}".repeat(n),
                    "{% endfor %}".repeat(n)
                ),
            ),
            ("unclosed if blocks", format!("{}x", "{% if 1 %}".repeat(n))),
            (
                "nots in a block tag",
                format!("{{% if {}1 %}}x{{% endif %}}", "not ".repeat(n)),
            ),
        ]
    }

    #[test]
    fn every_chain_nested_a_thousand_or_a_hundred_thousand_times_is_refused() {
        for n in [1_000, 100_000] {
            for (name, source) in attacks(n) {
                let result = check(&source);

                assert!(is_nesting_error(&result), "{name} x{n}: {result:?}");
            }
        }
    }

    #[test]
    fn every_chain_nested_ten_times_is_accepted() {
        for (name, source) in attacks(10) {
            assert_eq!(check(&source), Ok(()), "{name} x10");
        }
    }

    #[test]
    fn a_chain_one_over_the_limit_is_refused_and_one_at_it_accepted() {
        let at = format!("{{{{ {}1 }}}}", "not ".repeat(LIMIT));
        let over = format!("{{{{ {}1 }}}}", "not ".repeat(LIMIT + 1));

        assert_eq!(nesting(&at), Some(LIMIT));
        assert_eq!(check(&at), Ok(()));
        assert!(is_nesting_error(&check(&over)));
    }

    #[test]
    fn the_error_names_the_setting_and_the_line() {
        let source = format!("ok\n{{{{ {}1 }}}}", "- ".repeat(100));

        let err = check(&source).unwrap_err();

        assert!(
            err.to_string().contains("templates.max_nesting") && err.to_string().contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn blocks_nest_with_the_expressions_inside_them() {
        let source = "{% for a in b %}{% if a %}{{ (a.x + 1) }}{% endif %}{% endfor %}";

        // Two blocks; inside, the parenthesis (1) holding `.` and `+` (2).
        assert_eq!(nesting(source), Some(5));
    }

    #[test]
    fn siblings_do_not_add_up() {
        let source = "{{ (a + b) ~ (c + d) ~ (e + f) }}{% if x %}{% endif %}{% if y %}{% endif %}";

        // The tag's two `~`, plus the deepest parenthesis (1 + its `+`).
        assert_eq!(nesting(source), Some(4));
    }

    #[test]
    fn a_set_with_a_value_opens_no_block_and_a_set_block_does() {
        assert_eq!(nesting("{% set x = 1 %}{% set y = 2 %}{{ z }}"), Some(0));
        assert_eq!(
            nesting("{% set x %}{% set y %}{{ z }}{% endset %}{% endset %}"),
            Some(2)
        );
    }

    #[test]
    fn operators_inside_strings_comments_and_raw_blocks_do_not_count() {
        let deep = "not ".repeat(1_000);
        let source = format!(
            "{{{{ '{deep}' }}}}{{# {deep} #}}{{% raw %}}{{{{ {deep} }}}}{{% endraw %}}{deep}"
        );

        assert_eq!(check(&source), Ok(()));
    }

    #[test]
    fn a_source_over_the_size_limit_is_refused_naming_the_setting() {
        let result = precheck("heading", &"x".repeat(101), 100, LIMIT);

        assert!(
            matches!(&result, Err(RenderError::Limit { field, limit, detail })
                if field == "heading" && limit == SOURCE_LIMIT && detail.contains("101 bytes")),
            "{result:?}"
        );
        assert_eq!(precheck("heading", &"x".repeat(100), 100, LIMIT), Ok(()));
    }

    #[test]
    fn templates_like_real_notifications_stay_far_below_the_default_limit() {
        let sources = [
            "Hello {{ user.first_name|title }}, your order {{ order.id }} has shipped",
            "{% if order.items|length > 1 %}{{ order.items|length }} items{% else %}one item{% endif %}",
            "{% for item in order.items[:3] %}{{ item.name }}{% if not loop.last %}, {% endif %}{% endfor %}",
            "https://shop.example/orders/{{ order.id }}?utm={{ campaign|default('push')|lower }}",
            "{{ '%s %s'|format(user.first_name, user.last_name)|trim ~ ' — ' ~ order.total|round(2) }}",
        ];
        for source in sources {
            let depth = nesting(source).unwrap();

            // A quarter of the default limit (64) at most.
            assert!(depth <= 16, "{source}: {depth}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        // Any mix of the counted constructs at any depth: the check never panics or
        // overflows, and refuses exactly the sources whose measure is over the limit.
        #[test]
        fn the_check_agrees_with_the_measure_on_any_mix_of_constructs(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("not "), Just("- "), Just("("), Just(")"), Just("["), Just("]"),
                    Just("|abs"), Just(" ~ 1"), Just(".a"), Just("{% if 1 %}"),
                    Just("{% endif %}"), Just("{{ "), Just(" }}"), Just("x"), Just("'('"),
                ],
                0..200,
            )
        ) {
            let source = parts.concat();

            let result = check(&source);

            match nesting(&source) {
                Some(depth) if depth > LIMIT => prop_assert!(is_nesting_error(&result)),
                Some(_) => prop_assert_eq!(result, Ok(())),
                None => prop_assert!(result.is_ok() || is_nesting_error(&result)),
            }
        }

        // Whatever the check accepts at the largest allowed `templates.max_nesting`,
        // MiniJinja compiles and renders on the smallest stack a render gets (a worker
        // process's main thread, 8 MiB by default): the measure bounds the tree's depth.
        // A stack overflow would abort the test process.
        #[test]
        fn whatever_the_check_accepts_at_the_largest_limit_renders_on_an_8_mib_stack(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("not "), Just("- "), Just("("), Just(")"), Just("|abs"),
                    Just(" ~ 1"), Just(" + 1"), Just(" if 1 else "), Just("1"), Just(" is odd"),
                ],
                0..700,
            )
        ) {
            let limit = crate::config::MAX_TEMPLATE_NESTING;
            let source = format!("{{{{ {} }}}}", parts.concat());
            prop_assume!(precheck("body", &source, usize::MAX, limit).is_ok());

            let rendered = std::thread::Builder::new()
                .stack_size(8 * 1024 * 1024)
                .spawn(move || {
                    let mut env = minijinja::Environment::new();
                    env.set_fuel(Some(100_000));
                    env.render_str(&source, ()).map(drop).map_err(|e| e.to_string())
                })
                .unwrap()
                .join();

            prop_assert!(rendered.is_ok());
        }
    }
}
