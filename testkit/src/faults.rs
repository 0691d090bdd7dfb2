//! Real infrastructure faults for tests: a small file system that can be filled or turned
//! read-only ([`SmallDisk`], a size-limited tmpfs), a file that cannot be written
//! ([`ReadOnlyFile`], a read-only bind mount), and a PostgreSQL cluster of the test's own
//! that can be stopped and started ([`PrivatePostgres`]), so that a test never touches the
//! shared cluster on port 5432.
//!
//! Both need root (to mount, and to run PostgreSQL as the `postgres` user); they fail with a
//! message that says so rather than letting a test pass without the fault. Both are undone
//! when dropped.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use tempfile::TempDir;

/// Fails with a clear message unless the process runs as root; `what` says what needs it.
///
/// # Errors
/// When the effective user is not root, or `/proc/self/status` cannot be read.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status to learn the user")?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("/proc/self/status has no Uid line")?;
    if euid != "0" {
        bail!("{what} needs root (effective uid {euid}); run the test as root, as CI does");
    }
    Ok(())
}

/// Runs `program` with `args`, failing with its output when it does not succeed.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A tmpfs of a given size mounted on a temporary folder: a disk that a test can fill, free
/// again, or turn read-only. Unmounted when dropped.
#[derive(Debug)]
pub struct SmallDisk {
    dir: TempDir,
    mounted: bool,
}

impl SmallDisk {
    /// The name of the file [`SmallDisk::fill`] writes.
    const FILLER: &'static str = "filler";

    /// Mounts a tmpfs of `bytes` (rounded up to whole pages by the kernel).
    ///
    /// # Errors
    /// When the process is not root or the mount fails.
    pub fn mount(bytes: u64) -> anyhow::Result<SmallDisk> {
        require_root("mounting a small tmpfs")?;
        let dir = tempfile::tempdir().context("cannot create a folder to mount on")?;
        let target = dir
            .path()
            .to_str()
            .context("the mount folder is not UTF-8")?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "tmpfs",
                target,
            ],
        )?;
        Ok(SmallDisk { dir, mounted: true })
    }

    /// The mounted folder.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk has no room left, and returns how many bytes it
    /// wrote.
    ///
    /// # Errors
    /// When a write fails for another reason than a full disk.
    pub fn fill(&self) -> anyhow::Result<u64> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join(Self::FILLER))
            .context("cannot create the filler file")?;
        let chunk = vec![0xa5_u8; 64 * 1024];
        let mut written = 0_u64;
        // Whole chunks first, then single bytes, so that not even a byte is left.
        for size in [chunk.len(), 4096, 1] {
            loop {
                match file.write(&chunk[..size]) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                    Err(e) => return Err(e).context("cannot write the filler file"),
                }
            }
        }
        Ok(written)
    }

    /// Deletes the filler file, giving its room back.
    ///
    /// # Errors
    /// When it cannot be deleted.
    pub fn free(&self) -> anyhow::Result<()> {
        std::fs::remove_file(self.path().join(Self::FILLER)).context("cannot delete the filler")
    }

    /// Remounts the file system read-only (root ignores file permissions, not this).
    ///
    /// # Errors
    /// When the remount fails.
    pub fn remount_read_only(&self) -> anyhow::Result<()> {
        self.remount("remount,ro")
    }

    /// Remounts the file system read-write.
    ///
    /// # Errors
    /// When the remount fails.
    pub fn remount_read_write(&self) -> anyhow::Result<()> {
        self.remount("remount,rw")
    }

    fn remount(&self, options: &str) -> anyhow::Result<()> {
        let target = self
            .path()
            .to_str()
            .context("the mount folder is not UTF-8")?;
        run("mount", &["-o", options, target])
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy: a database connection still open on it must not keep it mounted.
            if let Some(target) = self.dir.path().to_str() {
                let _ = run("umount", &["--lazy", target]);
            }
            self.mounted = false;
        }
    }
}

/// A file bind-mounted read-only over itself: nobody, root included, can write it, while its
/// folder stays writable (so SQLite can still make its log and lock files there, and opens
/// the database read-only instead of failing). Unmounted when dropped.
#[derive(Debug)]
pub struct ReadOnlyFile {
    path: PathBuf,
}

impl ReadOnlyFile {
    /// Makes the existing file at `path` read-only.
    ///
    /// # Errors
    /// When the process is not root or a mount fails.
    pub fn bind(path: &Path) -> anyhow::Result<ReadOnlyFile> {
        require_root("bind-mounting a file read-only")?;
        let target = path_str(path)?;
        run("mount", &["--bind", target, target])?;
        // From here on, dropping it unmounts the bind even if the remount fails.
        let file = ReadOnlyFile {
            path: path.to_owned(),
        };
        run("mount", &["-o", "remount,ro,bind", target])?;
        Ok(file)
    }
}

impl Drop for ReadOnlyFile {
    fn drop(&mut self) {
        if let Some(target) = self.path.to_str() {
            let _ = run("umount", &["--lazy", target]);
        }
    }
}

/// A PostgreSQL cluster of the test's own: initialised in a temporary folder, listening on a
/// free port of 127.0.0.1 with trust authentication, its socket in that folder. Stopped and
/// deleted when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: TempDir,
    port: u16,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// Initialises and starts a cluster.
    ///
    /// # Errors
    /// When the process is not root, PostgreSQL's programs are not installed, or initdb or
    /// the start fails.
    pub fn start() -> anyhow::Result<PrivatePostgres> {
        require_root("running a private PostgreSQL cluster as the postgres user")?;
        let bin = postgres_bin()?;
        let dir = tempfile::tempdir().context("cannot create a folder for the cluster")?;
        run("chown", &["postgres:postgres", path_str(dir.path())?])?;
        let port = free_port()?;
        let cluster = PrivatePostgres { dir, port, bin };
        let data = cluster.data();
        cluster.as_postgres(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        cluster.start_again()?;
        Ok(cluster)
    }

    /// The URL of its `postgres` database.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash would.
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn stop(&self) -> anyhow::Result<()> {
        let data = self.data();
        self.as_postgres(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", "immediate", "-w", "stop"],
        )
    }

    /// Starts the server (again) and waits until it accepts connections.
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path_str(self.dir.path())?
        );
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of PostgreSQL's programs as the `postgres` user.
    fn as_postgres(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(program);
        let mut all = vec!["-u", "postgres", "--", path_str(&program)?];
        all.extend_from_slice(args);
        run("runuser", &all)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The `bin` folder of the newest PostgreSQL installed under /usr/lib/postgresql.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's programs are not installed under /usr/lib/postgresql")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/<version>/bin/initdb")
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
