//! Render worker processes: the hard memory and time bounds of a render.
//!
//! The parent keeps a small pool of child processes of its own executable, started lazily.
//! A child is told what it is by [`WORKER_ENV`] (whose value is its memory budget in MiB),
//! limits its own address space with `setrlimit(RLIMIT_AS)` and then serves render requests
//! on stdin/stdout, one at a time: each message is a 4-byte big-endian length and that many
//! bytes of JSON. A render that allocates past the budget aborts the child; one that runs
//! past the time budget is killed by the parent. Either way the parent answers with an error
//! naming the budget and starts a fresh child for the next render.
//!
//! The child is the same binary, so both binaries call
//! [`run_worker_if_requested`](crate::render::run_worker_if_requested) first thing in `main`;
//! a process that never called it (a test harness, a program embedding the library) cannot
//! serve as a worker, and its renderer falls back to threads.

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clarion_domain::ports::RenderError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as JsonValue};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::render::engine::{Engine, EngineLimits};
use crate::render::thread::{Slots, timed_out};

/// The environment variable that turns a process into a render worker; its value is the
/// worker's memory budget in MiB.
pub const WORKER_ENV: &str = "CLARION_RENDER_WORKER";
/// The setting that bounds a render's memory, named in errors.
pub(crate) const MEMORY_LIMIT: &str = "templates.render_memory_mb";
/// The largest request a worker reads: far above any source and context the HTTP body
/// limit lets through, and the memory budget is the real bound.
const MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;
/// How much of a dead worker's stderr the parent keeps for its log.
const STDERR_BYTES: u64 = 4096;
/// How long the parent waits for a worker that closed its pipe to exit.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Set by [`run_worker_if_requested`] in a process that may start itself as a worker.
static CAN_SPAWN_WORKERS: AtomicBool = AtomicBool::new(false);

/// Whether this process's executable serves as a render worker when asked.
pub(crate) fn can_spawn_workers() -> bool {
    CAN_SPAWN_WORKERS.load(Ordering::Relaxed)
}

/// See [`crate::render::run_worker_if_requested`].
pub(crate) fn run_worker_if_requested() {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        CAN_SPAWN_WORKERS.store(true, Ordering::Relaxed);
        return;
    };
    std::process::exit(serve(&value));
}

/// One render or check, as the parent sends it.
#[derive(Debug, Serialize, Deserialize)]
struct Request<'a> {
    limits: EngineLimits,
    field: Cow<'a, str>,
    source: Cow<'a, str>,
    /// The context to render with; `None` only checks that the source compiles (which
    /// belongs here too: MiniJinja folds constant expressions while it compiles, and
    /// `('x' * 100000000) ~ ...` is built then).
    context: Option<Cow<'a, Map<String, JsonValue>>>,
}

/// The outcome of one request, as the worker answers it.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Rendered(String),
    Checked,
    Failed(RenderError),
}

/// The worker's loop: limit the memory, then answer requests until stdin closes. Returns
/// the exit code.
fn serve(value: &OsString) -> i32 {
    let Some(memory_mb) = value.to_str().and_then(|text| text.parse::<u64>().ok()) else {
        eprintln!("{WORKER_ENV} must be the memory budget in MiB");
        return 2;
    };
    if let Err(error) = limit_memory(memory_mb) {
        eprintln!("the render worker cannot limit its memory: {error}");
        return 2;
    }
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut engine: Option<Engine> = None;
    loop {
        let frame = match read_frame(&mut input, MAX_REQUEST_BYTES) {
            Ok(Some(frame)) => frame,
            // The parent closed the pipe: it stopped or let this worker go.
            Ok(None) => return 0,
            Err(error) => {
                eprintln!("the render worker cannot read its request: {error}");
                return 2;
            }
        };
        let reply = match serde_json::from_slice::<Request<'_>>(&frame) {
            Ok(request) => {
                // The limits are the same in every request of one parent; an engine is
                // built again only if they change.
                if engine
                    .as_ref()
                    .is_some_and(|e| e.limits() != request.limits)
                {
                    engine = None;
                }
                let current = engine.get_or_insert_with(|| Engine::new(request.limits));
                render_caught(current, &request)
            }
            Err(error) => Reply::Failed(RenderError::Other {
                field: String::new(),
                detail: format!("the render worker received a malformed request: {error}"),
            }),
        };
        let written = serde_json::to_vec(&reply)
            .map_err(io::Error::other)
            .and_then(|bytes| write_frame(&mut output, &bytes));
        if let Err(error) = written {
            eprintln!("the render worker cannot answer: {error}");
            return 2;
        }
    }
}

/// Answers one request; a panic in the engine becomes an error instead of ending the worker.
fn render_caught(engine: &Engine, request: &Request<'_>) -> Reply {
    let answered = catch_unwind(AssertUnwindSafe(|| match &request.context {
        Some(context) => engine
            .render(&request.field, &request.source, context)
            .map(Reply::Rendered),
        None => engine
            .check(&request.field, &request.source)
            .map(|()| Reply::Checked),
    }));
    match answered {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => Reply::Failed(error),
        Err(_) => Reply::Failed(RenderError::Other {
            field: request.field.clone().into_owned(),
            detail: "the template engine failed".to_owned(),
        }),
    }
}

/// Caps this process's address space at `memory_mb` MiB (soft and hard, so that nothing in
/// it can raise the cap again) and turns off core dumps of the aborts that hitting it causes.
fn limit_memory(memory_mb: u64) -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};

    let bytes = memory_mb.saturating_mul(1024 * 1024);
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        },
    )?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}

/// Reads one length-prefixed message; `None` at a clean end of input.
fn read_frame(input: &mut impl Read, max_bytes: usize) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    match input.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let len = usize::try_from(u32::from_be_bytes(prefix)).map_err(io::Error::other)?;
    if len > max_bytes {
        return Err(io::Error::other(format!(
            "a message of {len} bytes is over the limit of {max_bytes}"
        )));
    }
    let mut frame = vec![0u8; len];
    input.read_exact(&mut frame)?;
    Ok(Some(frame))
}

fn write_frame(output: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(io::Error::other)?;
    output.write_all(&len.to_be_bytes())?;
    output.write_all(frame)?;
    output.flush()
}

// ----- the parent's side -----

/// The executable to start as a worker: this process's own image. `/proc/self/exe` still
/// names it after an upgrade replaced the file, so a worker always speaks the parent's
/// protocol.
fn own_executable() -> io::Result<PathBuf> {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self);
    }
    std::env::current_exe()
}

/// A pool of render worker processes.
#[derive(Debug)]
pub(crate) struct ProcessPool {
    limits: EngineLimits,
    timeout: Duration,
    memory_mb: u64,
    slots: Slots,
    /// Started workers that are not rendering; at most one per slot.
    idle: Mutex<Vec<Worker>>,
}

impl ProcessPool {
    pub(crate) fn new(
        limits: EngineLimits,
        timeout: Duration,
        memory_mb: u64,
        workers: usize,
    ) -> Self {
        Self {
            limits,
            timeout,
            memory_mb,
            slots: Slots::new(workers),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Renders in a worker, waiting for a free one.
    pub(crate) async fn render(
        &self,
        field: &str,
        source: &str,
        context: &Map<String, JsonValue>,
    ) -> Result<String, RenderError> {
        match self.ask(field, source, Some(context)).await? {
            Reply::Rendered(text) => Ok(text),
            other => Err(unexpected(field, &other)),
        }
    }

    /// Checks the limits and compiles in a worker, waiting for a free one.
    pub(crate) async fn check(&self, field: &str, source: &str) -> Result<(), RenderError> {
        match self.ask(field, source, None).await? {
            Reply::Checked => Ok(()),
            other => Err(unexpected(field, &other)),
        }
    }

    /// Sends one request to a worker and returns its reply; a failed render is an error.
    async fn ask(
        &self,
        field: &str,
        source: &str,
        context: Option<&Map<String, JsonValue>>,
    ) -> Result<Reply, RenderError> {
        let _slot = self.slots.acquire(field).await?;
        let mut worker = match self.take_idle() {
            Some(worker) => worker,
            None => Worker::spawn(self.memory_mb).map_err(|error| RenderError::Unavailable {
                field: field.to_owned(),
                detail: format!("no render worker could be started: {error}"),
            })?,
        };
        let request = Request {
            limits: self.limits,
            field: Cow::Borrowed(field),
            source: Cow::Borrowed(source),
            context: context.map(Cow::Borrowed),
        };
        let request = serde_json::to_vec(&request).map_err(|error| RenderError::Other {
            field: field.to_owned(),
            detail: format!("the context cannot be sent to the renderer: {error}"),
        })?;
        // JSON escapes at most multiply the output by six; the rest is the envelope.
        let max_reply = self
            .limits
            .max_output_bytes
            .saturating_mul(6)
            .saturating_add(64 * 1024);
        // If this future is dropped (the client went away), the worker is dropped with it
        // and killed: it is never put back in the middle of an exchange.
        let answered = tokio::time::timeout(self.timeout, worker.exchange(&request, max_reply));
        match answered.await {
            Ok(Ok(reply)) => match serde_json::from_slice::<Reply>(&reply) {
                Ok(Reply::Failed(error)) => {
                    self.put_idle(worker);
                    Err(error)
                }
                Ok(reply) => {
                    self.put_idle(worker);
                    Ok(reply)
                }
                Err(error) => {
                    worker.stop().await;
                    Err(RenderError::Unavailable {
                        field: field.to_owned(),
                        detail: format!("the render worker answered something else: {error}"),
                    })
                }
            },
            Ok(Err(_)) => Err(worker.failure(field, self.memory_mb).await),
            Err(_) => {
                worker.stop().await;
                tracing::warn!(
                    field,
                    timeout_ms = self.timeout.as_millis(),
                    "a template render ran out of time; its worker was stopped"
                );
                Err(timed_out(field, self.timeout))
            }
        }
    }

    /// An idle worker that is still alive; one that died while idle (killed from outside)
    /// is dropped, so that its death is not blamed on the next template.
    fn take_idle(&self) -> Option<Worker> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut worker) = idle.pop() {
            if matches!(worker.child.try_wait(), Ok(None)) {
                return Some(worker);
            }
        }
        None
    }

    fn put_idle(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(worker);
        }
    }
}

/// A started worker process and its pipes. Dropping it kills the process; tokio reaps it.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: Option<ChildStderr>,
}

impl Worker {
    fn spawn(memory_mb: u64) -> io::Result<Worker> {
        let mut command = Command::new(own_executable()?);
        // The worker needs nothing from the environment, and a template engine need not
        // see the database URL or the providers' secrets.
        command.env_clear();
        if let Some(path) = std::env::var_os("LD_LIBRARY_PATH") {
            command.env("LD_LIBRARY_PATH", path);
        }
        command
            .env(WORKER_ENV, memory_mb.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let missing = || io::Error::other("the worker's pipes were not opened");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take();
        Ok(Worker {
            child,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Sends one request and reads its reply.
    async fn exchange(&mut self, request: &[u8], max_reply: usize) -> io::Result<Vec<u8>> {
        let len = u32::try_from(request.len()).map_err(io::Error::other)?;
        self.stdin.write_all(&len.to_be_bytes()).await?;
        self.stdin.write_all(request).await?;
        self.stdin.flush().await?;
        let mut prefix = [0u8; 4];
        self.stdout.read_exact(&mut prefix).await?;
        let len = usize::try_from(u32::from_be_bytes(prefix)).map_err(io::Error::other)?;
        if len > max_reply {
            return Err(io::Error::other(format!(
                "a reply of {len} bytes is over the limit of {max_reply}"
            )));
        }
        let mut reply = vec![0u8; len];
        self.stdout.read_exact(&mut reply).await?;
        Ok(reply)
    }

    /// Kills the process and waits for it, so that no zombie is left.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Why a worker stopped answering, once it has exited (or been killed after a while).
    async fn failure(mut self, field: &str, memory_mb: u64) -> RenderError {
        let status = match tokio::time::timeout(EXIT_WAIT, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        };
        let mut stderr = Vec::new();
        if let Some(pipe) = self.stderr.take() {
            let mut pipe = pipe.take(STDERR_BYTES);
            let _ = tokio::time::timeout(EXIT_WAIT, pipe.read_to_end(&mut stderr)).await;
        }
        let stderr = String::from_utf8_lossy(&stderr);
        let shown = status.map_or_else(|| "did not exit".to_owned(), describe_status);
        tracing::warn!(
            field,
            status = shown,
            stderr = stderr.trim(),
            "a template render worker stopped"
        );
        // Rust reports an allocation the address-space limit refused this way, then aborts.
        if stderr.contains("memory allocation of") {
            return RenderError::Limit {
                field: field.to_owned(),
                limit: MEMORY_LIMIT.to_owned(),
                detail: format!(
                    "compiling and rendering the template needed more than {memory_mb} MiB \
                     of memory"
                ),
            };
        }
        RenderError::Other {
            field: field.to_owned(),
            detail: format!("the render worker stopped unexpectedly ({shown})"),
        }
    }
}

fn unexpected(field: &str, reply: &Reply) -> RenderError {
    RenderError::Unavailable {
        field: field.to_owned(),
        detail: format!("the render worker gave an unexpected answer: {reply:?}"),
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;

    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_as_written() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, b"{\"a\":1}").unwrap();

        let read = read_frame(&mut buffer.as_slice(), 100).unwrap();

        assert_eq!(read.as_deref(), Some(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn a_closed_input_is_the_end_and_an_oversized_frame_an_error() {
        assert!(read_frame(&mut &b""[..], 100).unwrap().is_none());

        let mut buffer = Vec::new();
        write_frame(&mut buffer, &[b'x'; 101]).unwrap();

        assert!(read_frame(&mut buffer.as_slice(), 100).is_err());
    }
}
