//! Size caps on MiniJinja's built-in filters that can build a large value from a small
//! template: `indent(100000000)`, `replace` and `join` with a long replacement, a wide
//! `format` width, `string` or `list` of a lazily repeated sequence.
//!
//! MiniJinja's fuel counts instructions, and one filter call is one instruction however much
//! it builds, so these filters are replaced (an environment's filters override the built-in
//! ones of the same name) by wrappers that estimate the size of the result from the
//! arguments before calling the built-in filter, and refuse:
//! - a string result longer than `templates.max_output_bytes` (nothing that long could be
//!   part of the output anyway), and
//! - a sequence of more than [`ITEM_LIMIT`] items to walk or build (MiniJinja's own limit for
//!   `range`).
//!
//! The operators (`~`, `*`) cannot be overridden; the memory budget of the render process
//! bounds what they build.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use minijinja::value::{Rest, Value, ValueKind, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, State};

/// The most items a filter may walk or build, as MiniJinja allows for `range`.
pub(crate) const ITEM_LIMIT: usize = 100_000;
/// The setting that bounds the size of strings that filters build, named in errors.
pub(crate) const OUTPUT_LIMIT: &str = "templates.max_output_bytes";

/// Marks a MiniJinja error as a limit of ours, so that the renderer can report it as
/// [`clarion_domain::ports::RenderError::Limit`] naming the setting.
#[derive(Debug, Clone)]
pub(crate) struct Exceeded {
    pub(crate) limit: &'static str,
    pub(crate) detail: String,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Exceeded {}

/// The filters that walk or materialise their whole input.
const WALKERS: [&str; 16] = [
    "list",
    "sort",
    "unique",
    "reverse",
    "dictsort",
    "items",
    "groupby",
    "map",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "sum",
    "min",
    "max",
    "last",
];

/// How a capped filter checks its arguments before the built-in one runs.
#[derive(Debug, Clone, Copy)]
enum Guard {
    /// Walks its first argument: at most [`ITEM_LIMIT`] items.
    Walk,
    /// `batch` and `slice`: walks its input and builds as many items as its count.
    Count,
    Indent,
    Replace,
    Join,
    Format,
    /// `string`: the text of its argument.
    Display,
    /// `pprint`: the pretty debug text of its argument.
    Pretty,
}

/// Replaces the built-in filters that can build large values with capped ones. `max_bytes`
/// is the longest string a filter may build.
pub(crate) fn install(env: &mut Environment<'static>, max_bytes: usize) {
    let guarded: Vec<(&'static str, Guard)> = WALKERS
        .iter()
        .map(|name| (*name, Guard::Walk))
        .chain([
            ("batch", Guard::Count),
            ("slice", Guard::Count),
            ("indent", Guard::Indent),
            ("replace", Guard::Replace),
            ("join", Guard::Join),
            ("format", Guard::Format),
            ("string", Guard::Display),
            ("pprint", Guard::Pretty),
        ])
        .collect();
    for (name, guard) in guarded {
        let Some(builtin) = builtin_filter(name) else {
            continue;
        };
        env.add_filter(
            name,
            move |state: &mut State<'_, '_>, args: Rest<ValueOrKwargs>| -> Result<Value, Error> {
                // Keyword arguments stay the trailing value the built-in filter expects.
                let mut args: Vec<Value> =
                    args.0.into_iter().map(ValueOrKwargs::into_value).collect();
                apply(guard, &mut args, max_bytes)?;
                builtin.call(state, &args)
            },
        );
    }
}

/// The built-in filters this module wraps, by name.
fn builtin_filter(name: &str) -> Option<Value> {
    use minijinja::filters as f;
    Some(match name {
        "list" => Value::from_function(f::list),
        "sort" => Value::from_function(f::sort),
        "unique" => Value::from_function(f::unique),
        "reverse" => Value::from_function(f::reverse),
        "dictsort" => Value::from_function(f::dictsort),
        "items" => Value::from_function(f::items),
        "groupby" => Value::from_function(f::groupby),
        "map" => Value::from_function(f::map),
        "select" => Value::from_function(f::select),
        "reject" => Value::from_function(f::reject),
        "selectattr" => Value::from_function(f::selectattr),
        "rejectattr" => Value::from_function(f::rejectattr),
        "sum" => Value::from_function(f::sum),
        "min" => Value::from_function(f::min),
        "max" => Value::from_function(f::max),
        "last" => Value::from_function(f::last),
        "join" => Value::from_function(f::join),
        "batch" => Value::from_function(f::batch),
        "slice" => Value::from_function(f::slice),
        "indent" => Value::from_function(f::indent),
        "replace" => Value::from_function(f::replace),
        "format" => Value::from_function(f::format),
        "string" => Value::from_function(f::string),
        "pprint" => Value::from_function(f::pprint),
        _ => return None,
    })
}

fn apply(guard: Guard, args: &mut [Value], max_bytes: usize) -> Result<(), Error> {
    let Some((first, rest)) = args.split_first_mut() else {
        return Ok(());
    };
    let rest: &[Value] = rest;
    match guard {
        Guard::Walk => *first = walked(first)?,
        Guard::Count => {
            *first = walked(first)?;
            let count = rest.first().and_then(Value::as_usize).unwrap_or(0);
            if count > ITEM_LIMIT {
                return Err(too_many(count));
            }
        }
        Guard::Indent => {
            let text = text_of(first, max_bytes)?;
            let lines = text.matches('\n').count().saturating_add(1);
            let width = largest_number(rest);
            let estimate = text.len().saturating_add(lines.saturating_mul(width));
            check_bytes(estimate, max_bytes, "indent")?;
        }
        Guard::Replace => {
            let text = text_of(first, max_bytes)?;
            let from = rest.first().map(|v| text_of(v, max_bytes)).transpose()?;
            let to = rest.get(1).map(|v| text_of(v, max_bytes)).transpose()?;
            let (from, to) = (from.unwrap_or_default(), to.unwrap_or_default());
            let matches = if from.is_empty() {
                text.chars().count().saturating_add(1)
            } else {
                text.matches(from.as_ref()).count()
            };
            let estimate = text.len().saturating_add(matches.saturating_mul(to.len()));
            check_bytes(estimate, max_bytes, "replace")?;
        }
        Guard::Join => {
            *first = walked(first)?;
            let joiner = rest
                .first()
                .filter(|v| !v.is_kwargs())
                .map(|v| text_of(v, max_bytes))
                .transpose()?
                .map_or(0, |joiner| joiner.len());
            let mut estimate = 0usize;
            for (index, item) in first.try_iter()?.enumerate() {
                if index > 0 {
                    estimate = estimate.saturating_add(joiner);
                }
                let left = max_bytes.saturating_sub(estimate);
                let item = text_of(&item, left).map_err(|_| too_long("join", max_bytes))?;
                estimate = estimate.saturating_add(item.len());
                check_bytes(estimate, max_bytes, "join")?;
            }
        }
        Guard::Format => {
            let format = text_of(first, max_bytes)?;
            ascii_conversions(&format)?;
            let widths = format
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|digits| digits.parse::<usize>().ok())
                .fold(0usize, usize::saturating_add);
            let mut estimate = format.len().saturating_add(widths);
            for arg in rest {
                let left = max_bytes.saturating_sub(estimate);
                let arg = text_of(arg, left).map_err(|_| too_long("format", max_bytes))?;
                estimate = estimate.saturating_add(arg.len());
            }
            check_bytes(estimate, max_bytes, "format")?;
        }
        Guard::Display => {
            text_of(first, max_bytes)?;
        }
        Guard::Pretty => {
            let mut budget = max_bytes;
            if !fits(first, &mut budget) {
                return Err(too_long("pprint", max_bytes));
            }
            let mut out = Capped::new(max_bytes);
            if write!(out, "{first:#?}").is_err() {
                return Err(too_long("pprint", max_bytes));
            }
        }
    }
    Ok(())
}

/// `value` itself when it is not a sequence or has at most [`ITEM_LIMIT`] items; a lazy
/// iterable (a repeated or chained sequence) is walked into a list of at most that many.
fn walked(value: &Value) -> Result<Value, Error> {
    if !matches!(value.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return Ok(value.clone());
    }
    if let Some(len) = value.len() {
        return if len > ITEM_LIMIT {
            Err(too_many(len))
        } else {
            Ok(value.clone())
        };
    }
    let mut items = Vec::new();
    for item in value.try_iter()? {
        if items.len() == ITEM_LIMIT {
            return Err(too_many(ITEM_LIMIT.saturating_add(1)));
        }
        items.push(item);
    }
    Ok(Value::from(items))
}

/// The text of `value` as a filter would read it, refused once it is longer than
/// `max_bytes`: a lazily repeated sequence displays as billions of bytes.
fn text_of(value: &Value, max_bytes: usize) -> Result<Cow<'_, str>, Error> {
    if let Some(text) = value.as_str() {
        return if text.len() > max_bytes {
            Err(too_long("a string", max_bytes))
        } else {
            Ok(Cow::Borrowed(text))
        };
    }
    // MiniJinja keeps formatting a sequence after its writer failed, so a sequence too long
    // to fit is refused before it is formatted.
    let mut budget = max_bytes;
    if !fits(value, &mut budget) {
        return Err(too_long("a value's text", max_bytes));
    }
    let mut out = Capped::new(max_bytes);
    match write!(out, "{value}") {
        Ok(()) => Ok(Cow::Owned(out.text)),
        Err(_) => Err(too_long("a value's text", max_bytes)),
    }
}

/// Whether the text of `value` may fit in `budget` bytes: each item of a sequence or map
/// takes at least one byte, so one with more items than the budget cannot. Walks at most
/// `budget` items.
fn fits(value: &Value, budget: &mut usize) -> bool {
    match value.kind() {
        ValueKind::String | ValueKind::Bytes => {
            let len = value
                .as_str()
                .map_or_else(|| value.len().unwrap_or(0), str::len);
            take(budget, len)
        }
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            if value.len().is_some_and(|len| len > *budget) {
                return false;
            }
            let Ok(items) = value.try_iter() else {
                return take(budget, 1);
            };
            let is_map = value.kind() == ValueKind::Map;
            for item in items {
                if !take(budget, 1) || !fits(&item, budget) {
                    return false;
                }
                if is_map && !value.get_item(&item).is_ok_and(|v| fits(&v, budget)) {
                    return false;
                }
            }
            true
        }
        // Numbers, booleans, none and plain objects print in a few bytes.
        _ => take(budget, 1),
    }
}

fn take(budget: &mut usize, bytes: usize) -> bool {
    match budget.checked_sub(bytes) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

/// The largest non-negative integer among the arguments, keyword arguments included.
fn largest_number(args: &[Value]) -> usize {
    let mut largest = 0usize;
    for arg in args {
        if arg.is_kwargs() {
            if let Ok(keys) = arg.try_iter() {
                for key in keys {
                    if let Ok(value) = arg.get_item(&key) {
                        largest = largest.max(value.as_usize().unwrap_or(0));
                    }
                }
            }
        } else if arg.kind() == ValueKind::Number {
            largest = largest.max(arg.as_usize().unwrap_or(0));
        }
    }
    largest
}

/// Refuses a `format` string with a character beyond ASCII inside a conversion (`%(key)s`,
/// `%-5d`): MiniJinja's formatter walks conversions byte by byte and panics on the middle of
/// a multi-byte character. Text outside conversions may be anything.
fn ascii_conversions(format: &str) -> Result<(), Error> {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut in_key = false;
        for c in chars.by_ref() {
            if !c.is_ascii() {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "format: a %(…) key or conversion may hold ASCII characters only",
                ));
            }
            match c {
                '(' => in_key = true,
                ')' => in_key = false,
                c if !in_key && (c.is_ascii_alphabetic() || c == '%') => break,
                _ => {}
            }
        }
    }
    Ok(())
}

fn check_bytes(estimate: usize, max_bytes: usize, what: &str) -> Result<(), Error> {
    if estimate > max_bytes {
        return Err(too_long(what, max_bytes));
    }
    Ok(())
}

fn too_long(what: &str, max_bytes: usize) -> Error {
    limit_error(
        OUTPUT_LIMIT,
        format!("{what} would build a string longer than {max_bytes} bytes"),
    )
}

fn too_many(items: usize) -> Error {
    limit_error(
        "the item limit",
        format!("a filter would walk or build {items} items; at most {ITEM_LIMIT} are allowed"),
    )
}

fn limit_error(limit: &'static str, detail: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, detail.clone()).with_source(Exceeded { limit, detail })
}

/// A `fmt::Write` that fails once more than `limit` bytes were written.
struct Capped {
    text: String,
    limit: usize,
}

impl Capped {
    fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            limit,
        }
    }
}

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.text.len().saturating_add(s.len()) > self.limit {
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}
