//! The browser workbench an image opts into with `[workbench]`: JupyterLab
//! (its own PyPI environment, the `jupyterlab` recipe) with the image's
//! Python and R as kernels, an Xfce desktop on a VNC server reached through
//! noVNC, and a landing page listing every tool, all behind one nginx on
//! the guest's 127.0.0.1 that refuses any request without the instance's
//! token.
//!
//! Nothing secret is in the image. At its first boot an instance makes its
//! own token (or takes one from its user data) and its own TLS certificate,
//! and prints both on the serial console, where `biovm run` and
//! `biovm launch` read them. Public mode (user data: `public=true` in
//! [`USER_CONF`]) adds HTTPS on port 443 of every interface, with the same
//! token check.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::config::{Image, Workbench};
use crate::confined::Tree;
use crate::lock::LockedDeb;
use crate::manifest::Tool;
use crate::smoke::checks::system_check;

/// The file user data may write to set the token or turn on public mode.
pub const USER_CONF: &str = "/etc/biovm/workbench.conf";
/// The instance's token, certificate and generated proxy settings.
const STATE_DIR: &str = "/etc/biovm/workbench";
/// Sockets of the services behind the proxy.
const RUN_DIR: &str = "/run/biovm-workbench";
/// The landing page, also the image's documentation.
pub const LANDING_PAGE: &str = "/usr/share/doc/biovm/index.html";
/// What every console line of the first boot starts with.
const CONSOLE_TAG: &str = "biovm-workbench:";
/// The JupyterLab environment (the `jupyterlab` recipe's `pypi-env`).
const JUPYTER_ENV: &str = "/opt/biovm/jupyterlab";

/// The cloud-config lines (a `write_files` key) that turn on public mode.
pub fn public_mode_user_data() -> String {
    format!("write_files:\n  - path: {USER_CONF}\n    content: \"public=true\\n\"\n")
}

/// Debian packages the workbench adds to the image.
pub(crate) fn packages(w: &Workbench) -> Vec<&'static str> {
    let mut p = vec![
        // the proxy, the certificate, the checks' HTTP client
        "nginx-light",
        "openssl",
        "curl",
        // the kernels: the image's own Python and R
        "python3-ipykernel",
        "r-cran-irkernel",
    ];
    if w.desktop {
        p.extend([
            "tigervnc-standalone-server",
            "xfce4-session",
            "xfwm4",
            "xfce4-panel",
            "xfdesktop4",
            "xfce4-terminal",
            "xfce4-settings",
            "thunar",
            "dbus-x11",
            "fonts-dejavu-core",
            "novnc",
            "websockify",
        ]);
    }
    p
}

/// What the console shows of an instance's workbench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleAccess {
    pub token: String,
    pub tls_sha256: Option<String>,
}

/// The token (and certificate fingerprint) an instance printed on its
/// console at first boot; the last one printed counts.
pub fn from_console(console: &str) -> Option<ConsoleAccess> {
    let value = |key: &str| {
        let marker = format!("{CONSOLE_TAG} {key} ");
        console.rmatch_indices(&marker).next().map(|(i, _)| {
            console[i + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
                .collect::<String>()
        })
    };
    let token = value("token").filter(|t| token_ok(t))?;
    Some(ConsoleAccess {
        token,
        tls_sha256: value("tls-sha256").filter(|f| !f.is_empty()),
    })
}

/// A token as the first boot makes or accepts it.
fn token_ok(t: &str) -> bool {
    (32..=128).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Write the workbench into the image tree at `root`: services, proxy,
/// kernels, JupyterLab's settings and the landing page. `debs` gives the
/// tools' versions.
pub(crate) fn install(image: &Image, debs: &[LockedDeb], root: &Path) -> Result<()> {
    let Some(w) = image.workbench else {
        return Ok(());
    };
    let user = image
        .system
        .user
        .as_ref()
        .map(|u| u.name.as_str())
        .unwrap_or("debian");
    let tree = Tree::open(root)?;
    let file = |rel: &str, content: &str, mode: u32| -> Result<()> {
        let rel = Path::new(rel.trim_start_matches('/'));
        if let Some(parent) = rel.parent() {
            tree.create_dir_all(parent)?;
        }
        tree.write(rel, content.as_bytes(), mode)
    };
    let fill = |template: &str| {
        template
            .replace("@USER@", user)
            .replace("@PORT@", &w.port.to_string())
            .replace("@STATE@", STATE_DIR)
            .replace("@RUN@", RUN_DIR)
            .replace("@CONF@", USER_CONF)
            .replace("@ENV@", JUPYTER_ENV)
            .replace("@TAG@", CONSOLE_TAG)
    };
    file(
        "/usr/local/lib/biovm/workbench-first-boot",
        &fill(FIRST_BOOT),
        0o755,
    )?;
    file(
        "/etc/systemd/system/biovm-workbench-first-boot.service",
        &fill(FIRST_BOOT_UNIT),
        0o644,
    )?;
    file(
        "/etc/systemd/system/biovm-jupyterlab.service",
        &fill(JUPYTER_UNIT),
        0o644,
    )?;
    file(
        "/etc/jupyter/jupyter_server_config.py",
        &fill(&jupyter_config(w.desktop)),
        0o644,
    )?;
    file(
        "/usr/local/share/jupyter/kernels/biovm-python/kernel.json",
        PYTHON_KERNEL,
        0o644,
    )?;
    file(
        "/usr/local/share/jupyter/kernels/ir/kernel.json",
        R_KERNEL,
        0o644,
    )?;
    file(
        "/etc/tmpfiles.d/biovm-workbench.conf",
        &fill(TMPFILES),
        0o644,
    )?;
    file(
        "/opt/biovm/jupyterlab/share/jupyter/lab/settings/overrides.json",
        LAB_OVERRIDES,
        0o644,
    )?;
    file(
        "/etc/nginx/sites-available/biovm-workbench",
        &fill(NGINX_SITE),
        0o644,
    )?;
    file(
        "/etc/nginx/biovm-workbench-routes.conf",
        &fill(&nginx_routes(w.desktop)),
        0o644,
    )?;
    file(
        "/etc/systemd/system/nginx.service.d/biovm-workbench.conf",
        NGINX_DROP_IN,
        0o644,
    )?;
    let enabled = Path::new("etc/nginx/sites-enabled");
    tree.create_dir_all(enabled)?;
    tree.remove_file(&enabled.join("default"))?;
    tree.symlink(
        Path::new("/etc/nginx/sites-available/biovm-workbench"),
        &enabled.join("biovm-workbench"),
    )?;
    // Each unit the image starts, with the target that wants it.
    file(
        "/etc/systemd/system/biovm-jupyterlab.socket",
        &fill(JUPYTER_SOCKET),
        0o644,
    )?;
    file(
        "/etc/systemd/system/biovm-jupyterlab-proxy.service",
        &fill(&socket_proxy_unit(
            "JupyterLab socket's connections, handed to JupyterLab",
            "biovm-jupyterlab.service",
            "@RUN@/jupyter/server.sock",
        )),
        0o644,
    )?;
    // JupyterLab itself waits for its socket's first connection.
    let mut started = vec![
        ("multi-user.target", "biovm-workbench-first-boot.service"),
        ("sockets.target", "biovm-jupyterlab.socket"),
    ];
    if w.desktop {
        file(
            "/etc/systemd/system/biovm-desktop.service",
            &fill(DESKTOP_UNIT),
            0o644,
        )?;
        file(
            "/etc/systemd/system/biovm-websockify.service",
            &fill(WEBSOCKIFY_UNIT),
            0o644,
        )?;
        file(
            "/etc/systemd/system/biovm-websockify.socket",
            &fill(WEBSOCKIFY_SOCKET),
            0o644,
        )?;
        file(
            "/etc/systemd/system/biovm-websockify-proxy.service",
            &fill(&socket_proxy_unit(
                "websockify socket's connections, handed to websockify",
                "biovm-websockify.service",
                "127.0.0.1:6082",
            )),
            0o644,
        )?;
        file(
            "/usr/local/lib/biovm/workbench-desktop",
            &fill(DESKTOP_SCRIPT),
            0o755,
        )?;
        file(
            "/etc/systemd/system/biovm-desktop.socket",
            &fill(DESKTOP_SOCKET),
            0o644,
        )?;
        file(
            "/etc/systemd/system/biovm-desktop-proxy.service",
            &fill(&socket_proxy_unit(
                "the desktop socket's connections, handed to its VNC server",
                "biovm-desktop.service",
                "@RUN@/desktop/xvnc.sock",
            )),
            0o644,
        )?;
        // The desktop itself waits for its socket's first connection.
        started.extend([
            ("sockets.target", "biovm-websockify.socket"),
            ("sockets.target", "biovm-desktop.socket"),
        ]);
    }
    for (target, unit) in started {
        let wants = Path::new("etc/systemd/system").join(format!("{target}.wants"));
        tree.create_dir_all(&wants)?;
        tree.symlink(
            &Path::new("/etc/systemd/system").join(unit),
            &wants.join(unit),
        )?;
    }
    let versions: BTreeMap<String, String> = debs
        .iter()
        .map(|d| (d.name.clone(), d.version.clone()))
        .collect();
    let page = landing_page(image, &versions);
    file(LANDING_PAGE, &page, 0o644)
}

/// Escape text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The landing page: the workbench's links, then every tool of the image
/// with its version, category, summary, home page and how to check it,
/// and the reference data.
pub(crate) fn landing_page(image: &Image, versions: &BTreeMap<String, String>) -> String {
    let desktop = image.workbench.is_some_and(|w| w.desktop);
    let mut h = String::new();
    h.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{name}: biovm workbench</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <h1>{name}</h1>\n<p>{desc}</p>\n<nav>\n\
         <a id=\"open-jupyterlab\" href=\"/jupyter/lab\">JupyterLab</a>\n",
        name = esc(&image.name),
        desc = esc(&image.description),
    ));
    if desktop {
        h.push_str(&format!(
            "<a id=\"open-desktop\" href=\"{}\">Desktop</a>\n",
            esc(DESKTOP_PATH)
        ));
    }
    h.push_str(&format!(
        "</nav>\n<p>Debian {suite}, {arch}. Every tool below was checked in this image before it \
         was released; run a check yourself with the command shown.</p>\n\
         <h2 id=\"tools\">{n} tools</h2>\n<table>\n<thead><tr><th>tool</th><th>version</th>\
         <th>category</th><th>what it does</th><th>check</th></tr></thead>\n<tbody>\n",
        suite = esc(&image.base.suite),
        arch = esc(&image.base.architecture),
        n = image.recipes.len(),
    ));
    for r in &image.recipes {
        h.push_str(&format!(
            "<tr class=\"tool\" id=\"tool-{name}\"><td><a href=\"{home}\">{name}</a></td><td>{ver}</td>\
             <td>{cat}</td><td>{sum}</td><td><code>{check}</code></td></tr>\n",
            name = esc(&r.name),
            home = esc(&r.homepage),
            ver = esc(&r.version_in(versions).unwrap_or_else(|| "-".into())),
            cat = esc(&r.category),
            sum = esc(&r.summary),
            check = esc(&r.check.command),
        ));
    }
    h.push_str("</tbody>\n</table>\n");
    if !image.data.is_empty() {
        h.push_str(
            "<h2 id=\"data\">Reference data</h2>\n<table>\n<thead><tr><th>data set</th>\
             <th>organism</th><th>build</th><th>folder</th><th>licence</th></tr></thead>\n<tbody>\n",
        );
        for d in &image.data {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>/{}</code></td><td>{}</td></tr>\n",
                esc(&d.name),
                esc(&d.organism),
                esc(&d.build),
                esc(&d.folder().display().to_string()),
                esc(&d.license)
            ));
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str(
        "<p>This page is also in the image at <code>/usr/share/doc/biovm/index.html</code>.</p>\n\
         </body>\n</html>\n",
    );
    h
}

/// The desktop's own page: noVNC, connecting through the proxy.
pub const DESKTOP_PATH: &str =
    "/desktop/vnc.html?autoconnect=1&resize=remote&path=desktop/websockify";

/// The boot test's check of the workbench, `system/workbench`: the door
/// in every boot, its servers where `servers`.
///
/// The door: the first-boot unit, nginx and the servers' sockets are
/// active (JupyterLab and the desktop wait for their sockets' first
/// connection, so neither runs yet, and no refused request started one);
/// every listening socket is on the loopback interface; the token was
/// made at this boot (not taken from the image); every route refuses a
/// request without it; the landing page opens with it.
///
/// The servers (a test's first boot, and every boot with every check in
/// it): JupyterLab starts at its socket's first connection and answers
/// through the proxy with the token; the desktop's VNC server starts at
/// its socket's first connection and greets, and is stopped again. Under
/// software emulation JupyterLab's start is about 30 s of a guest's
/// processor: once per test proves it, as its program and configuration
/// are the same bytes in every artifact (`system/same-tree`), and nothing
/// about it depends on the firmware or the disk's controller.
pub fn system_checks(w: &Workbench, servers: bool) -> Vec<Tool> {
    let sockets = if w.desktop {
        "biovm-workbench-first-boot nginx biovm-jupyterlab.socket biovm-desktop.socket biovm-websockify.socket"
    } else {
        "biovm-workbench-first-boot nginx biovm-jupyterlab.socket"
    };
    let waiting = if w.desktop {
        "biovm-jupyterlab biovm-desktop biovm-websockify"
    } else {
        "biovm-jupyterlab"
    };
    let (servers_up, servers_expect) = if servers {
        server_checks(w)
    } else {
        (String::new(), String::new())
    };
    vec![system_check(
        "workbench",
        format!(
            r#"set -e
port={port}
for u in {sockets}; do
    test "$(systemctl is-active "$u")" = active || {{ echo "$u: $(systemctl is-active "$u")"; exit 1; }}
done
echo "units active: {sockets}"
# Every listening TCP socket of the workbench's programs: loopback only.
loopback_only() {{
    ss -Hltnp | grep -E '"(nginx|jupyter[^"]*|python3[^"]*|Xtigervnc|websockify)"' > /tmp/workbench-sockets || true
    # Public mode (user data) adds nginx on port 443 of every interface.
    if grep -q 'listen 443' {state}/nginx-public.conf; then
        sed -i -E '/^\S+\s+\S+\s+\S+\s+(0\.0\.0\.0|\[::\]):443 .*"nginx"/d' /tmp/workbench-sockets
    fi
    if grep -vE '^\S+\s+\S+\s+\S+\s+(127\.0\.0\.1|\[::1\]):' /tmp/workbench-sockets; then
        echo "listening beyond the loopback interface"; exit 1
    fi
    grep -q "127.0.0.1:$port " /tmp/workbench-sockets
}}
loopback_only
echo "listening on 127.0.0.1 only"
tok={state}/token
test -s "$tok"
test "$(stat -c %a "$tok")" = 600
booted=$(date -d "$(uptime -s)" +%s)
test "$(stat -c %Y "$tok")" -ge "$((booted - 5))"
echo "token made at this boot"
code() {{ curl -s -o /dev/null -w '%{{http_code}}' "$@"; }}
t=$(cat "$tok")
for path in / /jupyter/api/status /jupyter/lab{desktop}; do
    c=$(code "http://127.0.0.1:$port$path")
    test "$c" = 403 || {{ echo "$path without the token: $c"; exit 1; }}
done
echo "refused without the token"
test "$(code "http://127.0.0.1:$port/?token=$t")" = 200
echo "landing page with the token"
for u in {waiting}; do
    test "$(systemctl is-active "$u")" = inactive || {{ echo "$u started before its socket's first connection: $(systemctl is-active "$u")"; exit 1; }}
done
echo "waiting for their sockets' first connection: {waiting}"
{servers_up}"#,
            port = w.port,
            state = STATE_DIR,
            desktop = if w.desktop { " /desktop/vnc.html /desktop/websockify" } else { "" },
        ),
        &format!("(?s)^units active: .*^listening on 127\\.0\\.0\\.1 only$.*^token made at this boot$.*^refused without the token$\n^landing page with the token$\n^waiting for their sockets' first connection: [^\n]*${servers_expect}"),
        300,
    )]
}

/// The part of [`system_checks`] that starts the workbench's servers
/// through their sockets, and what its output must then say.
fn server_checks(w: &Workbench) -> (String, String) {
    let mut script = String::from(
        r#"i=0
until [ "$(code "http://127.0.0.1:$port/jupyter/api/status?token=$t")" = 200 ]; do
    i=$((i + 1)); [ $i -lt 60 ] || { echo "JupyterLab did not answer"; exit 1; }; sleep 2
done
test "$(systemctl is-active biovm-jupyterlab)" = active
echo "JupyterLab started at its socket's first connection, answered with the token"
test "$(code "http://127.0.0.1:$port/jupyter/api/status")" = 403
echo "JupyterLab refused without the token"
"#,
    );
    let mut expect = String::from(
        "\n^JupyterLab started at its socket's first connection, answered with the token$\n^JupyterLab refused without the token$",
    );
    if w.desktop {
        script.push_str(&format!(
            r#"c=$(code "http://127.0.0.1:$port/desktop/websockify?token=$t")
test "$c" = 405 || {{ echo "websockify through the proxy (not a websocket): $c, not its 405"; exit 1; }}
test "$(systemctl is-active biovm-websockify)" = active
echo "websockify started at its socket's first connection"
v=$(timeout 150 python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(140)
s.connect(sys.argv[1])
sys.stdout.write(s.recv(12).decode().strip())' {run}/desktop/vnc.sock) || true
case "$v" in
    "RFB 003."*) echo "desktop started at its first connection: $v" ;;
    *) echo "the desktop's socket answered \"$v\", not a VNC server's greeting"; exit 1 ;;
esac
test "$(systemctl is-active biovm-desktop)" = active
"#,
            run = RUN_DIR
        ));
        expect.push_str(
            "\n^websockify started at its socket's first connection$\n^desktop started at its first connection: RFB 003\\.\\d+$",
        );
    }
    script.push_str(
        "loopback_only\necho \"with the servers running, listening on 127.0.0.1 only\"\n",
    );
    expect.push_str("\n^with the servers running, listening on 127\\.0\\.0\\.1 only$");
    if w.desktop {
        // Stopped again, as it was at boot.
        script.push_str(
            "systemctl stop biovm-desktop.service
test \"$(systemctl is-active biovm-desktop.socket)\" = active
echo \"desktop stopped, its socket listening\"
",
        );
        expect.push_str("\n^desktop stopped, its socket listening$");
    }
    (script, expect)
}

const STYLE: &str = "body { font-family: sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
nav a { display: inline-block; margin: 0 1em 1em 0; padding: .6em 1.2em; background: #1f5f8b; color: #fff; border-radius: 4px; text-decoration: none; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid #ddd; vertical-align: top; }
code { font-size: .9em; }
";

/// The first boot's script: the instance's token and certificate, the
/// proxy's token check, public mode. Runs before nginx and JupyterLab.
const FIRST_BOOT: &str = r#"#!/bin/sh
# Written by biovm. The workbench's secrets are made here, at an instance's
# first boot, never in the image: the token (or the one user data sets in
# @CONF@) and a self-signed TLS certificate. Public mode
# (`public=true` in @CONF@) serves HTTPS on port 443 of every interface.
set -eu
umask 077
state=@STATE@
conf=@CONF@
mkdir -p "$state"
# Entered by websockify (the image's user) for its targets file alone;
# every other file here is root's only.
chmod 0711 "${state%/*}" "$state"
setting() {
    [ -f "$conf" ] || return 0
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$conf" | tail -n 1 | tr -d '[:space:]"'
}
if [ ! -s "$state/token" ]; then
    t=$(setting token)
    if [ -n "$t" ]; then
        case "$t" in *[!A-Za-z0-9_-]*) bad=1 ;; *) bad=0 ;; esac
        if [ "$bad" = 1 ] || [ ${#t} -lt 32 ] || [ ${#t} -gt 128 ]; then
            echo "@TAG@ $conf: token must be 32 to 128 of A-Z a-z 0-9 - _; made one instead" >&2
            t=
        fi
    fi
    if [ -z "$t" ]; then
        t=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    fi
    printf '%s\n' "$t" > "$state/token.new"
    mv "$state/token.new" "$state/token"
fi
t=$(cat "$state/token")
printf 'JUPYTER_TOKEN=%s\n' "$t" > "$state/jupyter.env"
if [ ! -s "$state/tls.crt" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=$(hostname)" -keyout "$state/tls.key.new" -out "$state/tls.crt.new" 2>/dev/null
    mv "$state/tls.key.new" "$state/tls.key"
    mv "$state/tls.crt.new" "$state/tls.crt"
fi
fp=$(openssl x509 -noout -fingerprint -sha256 -in "$state/tls.crt" | sed 's/.*=//')
# The desktop's own key: only the proxy, which adds it, reaches the VNC
# server through websockify (other local users of the guest do not).
if [ ! -s "$state/vnc-key" ]; then
    head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' > "$state/vnc-key"
fi
k=$(cat "$state/vnc-key")
printf '%s: unix_socket:@RUN@/desktop/vnc.sock\n' "$k" > "$state/websockify-targets"
chgrp "$(id -g @USER@)" "$state/websockify-targets"
chmod 0640 "$state/websockify-targets"
# A map compares plain strings without regard to case: a regular
# expression (`~`, case-sensitive) matches the token exactly.
cat > "$state/nginx-token.conf" <<EOF
# Written at first boot by biovm: the token every request must carry.
map \$arg_token \$biovm_arg_ok { default 0; "~^$t\$" 1; }
map \$cookie_biovm_token \$biovm_cookie_ok { default 0; "~^$t\$" 1; }
map \$http_authorization \$biovm_header_ok { default 0; "~^token $t\$" 1; }
map \$uri \$biovm_vnc_key { default "$k"; }
EOF
if [ "$(setting public)" = true ]; then
    cat > "$state/nginx-public.conf" <<EOF
# Written at first boot by biovm: public mode, HTTPS on every interface.
server {
    listen 443 ssl;
    listen [::]:443 ssl;
    ssl_certificate $state/tls.crt;
    ssl_certificate_key $state/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    include /etc/nginx/biovm-workbench-routes.conf;
}
EOF
    mode="public: https on port 443 of every interface"
else
    printf '# Public mode is off: the workbench is on 127.0.0.1 only.\n' > "$state/nginx-public.conf"
    mode="local: 127.0.0.1 only (reach it through an SSH tunnel)"
fi
# Each line alone, so that a console shared with other output keeps them whole.
for line in "mode $mode" "token $t" "url http://127.0.0.1:@PORT@/?token=$t" "tls-sha256 $fp"; do
    echo "@TAG@ $line" > /dev/console 2>/dev/null || true
    echo "@TAG@ $line"
done
"#;

const FIRST_BOOT_UNIT: &str = "# Written by biovm.
[Unit]
Description=biovm workbench: this instance's token and certificate
After=cloud-init.service local-fs.target
Before=nginx.service biovm-jupyterlab.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/biovm/workbench-first-boot

[Install]
WantedBy=multi-user.target
";

const NGINX_DROP_IN: &str = "# Written by biovm: the proxy needs the instance's token first.
[Unit]
Requires=biovm-workbench-first-boot.service
After=biovm-workbench-first-boot.service
";

const JUPYTER_UNIT: &str = "# Written by biovm: started by biovm-jupyterlab.socket's first connection
# (through biovm-jupyterlab-proxy.service), not at boot.
[Unit]
Description=biovm workbench: JupyterLab
Requires=biovm-workbench-first-boot.service
After=biovm-workbench-first-boot.service network.target

[Service]
User=@USER@
EnvironmentFile=@STATE@/jupyter.env
WorkingDirectory=~
ExecStartPre=/bin/mkdir -p work
ExecStart=@ENV@/bin/jupyter-lab --config=/etc/jupyter/jupyter_server_config.py
# Started once JupyterLab listens, so the proxy's first connection reaches it.
ExecStartPost=/bin/sh -c 'i=0; until [ -S @RUN@/jupyter/server.sock ]; do i=$((i + 1)); [ $i -lt 1500 ] || exit 1; sleep 0.2; done'
TimeoutStartSec=330
Restart=on-failure
RestartSec=5
";

/// JupyterLab's socket, the one the proxy (nginx) talks to: JupyterLab
/// starts at its first connection, not at boot. Under software emulation
/// its start took about 30 s of a BioLinux guest's one processor, beside
/// cloud-init's stages, in every boot, and it holds memory on every
/// instance whether anyone opens it or not; on a cloud's hardware it
/// starts in a few seconds, once. JupyterLab cannot take a socket from
/// systemd, so systemd's socket proxy hands the connections on, as for the
/// desktop.
const JUPYTER_SOCKET: &str = "# Written by biovm.
[Unit]
Description=biovm workbench: JupyterLab's socket (JupyterLab starts at the first connection)

[Socket]
ListenStream=@RUN@/jupyter/jupyter.sock
SocketUser=@USER@
SocketGroup=www-data
SocketMode=0660
Service=biovm-jupyterlab-proxy.service

[Install]
WantedBy=sockets.target
";

/// The folders of JupyterLab's socket (its user's and the proxy's only)
/// and of the VNC server's (its user's only).
const TMPFILES: &str = "# Written by biovm: JupyterLab's socket, for its user and the proxy only;
# the desktop's VNC socket, for its user only.
d @RUN@ 0755 root root -
d @RUN@/jupyter 0750 @USER@ www-data -
d @RUN@/desktop 0700 @USER@ @USER@ -
";

/// JupyterLab's settings: no news, no update checks (nothing calls out).
const LAB_OVERRIDES: &str = r#"{
  "@jupyterlab/apputils-extension:notification": {
    "checkForUpdates": false,
    "fetchNews": "false"
  }
}
"#;

/// The desktop: a VNC server on display :1 that listens on a socket only
/// its user may open, and an Xfce session in it.
const DESKTOP_SCRIPT: &str = r#"#!/bin/sh
# Written by biovm: the workbench's desktop. A VNC server on display :1 that
# listens on a socket only this user may open (reached through the desktop's
# socket unit, whose one client is websockify, which only the proxy can
# use), then an Xfce session in it; the session's end ends the server.
set -eu
Xtigervnc :1 -rfbport -1 -rfbunixpath @RUN@/desktop/xvnc.sock -rfbunixmode 0600 \
    -SecurityTypes None -geometry 1280x800 -depth 24 -nolisten tcp -desktop "$(hostname) desktop" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
i=0
while [ ! -S /tmp/.X11-unix/X1 ]; do
    i=$((i + 1))
    if [ "$i" -gt 300 ] || ! kill -0 "$server" 2>/dev/null; then
        echo "the VNC server did not start" >&2
        exit 1
    fi
    sleep 0.2
done
export DISPLAY=:1
dbus-launch --exit-with-session xfce4-session
"#;

const DESKTOP_UNIT: &str = "# Written by biovm: started by biovm-desktop.socket's first connection
# (through biovm-desktop-proxy.service), not at boot.
[Unit]
Description=biovm workbench: the Xfce desktop on a VNC server (a socket for its user only)
After=network.target

[Service]
User=@USER@
WorkingDirectory=~
ExecStart=/usr/local/lib/biovm/workbench-desktop
# Started once the VNC server listens, so the proxy's first connection
# reaches it.
ExecStartPost=/bin/sh -c 'i=0; until [ -S @RUN@/desktop/xvnc.sock ]; do i=$((i + 1)); [ $i -lt 600 ] || exit 1; sleep 0.2; done'
";

/// The desktop's socket: the VNC server and its Xfce session start at the
/// first connection, not at boot. Under software emulation the desktop
/// took 36 s of CPU in a BioLinux guest's first 194 s (its boot finished
/// at 97 s; cloud-init's four stages took 24 s, JupyterLab 31 s, on the
/// same processor), spent for nothing when nobody opens the desktop. A VNC server cannot take a
/// socket from systemd, so systemd's socket proxy hands the connections on.
const DESKTOP_SOCKET: &str = "# Written by biovm.
[Unit]
Description=biovm workbench: the desktop's socket (its VNC server starts at the first connection)

[Socket]
ListenStream=@RUN@/desktop/vnc.sock
SocketUser=@USER@
SocketGroup=@USER@
SocketMode=0600
Service=biovm-desktop-proxy.service

[Install]
WantedBy=sockets.target
";

const WEBSOCKIFY_UNIT: &str = "# Written by biovm: started by biovm-websockify.socket's first connection
# (through biovm-websockify-proxy.service), not at boot.
[Unit]
Description=biovm workbench: websockify from the proxy to the desktop's VNC server
After=biovm-desktop.socket

[Service]
User=@USER@
ExecStart=/usr/bin/websockify --token-plugin TokenFile --token-source @STATE@/websockify-targets 127.0.0.1:6082
# Started once websockify listens, so the proxy's first connection reaches it.
ExecStartPost=/bin/sh -c 'i=0; until ss -Hltn \"sport = :6082\" | grep -q .; do i=$((i + 1)); [ $i -lt 600 ] || exit 1; sleep 0.2; done'
Restart=on-failure
RestartSec=5
";

/// websockify's socket, the one the proxy (nginx) and JupyterLab's
/// launcher talk to: websockify starts at its first connection, with the
/// desktop, not at boot. Its start imports numpy (173 ms of the 253 ms
/// its imports take natively in BioLinux), many times that under software
/// emulation, at every boot, for a desktop nobody may open.
const WEBSOCKIFY_SOCKET: &str = "# Written by biovm.
[Unit]
Description=biovm workbench: websockify's socket (websockify starts at the first connection)

[Socket]
ListenStream=127.0.0.1:6081
Service=biovm-websockify-proxy.service

[Install]
WantedBy=sockets.target
";

/// The unit of systemd's socket proxy (`described`) that a socket unit
/// starts at its first connection: it starts `service` with it, bound to
/// it, and hands every connection on to `to`, where that service listens.
/// JupyterLab, websockify and the VNC server cannot take a socket from
/// systemd, hence the proxy.
fn socket_proxy_unit(described: &str, service: &str, to: &str) -> String {
    format!(
        "# Written by biovm.
[Unit]
Description=biovm workbench: {described}
BindsTo={service}
After={service}

[Service]
User=@USER@
ExecStart=/lib/systemd/systemd-socket-proxyd {to}
"
    )
}

const NGINX_SITE: &str = "# Written by biovm: the workbench's one door, on 127.0.0.1 only.
# Room for the token in the maps' keys.
map_hash_bucket_size 128;
include @STATE@/nginx-token.conf;
map \"$biovm_arg_ok$biovm_cookie_ok$biovm_header_ok\" $biovm_ok { \"000\" 0; default 1; }
map $biovm_arg_ok $biovm_set_cookie {
    1 \"biovm_token=$arg_token; Path=/; HttpOnly; SameSite=Strict\";
    default \"\";
}
map $http_upgrade $biovm_connection { default upgrade; \"\" close; }

server {
    listen 127.0.0.1:@PORT@;
    include /etc/nginx/biovm-workbench-routes.conf;
}

include @STATE@/nginx-public.conf;
";

fn nginx_routes(desktop: bool) -> String {
    let mut s = String::from(
        "# Written by biovm: the workbench's routes; each refuses a request without the token.
server_name _;
server_tokens off;
if ($biovm_ok = 0) {
    return 403 \"biovm workbench: this needs the instance's token\\n\";
}
add_header Set-Cookie $biovm_set_cookie always;
add_header X-Content-Type-Options nosniff always;
root /usr/share/doc/biovm;
location = / {
    try_files /index.html =404;
}
location /jupyter/ {
    proxy_pass http://unix:@RUN@/jupyter/jupyter.sock;
    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $biovm_connection;
    proxy_read_timeout 1d;
    proxy_buffering off;
    client_max_body_size 0;
}
",
    );
    if desktop {
        s.push_str(
            "location /desktop/ {
    alias /usr/share/novnc/;
}
location = /desktop/websockify {
    proxy_pass http://127.0.0.1:6081/websockify?token=$biovm_vnc_key;
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $biovm_connection;
    proxy_read_timeout 1d;
}
",
        );
    }
    s
}

fn jupyter_config(desktop: bool) -> String {
    let mut s = String::from(
        "# Written by biovm: the workbench's JupyterLab, behind the proxy that checks
# the instance's token (which JupyterLab checks too: JUPYTER_TOKEN).
c = get_config()  # noqa: F821
c.ServerApp.sock = \"@RUN@/jupyter/server.sock\"
# Its one client is its socket's proxy (biovm-jupyterlab-proxy), run as
# this user; the proxy's (www-data) talks to that socket.
c.ServerApp.sock_mode = \"0600\"
c.ServerApp.base_url = \"/jupyter/\"
c.ServerApp.root_dir = \"work\"
c.ServerApp.open_browser = False
# The proxy decides who may come in; the Host header it passes on is the
# address the browser used.
c.ServerApp.allow_remote_access = True
# The image's own Python and R, not the server's environment.
c.KernelSpecManager.ensure_native_kernel = False
c.KernelSpecManager.allowed_kernelspecs = {\"biovm-python\", \"ir\"}
c.MultiKernelManager.default_kernel_name = \"biovm-python\"
# No calls home.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = \"jupyterlab.NeverCheckForUpdate\"
c.LabApp.extension_manager = \"readonly\"
# jupyter-lsp (a JupyterLab dependency) would look for every language
# server it knows at each start, running R to ask for R's: the image has
# none, and under software emulation the search took seconds of the
# server's start. A language server added to the environment is named in
# c.LanguageServerManager.language_servers to be used.
c.LanguageServerManager.autodetect = False
",
    );
    if desktop {
        s.push_str(
            "# The desktop in JupyterLab's launcher (jupyter-server-proxy): the entry
# opens the proxy's own /desktop/ page (a path relative to /jupyter/); the
# proxied port is websockify's, which refuses anyone without the desktop's
# key (only the proxy's /desktop/websockify adds it).
c.ServerProxy.servers = {
    \"desktop\": {
        \"command\": [],
        \"port\": 6081,
        \"new_browser_tab\": True,
        \"launcher_entry\": {
            \"title\": \"Desktop\",
            \"path_info\": \"../desktop/vnc.html?autoconnect=1&resize=remote&path=desktop/websockify\",
        },
    },
}
",
        );
    }
    s
}

const PYTHON_KERNEL: &str = r#"{
  "argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
  "display_name": "Python 3 (image)",
  "language": "python",
  "metadata": {"debugger": true}
}
"#;

const R_KERNEL: &str = r#"{
  "argv": ["/usr/bin/R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
  "display_name": "R",
  "language": "R"
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_gives_the_last_token_and_fingerprint() {
        let t1 = "a".repeat(43);
        let t2 = "B-_9".repeat(11);
        let console = format!(
            "boot...\r\n{CONSOLE_TAG} token {t1}\r\n[  OK  ] Started x\r\n\
             {CONSOLE_TAG} token {t2}\r\n{CONSOLE_TAG} tls-sha256 AB:CD:01\r\n"
        );
        let a = from_console(&console).unwrap();
        assert_eq!(a.token, t2);
        assert_eq!(a.tls_sha256.as_deref(), Some("AB:CD:01"));
        // Too short, or none at all: no token.
        assert_eq!(from_console(&format!("{CONSOLE_TAG} token abc\n")), None);
        assert_eq!(from_console("nothing here"), None);
    }

    fn workbench_image() -> Image {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        crate::config::load_image(&repo.join("images/workbench.toml"), &repo.join("recipes"))
            .unwrap()
    }

    #[test]
    fn the_image_file_brings_jupyterlab_and_the_services_packages() {
        let image = workbench_image();
        assert_eq!(
            image.workbench,
            Some(Workbench {
                desktop: true,
                port: 8080
            })
        );
        // Not named in [recipes], added by [workbench].
        let j = image
            .recipes
            .iter()
            .find(|r| r.name == "jupyterlab")
            .unwrap();
        assert_eq!(j.install.pypi_env.as_deref(), Some("jupyterlab"));
        assert_eq!(crate::pypi::env_of(j), JUPYTER_ENV);
        let wanted = crate::rootfs::requested_packages(&image);
        for p in [
            "nginx-light",
            "r-cran-irkernel",
            "python3-ipykernel",
            "tigervnc-standalone-server",
            "novnc",
            "websockify",
        ] {
            assert!(wanted.iter().any(|w| w == p), "{p} not requested");
        }
        // Without the desktop, none of its packages.
        let mut small = image.clone();
        small.workbench = Some(Workbench {
            desktop: false,
            port: 8080,
        });
        let wanted = crate::rootfs::requested_packages(&small);
        assert!(!wanted
            .iter()
            .any(|w| w == "novnc" || w.starts_with("xfce4")));
    }

    #[test]
    fn the_landing_page_lists_every_tool_with_its_locked_version() {
        let mut image = workbench_image();
        image.description = "<script>alert(1)</script> & more".into();
        let versions: BTreeMap<String, String> = [("samtools", "1.16.1-1"), ("bwa", "0.7.17-7")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let page = landing_page(&image, &versions);
        assert!(page.contains(&format!(">{} tools<", image.recipes.len())));
        for r in &image.recipes {
            assert!(
                page.contains(&format!("id=\"tool-{}\"", r.name)),
                "{}",
                r.name
            );
            assert!(page.contains(&esc(&r.check.command)), "{}", r.name);
        }
        assert!(page.contains("<td>1.16.1-1</td>"));
        assert!(page.contains("<td>4.6.6</td>"), "the PyPI pin");
        assert!(page.contains(&format!("href=\"{}\"", esc(DESKTOP_PATH))));
        assert!(page.contains("href=\"/jupyter/lab\""));
        assert!(!page.contains("<script>"), "text is escaped");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
    }

    #[test]
    fn the_boot_check_starts_the_servers_only_where_asked() {
        use crate::smoke::checks::judge;
        let image = workbench_image();
        let w = image.workbench.as_ref().unwrap();
        let door = system_checks(w, false).remove(0);
        let servers = system_checks(w, true).remove(0);
        assert_eq!(
            (door.name.as_str(), servers.name.as_str()),
            ("system/workbench", "system/workbench")
        );
        let first = "/jupyter/api/status?token=$t";
        assert!(
            !door.check.command.contains(first),
            "{}",
            door.check.command
        );
        assert!(servers.check.command.contains(first));
        assert!(!door.check.command.contains("desktop/vnc.sock"));
        let door_said = "units active: biovm-workbench-first-boot nginx biovm-jupyterlab.socket biovm-desktop.socket biovm-websockify.socket
listening on 127.0.0.1 only
token made at this boot
refused without the token
landing page with the token
waiting for their sockets' first connection: biovm-jupyterlab biovm-desktop biovm-websockify
";
        let servers_said = format!(
            "{door_said}JupyterLab started at its socket's first connection, answered with the token
JupyterLab refused without the token
websockify started at its socket's first connection
desktop started at its first connection: RFB 003.008
with the servers running, listening on 127.0.0.1 only
desktop stopped, its socket listening
"
        );
        assert!(judge(&door, 0, door_said).passed());
        assert!(judge(&servers, 0, &servers_said).passed());
        // The servers' part must have run and said so.
        assert!(!judge(&servers, 0, door_said).passed());
        let no_desktop =
            servers_said.replace("desktop started at its first connection: RFB 003.008\n", "");
        assert!(!judge(&servers, 0, &no_desktop).passed());
        // A server that started before its socket's first connection fails
        // the door.
        let early = door_said.replace(
            "waiting for their sockets' first connection: biovm-jupyterlab biovm-desktop biovm-websockify\n",
            "biovm-jupyterlab started before its socket's first connection: active\n",
        );
        assert!(!judge(&door, 1, &early).passed());
        assert!(!judge(&door, 0, &early).passed());
    }

    #[test]
    fn install_writes_the_services_and_no_secret() {
        let image = workbench_image();
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("etc/nginx/sites-enabled")).unwrap();
        std::fs::write(root.join("etc/nginx/sites-enabled/default"), "server {}").unwrap();
        install(&image, &[], root).unwrap();
        assert!(!root.join("etc/nginx/sites-enabled/default").exists());
        assert_eq!(
            std::fs::read_link(root.join("etc/nginx/sites-enabled/biovm-workbench")).unwrap(),
            Path::new("/etc/nginx/sites-available/biovm-workbench")
        );
        for u in [
            "multi-user.target.wants/biovm-workbench-first-boot.service",
            "sockets.target.wants/biovm-jupyterlab.socket",
            "sockets.target.wants/biovm-websockify.socket",
            "sockets.target.wants/biovm-desktop.socket",
        ] {
            let link = root.join("etc/systemd/system").join(u);
            assert!(std::fs::symlink_metadata(&link).is_ok(), "{u} not enabled");
        }
        // JupyterLab and the desktop start at their sockets' first
        // connection, not at boot.
        for u in [
            "biovm-desktop.service",
            "biovm-jupyterlab.service",
            "biovm-websockify.service",
        ] {
            let wants = root.join("etc/systemd/system/multi-user.target.wants");
            assert!(std::fs::symlink_metadata(wants.join(u)).is_err(), "{u}");
        }
        // nginx talks to JupyterLab's socket unit, whose proxy hands the
        // connections to the socket JupyterLab listens on.
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let socket = read("etc/systemd/system/biovm-jupyterlab.socket");
        let listen = "/run/biovm-workbench/jupyter/jupyter.sock";
        assert!(
            socket.contains(&format!("ListenStream={listen}\n")),
            "{socket}"
        );
        assert!(socket.contains("SocketGroup=www-data\n"), "{socket}");
        let routes = read("etc/nginx/biovm-workbench-routes.conf");
        assert!(
            routes.contains(&format!("http://unix:{listen};")),
            "{routes}"
        );
        let jproxy = read("etc/systemd/system/biovm-jupyterlab-proxy.service");
        let served = "/run/biovm-workbench/jupyter/server.sock";
        assert!(
            jproxy.contains(&format!("systemd-socket-proxyd {served}\n")),
            "{jproxy}"
        );
        assert!(
            jproxy.contains("BindsTo=biovm-jupyterlab.service\n"),
            "{jproxy}"
        );
        let config = read("etc/jupyter/jupyter_server_config.py");
        assert!(
            config.contains(&format!("c.ServerApp.sock = \"{served}\"\n")),
            "{config}"
        );
        let proxy =
            std::fs::read_to_string(root.join("etc/systemd/system/biovm-desktop-proxy.service"))
                .unwrap();
        assert!(proxy.contains("BindsTo=biovm-desktop.service\n"), "{proxy}");
        assert!(
            proxy.contains("systemd-socket-proxyd /run/biovm-workbench/desktop/xvnc.sock\n"),
            "{proxy}"
        );
        let unit =
            std::fs::read_to_string(root.join("etc/systemd/system/biovm-jupyterlab.service"))
                .unwrap();
        assert!(unit.contains("User=biovm\n"), "{unit}");
        assert!(!unit.contains('@'), "every placeholder filled: {unit}");
        let site = std::fs::read_to_string(root.join("etc/nginx/sites-available/biovm-workbench"))
            .unwrap();
        assert!(site.contains("listen 127.0.0.1:8080;"), "{site}");
        assert!(
            !site.contains("listen 8080") && !site.contains("0.0.0.0"),
            "{site}"
        );
        // Every placeholder of every file written is filled.
        let left = regex::Regex::new("@[A-Z]+@").unwrap();
        let mut stack = vec![root.to_path_buf()];
        let mut files = 0;
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    stack.push(p);
                } else if t.is_file() {
                    files += 1;
                    let text = std::fs::read_to_string(&p).unwrap();
                    assert!(!left.is_match(&text), "{} keeps a placeholder", p.display());
                }
            }
        }
        assert!(files >= 12, "{files} files");
        // The token and certificate are made at first boot, not here.
        assert!(!root.join("etc/biovm/workbench").exists());
        assert!(root.join("usr/share/doc/biovm/index.html").is_file());
    }
}
