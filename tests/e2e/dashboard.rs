//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver with fantoccini) against a real `reaper run` on
//! PostgreSQL with Redis. Sign in; watch a running job's progress move without a reload; pause,
//! resume and cancel it through the confirmation pages (confirmed from the keyboard); retry a
//! dead job; a read-only session sees no action and is refused one; a forged request from
//! another origin is refused. Each page is saved as a screenshot under `target/dashboard-screenshots/` (the README shows some).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::daemon::{Api, ONE_SLOW_SLICE, RedisDeployment, TOKEN, free_port};

const READ_TOKEN: &str = "read-only-token-0123456789";

/// A chromedriver process on a free port, ended with the test.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed (apt-get install chromium chromium-driver)");
        Self { child, port }
    }

    /// A headless Chromium session at 1280 × 900.
    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"
            ]}),
        );
        // Both rustls providers are in the build; fantoccini needs one chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let started = Instant::now();
        loop {
            let connected = ClientBuilder::rustls()
                .unwrap()
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await;
            match connected {
                Ok(client) => return client,
                Err(error) if started.elapsed() < Duration::from_secs(15) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("no WebDriver session: {error}"),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The element `locator` finds, or a panic naming what was not found.
async fn element(browser: &Client, locator: Locator<'_>) -> Element {
    browser
        .find(locator)
        .await
        .unwrap_or_else(|error| panic!("{locator:?}: {error}"))
}

async fn click(browser: &Client, locator: Locator<'_>) {
    element(browser, locator).await.click().await.unwrap();
}

async fn type_into(browser: &Client, locator: Locator<'_>, text: &str) {
    element(browser, locator)
        .await
        .send_keys(text)
        .await
        .unwrap();
}

/// The element `locator` finds once the page has it (fantoccini's wait).
async fn wait_for(browser: &Client, locator: Locator<'_>) -> Element {
    browser.wait().for_element(locator).await.unwrap()
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"))
        .text()
        .await
        .unwrap()
}

async fn sign_in(browser: &Client, base: &str, name: &str, token: &str) {
    browser.goto(&format!("{base}/ui")).await.unwrap();
    // Not signed in: the sign-in form.
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/login")
    );
    type_into(browser, Locator::Id("name"), name).await;
    type_into(browser, Locator::Id("token"), token).await;
    click(browser, Locator::Css("form button[type=submit]")).await;
    let started = Instant::now();
    while browser.find(Locator::Css("h1")).await.is_err()
        || text_of(browser, "h1").await != "Overview"
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not signed in: {}",
            browser.source().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_out(browser: &Client) {
    click(browser, Locator::Css(".who button")).await;
    wait_for(browser, Locator::Id("token")).await;
}

/// Opens the job's page, follows its `action` link to the confirmation page and confirms it
/// from the keyboard: the confirm button has the focus, Enter presses it.
async fn act(browser: &Client, base: &str, id: &str, action: &str) {
    browser.goto(&format!("{base}/ui/jobs/{id}")).await.unwrap();
    click(
        browser,
        Locator::Css(&format!(".actions a[href$='/confirm/{action}']")),
    )
    .await;
    wait_for(browser, Locator::Id("confirm")).await;
    assert!(text_of(browser, "h1").await.contains(id));
    let focused = browser.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("confirm")
    );
    focused.send_keys("\u{e007}").await.unwrap();
    wait_for(browser, Locator::Css(".job-head")).await;
}

/// Waits until the page shows `needle` (a form's answer after a redirect or a refusal).
async fn wait_for_text(browser: &Client, needle: &str) {
    let started = Instant::now();
    loop {
        let source = browser.source().await.unwrap();
        if source.contains(needle) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no `{needle}` in: {source}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_state(api: &Api, id: &str, states: &[&str]) -> Value {
    api.wait_until(id, &states.join(" or "), Duration::from_secs(20), |job| {
        states.iter().any(|state| job["state"] == *state)
    })
    .await
}

/// Serves one HTML page from another origin (another port): what a hostile site would serve.
async fn hostile_site(html: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    port
}

/// Submits tenants' rows in batches of 5 (every batch at least 100 ms): long enough to watch.
fn slow_job(tenants: &[i64], extra: Value) -> Value {
    let mut job = json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "in", "value": tenants}]}, "batch_size": 5, "requested_by": "svc", "reason": "dashboard test"});
    if let (Value::Object(job), Value::Object(extra)) = (&mut job, extra) {
        job.extend(extra);
    }
    job
}

#[tokio::test]
async fn an_operator_watches_pauses_resumes_cancels_and_retries_and_a_viewer_cannot_act() {
    let d = RedisDeployment::new(2_000, None).await;
    // A policy the policies page counts for (disabled: it never runs here).
    crate::retention::add_to_config(
        &d.deployment,
        "\n[[retention]]\nname = \"old-events\"\ntarget = \"events\"\nage_column = \"created_at\"\n\
         max_age = \"30d\"\nschedule = \"0 3 * * *\"\nenabled = false\n",
    );
    let _daemon = d.start(
        &[
            &ONE_SLOW_SLICE[..],
            &[("REAPER_API_READ_TOKEN", READ_TOKEN)],
        ]
        .concat(),
    );
    let api = d.api();
    let base = format!("http://127.0.0.1:{}", d.port);
    let driver = Driver::start();
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/ui")).await.unwrap();
    shot(&browser, "login").await;
    sign_in(&browser, &base, "ann", TOKEN).await;

    // A running job's progress moves on the jobs page without a reload.
    let id = api.submit(&slow_job(&[1, 2], json!({}))).await;
    api.wait_mid_run(&id, 2).await;
    browser.goto(&format!("{base}/ui/jobs")).await.unwrap();
    let row = format!("tr[data-job='{id}'] [data-field='rows']");
    let first: i64 = text_of(&browser, &row).await.parse().unwrap();
    let started = Instant::now();
    loop {
        let now: i64 = text_of(&browser, &row).await.parse().unwrap();
        if now > first {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rows stayed at {first}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shot(&browser, "jobs").await;
    browser.goto(&format!("{base}/ui")).await.unwrap();
    // The one daemon, its workers heartbeating in the queue.
    let daemons = text_of(&browser, ".daemons tbody").await;
    let alive = text_of(&browser, ".daemons td:nth-child(2)").await;
    assert_eq!(alive, "1", "{daemons}");
    shot(&browser, "overview").await;

    // Pause, resume, cancel: each through its confirmation page, each recorded as ann's.
    act(&browser, &base, &id, "pause").await;
    let paused = wait_state(&api, &id, &["paused"]).await;
    browser.goto(&format!("{base}/ui/jobs/{id}")).await.unwrap();
    wait_for(&browser, Locator::Css(".chart rect")).await;
    shot(&browser, "job").await;
    act(&browser, &base, &id, "resume").await;
    api.wait_until(&id, "past the pause", Duration::from_secs(20), |job| {
        job["rows_deleted"].as_i64() > paused["rows_deleted"].as_i64()
    })
    .await;
    act(&browser, &base, &id, "cancel").await;
    let cancelled = wait_state(&api, &id, &["cancelled"]).await;
    assert!(
        cancelled["rows_deleted"].as_i64().unwrap() < 200,
        "{cancelled}"
    );
    let done: Vec<[String; 2]> = api
        .actions(&id)
        .await
        .into_iter()
        .map(|[action, actor, _]| [action, actor])
        .collect();
    assert_eq!(
        done,
        [["cancel", "ann"], ["resume", "ann"], ["pause", "ann"]]
    );

    // A dead job (more matching rows than its max_rows), retried from the dead jobs page.
    let dead = api.submit(&slow_job(&[3], json!({"max_rows": 10}))).await;
    wait_state(&api, &dead, &["dead"]).await;
    browser.goto(&format!("{base}/ui/dead")).await.unwrap();
    shot(&browser, "dead").await;
    click(
        &browser,
        Locator::Css(&format!("a[href='/ui/jobs/{dead}/confirm/retry']")),
    )
    .await;
    wait_for(&browser, Locator::Id("confirm"))
        .await
        .click()
        .await
        .unwrap();
    let retried = api
        .wait_until(
            &dead,
            "dead again after its retry",
            Duration::from_secs(20),
            |job| job["state"] == "dead" && job["attempts"] == 2,
        )
        .await;
    assert_eq!(retried["max_attempts"], 2, "{retried}");
    browser.goto(&format!("{base}/ui/policies")).await.unwrap();
    // Every fixture row is older than 30 days: all that is left is the policy's backlog; its
    // past daily windows cover ranges no fixture row falls in.
    let backlog = text_of(&browser, ".backlog").await;
    let left: u64 = backlog.split(' ').next().unwrap().parse().unwrap();
    assert!(left > 1_000 && left <= 2_000, "{backlog}");
    let column = async |n: usize| {
        let mut texts = Vec::new();
        for cell in browser
            .find_all(Locator::Css(&format!(".windows td:nth-child({n})")))
            .await
            .unwrap()
        {
            texts.push(cell.text().await.unwrap());
        }
        texts
    };
    // No window ran here (the policy is daily): nothing was counted when it became due.
    assert_eq!(column(2).await, ["not counted"; 3]);
    assert_eq!(column(4).await, ["0", "0", "0"]);
    shot(&browser, "policies").await;
    browser.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{base}/ui/jobs")).await.unwrap();
    shot(&browser, "jobs-phone").await;
    browser.set_window_size(1280, 900).await.unwrap();

    // A forged request from another origin, with the operator's cookie: refused.
    let target = api.submit(&slow_job(&[4], json!({}))).await;
    let (status, _) = api.act(&target, "pause", None).await;
    assert!(status == 200 || status == 202);
    wait_state(&api, &target, &["paused"]).await;
    let evil = hostile_site(format!(
        "<form id=f method=post action='{base}/ui/jobs/{target}/cancel'><input name=csrf value=guess></form><script>document.getElementById('f').submit()</script>"
    ))
    .await;
    browser
        .goto(&format!("http://127.0.0.1:{evil}/"))
        .await
        .unwrap();
    wait_for_text(&browser, "forged request refused").await;
    assert_eq!(api.job(&target).await["state"], "paused");

    // A read-only session: no action shown, none accepted.
    browser.goto(&format!("{base}/ui")).await.unwrap();
    sign_out(&browser).await;
    sign_in(&browser, &base, "vic", READ_TOKEN).await;
    assert!(text_of(&browser, ".who span").await.contains("read-only"));
    browser
        .goto(&format!("{base}/ui/jobs/{target}"))
        .await
        .unwrap();
    assert!(
        browser
            .find_all(Locator::Css(".actions a"))
            .await
            .unwrap()
            .is_empty()
    );
    browser
        .goto(&format!("{base}/ui/jobs/{target}/confirm/cancel"))
        .await
        .unwrap();
    assert!(browser.source().await.unwrap().contains("read-only"));
    // Even a same-origin form with the viewer's own anti-forgery token is refused.
    browser
        .goto(&format!("{base}/ui/jobs/{target}"))
        .await
        .unwrap();
    browser
        .execute(
            "const form = document.createElement('form'); form.method = 'post'; \
             form.action = '/ui/jobs/' + arguments[0] + '/cancel'; \
             const token = document.querySelector('input[name=csrf]').cloneNode(); \
             form.appendChild(token); document.body.appendChild(form); form.submit();",
            vec![json!(target)],
        )
        .await
        .unwrap();
    wait_for_text(&browser, "this session is read-only").await;
    assert_eq!(api.job(&target).await["state"], "paused");
    // No page shows a token.
    for page in ["/ui", "/ui/jobs", "/ui/policies", "/ui/dead"] {
        browser.goto(&format!("{base}{page}")).await.unwrap();
        let source = browser.source().await.unwrap();
        assert!(
            !source.contains(TOKEN) && !source.contains(READ_TOKEN),
            "{page}"
        );
    }
    browser.close().await.unwrap();
}
