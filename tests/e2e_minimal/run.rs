//! `biovm run`: a detached VM answers on its forwarded SSH port.

use super::*;

/// `biovm run --detach` boots the image with the user's key injected by
/// cloud-init, and its SSH server lets that key in on the forwarded port;
/// the guest reaches nothing beyond it (QEMU's `restrict=on`).
#[test]
#[ignore = "needs root, network and minutes"]
fn biovm_run_answers_on_its_ssh_port_with_the_injected_key() {
    let _t = common::timed();
    let out = minimal();
    let d = scratch("e2e-run");
    let key = d.join("id_ed25519");
    common::ssh_keygen(&key);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let _g = BOOTS.write().unwrap_or_else(|e| e.into_inner());
    let raw = out.join("minimal.raw");
    let before = biovm_sha(&raw);
    let t0 = Instant::now();
    let o = biovm(&[
        "run",
        raw.to_str().unwrap(),
        "--detach",
        "--ssh-key",
        d.join("id_ed25519.pub").to_str().unwrap(),
        "--ssh-port",
        &port,
        "--state",
        d.join("state").to_str().unwrap(),
        "--memory",
        "1024",
        "--cpus",
        "1",
    ]);
    eprintln!(
        "biovm run: SSH up after {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "biovm run failed: {stdout}");
    let pid: i32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stop:    kill "))
        .unwrap_or_else(|| panic!("no pid in {stdout}"))
        .trim()
        .parse()
        .unwrap();
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _stop = Stop(pid);
    assert!(
        stdout.contains(&format!("-p {port} ")) && stdout.contains("biovm@127.0.0.1"),
        "{stdout}"
    );
    let ssh = |cmd: &str| {
        Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .args([
                "-p",
                &port,
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=30",
                "biovm@127.0.0.1",
                cmd,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = ssh("id -un; samtools --version | head -n 1; timeout 5 bash -c 'echo > /dev/tcp/10.0.2.2/22' && echo reached-host || echo isolated");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "ssh with the injected key failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "biovm", "{text}");
    assert!(lines[1].starts_with("samtools 1."), "{text}");
    assert_eq!(lines[2], "isolated", "restrict=on: {text}");
    // Another key is refused.
    let other = d.join("other");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let o = Command::new("ssh")
        .arg("-i")
        .arg(&other)
        .args([
            "-p",
            &port,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "biovm@127.0.0.1",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success(), "a key never injected was accepted");
    drop(_stop);
    assert_eq!(biovm_sha(&raw), before, "the artifact is untouched");
}
