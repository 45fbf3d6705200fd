//! Reaching Redis as `[queue]` describes it: a `redis://` or `rediss://` URL, verified against
//! `[queue.tls]`'s CA (or the system's trust store), with an optional client certificate; a
//! master named by `[queue.sentinel]`, followed through failovers; or `[queue.cluster]`. The
//! one place that builds Redis clients and turns their connection and authentication errors
//! into messages that name the cause (an untrusted certificate, a host name the certificate
//! does not cover, a refused user and what it was denied).
//!
//! It must not know about queues or jobs: it hands out connections.

use std::time::Duration;

use reaper_core::config::{QueueConfig, RedisClusterConfig, RedisSentinelConfig, RedisTlsConfig};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// How to reach Redis, read once from `[queue]` (certificate files included).
#[derive(Clone)]
pub(crate) struct RedisTarget {
    url: String,
    tls: Option<TlsFiles>,
    sentinel: Option<RedisSentinelConfig>,
    cluster: Option<RedisClusterConfig>,
}

/// `[queue.tls]`: where its files are (for messages) and what they hold.
#[derive(Clone)]
struct TlsFiles {
    config: RedisTlsConfig,
    certificates: redis::TlsCertificates,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &reaper_engine::database::redact_url(&self.url))
            .field("tls", &self.tls.as_ref().map(|tls| &tls.config))
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl RedisTarget {
    /// Reads `[queue.tls]`'s files; a file that cannot be read is named with its key.
    pub(crate) fn from_config(queue: &QueueConfig) -> anyhow::Result<Self> {
        let tls = match &queue.tls {
            Some(config) => Some(TlsFiles {
                certificates: read_certificates(config)?,
                config: config.clone(),
            }),
            None => None,
        };
        Ok(Self {
            url: queue.url.clone(),
            tls,
            sentinel: queue.sentinel.clone(),
            cluster: queue.cluster.clone(),
        })
    }

    /// The URL without its password, as messages show it.
    pub(crate) fn shown(&self) -> String {
        reaper_engine::database::redact_url(&self.url)
    }

    /// Connects, failing within seconds (not the client's default ~10 s of silent retries)
    /// with a message naming `queue.url` and the cause. The connection reconnects after later
    /// outages.
    pub(crate) async fn connect(&self) -> anyhow::Result<RedisConnection> {
        if let Some(sentinel) = &self.sentinel {
            return self.connect_through(sentinel).await;
        }
        if let Some(cluster) = &self.cluster {
            return self.connect_cluster(cluster).await;
        }
        let shown = self.shown();
        let client = match &self.tls {
            Some(tls) => redis::Client::build_with_tls(self.url.as_str(), tls.certificates.clone()),
            None => redis::Client::open(self.url.as_str()),
        }
        .map_err(|error| anyhow::anyhow!("queue.url: `{shown}` is not a Redis URL: {error}"))?;
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = client
            .get_connection_manager_with_config(settings)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "queue.url: cannot reach Redis at `{shown}`: {}",
                    self.describe(&error)
                )
            })?;
        Ok(RedisConnection::Direct(Watched::new(manager)))
    }

    /// The master the sentinels name, connected: failing here names the sentinels or the
    /// master, and why.
    async fn connect_through(
        &self,
        sentinel: &RedisSentinelConfig,
    ) -> anyhow::Result<RedisConnection> {
        let invalid = |what: &str, error: &redis::RedisError| {
            anyhow::anyhow!("{what}: {}", self.describe(error))
        };
        let mut sentinels = Vec::with_capacity(sentinel.sentinels.len());
        for (index, url) in sentinel.sentinels.iter().enumerate() {
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_err(|error| invalid(&format!("queue.sentinel.sentinels[{index}]"), &error))?;
            sentinels.push(info.addr().clone());
        }
        let info = redis::IntoConnectionInfo::into_connection_info(self.url.as_str())
            .map_err(|error| invalid("queue.url", &error))?;
        let settings = info.redis_settings();
        let mut builder = redis::sentinel::SentinelClientBuilder::new(
            sentinels,
            &sentinel.master,
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|error| invalid("queue.sentinel", &error))?
        .set_client_to_redis_db(settings.db());
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if self.url.starts_with("rediss://") {
            builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if let Some(tls) = &self.tls {
                builder = builder.set_client_to_redis_certificates(tls.certificates.clone());
            }
        }
        let client = builder
            .build()
            .map_err(|error| invalid("queue.sentinel", &error))?;
        let connection = SentinelConnection {
            shared: std::sync::Arc::new(SentinelShared {
                client: tokio::sync::Mutex::new(client),
                current: std::sync::Mutex::new(None),
                db: settings.db(),
                master: sentinel.master.clone(),
            }),
        };
        connection.current().await.map_err(|error| {
            anyhow::anyhow!(
                "queue.sentinel: cannot reach the master `{}` through the sentinels {:?}: {}",
                sentinel.master,
                sentinel.sentinels,
                self.describe(&error)
            )
        })?;
        Ok(RedisConnection::Sentinel(connection))
    }

    /// The cluster, from its listed nodes; the user and password come from `queue.url`.
    async fn connect_cluster(
        &self,
        cluster: &RedisClusterConfig,
    ) -> anyhow::Result<RedisConnection> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(cluster.nodes.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT);
        if let Some(url) = redis::parse_redis_url(&self.url) {
            if !url.username().is_empty() {
                builder = builder.username(url.username());
            }
            if let Some(password) = url.password() {
                builder = builder.password(password);
            }
        }
        if self.url.starts_with("rediss://") {
            builder = builder.tls(redis::TlsMode::Secure);
            if let Some(tls) = &self.tls {
                builder = builder.certs(tls.certificates.clone());
            }
        }
        let connection = async { builder.build()?.get_async_connection().await }
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "queue.cluster: cannot reach the Redis Cluster at {:?}: {}",
                    cluster.nodes,
                    self.describe(&error)
                )
            })?;
        Ok(RedisConnection::Cluster(Watched::new(connection)))
    }

    /// What went wrong, in the operator's words, with the client's own text after it.
    pub(crate) fn describe(&self, error: &redis::RedisError) -> String {
        let text = error.to_string();
        let ca = self
            .tls
            .as_ref()
            .and_then(|tls| tls.config.ca_file.as_deref());
        let trusted = match ca {
            Some(file) => format!("the CA in queue.tls.ca_file `{file}`"),
            None => {
                "a CA in the system's trust store (set queue.tls.ca_file to the server's CA)".into()
            }
        };
        if text.contains("UnknownIssuer") || text.contains("BadSignature") {
            format!(
                "the server's TLS certificate is not trusted: it is not signed by {trusted} ({text})"
            )
        } else if text.contains("NotValidForName") || text.contains("not valid for name") {
            format!(
                "the server's TLS certificate is not valid for the host name in queue.url \
                 (connect with a name or address the certificate lists) ({text})"
            )
        } else if text.contains("CertificateRequired") || text.contains("certificate required") {
            format!(
                "the server requires a client certificate: set queue.tls.client_cert and \
                 queue.tls.client_key ({text})"
            )
        } else if let Some(denied) = self.denied(error.kind(), &text) {
            denied
        } else {
            text
        }
    }

    /// An authentication or permission error, naming the user: Redis' own text names neither
    /// the user nor, for a refused login, which of name or password was wrong.
    fn denied(&self, kind: redis::ErrorKind, text: &str) -> Option<String> {
        let user = redis::parse_redis_url(&self.url)
            .map(|url| url.username().to_owned())
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        if kind == redis::ErrorKind::AuthenticationFailed || text.contains("WRONGPASS") {
            Some(format!(
                "Redis refused the login of user `{user}`: the user does not exist, is disabled, \
                 or the password in queue.url is wrong ({text})"
            ))
        } else if text.contains("NOAUTH") {
            Some(format!(
                "Redis requires a password and queue.url gives none for user `{user}` ({text})"
            ))
        } else if kind == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
            || text.contains("NOPERM")
        {
            Some(format!(
                "Redis denied it to user `{user}` ({text}); docs/operations.md lists the ACL \
                 reaper needs"
            ))
        } else {
            None
        }
    }
}

/// Reads the PEM files `[queue.tls]` names.
fn read_certificates(config: &RedisTlsConfig) -> anyhow::Result<redis::TlsCertificates> {
    let read = |key: &str, path: &str| {
        std::fs::read(path)
            .map_err(|error| anyhow::anyhow!("queue.tls.{key}: cannot read `{path}`: {error}"))
    };
    let root_cert = match &config.ca_file {
        Some(path) => Some(read("ca_file", path)?),
        None => None,
    };
    let client_tls = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("client_cert", cert)?,
            client_key: read("client_key", key)?,
        }),
        _ => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// How long connecting to a server, and one answer, may take: a dead master must fail a
/// command quickly, so the next one asks the sentinels.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to Redis that reconnects by itself; what apalis' storage, the intake and the
/// vacuum run their commands on. Clones share the connection (and, through Sentinel, the
/// knowledge of which server is the master).
#[derive(Clone)]
pub(crate) enum RedisConnection {
    /// One server (plain or TLS), through redis' connection manager.
    Direct(Watched<ConnectionManager>),
    /// The master the sentinels name, followed through failovers.
    Sentinel(SentinelConnection),
    /// A Redis Cluster: redis' cluster client routes each command to the node holding its
    /// key's slot, follows `MOVED`/`ASK`, and relearns the slots after a failover.
    Cluster(Watched<redis::cluster_async::ClusterConnection>),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisConnection::Direct(_) => f.write_str("RedisConnection::Direct"),
            RedisConnection::Sentinel(connection) => {
                write!(f, "RedisConnection::Sentinel({})", connection.shared.master)
            }
            RedisConnection::Cluster(_) => f.write_str("RedisConnection::Cluster"),
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Direct(connection) => connection.req_packed_command(cmd),
            RedisConnection::Cluster(connection) => connection.req_packed_command(cmd),
            RedisConnection::Sentinel(connection) => Box::pin(async move {
                let mut master = connection.current().await?;
                let answer = master.req_packed_command(cmd).await;
                connection.forget_if_lost(&answer);
                answer
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Direct(connection) => {
                connection.req_packed_commands(cmd, offset, count)
            }
            RedisConnection::Cluster(connection) => {
                connection.req_packed_commands(cmd, offset, count)
            }
            RedisConnection::Sentinel(connection) => Box::pin(async move {
                let mut master = connection.current().await?;
                let answer = master.req_packed_commands(cmd, offset, count).await;
                connection.forget_if_lost(&answer);
                answer
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Direct(connection) => connection.get_db(),
            RedisConnection::Cluster(connection) => connection.get_db(),
            RedisConnection::Sentinel(connection) => connection.shared.db,
        }
    }
}

/// A connection that reconnects by itself (redis' connection manager, its cluster client),
/// watched so that each outage counts once in `reaper_redis_reconnects_total`: a command that
/// finds the connection lost marks it, the next one that succeeds clears the mark.
#[derive(Clone)]
pub(crate) struct Watched<C> {
    inner: C,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<C> Watched<C> {
    fn new(inner: C) -> Self {
        Self {
            inner,
            lost: Default::default(),
        }
    }

    fn note<T>(&self, answer: &redis::RedisResult<T>) {
        use std::sync::atomic::Ordering::Relaxed;
        match answer {
            Ok(_) => self.lost.store(false, Relaxed),
            Err(error) if connection_lost(error) && !self.lost.swap(true, Relaxed) => {
                tracing::warn!(message = "Lost the connection to Redis; reconnecting.", %error);
                reaper_engine::instruments::redis_reconnect();
            }
            Err(_) => {}
        }
    }
}

impl<C: ConnectionLike + Send> ConnectionLike for Watched<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let answer = self.inner.req_packed_command(cmd).await;
            self.note(&answer);
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let answer = self.inner.req_packed_commands(cmd, offset, count).await;
            self.note(&answer);
            answer
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Whether `error` says the server is gone: the connection dropped, refused or timed out.
fn connection_lost(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

/// The master the sentinels name. A command that finds the master gone (connection lost,
/// refused, timed out) or demoted (`READONLY`) fails, and the next one asks the sentinels
/// again: during a failover commands fail until the sentinels promote a replica, then go to
/// it. apalis ends its workers on such an error and the worker supervisor restarts them.
#[derive(Clone)]
pub(crate) struct SentinelConnection {
    shared: std::sync::Arc<SentinelShared>,
}

struct SentinelShared {
    /// Asked for the master; one question at a time.
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    /// The master's connection, until a command finds it lost.
    current: std::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    db: i64,
    master: String,
}

impl SentinelConnection {
    /// The master's connection, asking the sentinels when there is none.
    async fn current(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        if let Some(connection) = self.held() {
            return Ok(connection);
        }
        let mut client = self.shared.client.lock().await;
        // Another command may have reconnected while this one waited for the sentinels.
        if let Some(connection) = self.held() {
            return Ok(connection);
        }
        let master = client.async_get_client().await?;
        let address = master.get_connection_info().addr().to_string();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connection = master
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        tracing::info!(message = "Connected to the Redis master the sentinels name.", master = %self.shared.master, %address);
        reaper_engine::instruments::redis_master(&address);
        if let Ok(mut current) = self.shared.current.lock() {
            *current = Some(connection.clone());
        }
        Ok(connection)
    }

    fn held(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.shared
            .current
            .lock()
            .ok()
            .and_then(|current| current.clone())
    }

    /// Drops the master's connection when `answer` says the master is gone or demoted.
    fn forget_if_lost<T>(&self, answer: &redis::RedisResult<T>) {
        let Err(error) = answer else {
            return;
        };
        let lost = connection_lost(error)
            || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if lost
            && let Ok(mut current) = self.shared.current.lock()
            && current.take().is_some()
        {
            tracing::warn!(message = "Lost the Redis master; asking the sentinels again.", master = %self.shared.master, %error);
            reaper_engine::instruments::redis_reconnect();
        }
    }
}
