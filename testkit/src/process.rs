//! A real binary under test: started with its stdout and stderr captured line by line, so that
//! a test can wait for what it prints (the port it listens on, a key it shows once) and search
//! its whole output afterwards. The process is killed when the handle is dropped.

use std::io::{self, BufRead as _, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Which of the process's output streams to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A started process and the lines it has printed so far.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    /// Starts `command` with piped stdout and stderr, each read by a thread of its own so that
    /// the process never blocks on a full pipe.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn spawn(mut command: Command) -> io::Result<Spawned> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stdout.take() {
            collect_lines(pipe, Arc::clone(&stdout));
        }
        if let Some(pipe) = child.stderr.take() {
            collect_lines(pipe, Arc::clone(&stderr));
        }
        Ok(Spawned {
            child,
            stdout,
            stderr,
        })
    }

    /// The operating system's id of the process.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line of `stream` so far.
    #[must_use]
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        let lines = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Everything `stream` printed so far, one line after the other.
    #[must_use]
    pub fn text(&self, stream: Stream) -> String {
        self.lines(stream).join("\n")
    }

    /// Waits until a line of `stream` gives `Some` through `pick`, and returns that value.
    ///
    /// # Errors
    /// When `within` passes first, or the process exits first; the message quotes the
    /// process's stderr.
    pub fn wait_for<T>(
        &mut self,
        stream: Stream,
        within: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.lines(stream).iter().find_map(|line| pick(line)) {
                return Ok(found);
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "the process exited ({status}) first; its stderr:\n{}",
                    self.text(Stream::Stderr)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nothing expected within {within:?}; its stderr so far:\n{}",
                    self.text(Stream::Stderr)
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status when the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect_lines(pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    thread::spawn(move || {
        // Lossy: a line that is not UTF-8 must still reach the test, which may be looking
        // for what it holds.
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while let Ok(read) = reader.read_until(b'\n', &mut line) {
            if read == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            into.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(text);
            line.clear();
        }
    });
}
