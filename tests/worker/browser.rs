//! A real headless browser for the tests that look at pages as a person does: Debian's
//! `chromium`, driven over WebDriver by `chromedriver`, which each test starts on a free
//! port of its own. Without them a test fails and says how to install them; none is
//! skipped.

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const INSTALL: &str = "install Debian's chromium and chromium-driver: \
                       apt-get install -y chromium chromium-driver (scripts/test does)";

/// Viewport of every page (and so of the screenshots).
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 1150;

/// A browser session; its chromedriver (and the browser under it) ends with it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// The browser's profile, removed on drop.
    _profile: tempfile::TempDir,
}

/// The first of `candidates` (names on `PATH`, or absolute paths) that exists.
fn find(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|candidate| {
        let candidate = Path::new(candidate);
        if candidate.is_absolute() {
            return candidate.is_file().then(|| candidate.to_path_buf());
        }
        std::env::split_paths(&path)
            .map(|dir| dir.join(candidate))
            .find(|full| full.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    pub async fn start() -> Self {
        let driver_path = find(&["chromedriver", "/usr/lib/chromium/chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found: {INSTALL}"));
        let chromium = find(&["chromium", "chromium-browser", "/usr/lib/chromium/chromium"])
            .unwrap_or_else(|| panic!("chromium not found: {INSTALL}"));
        let port = free_port();
        // Its own process group, so that dropping the browser ends chromedriver and
        // every browser process under it, even when the test panicked.
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", driver_path.display()));
        let profile = tempfile::tempdir().expect("profile directory");
        let browser = Self {
            client: connect(port, &chromium, profile.path()).await,
            driver,
            _profile: profile,
        };
        browser
            .client
            .set_window_size(WIDTH, HEIGHT)
            .await
            .expect("window size");
        browser
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("cannot open {url}: {err}"));
    }

    /// Waits for the element `css` on the current page.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(crate::helpers::PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no {css} on the page: {err}"))
    }

    /// How many elements match `css` on the current page, right now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .len()
    }

    /// Runs `script` in the page and returns what it returned.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}"))
    }

    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("url")
            .path()
            .to_owned()
    }

    /// A screenshot of the viewport; written to `$SCREENSHOT_DIR/NAME.png` when that is
    /// set (`SCREENSHOT_DIR=docs/images` refreshes the README's pictures).
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = std::env::var_os("SCREENSHOT_DIR") {
            let path = Path::new(&dir).join(format!("{name}.png"));
            std::fs::write(&path, &png)
                .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        }
        png
    }

    /// Ends the session (the browser quits), then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser process left under it.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
    }
}

async fn connect(port: u16, chromium: &Path, profile: &Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new",
                // Tests run as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--window-size={WIDTH},{HEIGHT}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("an object");
    };
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let connected = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await;
        match connected {
            Ok(client) => return client,
            Err(err) if tokio::time::Instant::now() >= deadline => {
                panic!("chromedriver on port {port} did not start a browser: {err}; {INSTALL}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
