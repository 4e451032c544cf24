//! A headless Chromium driven over WebDriver (`chromedriver` and
//! `fantoccini`), with a blocking API like the rest of the harness: each
//! call runs on the browser's own small tokio runtime.
//!
//! Chromium runs with `--headless=new --no-sandbox --disable-dev-shm-usage`
//! (root and CI containers) and a profile in the browser's temporary
//! directory. [`Browser::screenshot`] writes PNGs to
//! `target/ui-screenshots/` (git-ignored with the rest of `target/`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::bins::require_tool;
use crate::process::Daemon;

/// A browser session; dropping it ends the session and stops chromedriver.
pub struct Browser {
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
    _driver: Daemon,
    _dir: tempfile::TempDir,
}

/// Where screenshots go: `<target>/ui-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    // target/debug (the profile dir) → target.
    let profile = crate::bins::profile_dir();
    profile
        .parent()
        .map_or_else(|| profile.clone(), PathBuf::from)
        .join("ui-screenshots")
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session.
    pub fn start() -> Browser {
        let chromium = require_tool("chromium", "chromium");
        let driver = require_tool("chromedriver", "chromium-driver");
        let dir = crate::temp_dir("browser");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1");
        let driver = Daemon::spawn("chromedriver", &cmd, &dir.path().join("chromedriver.log"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the WebDriver client");
        let url = format!("http://127.0.0.1:{port}");
        let profile = dir.path().join("profile");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", "--window-size=1280,900", "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let attempt = rt.block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url),
            );
            match attempt {
                Ok(c) => break c,
                // chromedriver is still starting.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("no WebDriver session from chromedriver at {url}: {e}"),
            }
        };
        Browser {
            client: Some(client),
            rt,
            _driver: driver,
            _dir: dir,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Loads `url` and waits for the page.
    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.c().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .expect("the current URL")
            .to_string()
    }

    /// The page's HTML.
    pub fn source(&self) -> String {
        self.rt
            .block_on(self.c().source())
            .expect("the page source")
    }

    /// Whether an element matches `css`.
    pub fn exists(&self, css: &str) -> bool {
        self.rt
            .block_on(self.c().find_all(Locator::Css(css)))
            .is_ok_and(|v| !v.is_empty())
    }

    /// Waits up to 10 s for an element matching `css` (a page loaded by a
    /// form sent with Enter); panics with the page's URL otherwise.
    pub fn wait_for(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.exists(css) {
            assert!(
                Instant::now() < deadline,
                "no element {css} on {} within 10 s",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.rt.block_on(async {
            let e = self
                .c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no element {css}: {e}"));
            e.text()
                .await
                .unwrap_or_else(|e| panic!("text of {css}: {e}"))
        })
    }

    /// The texts of every element matching `css`.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for e in self
                .c()
                .find_all(Locator::Css(css))
                .await
                .unwrap_or_default()
            {
                out.push(e.text().await.unwrap_or_default());
            }
            out
        })
    }

    /// Types `text` into the field matching `css` (after clearing it).
    /// `"\n"` at the end presses Enter, which submits the form: the next
    /// page is then loaded before this returns.
    pub fn fill(&self, css: &str, text: &str) {
        // A newline submits a one-line field's form; in a text area it is
        // only a line break (the tag is asked for only then).
        let (e, submits) = self.rt.block_on(async {
            let e = self
                .c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no field {css}: {e}"));
            let submits = text.ends_with('\n')
                && !e
                    .tag_name()
                    .await
                    .unwrap_or_else(|e| panic!("tag of {css}: {e}"))
                    .eq_ignore_ascii_case("textarea");
            (e, submits)
        });
        if submits {
            self.mark_page();
        }
        self.rt.block_on(async {
            e.clear()
                .await
                .unwrap_or_else(|e| panic!("clear {css}: {e}"));
            e.send_keys(text)
                .await
                .unwrap_or_else(|e| panic!("type into {css}: {e}"));
        });
        if submits {
            self.wait_for_next_page(&format!("typing into {css}"));
        }
    }

    /// Clicks the first element matching `css`, a link or a submit button:
    /// the next page is loaded before this returns, so an element the old
    /// page also had (`#done`, `#repositories`) is never mistaken for the
    /// answer.
    pub fn click(&self, css: &str) {
        self.mark_page();
        self.toggle(css);
        self.wait_for_next_page(&format!("clicking {css}"));
    }

    /// Clicks the first element matching `css` that stays on the page (a
    /// checkbox, a radio button).
    pub fn toggle(&self, css: &str) {
        self.rt.block_on(async {
            let e = self
                .c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no element {css}: {e}"));
            e.click()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
        });
    }

    /// Clicks the link whose text is `text` and waits for the next page.
    pub fn click_link(&self, text: &str) {
        self.mark_page();
        self.rt.block_on(async {
            let e = self
                .c()
                .find(Locator::LinkText(text))
                .await
                .unwrap_or_else(|e| panic!("no link {text:?}: {e}"));
            e.click()
                .await
                .unwrap_or_else(|e| panic!("click {text:?}: {e}"));
        });
        self.wait_for_next_page(&format!("clicking the link {text:?}"));
    }

    /// Leaves a mark on the current document; a newly loaded one has none.
    fn mark_page(&self) {
        self.eval("window.__e2eOldPage = true; return null;");
    }

    /// Waits (10 s at most) until the marked document is replaced by a
    /// fully loaded one. Scripts may fail while the navigation is under
    /// way; that is waited out too.
    fn wait_for_next_page(&self, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let loaded = self.rt.block_on(self.c().execute(
                "return window.__e2eOldPage === undefined && document.readyState === 'complete';",
                Vec::new(),
            ));
            if matches!(loaded, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new page within 10 s after {after} (still on {})",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a script in the page and returns its JSON result.
    pub fn eval(&self, script: &str) -> serde_json::Value {
        self.rt
            .block_on(self.c().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Writes a PNG of the viewport to `screenshot_dir()/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .rt
            .block_on(self.c().screenshot())
            .expect("a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
    }
}
