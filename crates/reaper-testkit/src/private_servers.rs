//! Servers and disks a test owns, for faults it must not inflict on the shared services: a
//! PostgreSQL cluster and a MariaDB server of its own (restarted, crashed), each with a
//! streaming replica of its own when a test needs real replica lag, and a small tmpfs
//! (filled up). Each is torn down on drop. They need root (the machine's test runner is root):
//! the cluster runs as the `postgres` user through `runuser`, MariaDB as root (`--user=root`),
//! the tmpfs is mounted. A missing binary or a refused mount fails the test loudly; nothing is
//! skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where PostgreSQL's server binaries are (`REAPER_TEST_PG_BIN`, default: Debian's 15).
fn postgres_bin(program: &str) -> PathBuf {
    let dir =
        std::env::var("REAPER_TEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    Path::new(&dir).join(program)
}

/// Runs `command`, failing the test with its output unless it succeeds.
pub(crate) fn run_checked(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL cluster of the test's own (`initdb` in a temp dir, trust authentication, a
/// free loopback port, its socket in that dir), stopped and removed on drop.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`: pass to [`crate::TestDatabase::postgres_on`].
    pub admin_url: String,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Creates and starts the cluster (a few seconds).
    pub fn start() -> Self {
        Self::start_with(|_| String::new())
    }

    /// [`PrivatePostgres::start`] with server options `configure` returns; it runs before
    /// the start with the cluster's directory (owned by `postgres`), where it may put files
    /// the server reads (TLS certificates: `crate::tls_servers`).
    pub(crate) fn start_with(configure: impl FnOnce(&Path) -> String) -> Self {
        let cluster = Self::in_new_dir("reaper-pg-");
        cluster.as_postgres(
            &postgres_bin("initdb"),
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        let extra = configure(cluster.dir.path());
        cluster.start_server(&format!("-c full_page_writes=off {extra}"));
        cluster
    }

    /// A cluster to be: a temp dir owned by `postgres` and a free port, nothing in it yet.
    fn in_new_dir(prefix: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        run_checked(Command::new("chown").arg("postgres:").arg(dir.path()));
        Self {
            admin_url: format!("postgres://postgres@127.0.0.1:{}/postgres", free_port()),
            dir,
        }
    }

    /// Starts the server on its data, port and socket dir, with `extra` server options.
    fn start_server(&self, extra: &str) {
        let port = self.port().to_string();
        let socket = self.dir.path().display().to_string();
        let options =
            format!("-p {port} -k {socket} -c listen_addresses=127.0.0.1 -c fsync=off {extra}");
        self.pg_ctl(&["start", "-o", &options]);
    }

    /// A streaming replica of this cluster (`pg_basebackup -R -X stream` into a temp dir,
    /// started on a free port, hot standby): it replays what this cluster writes until a test
    /// pauses it (`SELECT pg_wal_replay_pause()` on the replica). Stopped and removed on drop.
    pub fn start_replica(&self) -> Self {
        let replica = Self::in_new_dir("reaper-pg-replica-");
        let primary_port = self.port().to_string();
        replica.as_postgres(
            &postgres_bin("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port,
                "-U",
                "postgres",
                "-D",
                &replica.data(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        replica.start_server("-c hot_standby=on");
        replica
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`: `database` on this server.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port())
    }

    /// `pg_ctl restart -m MODE`: `fast` ends every session and shuts down cleanly; `immediate`
    /// is a crash (no shutdown checkpoint; the restart runs crash recovery). Returns once the
    /// server accepts connections again.
    pub fn restart(&self, mode: &str) {
        self.pg_ctl(&["restart", "-m", mode]);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn port(&self) -> u16 {
        self.admin_url
            .rsplit(':')
            .next()
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .unwrap()
    }

    /// `pg_ctl -D DATA -w -t 30 -l LOG args`: the server's output goes to its log (never to
    /// the test's pipes, which `pg_ctl` would otherwise hand to the server it starts).
    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data();
        let log = self.dir.path().join("server.log").display().to_string();
        let mut full = vec!["-D", data.as_str(), "-w", "-t", "30", "-l", log.as_str()];
        full.extend_from_slice(args);
        self.as_postgres(&postgres_bin("pg_ctl"), &full);
    }

    /// Runs `program args` as the `postgres` user.
    fn as_postgres(&self, program: &Path, args: &[&str]) {
        run_checked(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(program)
                .args(args)
                .current_dir(self.dir.path()),
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = postgres_bin("pg_ctl");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_ctl)
            .args(["-D", &self.data(), "stop", "-m", "immediate", "-w"])
            .output();
    }
}

/// A MariaDB server of the test's own (`mariadb-install-db` into a temp datadir, `mariadbd` on
/// a free loopback port with its own socket, root without a password), killed on drop.
#[derive(Debug)]
pub struct PrivateMariaDb {
    /// `mysql://root@127.0.0.1:PORT/mysql`: pass to [`crate::TestDatabase::mysql_on`].
    pub admin_url: String,
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl PrivateMariaDb {
    /// Creates the datadir and starts the server (a few seconds).
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// [`PrivateMariaDb::start`] with `extra` server arguments (TLS: `crate::tls_servers`),
    /// kept for restarts.
    pub(crate) fn start_with(extra: Vec<String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("reaper-mariadb-")
            .tempdir()
            .unwrap();
        run_checked(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", dir.path().join("data").display()))
                .args([
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]),
        );
        let port = free_port();
        let child = spawn_mariadbd(dir.path(), port, &extra);
        Self {
            admin_url: format!("mysql://root@127.0.0.1:{port}/mysql"),
            port,
            child,
            dir,
            extra,
        }
    }

    /// A server that writes a binary log (row format, server id 1), so replicas can follow it.
    pub fn start_primary() -> Self {
        Self::start_with(
            ["--log-bin=binlog", "--server-id=1", "--binlog-format=ROW"]
                .map(String::from)
                .to_vec(),
        )
    }

    /// A replica of this server (started with [`PrivateMariaDb::start_primary`]): a server of
    /// its own (server id 2) replicating from this one's binary log at its current position,
    /// so every database a test creates afterwards reaches it. Killed on drop.
    pub fn start_replica(&self) -> Self {
        let replica = Self::start_with(["--server-id=2", "--read-only"].map(String::from).to_vec());
        let status = self.cli(&["-N", "-e", "SHOW MASTER STATUS"]);
        let mut fields = status.split_whitespace();
        let (Some(file), Some(position)) = (fields.next(), fields.next()) else {
            panic!("the primary writes no binary log: `{status}`");
        };
        replica.cli(&[
            "-e",
            &format!(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'root',                  MASTER_LOG_FILE = '{file}', MASTER_LOG_POS = {position}; START REPLICA",
                self.port
            ),
        ]);
        replica
    }

    /// `mysql://root@127.0.0.1:PORT/DATABASE`: `database` on this server.
    pub fn url_of(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs the `mariadb` client as root against this server with `args`; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = run_checked(
            Command::new("mariadb")
                .args(["-uroot", "-h127.0.0.1", &format!("-P{}", self.port)])
                .args(args),
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills the server (kill -9: a crash, InnoDB recovers on start) and starts it again on
    /// the same port; returns once it answers.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_mariadbd(self.dir.path(), self.port, &self.extra);
    }
}

/// Starts `mariadbd` on `dir`'s datadir and `port` (with `extra` arguments) and waits until it
/// answers, 30 s at most.
// The caller owns the child: `PrivateMariaDb` kills and waits for it on drop.
#[allow(clippy::zombie_processes)]
fn spawn_mariadbd(dir: &Path, port: u16, extra: &[String]) -> Child {
    let child = Command::new("mariadbd")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("mariadbd is required for this test: {error}"));
    let answers = || {
        Command::new("mariadb")
            .args([
                "-uroot",
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-e",
                "SELECT 1",
            ])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    wait_until_answers(
        child,
        &format!("mariadbd on port {port}"),
        Duration::from_secs(30),
        answers,
    )
}

/// Returns the started server `child` once `answers` (polled every 50 ms), or kills it and
/// fails the test after `limit`.
pub(crate) fn wait_until_answers(
    mut child: Child,
    server: &str,
    limit: Duration,
    answers: impl Fn() -> bool,
) -> Child {
    let started = Instant::now();
    loop {
        if answers() {
            return child;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("private {server} did not start within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs of a few megabytes mounted on a temp dir, to fill up; unmounted on drop.
#[derive(Debug)]
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes` (fails the test if the mount is refused).
    pub fn mount(megabytes: u32) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("reaper-disk-")
            .tempdir()
            .unwrap();
        run_checked(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
                .arg(dir.path()),
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk refuses (ENOSPC); the bytes written.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let block = vec![0xa5_u8; 64 * 1024];
        let mut written = 0;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(bytes) => written += bytes as u64,
                Err(error) => {
                    assert_eq!(error.raw_os_error(), Some(28), "not ENOSPC: {error}");
                    break;
                }
            }
        }
        // Byte by byte, the last partial block too: nothing is left.
        while file.write(&[0xa5]).is_ok_and(|bytes| bytes == 1) {
            written += 1;
        }
        let _ = file.sync_all();
        written
    }

    /// Removes the filler.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process that still has a file open there must not keep the mount busy.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}
