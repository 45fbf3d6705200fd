//! Servers as managed infrastructure runs them, owned by one test: TLS-only Redis, PostgreSQL
//! and MariaDB with certificates the test generates (the `openssl` CLI: a CA, a server
//! certificate for `127.0.0.1`, a client certificate, and a second CA nobody trusts), a Redis
//! master with a replica and three sentinels, and a three-master Redis Cluster. Built on
//! `crate::private_servers` and [`PrivateRedis`]; everything is killed and removed on drop.
//! A missing binary fails the test loudly; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::private_servers::{free_port, run_checked};
use crate::{PrivateMariaDb, PrivatePostgres, PrivateRedis};

/// Certificates for one test, in a temp dir of their own (PEM files).
#[derive(Debug)]
pub struct TestCertificates {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here: trusting only it must refuse every server.
    pub untrusted_ca: PathBuf,
    /// The servers' certificate: `CN=127.0.0.1`, valid for the IP address 127.0.0.1 only
    /// (not for the name `localhost`).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (`CN=reaper`) for servers that ask for one.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    dir: tempfile::TempDir,
}

impl TestCertificates {
    /// Generates every certificate (EC P-256, valid two days).
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("reaper-certs-")
            .tempdir()
            .unwrap();
        let at = |name: &str| dir.path().join(name);
        let certificates = Self {
            ca: at("ca.pem"),
            untrusted_ca: at("untrusted-ca.pem"),
            server_cert: at("server.pem"),
            server_key: at("server.key"),
            client_cert: at("client.pem"),
            client_key: at("client.key"),
            dir,
        };
        certificates.authority("ca", "reaper-test-ca");
        certificates.authority("untrusted-ca", "reaper-untrusted-ca");
        certificates.signed(
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        certificates.signed("client", "reaper", "extendedKeyUsage=clientAuth\n");
        certificates
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn openssl(&self, args: &[&str]) {
        run_checked(
            Command::new("openssl")
                .args(args)
                .current_dir(self.dir.path()),
        );
    }

    /// A self-signed CA `NAME.pem` / `NAME.key`.
    fn authority(&self, name: &str, common_name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={common_name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// `NAME.pem` / `NAME.key`, signed by `ca`, with the X.509 v3 `extensions`.
    fn signed(&self, name: &str, common_name: &str, extensions: &str) {
        let extensions_file = format!("{name}.ext");
        std::fs::write(
            self.dir.path().join(&extensions_file),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{extensions}"),
        )
        .unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extensions_file,
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

/// Whether a TLS server asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Clients may present one (verified when presented).
    Optional,
    /// A client without a certificate signed by the CA is refused.
    Required,
}

/// A private `redis-server` serving TLS on its own port (`rediss://127.0.0.1:PORT`), its plain
/// port kept for the test's administration ([`PrivateRedis::url`]).
#[derive(Debug)]
pub struct TlsRedis {
    pub server: PrivateRedis,
    /// `rediss://127.0.0.1:TLS_PORT/0`: what reaper is configured with.
    pub tls_url: String,
}

impl TlsRedis {
    /// Starts the server with `certificates` (the server certificate, verifying clients
    /// against the CA).
    pub fn start(certificates: &TestCertificates, clients: ClientCertificates) -> Self {
        let tls_port = free_port();
        let path = |path: &Path| path.display().to_string();
        let extra = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&certificates.server_cert),
            "--tls-key-file".into(),
            path(&certificates.server_key),
            "--tls-ca-cert-file".into(),
            path(&certificates.ca),
            "--tls-auth-clients".into(),
            match clients {
                ClientCertificates::Optional => "optional".into(),
                ClientCertificates::Required => "yes".into(),
            },
        ];
        Self {
            server: PrivateRedis::start_with_args(None, extra),
            tls_url: format!("rediss://127.0.0.1:{tls_port}/0"),
        }
    }
}

/// A private PostgreSQL cluster with `ssl = on` and the test's server certificate.
pub fn tls_postgres(certificates: &TestCertificates) -> PrivatePostgres {
    PrivatePostgres::start_with(|dir| {
        // The server reads its key only when the `postgres` user owns it and nobody else may.
        for (from, name) in [
            (&certificates.server_cert, "server.pem"),
            (&certificates.server_key, "server.key"),
        ] {
            std::fs::copy(from, dir.join(name)).unwrap();
            run_checked(Command::new("chown").arg("postgres:").arg(dir.join(name)));
            run_checked(Command::new("chmod").arg("600").arg(dir.join(name)));
        }
        format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        )
    })
}

/// A private MariaDB server with TLS on and the test's server certificate.
pub fn tls_mariadb(certificates: &TestCertificates) -> PrivateMariaDb {
    let path = |path: &Path| path.display().to_string();
    PrivateMariaDb::start_with(vec![
        format!("--ssl-ca={}", path(&certificates.ca)),
        format!("--ssl-cert={}", path(&certificates.server_cert)),
        format!("--ssl-key={}", path(&certificates.server_key)),
    ])
}

/// The name the sentinels monitor the master under.
pub const SENTINEL_MASTER: &str = "reaper-master";

/// A Redis master, one replica and three sentinels (quorum 2, a master is down after 1 s of
/// silence) on loopback ports, each a process of the test's own.
#[derive(Debug)]
pub struct RedisSentinels {
    pub master: PrivateRedis,
    pub replica: PrivateRedis,
    sentinels: Vec<(u16, std::process::Child)>,
    _dir: tempfile::TempDir,
}

impl RedisSentinels {
    /// Starts them all and returns once every sentinel knows the replica and the other two
    /// sentinels (a failover needs both).
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("reaper-sentinels-")
            .tempdir()
            .unwrap();
        // A replica's sync writes dump.rdb into the working directory: this one.
        let in_dir = || vec!["--dir".to_owned(), dir.path().display().to_string()];
        let master = PrivateRedis::start_with_args(
            None,
            [
                in_dir(),
                vec!["--repl-diskless-sync-delay".into(), "0".into()],
            ]
            .concat(),
        );
        let replica = PrivateRedis::start_with_args(
            None,
            [
                in_dir(),
                vec![
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    master.port().to_string(),
                ],
            ]
            .concat(),
        );
        let sentinels = (0..3)
            .map(|index| {
                let port = free_port();
                let file = dir.path().join(format!("sentinel-{index}.conf"));
                std::fs::write(
                    &file,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
                        dir = dir.path().display(),
                        master = master.port()
                    ),
                )
                .unwrap();
                (port, spawn_sentinel(&file, port))
            })
            .collect();
        let set = Self {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        wait_for(
            "the sentinels to find the synced replica and each other",
            || set.ready() && replica_synced(&set.replica),
        );
        set
    }

    /// `redis://127.0.0.1:PORT` of each sentinel.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// `host:port` of the master as the first sentinel that answers names it.
    pub fn master_address(&self) -> Option<String> {
        self.sentinels.iter().find_map(|(port, _)| {
            let reply: Vec<String> =
                sentinel_command(*port, &["get-master-addr-by-name", SENTINEL_MASTER])?;
            Some(reply.join(":"))
        })
    }

    /// Kills the master (kill -9) and returns once every sentinel names the replica as the
    /// master, within 30 s; how long the promotion took.
    pub fn kill_master_and_wait_for_promotion(&mut self) -> Duration {
        let replica = format!("127.0.0.1:{}", self.replica.port());
        let started = Instant::now();
        self.master.kill();
        loop {
            let promoted = self.sentinels.iter().all(|(port, _)| {
                sentinel_command::<Vec<String>>(
                    *port,
                    &["get-master-addr-by-name", SENTINEL_MASTER],
                )
                .is_some_and(|reply| reply.join(":") == replica)
            });
            if promoted {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no promotion within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&self) -> bool {
        self.sentinels.iter().all(|(port, _)| {
            let replicas: Option<Vec<redis::Value>> =
                sentinel_command(*port, &["replicas", SENTINEL_MASTER]);
            let others: Option<Vec<redis::Value>> =
                sentinel_command(*port, &["sentinels", SENTINEL_MASTER]);
            replicas.is_some_and(|replicas| replicas.len() == 1)
                && others.is_some_and(|others| others.len() == 2)
        })
    }
}

/// `SENTINEL args` on the sentinel at `port`; `None` when it does not answer.
fn sentinel_command<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    redis::cmd("SENTINEL").arg(args).query(&mut connection).ok()
}

/// Starts `redis-server FILE --sentinel` and waits until it answers, 10 s at most.
// The caller owns the child: `RedisSentinels` kills and waits for it on drop.
#[allow(clippy::zombie_processes)]
fn spawn_sentinel(file: &Path, port: u16) -> std::process::Child {
    let child = Command::new("redis-server")
        .arg(file)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("redis-server is required for this test: {error}"));
    crate::private_servers::wait_until_answers(
        child,
        &format!("sentinel on port {port}"),
        Duration::from_secs(10),
        || sentinel_command::<String>(port, &["myid"]).is_some(),
    )
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster of three masters, each with one replica (`redis-cli --cluster create`), on
/// loopback ports; a node silent for 1 s is failed over.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<PrivateRedis>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and returns once every node reports it `ok`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("reaper-cluster-")
            .tempdir()
            .unwrap();
        let nodes: Vec<PrivateRedis> = (0..6)
            .map(|index| {
                PrivateRedis::start_with_args(
                    None,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        dir.path()
                            .join(format!("nodes-{index}.conf"))
                            .display()
                            .to_string(),
                        "--cluster-node-timeout".into(),
                        "1000".into(),
                        // Replicas sync at once, not after the default 5 s wait for others.
                        "--repl-diskless-sync-delay".into(),
                        "0".into(),
                        // A replica's sync writes dump.rdb into the working directory.
                        "--dir".into(),
                        dir.path().display().to_string(),
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        run_checked(create.args(["--cluster-replicas", "1", "--cluster-yes"]));
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_until_ok(&[]);
        // A replica that has not synced yet cannot take over (its data is too old).
        wait_for("the replicas to sync", || {
            cluster.nodes.iter().all(replica_synced)
        });
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.url.clone()).collect()
    }

    /// The port of the master serving `slot`, as a live node sees it.
    pub fn master_of(&self, slot: u16) -> u16 {
        self.nodes
            .iter()
            .find_map(|node| master_of(node, slot))
            .unwrap()
    }

    /// Kills the master serving `slot` (kill -9) and returns once its replica serves the slot
    /// and the cluster is `ok` again, within 30 s; how long that took.
    pub fn kill_master_and_wait_for_promotion(&mut self, slot: u16) -> Duration {
        let old = self.master_of(slot);
        let started = Instant::now();
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port() == old)
            .unwrap();
        node.kill();
        self.wait_until_ok(&[old]);
        loop {
            if self
                .live_except(old)
                .all(|node| master_of(node, slot).is_some_and(|port| port != old))
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no replica took slot {slot} over within 30 s: {:?}",
                self.live_except(old)
                    .map(|node| node_command::<String>(node, &["CLUSTER", "NODES"]))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn live_except(&self, dead: u16) -> impl Iterator<Item = &PrivateRedis> {
        self.nodes.iter().filter(move |node| node.port() != dead)
    }

    /// Waits until every node but `dead` reports `cluster_state:ok`.
    fn wait_until_ok(&self, dead: &[u16]) {
        wait_for("the cluster to be ok", || {
            self.nodes
                .iter()
                .filter(|node| !dead.contains(&node.port()))
                .all(|node| {
                    node_command::<String>(node, &["CLUSTER", "INFO"])
                        .is_some_and(|info| info.contains("cluster_state:ok"))
                })
        });
    }
}

/// Polls `ready` every 50 ms, failing the test after 30 s waiting for `what`.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out after 30 s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master, or a replica whose link to its master is up.
fn replica_synced(node: &PrivateRedis) -> bool {
    node_command::<String>(node, &["INFO", "replication"])
        .is_some_and(|info| info.contains("role:master") || info.contains("master_link_status:up"))
}

/// `args` on `node`; `None` when it does not answer.
fn node_command<T: redis::FromRedisValue>(node: &PrivateRedis, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(node.url.as_str()).ok()?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    redis::cmd(args[0])
        .arg(&args[1..])
        .query(&mut connection)
        .ok()
}

/// The port of the live master serving `slot`, per `node`'s `CLUSTER NODES`.
fn master_of(node: &PrivateRedis, slot: u16) -> Option<u16> {
    let nodes: String = node_command(node, &["CLUSTER", "NODES"])?;
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let serves = fields.iter().skip(8).any(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(low), Ok(high)) if (low..=high).contains(&slot))
        });
        let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?;
        serves.then(|| port.parse().ok()).flatten()
    })
}
