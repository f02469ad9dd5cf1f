//! Just enough of the W3C WebDriver protocol to drive Debian's headless
//! Chromium through its chromedriver: open pages, find elements, read
//! text, type keys, run a script, take screenshots.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver on a free port of 127.0.0.1 and a headless
    /// Chromium with a new, empty profile and a `width`×`height` window.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) must be installed");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let profile = tempfile::tempdir().unwrap();
        // Without the background-networking flags Chromium keeps calling
        // out, and this machine's closed network refuses each call.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let v: Value =
            serde_json::from_str(&resp.text().unwrap_or_default()).unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status}: {v}");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Open `url` and wait until the page has loaded.
    pub fn open(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    /// Run `script` (a function body; `arguments` holds `args`) in the page.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The first element `css` selects, if there is one now.
    pub fn find(&self, css: &str) -> Option<String> {
        let v: Value = self.script(
            "const e = document.querySelector(arguments[0]); return e ? 1 : 0;",
            json!([css]),
        );
        if v.as_i64() != Some(1) {
            return None;
        }
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().map(String::from)
    }

    /// Wait up to `limit` for `css` to select an element.
    pub fn wait_for(&self, css: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                t0.elapsed() < limit,
                "no element {css} after {} s; the page: {}",
                limit.as_secs(),
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Wait up to `limit` until the page's text contains `text`.
    pub fn wait_for_text(&self, text: &str, limit: Duration) {
        let t0 = Instant::now();
        while !self.page_text().contains(text) {
            assert!(
                t0.elapsed() < limit,
                "the page did not show {text:?} within {} s; it shows: {}",
                limit.as_secs(),
                self.page_text()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The page's visible text.
    pub fn page_text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : '';",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Click the element `css` selects, waiting up to `limit` for it to
    /// be there and clickable (shown, not covered, not being redrawn);
    /// returns the element clicked.
    pub fn click_when_ready(&self, css: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let element = self.wait_for(css, limit);
            let path = self.s(&format!("/element/{element}/click"));
            let r = self
                .http
                .post(format!("{}{}", self.base, path))
                .header("Content-Type", "application/json")
                .body("{}")
                .send()
                .unwrap();
            if r.status().is_success() {
                return element;
            }
            let why = r.text().unwrap_or_default();
            assert!(
                t0.elapsed() < limit,
                "the element never became clickable: {}",
                &why[..why.len().min(300)]
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Type `text` into an element (W3C key codes such as `\u{E008}`, Shift).
    pub fn keys(&self, element: &str, text: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{element}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// A screenshot of the whole window, as PNG bytes, also written to `to`.
    pub fn screenshot(&self, to: &Path) -> Vec<u8> {
        let v = self.call("GET", &self.s("/screenshot"), None);
        self.save(v, to)
    }

    /// A screenshot of one element, as PNG bytes, also written to `to`.
    pub fn element_screenshot(&self, element: &str, to: &Path) -> Vec<u8> {
        let v = self.call(
            "GET",
            &self.s(&format!("/element/{element}/screenshot")),
            None,
        );
        self.save(v, to)
    }

    fn save(&self, v: Value, to: &Path) -> Vec<u8> {
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 screenshot"))
            .unwrap();
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, &png).unwrap();
        png
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .http
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
