//! Shared by the publish tests: moto's server mode on 127.0.0.1, a
//! recording and fault-injecting HTTP proxy between biovm and moto, a
//! synthetic raw disk, and a runner for the biovm binary.
//!
//! moto is taken from `$BIOVM_MOTO`, else the venv `.ci/setup` makes
//! (/var/cache/biovm-ci/venv/bin/moto_server). The proxy plays the real API
//! where moto is lax: StartSnapshot answers the real block size (512 KiB;
//! moto says 512), and every request is recorded so the tests can assert
//! exactly what biovm sent.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

pub const BLOCK: usize = 512 * 1024;

// Not every binary that includes this module uses both.
#[allow(unused_imports)]
pub use crate::common::{repo, text};

/// recipes/misc/hello.toml under `root`, for image files in tests.
pub fn write_recipe(root: &Path) {
    std::fs::create_dir_all(root.join("recipes/misc")).unwrap();
    std::fs::write(
        root.join("recipes/misc/hello.toml"),
        "name = \"hello\"\nsummary = \"Says hello\"\ncategory = \"misc\"\nhomepage = \"https://example.org/hello\"\nlicense = \"GPL-3.0-or-later\"\n\n[install]\ndebian = [\"hello\"]\n\n[check]\ncommand = \"hello\"\nexpect = \"Hello\"\n",
    )
    .unwrap();
}

pub fn moto_path() -> PathBuf {
    let p = std::env::var_os("BIOVM_MOTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/biovm-ci/venv/bin/moto_server"));
    assert!(
        p.is_file(),
        "moto_server not found at {}: run .ci/setup (it installs moto[server] into /var/cache/biovm-ci/venv), or set BIOVM_MOTO to a moto_server program",
        p.display()
    );
    p
}

/// The Python of moto's venv (it has `cryptography`).
pub fn venv_python() -> PathBuf {
    moto_path().parent().unwrap().join("python3")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server on 127.0.0.1, killed when dropped.
pub struct Moto {
    pub port: u16,
    _proc: biovm::cmd::Running,
}

impl Moto {
    pub fn start() -> Moto {
        let moto = moto_path();
        let port = free_port();
        let proc = biovm::cmd::Cmd::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .spawn()
            .expect("start moto_server");
        let start = Instant::now();
        loop {
            if let Ok((status, _, _)) = raw_request(port, "GET", "/moto-api/", &[], b"") {
                if status == 200 {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Moto { port, _proc: proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A plain HTTP/1.1 request; returns status, lower-case headers, body.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, BTreeMap<String, String>, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    parse_response(&resp).ok_or_else(|| std::io::Error::other("unparsable HTTP answer"))
}

fn parse_response(resp: &[u8]) -> Option<(u16, BTreeMap<String, String>, Vec<u8>)> {
    let end = find(resp, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = resp[end + 4..].to_vec();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|n| n.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    Some((status, headers, body))
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// An authorization header moto accepts for `service` (it routes by the
/// credential scope and does not check signatures).
pub fn fake_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"
    )
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status the client got; 0 when the proxy cut the connection.
    pub status: u16,
    /// The fault injected, if any.
    pub fault: Option<&'static str>,
    /// Whether moto saw it.
    pub forwarded: bool,
}

impl Recorded {
    /// The signing service from the Authorization header.
    pub fn service(&self) -> String {
        self.headers
            .get("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("")
            .to_string()
    }

    /// `Action=` of an EC2 Query request.
    pub fn action(&self) -> Option<String> {
        if self.service() != "ec2" {
            return None;
        }
        self.form().get("Action").cloned()
    }

    /// The form fields of an EC2 Query request.
    pub fn form(&self) -> BTreeMap<String, String> {
        String::from_utf8_lossy(&self.body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (unescape(k), unescape(v)))
            .collect()
    }

    /// A name for the call: `ec2:RegisterImage`, `ebs:PUT /snapshots/x/blocks/3`.
    pub fn call(&self) -> String {
        match self.action() {
            Some(a) => format!("ec2:{a}"),
            None => format!("{}:{} {}", self.service(), self.method, self.path),
        }
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the proxy does besides forwarding.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Share of requests that fail (0.0 to 1.0).
    pub rate: f64,
    pub seed: u64,
    /// How long a stalled request hangs before the proxy drops it.
    pub stall: Duration,
    /// Access key IDs the "cloud" rejects, with the error code to answer.
    pub reject_keys: Vec<(String, &'static str)>,
    /// A region name moto does not know, and the one to tell moto instead
    /// (moto keeps its data per known region; it checks no signature).
    pub region_alias: Option<(String, String)>,
    /// Replaces `<status>completed</status>` in DescribeSnapshots answers
    /// (a snapshot the cloud failed, or one that never finishes).
    pub snapshot_status: Option<String>,
    /// EC2 actions answered with this error code (HTTP 400) the first time.
    pub fail_once: Vec<(&'static str, &'static str)>,
    /// Text replaced in the answers to an EC2 action: (action, from, to)
    /// (an instance that never runs, or stops).
    pub rewrite: Vec<(&'static str, String, String)>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rate: 0.0,
            seed: 1,
            stall: Duration::from_secs(3),
            reject_keys: Vec::new(),
            region_alias: None,
            snapshot_status: None,
            fail_once: Vec::new(),
            rewrite: Vec::new(),
        }
    }
}

pub struct Proxy {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Recorded>>>,
}

impl Proxy {
    pub fn start(upstream: u16, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(faults.seed)));
        let log2 = Arc::clone(&log);
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (log, rng, faults, counter) = (
                    Arc::clone(&log2),
                    Arc::clone(&rng),
                    faults.clone(),
                    Arc::clone(&counter),
                );
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, &faults, &rng, &counter, &log);
                });
            }
        });
        Proxy { port, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Method, target, lower-case headers, headers as sent, body.
type RawRequest = (
    String,
    String,
    BTreeMap<String, String>,
    Vec<(String, String)>,
    Vec<u8>,
);

fn read_request(r: &mut BufReader<TcpStream>) -> Option<RawRequest> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    let mut raw_headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        raw_headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let n: usize = headers
        .get("content-length")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).ok()?;
    Some((method, target, headers, raw_headers, body))
}

/// Close with a TCP reset instead of a clean close.
fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the right size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}

fn error_answer(service: &str, status: u16, code: &str) -> Vec<u8> {
    let (ctype, body, extra) = match service {
        "ebs" => (
            "application/json",
            format!("{{\"message\":\"injected {code}\"}}"),
            format!("x-amzn-ErrorType: {code}\r\n"),
        ),
        "s3" => (
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected {code}</Message></Error>"),
            String::new(),
        ),
        _ => (
            "text/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>injected {code}</Message></Error></Errors><RequestID>1</RequestID></Response>"),
            String::new(),
        ),
    };
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: {ctype}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// (moto port, action) pairs already failed once.
static FAILED_ONCE: Mutex<std::collections::BTreeSet<(u16, String)>> =
    Mutex::new(std::collections::BTreeSet::new());

fn handle(
    conn: TcpStream,
    upstream: u16,
    faults: &Faults,
    rng: &Mutex<rand::rngs::StdRng>,
    counter: &std::sync::atomic::AtomicU64,
    log: &Mutex<Vec<Recorded>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some((method, target, headers, raw_headers, body)) = read_request(&mut reader) else {
        return Ok(());
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut rec = Recorded {
        method: method.clone(),
        path,
        query,
        headers,
        body: body.clone(),
        status: 0,
        fault: None,
        forwarded: false,
    };
    let service = rec.service();
    let mut conn = conn;

    // A rejected identity.
    let key = rec
        .headers
        .get("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_string();
    if let Some((_, code)) = faults.reject_keys.iter().find(|(k, _)| *k == key) {
        let status = if *code == "AuthFailure" { 401 } else { 403 };
        rec.status = status;
        rec.fault = Some("rejected");
        log.lock().unwrap().push(rec);
        conn.write_all(&error_answer(&service, status, code))?;
        return Ok(());
    }

    // Exactly `rate` of the requests fail (every tenth at 0.1), each in a
    // way drawn from the seeded generator.
    let fault = {
        let mut r = rng.lock().unwrap();
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as f64;
        let rate = faults.rate.clamp(0.0, 1.0);
        if ((n + 1.0) * rate).floor() > (n * rate).floor() {
            let idempotent_put = method == "PUT";
            let kinds: &[&'static str] = if idempotent_put {
                &["500", "throttle", "reset", "stall", "reset-after"]
            } else {
                &["500", "throttle", "reset", "stall"]
            };
            Some(kinds[r.gen_range(0..kinds.len())])
        } else {
            None
        }
    };
    if let Some(action) = rec.action() {
        let mut done = FAILED_ONCE.lock().unwrap();
        if let Some((a, code)) = faults.fail_once.iter().find(|(a, _)| *a == action) {
            if done.insert((upstream, a.to_string())) {
                rec.status = 400;
                rec.fault = Some("fail-once");
                log.lock().unwrap().push(rec);
                conn.write_all(&error_answer(&service, 400, code))?;
                return Ok(());
            }
        }
    }

    rec.fault = fault;
    match fault {
        Some("500") => {
            rec.status = 500;
            log.lock().unwrap().push(rec);
            conn.write_all(&error_answer(&service, 500, "InternalError"))?;
            return Ok(());
        }
        Some("throttle") => {
            let (status, code) = match service.as_str() {
                "ebs" => (400, "ThrottlingException"),
                "s3" => (503, "SlowDown"),
                _ => (503, "RequestLimitExceeded"),
            };
            rec.status = status;
            log.lock().unwrap().push(rec);
            conn.write_all(&error_answer(&service, status, code))?;
            return Ok(());
        }
        Some("reset") => {
            log.lock().unwrap().push(rec);
            reset(&conn);
            return Ok(());
        }
        Some("stall") => {
            log.lock().unwrap().push(rec);
            std::thread::sleep(faults.stall);
            reset(&conn);
            return Ok(());
        }
        _ => {}
    }

    // Forward to moto.
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in &raw_headers {
        if k.eq_ignore_ascii_case("connection") {
            continue;
        }
        let v = match (
            &faults.region_alias,
            k.eq_ignore_ascii_case("authorization"),
        ) {
            (Some((ours, moto)), true) => v.replace(&format!("/{ours}/"), &format!("/{moto}/")),
            _ => v.clone(),
        };
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    rec.forwarded = true;
    let Some((status, resp_headers, mut resp_body)) = parse_response(&resp) else {
        log.lock().unwrap().push(rec);
        reset(&conn);
        return Ok(());
    };
    if let (Some(st), Some("DescribeSnapshots")) =
        (&faults.snapshot_status, rec.action().as_deref())
    {
        resp_body = text(&resp_body)
            .replace("<status>completed</status>", st)
            .into_bytes();
    }
    for (action, from, to) in &faults.rewrite {
        if rec.action().as_deref() == Some(*action) {
            resp_body = text(&resp_body).replace(from, to).into_bytes();
        }
    }
    // The real API's block size (moto answers 512).
    if service == "ebs" && method == "POST" && rec.path == "/snapshots" && status < 300 {
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&resp_body) {
            v["BlockSize"] = serde_json::json!(BLOCK);
            resp_body = serde_json::to_vec(&v).unwrap();
        }
    }
    rec.status = status;
    if fault == Some("reset-after") {
        rec.status = 0;
        log.lock().unwrap().push(rec);
        reset(&conn);
        return Ok(());
    }
    let mut out = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in &resp_headers {
        if k == "content-length" || k == "connection" || k == "transfer-encoding" {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp_body.len()
    ));
    // Recorded before the client has its answer, so a test that reads the
    // log after biovm ends sees every request.
    log.lock().unwrap().push(rec);
    conn.write_all(out.as_bytes())?;
    conn.write_all(&resp_body)?;
    conn.flush()?;
    Ok(())
}

/// A raw disk of `blocks` blocks of 512 KiB plus a short tail: random
/// data in some blocks, zeros in others, one block zero but for its last
/// byte, a GPT-like signature at 512.
pub fn make_disk(path: &Path, seed: u64) -> Vec<u8> {
    make_disk_of(path, seed, 14)
}

/// Like [`make_disk`], `blocks` (at least 14) long; blocks from 14 on hold
/// data two times in three.
pub fn make_disk_of(path: &Path, seed: u64, blocks: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut d = vec![0u8; blocks * BLOCK + 4096];
    for b in 15..blocks {
        if b % 3 != 0 {
            rng.fill(&mut d[b * BLOCK..(b + 1) * BLOCK]);
        }
    }
    // Block 0: a protective MBR signature and a GPT header signature.
    d[510] = 0x55;
    d[511] = 0xAA;
    d[512..520].copy_from_slice(b"EFI PART");
    for b in [2usize, 3, 7, 9, 10] {
        rng.fill(&mut d[b * BLOCK..(b + 1) * BLOCK]);
    }
    // Block 5: zero but for its last byte (must not be skipped).
    d[6 * BLOCK - 1] = 1;
    // Block 12: half data, half zeros.
    rng.fill(&mut d[12 * BLOCK..12 * BLOCK + BLOCK / 2]);
    // Block 14 (the short tail of the smallest disk): a little data.
    d[14 * BLOCK + 100] = 0xAB;
    std::fs::write(path, &d).unwrap();
    d
}

/// Indices of the blocks of `disk` that are not all zeros (the last one
/// padded to a full block).
pub fn nonzero_blocks(disk: &[u8]) -> Vec<u64> {
    disk.chunks(BLOCK)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u64)
        .collect()
}

/// Block `i` of the disk, padded with zeros to a full block.
pub fn block(disk: &[u8], i: u64) -> Vec<u8> {
    let start = i as usize * BLOCK;
    let mut b = disk[start..(start + BLOCK).min(disk.len())].to_vec();
    b.resize(BLOCK, 0);
    b
}

/// Run the biovm binary in `cwd` with extra environment.
pub fn biovm(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_biovm"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("BIOVM_LOG")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_ENDPOINT_URL")
        .env("HOME", cwd)
        .env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run biovm")
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// GetSnapshotBlock straight from moto (no proxy).
pub fn get_block(moto: u16, snapshot: &str, i: u64) -> Vec<u8> {
    let auth = fake_auth("ebs");
    let (status, _, body) = raw_request(
        moto,
        "GET",
        &format!("/snapshots/{snapshot}/blocks/{i}?blockToken=x"),
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "GetSnapshotBlock {i}: {}", text(&body));
    body
}

/// ListSnapshotBlocks straight from moto: the block indices.
pub fn list_blocks(moto: u16, snapshot: &str) -> Vec<u64> {
    let auth = fake_auth("ebs");
    let (status, _, body) = raw_request(
        moto,
        "GET",
        &format!("/snapshots/{snapshot}/blocks"),
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{}", text(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut idx: Vec<u64> = v["Blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["BlockIndex"].as_u64().unwrap())
        .collect();
    idx.sort();
    idx
}

/// An EC2 Query call straight to moto; the XML answer.
pub fn ec2_call(moto: u16, params: &str) -> String {
    let auth = fake_auth("ec2");
    let (status, _, body) = raw_request(
        moto,
        "POST",
        "/",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("Version=2016-11-15&{params}").as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{params}: {}", text(&body));
    text(&body)
}

/// The JSON events biovm printed with `--json`, one per line; every line
/// must be one.
pub fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}"));
            assert!(v["event"].is_string(), "not an event: {l}");
            v
        })
        .collect()
}

/// What a command produced: the `result` of its last event (`--json`).
pub fn result_of(stdout: &[u8]) -> serde_json::Value {
    let ev = events(stdout);
    let last = ev
        .last()
        .unwrap_or_else(|| panic!("no JSON events on stdout"));
    assert_eq!(
        last["event"], "result",
        "the last event is not the result: {last}"
    );
    last["result"].clone()
}
