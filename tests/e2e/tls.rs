//! TLS everywhere, as managed services require it: Redis over `rediss://` with a client
//! certificate, PostgreSQL with `sslmode=verify-full` and MariaDB with
//! `ssl-mode=VERIFY_IDENTITY`, each on a server the test starts with certificates it generates
//! (`reaper_testkit::TestCertificates`). Each runs a job that deletes exactly what it should,
//! and each refuses a certificate it must not trust, saying so.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reaper_testkit::engine::erase_tenant;
use reaper_testkit::{
    ClientCertificates, Removal, TestCertificates, TestDatabase, TlsRedis, tls_mariadb,
    tls_postgres,
};

use crate::daemon::RedisDeployment;
use crate::{Deployment, run, stderr};

/// Runs `command`, which must fail within 20 s (a refused connection, not a hang); its stderr.
pub(crate) fn fails_quickly(command: &mut Command) -> String {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still runs after 20 s:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(log.path()).unwrap();
    eprintln!("--- {command:?}: {status}\n{text}");
    assert!(!status.success(), "{command:?} succeeded:\n{text}");
    text
}

/// `[queue]`'s `tls` key (an inline table: more `[queue]` keys follow it in the file).
fn queue_tls(ca: &Path, client: Option<&TestCertificates>) -> String {
    let client = client.map_or(String::new(), |certificates| {
        format!(
            ", client_cert = \"{}\", client_key = \"{}\"",
            certificates.client_cert.display(),
            certificates.client_key.display()
        )
    });
    format!("tls = {{ ca_file = \"{}\"{client} }}", ca.display())
}

#[tokio::test]
async fn a_daemon_on_tls_redis_runs_a_job_and_refuses_an_untrusted_certificate() {
    let certificates = TestCertificates::generate();
    let mut redis = TlsRedis::start(&certificates, ClientCertificates::Required);
    let trusted = queue_tls(&certificates.ca, Some(&certificates));
    let d = RedisDeployment::at(
        TestDatabase::postgres().await,
        2_000,
        &redis.tls_url,
        "reaper-tls",
        &trusted,
    )
    .await;
    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id = 3").await;
    let before = test.snapshot_events().await;
    {
        let _daemon = d.start(&[]);
        let api = d.api();
        let id = api
            .submit(&erase_tenant(3, serde_json::json!({"batch_size": 50})))
            .await;
        api.wait_done(&id, 1, Duration::from_secs(30)).await;
        before
            .assert_removed_exactly(test, &expected, Removal::Hard, 50)
            .await;
        // A restart of the server: the daemon reconnects over TLS, and counts it.
        redis.server.restart();
        crate::poll_until(
            Duration::from_secs(20),
            "not ready again",
            async || match api.get("/readyz").await {
                (200, _) => Ok(()),
                (_, readiness) => Err(readiness.to_string()),
            },
        )
        .await;
        let id = api
            .submit(&erase_tenant(4, serde_json::json!({"batch_size": 50})))
            .await;
        api.wait_for(&id, "done", Duration::from_secs(30)).await;
        crate::sentinel::assert_reconnected(&api.text("/metrics").await);
    }
    // The queue lived on the TLS server (its plain port is the test's own view of it).
    let mut admin = redis::Client::open(redis.server.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("reaper-tls:*")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "no queue keys on the TLS server");

    let config = std::fs::read_to_string(&d.deployment.config).unwrap();
    let with = |from: &str, to: &str| {
        assert!(config.contains(from), "{config}");
        std::fs::write(&d.deployment.config, config.replace(from, to)).unwrap();
    };
    // A CA that did not sign the server's certificate: the daemon does not start, and says
    // the certificate is not trusted, naming the file it trusted instead.
    with(
        &trusted,
        &queue_tls(&certificates.untrusted_ca, Some(&certificates)),
    );
    let error = fails_quickly(d.deployment.reaper().arg("run"));
    assert!(
        error.contains("TLS certificate is not trusted")
            && error.contains(&certificates.untrusted_ca.display().to_string()),
        "{error}"
    );
    // The system's trust store does not know the test's CA either.
    with(&trusted, "");
    let error = fails_quickly(d.deployment.reaper().arg("run"));
    assert!(
        error.contains("TLS certificate is not trusted")
            && error.contains("a CA in the system's trust store"),
        "{error}"
    );
    // A host name the certificate does not list (it lists the address 127.0.0.1 only).
    let by_name = redis.tls_url.replace("127.0.0.1", "localhost");
    std::fs::write(
        &d.deployment.config,
        config.replace(&redis.tls_url, &by_name),
    )
    .unwrap();
    let error = fails_quickly(d.deployment.reaper().arg("run"));
    assert!(error.contains("not valid for the host name"), "{error}");
    // The server requires a client certificate and none is configured.
    with(&trusted, &queue_tls(&certificates.ca, None));
    let error = fails_quickly(d.deployment.reaper().args(["config", "check"]));
    assert!(error.contains("requires a client certificate"), "{error}");
}

/// `test` (on a TLS server of the test's own) reached with `verify` (the URL's TLS
/// parameters, given the CA file): a job deletes exactly its rows; trusting another CA, or
/// naming the server by a name its certificate does not list, is refused, saying so.
async fn a_job_runs_over_verified_tls(
    test: TestDatabase,
    certificates: &TestCertificates,
    verify: impl Fn(&Path) -> String,
) {
    let plain = test.url.clone();
    let deployment = Deployment::on(test, 2_000).await;
    let verified = format!("{plain}?{}", verify(&certificates.ca));
    deployment.edit_config(|text| text.replace(&plain, &verified));
    deployment.migrate();
    deployment.erase_tenant_once(3, 70).await;

    let untrusted = format!("{plain}?{}", verify(&certificates.untrusted_ca));
    deployment.edit_config(|text| text.replace(&plain, &untrusted));
    let output = run(deployment.reaper().arg("migrate"));
    let error = stderr(&output);
    assert!(
        !output.status.success() && error.contains("certificate is not trusted"),
        "{error}"
    );
    let by_name = verified.replace("127.0.0.1", "localhost");
    deployment.edit_config(|text| text.replace(&plain, &by_name));
    let output = run(deployment.reaper().arg("migrate"));
    let error = stderr(&output);
    assert!(
        !output.status.success() && error.contains("not valid for the host"),
        "{error}"
    );
}

#[tokio::test]
async fn postgres_over_verify_full_tls_runs_a_job_and_refuses_an_untrusted_certificate() {
    let certificates = TestCertificates::generate();
    let server = tls_postgres(&certificates);
    let test = TestDatabase::postgres_on(server.admin_url.clone()).await;
    a_job_runs_over_verified_tls(test, &certificates, |ca| {
        format!("sslmode=verify-full&sslrootcert={}", ca.display())
    })
    .await;
}

#[tokio::test]
async fn mariadb_over_verify_identity_tls_runs_a_job_and_refuses_an_untrusted_certificate() {
    let certificates = TestCertificates::generate();
    let server = tls_mariadb(&certificates);
    let test = TestDatabase::mysql_on(server.admin_url.clone()).await;
    a_job_runs_over_verified_tls(test, &certificates, |ca| {
        format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display())
    })
    .await;
}
