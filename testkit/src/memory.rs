//! The memory of a process and of its descendants, read from Linux's `/proc`, and a watch that
//! samples it from a thread of its own: tests assert bounds on what a server under hostile
//! input holds, and the watch stops a process that runs away before it takes the test machine
//! down with it.

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// One process's memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// The resident set now (`VmRSS`).
    pub rss: u64,
    /// The largest resident set the process has had (`VmHWM`).
    pub hwm: u64,
}

/// Reads the memory of process `pid`; `None` when it does not exist (any more).
#[must_use]
pub fn process_memory(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    // A zombie has no memory fields left: it holds nothing.
    Some(Memory {
        rss: field("VmRSS:").unwrap_or(0),
        hwm: field("VmHWM:").unwrap_or(0),
    })
}

/// The ids of every descendant of `pid` (children, their children, ...).
#[must_use]
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = BTreeSet::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for child in children(parent) {
            if found.insert(child) {
                frontier.push(child);
            }
        }
    }
    found.into_iter().collect()
}

/// The children of `pid`: from `/proc/<pid>/task/*/children` when the kernel has it, else by
/// the parent id of every process.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    let mut listed = false;
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            listed = true;
            children.extend(
                text.split_whitespace()
                    .filter_map(|id| id.parse::<u32>().ok()),
            );
        }
    }
    if listed {
        return children;
    }
    let Ok(processes) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| parent_of(candidate) == Some(pid))
        .collect()
}

/// The parent id in `/proc/<pid>/stat`, whose second field (the name, in parentheses) may
/// itself hold spaces and parentheses.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// A process and its descendants, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeMemory {
    /// The process itself.
    pub main: Memory,
    /// Each descendant, by id.
    pub descendants: Vec<(u32, Memory)>,
}

impl TreeMemory {
    /// The resident set of the process and all its descendants together.
    #[must_use]
    pub fn total_rss(&self) -> u64 {
        self.main.rss + self.descendants.iter().map(|(_, m)| m.rss).sum::<u64>()
    }
}

/// Reads the memory of `pid` and its descendants; `None` when `pid` does not exist.
#[must_use]
pub fn tree_memory(pid: u32) -> Option<TreeMemory> {
    let main = process_memory(pid)?;
    let descendants = descendants(pid)
        .into_iter()
        .filter_map(|child| Some((child, process_memory(child)?)))
        .collect();
    Some(TreeMemory { main, descendants })
}

/// The largest values a [`MemoryWatch`] saw over a span of time, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peak {
    /// The largest resident set of the watched process alone.
    pub main_rss: u64,
    /// The largest resident set of the process and its descendants together.
    pub tree_rss: u64,
    /// The largest resident set of any one descendant.
    pub descendant_rss: u64,
}

impl Peak {
    fn include(&mut self, tree: &TreeMemory) {
        self.main_rss = self.main_rss.max(tree.main.rss);
        self.tree_rss = self.tree_rss.max(tree.total_rss());
        let largest = tree.descendants.iter().map(|(_, m)| m.rss).max();
        self.descendant_rss = self.descendant_rss.max(largest.unwrap_or(0));
    }
}

#[derive(Debug, Default)]
struct Samples {
    since_take: Peak,
    overall: Peak,
    /// Set when the watch killed the process tree, with what it saw.
    killed: Option<String>,
}

/// Samples a process tree's memory from a thread until dropped, keeping the peaks, and kills
/// the tree (SIGKILL) when its resident set passes a ceiling.
#[derive(Debug)]
pub struct MemoryWatch {
    pid: Arc<AtomicU32>,
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MemoryWatch {
    /// Watches `pid` every `interval`, killing it and its descendants when together they hold
    /// more than `kill_above` bytes.
    #[must_use]
    pub fn start(pid: u32, interval: Duration, kill_above: u64) -> MemoryWatch {
        let pid = Arc::new(AtomicU32::new(pid));
        let samples = Arc::new(Mutex::new(Samples::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pid, samples, stop) = (Arc::clone(&pid), Arc::clone(&samples), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let watched = pid.load(Ordering::Relaxed);
                    if let Some(tree) = tree_memory(watched) {
                        let mut samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
                        samples.since_take.include(&tree);
                        samples.overall.include(&tree);
                        if tree.total_rss() > kill_above {
                            kill_tree(watched);
                            samples.killed = Some(format!(
                                "killed process {watched} and its descendants at {} MiB \
                                 resident (the watch's ceiling is {} MiB)",
                                tree.total_rss() >> 20,
                                kill_above >> 20
                            ));
                        }
                    }
                    thread::sleep(interval);
                }
            })
        };
        MemoryWatch {
            pid,
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Watches another process from now on (a restarted server).
    pub fn follow(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The peaks since the previous call (or the start), now included, and whether the
    /// watch killed the process in that time.
    pub fn take(&self) -> (Peak, Option<String>) {
        let now = tree_memory(self.pid.load(Ordering::Relaxed));
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let mut peak = std::mem::take(&mut samples.since_take);
        if let Some(now) = now {
            peak.include(&now);
            samples.overall.include(&now);
        }
        (peak, samples.killed.take())
    }

    /// The peaks since the start.
    #[must_use]
    pub fn overall(&self) -> Peak {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overall
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends SIGKILL to `pid` and its descendants through kill(1): the workspace forbids the
/// unsafe code a direct system call would need.
fn kill_tree(pid: u32) {
    let mut targets = descendants(pid);
    targets.push(pid);
    let mut command = Command::new("kill");
    command.arg("-KILL");
    for target in targets {
        command.arg(target.to_string());
    }
    let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_process_is_found_with_its_memory_and_a_missing_process_has_none() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let own = std::process::id();

        let tree = tree_memory(own).unwrap();
        let found = descendants(own).contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();

        assert!(
            found,
            "sleep {} is not among {:?}",
            child.id(),
            descendants(own)
        );
        assert!(
            tree.main.rss > 0 && tree.main.hwm >= tree.main.rss,
            "{tree:?}"
        );
        assert!(tree.total_rss() >= tree.main.rss);
        assert_eq!(parent_of(own), Some(std::os::unix::process::parent_id()));
        assert_eq!(process_memory(u32::MAX), None);
    }
}
