//! End to end: the browser workbench. `images/workbench.toml` is built from
//! its lock, with no instance's secret in it (its boot test, whose system
//! checks include the workbench's, is BioLinux's in `e2e_catalogue`: the
//! same workbench in its first boot). Then `biovm run --detach --public`
//! boots an instance (its SSH port lets in the injected key and no other; the guest
//! reaches nothing beyond it), and headless Chromium, driven through chromedriver, opens
//! what `biovm run` printed: the landing page lists the tools, JupyterLab
//! runs a Python cell that imports pysam and an R cell that loads
//! Biostrings, and noVNC shows the Xfce desktop (judged by its pixels).
//! Every route refuses a request without the token or with a near miss,
//! and public mode serves the
//! same routes over HTTPS with the certificate the console named.
//!
//! The screenshots are kept in `target/e2e-artifacts/workbench/`.
//!
//! Needs root, the host packages `.ci/setup` installs (chromium and
//! chromium-driver among them), the network to the package archive and
//! PyPI, and minutes: `#[ignore]`d; `.ci/run` runs it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[path = "../common/mod.rs"]
mod common;
mod webdriver;

use common::{copy_tree, repo, scratch, text};

fn biovm(cwd: &Path, args: &[&str]) -> std::process::Output {
    common::biovm_in(cwd, args, &[])
}

/// Where the screenshots are kept.
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("e2e-artifacts/workbench")
}

/// The names in the workbench's state folder (/etc/biovm/workbench) of
/// the root filesystem of the qcow2 disk `qcow2`, read with debugfs from
/// a raw copy at `raw` (removed after). Fails unless the first-boot script
/// is found there (the right filesystem was read).
fn state_files_in(qcow2: &Path, raw: &Path) -> Vec<String> {
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(qcow2)
        .arg(raw)
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img convert");
    let o = Command::new("sfdisk").arg("-J").arg(raw).output().unwrap();
    let table: Value = serde_json::from_slice(&o.stdout).expect("sfdisk -J");
    // The root filesystem: the x86-64 root partition.
    let start = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")
        .and_then(|p| p["start"].as_u64())
        .expect("a root partition");
    let at = format!("{}?offset={}", raw.display(), start * 512);
    let debugfs = |request: &str| {
        let o = Command::new("debugfs")
            .args(["-R", request, &at])
            .output()
            .unwrap();
        text(&o.stdout) + &text(&o.stderr)
    };
    let script = debugfs("stat /usr/local/lib/biovm/workbench-first-boot");
    let names: Vec<String> = debugfs("ls -p /etc/biovm/workbench")
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .collect();
    fs::remove_file(raw).unwrap();
    assert!(script.contains("Inode:"), "the first-boot script: {script}");
    names
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut fs::File::open(p).unwrap(), &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// The status code of a plain HTTP request to 127.0.0.1:`port`.
fn status(port: u16, path: &str, header: Option<(&str, &str)>) -> u16 {
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = c.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some((k, v)) = header {
        r = r.header(k, v);
    }
    r.send().unwrap().status().as_u16()
}

/// What a screenshot shows, by its pixels.
struct Pixels {
    /// Distinct colours.
    colours: usize,
    /// Mean luminance (0-255) of the top 20 rows (Xfce's panel) and of
    /// the rows between a quarter and three quarters down (the desktop).
    top: f64,
    middle: f64,
}

/// A PNG as Chromium writes its screenshots (8-bit RGB or RGBA, not
/// interlaced): width, height, samples per pixel and the pixels. Decoded
/// here with flate2 (biovm's own dependency): the png crate, as a test
/// dependency, turned on features of flate2 that changed the biovm
/// executable `cargo test` builds, so its stored test results (keyed by
/// its SHA-256) no longer served README command 1's build.
fn decode_png(png: &[u8]) -> (usize, usize, usize, Vec<u8>) {
    use std::io::Read;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
    let (mut at, mut idat) = (8, Vec::new());
    let (mut w, mut h, mut step) = (0, 0, 0);
    while at + 8 <= png.len() {
        let (len, kind) = (be32(&png[at..]), &png[at + 4..at + 8]);
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                (w, h) = (be32(data), be32(&data[4..]));
                assert_eq!(data[8], 8, "8 bits per sample");
                assert_eq!(data[12], 0, "not interlaced");
                step = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("PNG colour type {t}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * step;
    let mut out = vec![0u8; h * stride];
    for y in 0..h {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let a = if x >= step {
                out[y * stride + x - step]
            } else {
                0
            };
            let b = if y > 0 { out[(y - 1) * stride + x] } else { 0 };
            let c = if x >= step && y > 0 {
                out[(y - 1) * stride + x - step]
            } else {
                0
            };
            let predicted = match line[0] {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => {
                    let p = a as i16 + b as i16 - c as i16;
                    let (pa, pb, pc) = (
                        (p - a as i16).abs(),
                        (p - b as i16).abs(),
                        (p - c as i16).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            out[y * stride + x] = line[1 + x].wrapping_add(predicted);
        }
    }
    (w, h, step, out)
}

fn pixels(png: &[u8]) -> Pixels {
    let (w, h, step, buf) = decode_png(png);
    let px = |x: usize, y: usize| {
        let i = (y * w + x) * step;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    let luminance = |rows: std::ops::Range<usize>| {
        let mut sum = 0.0;
        let mut n = 0.0;
        for y in rows {
            for x in 0..w {
                let (r, g, b) = px(x, y);
                sum += 0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64;
                n += 1.0;
            }
        }
        sum / f64::max(n, 1.0)
    };
    let mut seen = std::collections::HashSet::new();
    for y in 0..h {
        for x in 0..w {
            seen.insert(px(x, y));
        }
    }
    Pixels {
        colours: seen.len(),
        top: luminance(2..20.min(h)),
        middle: luminance(h / 4..h * 3 / 4),
    }
}

/// A notebook of one code cell, for the contents API.
fn notebook(kernel: &str, language: &str, source: &str) -> Value {
    serde_json::json!({
        "type": "notebook",
        "format": "json",
        "content": {
            "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": kernel, "display_name": kernel, "language": language}},
            "cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": null,
                       "outputs": [], "source": source}],
        },
    })
}

#[test]
#[ignore = "needs root, network, chromium and minutes"]
fn the_workbench_opens_in_a_browser_with_its_token_and_refuses_without_it() {
    let _t = common::timed();
    let p = scratch("e2e-workbench");
    copy_tree(&repo().join("recipes"), &p.join("recipes"));
    fs::create_dir_all(p.join("images")).unwrap();
    for f in ["workbench.toml", "workbench.lock"] {
        fs::copy(repo().join("images").join(f), p.join("images").join(f)).unwrap();
    }
    let shots = artifacts();
    let _ = fs::remove_dir_all(&shots);

    let out = biovm(&p, &["plan", "images/workbench.toml"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("workbench:    JupyterLab, an Xfce desktop (noVNC) and the tool list, behind a proxy on the guest's 127.0.0.1:8080"),
        "{}",
        text(&out.stdout)
    );

    // Built from the lock. Its boot test (the workbench's system check in
    // a boot, the tools' checks natively) is BioLinux's in this suite
    // (e2e_catalogue: the same workbench, desktop and servers, in its
    // first boot); here the artifact boots once, with `biovm run`.
    let out = biovm(&p, &["build", "images/workbench.toml", "--out", "out"]);
    assert!(out.status.success(), "build failed");
    // No instance's secret is in the artifact: each instance's first boot
    // makes its token, certificate and keys, so no two share them.
    let qcow2 = p.join("out/workbench.qcow2");
    let kept = state_files_in(&qcow2, &p.join("read.raw"));
    for secret in [
        "token",
        "tls.key",
        "tls.crt",
        "vnc-key",
        "jupyter.env",
        "nginx-token.conf",
    ] {
        assert!(
            !kept.iter().any(|n| n == secret),
            "{secret} is in the image: {kept:?}"
        );
    }

    // A second instance, detached, in public mode.
    let key = p.join("id_ed25519");
    common::ssh_keygen(&key);
    let before = sha256_file(&qcow2);
    let ssh_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let out = biovm(
        &p,
        &[
            "--json",
            "run",
            qcow2.to_str().unwrap(),
            "--detach",
            "--public",
            "--ssh-key",
            p.join("id_ed25519.pub").to_str().unwrap(),
            "--ssh-port",
            &ssh_port,
            "--state",
            p.join("run").to_str().unwrap(),
            "--memory",
            "3072",
            // One of the machine's guest slots: the other lane's guests
            // keep theirs.
            "--cpus",
            "1",
        ],
    );
    let run = text(&out.stdout);
    assert!(out.status.success(), "biovm run failed: {run}");
    let run: Value = serde_json::from_str(run.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {run}"));
    let run = if run["result"].is_object() {
        run["result"].clone()
    } else {
        run
    };
    struct Stop(u64);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _stop = Stop(run["pid"].as_u64().expect("a pid"));
    let _tunnel = Stop(run["tunnel_pid"].as_u64().expect("the tunnel's pid"));
    let w = &run["workbench"];
    let port = w["port"].as_u64().unwrap() as u16;
    let token = w["token"].as_str().unwrap().to_string();
    let url = w["url"].as_str().unwrap().to_string();
    eprintln!("workbench up after {} s: {url}", w["secs"]);
    assert_eq!(url, format!("http://127.0.0.1:{port}/?token={token}"));
    let tls_b = w["tls_sha256"].as_str().unwrap().to_string();

    // `biovm run`: the guest's SSH server, on the port asked for, lets in
    // the key cloud-init injected for the image's user, and no other; the
    // guest reaches nothing beyond it (QEMU's `restrict=on`). Inside: the
    // desktop's menu has the image's graphical tool, and the token is
    // root's alone (the default user reads it with sudo).
    assert_eq!(run["ssh_port"].to_string(), ssh_port, "{run}");
    let ssh_with = |key: &Path, cmd: &str| {
        Command::new("ssh")
            .arg("-i")
            .arg(key)
            .args(["-p", &ssh_port])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=no", "-o", "ConnectTimeout=30"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "biovm@127.0.0.1", cmd])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ssh = |cmd: &str| {
        let o = ssh_with(&key, cmd);
        text(&o.stdout) + &text(&o.stderr)
    };
    let inside = ssh(
        "id -un; \
         timeout 5 bash -c 'echo > /dev/tcp/10.0.2.2/22' 2>/dev/null && echo reached-host || echo isolated; \
         grep -l '^Exec=seaview' /usr/share/applications/*.desktop; \
         cat /etc/biovm/workbench/token 2>&1 | sed 's/^.*denied.*$/denied/'; \
         sudo cat /etc/biovm/workbench/token",
    );
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(lines.first(), Some(&"biovm"), "{inside}");
    assert_eq!(lines.get(1), Some(&"isolated"), "restrict=on: {inside}");
    assert!(
        inside.contains("/usr/share/applications/seaview.desktop"),
        "{inside}"
    );
    assert!(inside.contains("denied"), "{inside}");
    assert!(inside.contains(&token), "{inside}");
    let other = p.join("other");
    common::ssh_keygen(&other);
    assert!(
        !ssh_with(&other, "true").status.success(),
        "a key never injected was accepted"
    );

    // Every route refuses a request without the token, or with a near miss.
    let routes = [
        "/",
        "/jupyter/lab",
        "/jupyter/api/status",
        "/jupyter/api/kernels",
        "/jupyter/desktop/vnc.html",
        "/desktop/vnc.html",
        "/desktop/websockify",
    ];
    let near = format!(
        "{}{}",
        &token[..token.len() - 1],
        if token.ends_with('A') { 'B' } else { 'A' }
    );
    for r in routes {
        assert_eq!(status(port, r, None), 403, "{r} without the token");
        let wrong = format!("{r}?token={near}");
        assert_eq!(
            status(port, &wrong, None),
            403,
            "{r} with a token one character off"
        );
    }
    let auth = format!("token {token}");
    assert_eq!(
        status(port, "/jupyter/api/status", Some(("Authorization", &auth))),
        200
    );
    assert_eq!(status(port, &format!("/?token={token}"), None), 200);

    // Public mode: the same door over HTTPS, with the certificate the
    // console named.
    let https = w["https_port"]
        .as_u64()
        .expect("public mode forwards HTTPS") as u16;
    let c = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let get = |path: &str| {
        c.get(format!("https://127.0.0.1:{https}{path}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get("/"), 403);
    assert_eq!(get("/jupyter/api/status"), 403);
    assert_eq!(get(&format!("/?token={token}")), 200);
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{https} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let served = text(&o.stdout);
    assert!(
        served.trim().ends_with(&tls_b),
        "the served certificate {served:?} is not the one the console named ({tls_b})"
    );

    browse(port, &token, &shots);
    drop(_stop);
    drop(_tunnel);
    assert_eq!(sha256_file(&qcow2), before, "the artifact is untouched");
    eprintln!("screenshots: {}", shots.display());
}

/// Drive the browser through the workbench on 127.0.0.1:`port`: the
/// landing page, both notebooks' cells, the desktop. Screenshots go to `shots`.
fn browse(port: u16, token: &str, shots: &Path) {
    let url = format!("http://127.0.0.1:{port}/?token={token}");
    let auth = format!("token {token}");
    // Notebooks for the browser to run, through the contents API.
    let api = reqwest::blocking::Client::new();
    for (name, nb) in [
        (
            "python.ipynb",
            notebook(
                "biovm-python",
                "python",
                "import pysam, Bio\nprint('pysam', pysam.__version__, 'Bio', Bio.__version__)",
            ),
        ),
        (
            "r.ipynb",
            notebook(
                "ir",
                "R",
                "suppressMessages(library(Biostrings))\nprint(reverseComplement(DNAString('ACGTTG')))",
            ),
        ),
    ] {
        let r = api
            .put(format!("http://127.0.0.1:{port}/jupyter/api/contents/{name}"))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .body(nb.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "saving {name}: {}", r.status());
        // Its kernel started through the API first: a fresh server may
        // otherwise ask in a dialog which kernel to use.
        let kernel = nb["content"]["metadata"]["kernelspec"]["name"].clone();
        let session = serde_json::json!({
            "path": name, "name": name, "type": "notebook", "kernel": {"name": kernel},
        });
        let r = api
            .post(format!("http://127.0.0.1:{port}/jupyter/api/sessions"))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .body(session.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "a session for {name}: {}", r.status());
    }

    let b = webdriver::Browser::start(1280, 900);
    // The landing page, opened with the token, lists every tool.
    b.open(&url);
    b.wait_for("#tools", Duration::from_secs(60));
    let page = b.page_text();
    for tool in [
        "samtools",
        "bwa",
        "minimap2",
        "python3-pysam",
        "r-biostrings",
        "seaview",
        "jupyterlab",
    ] {
        assert!(page.contains(tool), "the landing page lacks {tool}: {page}");
    }
    b.screenshot(&shots.join("landing.png"));

    // JupyterLab: the launcher offers both kernels and the desktop.
    b.open(&format!(
        "http://127.0.0.1:{port}/jupyter/lab?reset&token={token}"
    ));
    b.wait_for(".jp-Launcher", Duration::from_secs(180));
    b.wait_for_text("Desktop", Duration::from_secs(60));
    let launcher = b.page_text();
    assert!(
        launcher.contains("Python 3 (image)") && launcher.contains("R"),
        "{launcher}"
    );
    b.screenshot(&shots.join("jupyterlab-launcher.png"));

    // Each notebook's cell, run in the browser.
    for (nb, kernel, expect, shot) in [
        (
            "python.ipynb",
            "Python 3 (image)",
            "pysam 0.",
            "jupyterlab-python.png",
        ),
        (
            "r.ipynb",
            "R",
            "6-letter DNAString object",
            "jupyterlab-r.png",
        ),
    ] {
        // `reset`: a fresh workspace, with only this notebook open.
        b.open(&format!(
            "http://127.0.0.1:{port}/jupyter/lab/tree/{nb}?reset"
        ));
        // The kernel must have started and be idle before the cell runs.
        b.wait_for_text(&format!("{kernel} | Idle"), Duration::from_secs(300));
        let cell = b.click_when_ready(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content",
            Duration::from_secs(120),
        );
        b.keys(&cell, "\u{E008}\u{E007}");
        b.wait_for_text(expect, Duration::from_secs(300));
        b.screenshot(&shots.join(shot));
    }
    let r_out = b.page_text();
    assert!(r_out.contains("CAACGT"), "the reverse complement: {r_out}");

    // The desktop, at its own path and through JupyterLab's launcher
    // entry: noVNC connects and shows Xfce.
    let info: Value = serde_json::from_str(
        &api.get(format!(
            "http://127.0.0.1:{port}/jupyter/server-proxy/servers-info"
        ))
        .header("Authorization", &auth)
        .send()
        .unwrap()
        .text()
        .unwrap(),
    )
    .unwrap();
    let entry = info["server_processes"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "desktop"))
        .unwrap_or_else(|| panic!("no desktop in JupyterLab's launcher: {info}"));
    assert_eq!(entry["launcher_entry"]["title"], "Desktop", "{entry}");
    // The launcher's link: the path relative to JupyterLab's /jupyter/.
    let path_info = entry["launcher_entry"]["path_info"]
        .as_str()
        .unwrap_or_default();
    let from_launcher = match path_info.strip_prefix("../") {
        Some(rest) => format!("/{rest}"),
        None => format!("/jupyter/{path_info}"),
    };
    assert_eq!(
        from_launcher, DESKTOP_PATH,
        "the launcher opens the desktop's page"
    );
    b.open(&format!("http://127.0.0.1:{port}{DESKTOP_PATH}"));
    let canvas = b.wait_for("#noVNC_container canvas", Duration::from_secs(60));
    // The first connection starts the VNC server and its Xfce session
    // (biovm-desktop.socket): noVNC connects once the server answers, the
    // session paints its panel and background after that.
    b.wait_for(".noVNC_connected", Duration::from_secs(180));
    // Debian's Xfce: a light panel along the top over a dark blue
    // desktop, with icons; noVNC unconnected, or a blank X screen, is
    // none of that.
    let xfce = |p: &Pixels| p.colours >= 64 && p.top > 170.0 && p.middle < 90.0;
    let since = std::time::Instant::now();
    let p = loop {
        let png = b.element_screenshot(&canvas, &shots.join("desktop.png"));
        let p = pixels(&png);
        if xfce(&p) || since.elapsed() > Duration::from_secs(180) {
            break p;
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    eprintln!(
        "desktop painted {} s after noVNC connected",
        since.elapsed().as_secs()
    );
    assert!(
        xfce(&p),
        "the desktop's canvas ({} colours, top rows' luminance {:.0}, middle's {:.0}) is not an Xfce desktop",
        p.colours,
        p.top,
        p.middle
    );
    drop(b);
}

/// The desktop's page, as the landing page links it.
const DESKTOP_PATH: &str = "/desktop/vnc.html?autoconnect=1&resize=remote&path=desktop/websockify";

/// The decoder reads a screenshot Chromium took of three bands (red, a
/// black-to-blue gradient, green): its scanlines use several PNG filters.
#[test]
fn the_png_decoder_reads_a_chromium_screenshot() {
    let png = fs::read(common::repo().join("tests/fixtures/png/three-bands.png")).unwrap();
    let (w, h, step, px) = decode_png(&png);
    assert_eq!((w, h), (120, 120));
    let at = |x: usize, y: usize| {
        let i = (y * w + x) * step;
        (px[i], px[i + 1], px[i + 2])
    };
    assert_eq!(at(5, 5), (255, 0, 0));
    assert_eq!(at(5, 100), (10, 200, 30));
    let (left, right) = (at(0, 60), at(119, 60));
    assert!(left.2 < 10 && right.2 > 245, "{left:?} {right:?}");
    assert!(at(60, 60).2 > 100 && at(60, 60).2 < 150, "{:?}", at(60, 60));
}
