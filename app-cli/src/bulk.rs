//! `clarion send --file`: sends a file of messages, one JSON object a line, each the item of
//! a bulk send (`POST /v1/apps/{app}/messages/bulk`, read by [`BulkItem::parse`]).
//!
//! The file is read on a thread of its own, a line at a time, into a short queue, and the
//! messages go through the service [`CONCURRENCY`] at a time, so that a file of any size is
//! sent in bounded memory and the store commits the messages in groups. Each line stands on
//! its own: a bad line is reported by its number, and the others are sent.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clarion_domain::service::PushService;
use clarion_http::bulk::{BulkItem, Refused};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::CliError;
use crate::output;

/// How many messages are checked, stored and sent at once.
const CONCURRENCY: usize = 64;

/// The longest line read, in bytes: the single send's body limit (`http.body_limit_bytes`).
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;

/// How many failed lines the summary names; beyond them it only counts.
const FAILURES_SHOWN: usize = 100;

/// Where the messages come from: a file, or standard input for `-`.
pub(crate) struct Input {
    reader: Box<dyn BufRead + Send>,
    /// The file's size, for the progress bar; `None` for standard input.
    size: Option<u64>,
    name: String,
}

impl Input {
    /// Opens the file (`-`: standard input).
    ///
    /// # Errors
    /// [`CliError::Input`] naming the file when it cannot be opened.
    pub(crate) fn open(path: &Path) -> Result<Self, CliError> {
        if path == Path::new("-") {
            return Ok(Self {
                reader: Box::new(BufReader::new(std::io::stdin())),
                size: None,
                name: "standard input".to_owned(),
            });
        }
        let name = path.display().to_string();
        let file = File::open(path)
            .map_err(|e| CliError::Input(format!("cannot open --file {name}: {e}")))?;
        let size = file.metadata().ok().map(|m| m.len());
        Ok(Self {
            reader: Box::new(BufReader::new(file)),
            size,
            name,
        })
    }
}

/// One line of the file, as the reading thread hands it over.
enum Line {
    Item(u64, Box<BulkItem>),
    Bad(u64, String),
    /// The file cannot be read on: the reason.
    Broken(String),
}

/// A line that was not stored.
#[derive(Debug, Serialize)]
struct Failure {
    line: u64,
    error: String,
}

/// What `clarion send --file` did.
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Lines holding a message (blank lines are skipped).
    messages: u64,
    stored: u64,
    failed: u64,
    /// The first [`FAILURES_SHOWN`] lines to fail, in line order.
    failures: Vec<Failure>,
    /// Failed lines beyond those shown.
    failures_not_shown: u64,
    /// Why the file could not be read to its end, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_error: Option<String>,
    /// Whether a failure was the store's or the renderer's rather than the line's.
    #[serde(skip)]
    store_failed: bool,
}

impl Summary {
    fn fail(&mut self, line: u64, error: String) {
        self.failed += 1;
        if self.failures.len() < FAILURES_SHOWN {
            self.failures.push(Failure { line, error });
        } else {
            self.failures_not_shown += 1;
        }
    }
}

/// Sends every message of `input` and prints the summary.
///
/// # Errors
/// When a line failed: [`CliError::Failure`] (exit code 1) if the store or the renderer
/// failed for any line or the file could not be read to its end, else [`CliError::Input`]
/// (exit code 2). The summary names each failed line.
pub(crate) async fn send_file(
    service: &PushService,
    app: &str,
    input: Input,
    json: bool,
) -> Result<(), CliError> {
    let bar = progress_bar(input.size, json);
    let read_bytes = Arc::new(AtomicU64::new(0));
    let (lines_tx, mut lines) = mpsc::channel::<Line>(CONCURRENCY * 4);
    let name = input.name.clone();
    let reading = {
        let read_bytes = read_bytes.clone();
        std::thread::spawn(move || read_lines(input.reader, &lines_tx, &read_bytes))
    };
    let service = Arc::new(service.clone());
    let mut summary = Summary::default();
    let mut sending: JoinSet<(u64, Result<(), CliError>)> = JoinSet::new();
    let mut read_all = false;
    loop {
        tokio::select! {
            biased;
            Some(done) = sending.join_next(), if !sending.is_empty() => match done {
                Ok((_, Ok(()))) => summary.stored += 1,
                Ok((number, Err(error))) => {
                    summary.store_failed |= matches!(error, CliError::Failure(_));
                    summary.fail(number, error.to_string());
                }
                Err(panicked) => {
                    summary.store_failed = true;
                    summary.fail(0, format!("a send failed: {panicked}"));
                }
            },
            line = lines.recv(), if !read_all && sending.len() < CONCURRENCY => match line {
                Some(Line::Item(number, item)) => {
                    summary.messages += 1;
                    let service = service.clone();
                    let app = app.to_owned();
                    sending.spawn(async move {
                        let sent = item.send(&service, &app, &|_| {}).await;
                        (number, sent.map(|_| ()).map_err(refusal))
                    });
                }
                Some(Line::Bad(number, error)) => {
                    summary.messages += 1;
                    summary.fail(number, error);
                }
                Some(Line::Broken(reason)) => {
                    summary.read_error = Some(format!("cannot read {name}: {reason}"));
                }
                None => read_all = true,
            },
            else => break,
        }
        bar.set_position(read_bytes.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{} stored, {} failed",
            summary.stored, summary.failed
        ));
    }
    bar.finish_and_clear();
    if reading.join().is_err() {
        summary.read_error = Some(format!("cannot read {name}: the reading thread stopped"));
    }
    summary.failures.sort_by_key(|f| f.line);
    report(&summary, json)?;
    finish(&summary)
}

/// Why the service did not store a line's message, with the exit code's kind.
fn refusal(refused: Refused) -> CliError {
    match refused {
        Refused::Send(error) => error.into(),
        Refused::NotSent(reason) => CliError::NotSent(reason.to_string()),
    }
}

/// Reads the lines and hands each over, checked, until the end or until the receiver stops.
fn read_lines(mut reader: Box<dyn BufRead + Send>, lines: &mpsc::Sender<Line>, read: &AtomicU64) {
    let mut buffer = Vec::new();
    let mut number = 0_u64;
    loop {
        let line = match next_line(&mut reader, &mut buffer, read) {
            Ok(None) => return,
            Ok(Some(fits)) => {
                number += 1;
                if !fits {
                    Line::Bad(
                        number,
                        format!("the line is longer than {MAX_LINE_BYTES} bytes"),
                    )
                } else if buffer.iter().all(u8::is_ascii_whitespace) {
                    continue;
                } else {
                    match std::str::from_utf8(&buffer) {
                        Ok(text) => match BulkItem::parse(text) {
                            Ok(item) => Line::Item(number, Box::new(item)),
                            Err(error) => Line::Bad(number, error),
                        },
                        Err(_) => Line::Bad(number, "the line is not UTF-8 text".to_owned()),
                    }
                }
            }
            Err(error) => Line::Broken(error.to_string()),
        };
        let broken = matches!(line, Line::Broken(_));
        if lines.blocking_send(line).is_err() || broken {
            return;
        }
    }
}

/// Reads the next line into `buffer`, without its end (`\n` or `\r\n`): `Ok(None)` at the end
/// of the input, `Ok(Some(false))` for a line longer than [`MAX_LINE_BYTES`], which is skipped
/// to its end without being kept.
fn next_line(
    reader: &mut dyn BufRead,
    buffer: &mut Vec<u8>,
    read: &AtomicU64,
) -> std::io::Result<Option<bool>> {
    buffer.clear();
    let mut fits = true;
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(any.then_some(fits));
        }
        any = true;
        let (chunk, end) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        if fits && buffer.len() + chunk.len() <= MAX_LINE_BYTES {
            buffer.extend_from_slice(chunk);
        } else {
            fits = false;
            buffer.clear();
        }
        let used = end.unwrap_or(chunk.len());
        reader.consume(used);
        read.fetch_add(used as u64, Ordering::Relaxed);
        if end.is_some() {
            if buffer.last() == Some(&b'\r') {
                buffer.pop();
            }
            return Ok(Some(fits));
        }
    }
}

fn progress_bar(size: Option<u64>, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match size {
        Some(size) => (
            ProgressBar::new(size),
            "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {bytes} read ({bytes_per_sec}) {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn report(summary: &Summary, json: bool) -> Result<(), CliError> {
    if json {
        return output::json(summary);
    }
    for failure in &summary.failures {
        output::line(&format!("line {}: {}", failure.line, failure.error));
    }
    if summary.failures_not_shown > 0 {
        output::line(&format!(
            "… and {} more failed lines",
            summary.failures_not_shown
        ));
    }
    if let Some(error) = &summary.read_error {
        output::line(error);
    }
    output::line(&format!(
        "stored {} of {} messages; {} failed",
        summary.stored, summary.messages, summary.failed
    ));
    Ok(())
}

fn finish(summary: &Summary) -> Result<(), CliError> {
    if let Some(error) = &summary.read_error {
        return Err(CliError::Failure(anyhow::anyhow!(
            "{error}; the messages before it were sent as the summary says"
        )));
    }
    if summary.failed == 0 {
        return Ok(());
    }
    let text = format!(
        "{} of {} messages were not stored (see the lines above)",
        summary.failed, summary.messages
    );
    if summary.store_failed {
        Err(CliError::Failure(anyhow::anyhow!(text)))
    } else {
        Err(CliError::Input(text))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> Vec<Option<String>> {
        let mut reader: &[u8] = text;
        let mut buffer = Vec::new();
        let read = AtomicU64::new(0);
        let mut found = Vec::new();
        while let Some(fits) = next_line(&mut reader, &mut buffer, &read).unwrap() {
            found.push(fits.then(|| String::from_utf8(buffer.clone()).unwrap()));
        }
        assert_eq!(read.load(Ordering::Relaxed), text.len() as u64);
        found
    }

    #[test]
    fn lines_end_at_newlines_with_or_without_a_carriage_return_and_the_last_may_lack_one() {
        assert_eq!(
            lines(b"a\r\nb\n\nc"),
            [
                Some("a".into()),
                Some("b".into()),
                Some(String::new()),
                Some("c".into())
            ]
        );
        assert!(lines(b"").is_empty());
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_to_its_end_and_the_next_one_is_read() {
        let mut text = vec![b'x'; MAX_LINE_BYTES + 1];
        text.extend_from_slice(b"\nnext\n");

        assert_eq!(lines(&text), [None, Some("next".into())]);
    }
}
