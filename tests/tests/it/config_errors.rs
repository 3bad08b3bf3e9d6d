//! Bad config files: the real binaries refuse them with the file, the key path and the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation fails loudly

use std::process::Command;

use integration_tests::agents::binary;

fn check(bin: &str, file_name: &str, text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(file_name);
    std::fs::write(&file, text).expect("write");
    let out = Command::new(binary(bin))
        .arg("--check-config")
        .arg("-c")
        .arg(&file)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn nerve_refuses_unknown_key_and_bad_duration_naming_file_and_keys() {
    let (code, err) = check(
        "nerve",
        "bad-nerve.yaml",
        "services:\n  - name: web\n    host: 127.0.0.1\n    port: 80\n    zk_hosts: 127.0.0.1:2181\n    zk_path: /s/web\n    chek_interval: 1s\n    checks: [{type: tcp}]\n  - name: api\n    host: 127.0.0.1\n    port: 81\n    zk_hosts: 127.0.0.1:2181\n    zk_path: /s/api\n    checks: [{type: tcp, timeout: 2 seconds}]\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("bad-nerve.yaml"), "{err}");
    assert!(
        err.contains("services[0].chek_interval"),
        "unknown key named: {err}"
    );
    assert!(
        err.contains("services[1].checks[0].timeout"),
        "both errors at once: {err}"
    );
    assert!(err.contains("invalid duration"), "{err}");
}

#[test]
fn synapse_refuses_unknown_key_and_bad_duration_naming_file_and_keys() {
    let (code, err) = check(
        "synapse",
        "bad-synapse.json",
        r#"{"services": [{"name": "web", "zk_hosts": "127.0.0.1:2181", "zk_path": "/s/web", "listen": 3306, "connect_timeout": "fast"}], "colour": 1}"#,
    );
    assert_ne!(code, 0);
    assert!(err.contains("bad-synapse.json"), "{err}");
    assert!(err.contains("colour"), "{err}");
    let (code, err) = check(
        "synapse",
        "bad-synapse.json",
        r#"{"services": [{"name": "web", "zk_hosts": "127.0.0.1:2181", "zk_path": "/s/web", "listen": 3306, "connect_timeout": "fast"}]}"#,
    );
    assert_ne!(code, 0);
    assert!(err.contains("services[0].connect_timeout"), "{err}");
}

#[test]
fn good_config_passes_check() {
    let (code, err) = check(
        "synapse",
        "ok.yaml",
        "services:\n  - {name: web, zk_hosts: '127.0.0.1:2181', zk_path: /s/web, listen: 3306}\n",
    );
    assert_eq!(code, 0, "{err}");
}

/// A child process killed on drop, so a test that gives up does not leave it behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bin --check-config -c path`, which must exit within 10 s: (exit code, stderr).
fn check_path(bin: &str, path: &std::path::Path) -> (i32, String) {
    let child = Command::new(binary(bin))
        .arg("--check-config")
        .arg("-c")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let mut running = Running(child);
    let status = integration_tests::eventually(
        &format!("{bin} --check-config -c {} to exit", path.display()),
        std::time::Duration::from_secs(10),
        || running.0.try_wait().ok().flatten(),
    );
    let mut err = String::new();
    if let Some(mut pipe) = running.0.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut err).expect("read stderr");
    }
    (status.code().unwrap_or(-1), err)
}

#[test]
fn config_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zero_link = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).expect("symlink");
    let subdir = dir.path().join("dir.yaml");
    std::fs::create_dir(&subdir).expect("mkdir");
    let fifo = dir.path().join("fifo.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let big = dir.path().join("big.yaml");
    let mut text = "# padding\n".repeat(450_000);
    text += "services: []\n";
    std::fs::write(&big, text).expect("write big file");
    let cases: [(&std::path::Path, &str); 5] = [
        (std::path::Path::new("/dev/zero"), "not a regular file"),
        (&zero_link, "not a regular file"),
        (&subdir, "not a regular file"),
        (&fifo, "not a regular file"),
        (&big, "MiB"),
    ];
    for bin in ["nerve", "synapse"] {
        for (path, want) in cases {
            let (code, err) = check_path(bin, path);
            assert_eq!(code, 2, "{bin} {}: {err}", path.display());
            assert!(err.contains(&*path.to_string_lossy()), "names the file: {err}");
            assert!(err.contains(want), "{bin} {}: {err}", path.display());
        }
    }
    // A symlink to a good regular file is fine.
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "services:\n  - {name: web, zk_hosts: '127.0.0.1:2181', zk_path: /s/web, listen: 3306}\n",
    )
    .expect("write");
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    let (code, err) = check_path("synapse", &link);
    assert_eq!(code, 0, "{err}");
}

const NERVE_SERVICE: &str = "    host: 127.0.0.1\n    port: 80\n    zk_hosts: 127.0.0.1:2181\n    zk_path: /s/web\n    checks: [{type: tcp}]\n";

#[test]
fn every_bad_key_is_reported_in_one_pass() {
    let text = format!(
        "colour: blue\nzookeeper: {{session_timeout: 2x, flavour: x}}\nadmin: {{listen: nope, extra: 1}}\nlog: {{level: 5, style: x}}\nservices:\n  - name: web\n    colour: red\n    check_interval: 2 seconds\n    host: 127.0.0.1\n    port: 99999\n    zk_hosts: 127.0.0.1:2181\n    zk_path: /s/web\n    checks: [{{type: tcp, timeout: soon, shape: round}}]\n  - name: api\n{NERVE_SERVICE}"
    );
    let (code, err) = check("nerve", "all.yaml", &text);
    assert_eq!(code, 2, "{err}");
    for key in [
        "all.yaml: colour:",
        "zookeeper.session_timeout",
        "zookeeper.flavour",
        "admin.listen",
        "admin.extra",
        "log.level",
        "log.style",
        "services[0].colour",
        "services[0].check_interval",
        "services[0].port",
        "services[0].checks[0].timeout",
        "services[0].checks[0].shape",
    ] {
        assert!(err.contains(key), "{key} reported: {err}");
    }
    // The follow-up "missing field" of a removed key is not reported.
    assert!(!err.contains("missing field"), "{err}");

    let (code, err) = check(
        "synapse",
        "all.json",
        r#"{"colour": 1, "services": [{"name": "web", "zk_hosts": "127.0.0.1:2181", "zk_path": "/s/web", "listen": 3306, "connect_timeout": "fast", "flavour": 2, "connect_attempts": -1}]}"#,
    );
    assert_eq!(code, 2, "{err}");
    for key in [
        "all.json: colour:",
        "services[0].connect_timeout",
        "services[0].flavour",
        "services[0].connect_attempts",
    ] {
        assert!(err.contains(key), "{key} reported: {err}");
    }
}

#[test]
fn check_config_fails_on_what_a_start_would_fail_on() {
    let nerve_cases: [(&str, String, &str); 8] = [
        (
            "bad log level",
            format!("log: {{level: 'info,x=loud'}}\nservices:\n  - name: web\n{NERVE_SERVICE}"),
            "log.level",
        ),
        (
            "log level typo",
            format!("log: {{level: verbose}}\nservices:\n  - name: web\n{NERVE_SERVICE}"),
            "log.level",
        ),
        (
            "session timeout too long",
            format!("zookeeper: {{session_timeout: 1000h}}\nservices:\n  - name: web\n{NERVE_SERVICE}"),
            "zookeeper.session_timeout",
        ),
        (
            "session timeout too short",
            format!("zookeeper: {{session_timeout: 10ms}}\nservices:\n  - name: web\n{NERVE_SERVICE}"),
            "zookeeper.session_timeout",
        ),
        (
            "admin port 0",
            format!("admin: {{listen: '127.0.0.1:0'}}\nservices:\n  - name: web\n{NERVE_SERVICE}"),
            "admin.listen",
        ),
        (
            "control character in zk_path",
            "services:\n  - {name: web, host: h, port: 1, zk_hosts: 'a:1', zk_path: \"/s/we\\x01b\", checks: [{type: tcp}]}\n".to_string(),
            "services[0].zk_path",
        ),
        (
            "control character in the chroot",
            "services:\n  - {name: web, host: h, port: 1, zk_hosts: \"a:1/ch\\troot\", zk_path: /s, checks: [{type: tcp}]}\n".to_string(),
            "services[0].zk_hosts",
        ),
        (
            "weight above 255",
            format!("services:\n  - name: web\n    weight: 256\n{NERVE_SERVICE}"),
            "services[0].weight",
        ),
    ];
    for (what, text, key) in nerve_cases {
        let (code, err) = check("nerve", "n.yaml", &text);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains(&format!("n.yaml: {key}:")), "{what}: {err}");
    }
    let svc = |listen: &str| {
        format!(
            "  - {{name: s{}, zk_hosts: 'a:1', zk_path: /s, listen: '{listen}'}}\n",
            listen.len()
        )
    };
    let synapse_cases: [(&str, String, &str); 6] = [
        (
            "wildcard and loopback on one port",
            format!("services:\n{}{}", svc("0.0.0.0:4000"), svc("127.0.0.1:4000")),
            "services[1].listen",
        ),
        (
            "IPv6 wildcard and IPv4 on one port",
            format!("services:\n{}{}", svc("127.0.0.1:4000"), svc("[::]:4000")),
            "services[1].listen",
        ),
        (
            "service on the admin port",
            format!(
                "admin: {{listen: '0.0.0.0:4001'}}\nservices:\n{}",
                svc("127.0.0.1:4001")
            ),
            "services[0].listen",
        ),
        (
            "listen port 0",
            format!("services:\n{}", svc("127.0.0.1:0")),
            "services[0].listen",
        ),
        (
            "bad log level",
            format!("log: {{level: 'debug,[{{'}}\nservices:\n{}", svc("4002")),
            "log.level",
        ),
        (
            "session timeout too long",
            format!(
                "zookeeper: {{session_timeout: 1000h}}\nservices:\n{}",
                svc("4002")
            ),
            "zookeeper.session_timeout",
        ),
    ];
    for (what, text, key) in synapse_cases {
        let (code, err) = check("synapse", "s.yaml", &text);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains(&format!("s.yaml: {key}:")), "{what}: {err}");
    }
}

#[test]
fn nerve_refuses_two_services_writing_one_name_to_one_path() {
    let two = |ids: (&str, &str)| {
        format!(
            "instance_id: host-1\nservices:\n  - {{name: web, {}host: 127.0.0.1, port: 80, zk_hosts: 'a:1,b:2', zk_path: /s/web, checks: [{{type: tcp}}]}}\n  - {{name: web-admin, {}host: 127.0.0.1, port: 81, zk_hosts: ['b:2', 'a:1'], zk_path: /s/web, checks: [{{type: tcp}}]}}\n",
            ids.0, ids.1
        )
    };
    let (code, err) = check("nerve", "dup.yaml", &two(("", "")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("services[1].instance_id"), "{err}");
    let (code, err) = check("nerve", "dup.yaml", &two(("", "instance_id: host-1-admin, ")));
    assert_eq!(
        code, 0,
        "a per-service instance_id makes the names distinct: {err}"
    );
    let (code, err) = check(
        "nerve",
        "dup.yaml",
        &two(("instance_id: base64_x, ", "instance_id: \"a\\x01\", ")),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("services[0].instance_id"), "{err}");
    assert!(err.contains("services[1].instance_id"), "{err}");
    let (code, err) = check(
        "nerve",
        "dup.yaml",
        &format!("instance_id: 'a b'\nservices:\n  - name: web\n{NERVE_SERVICE}"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("dup.yaml: instance_id:"), "{err}");
}

#[test]
fn nerve_refuses_bad_hosts() {
    for host in [
        "'bad host'",
        "-x.example",
        "a..b",
        "'[::1]'",
        "10.0.0.256",
        "x_y.example.",
        "'::1'",
    ] {
        let text = format!(
            "services:\n  - {{name: web, host: {host}, port: 80, zk_hosts: 'a:1', zk_path: /s, checks: [{{type: tcp}}]}}\n"
        );
        let (code, err) = check("nerve", "h.yaml", &text);
        let ok = matches!(host, "x_y.example." | "'::1'");
        assert_eq!(code == 0, ok, "{host}: {err}");
        if !ok {
            assert!(err.contains("services[0].host"), "{host}: {err}");
        }
    }
    let long = format!("{}.example", "a".repeat(64));
    let text = format!(
        "services:\n  - {{name: web, host: {long}, port: 80, zk_hosts: 'a:1', zk_path: /s, checks: [{{type: tcp, host: 'x y'}}]}}\n"
    );
    let (code, err) = check("nerve", "h.yaml", &text);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("services[0].host"), "{err}");
    assert!(err.contains("services[0].checks[0].host"), "{err}");
}

#[test]
fn check_config_fails_on_a_bad_rust_log_as_a_start_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ok.yaml");
    std::fs::write(
        &file,
        "services:\n  - {name: web, zk_hosts: '127.0.0.1:2181', zk_path: /s/web, listen: 3306}\n",
    )
    .expect("write");
    let run = |rust_log: &str| {
        Command::new(binary("synapse"))
            .args(["--check-config", "-c"])
            .arg(&file)
            .env("RUST_LOG", rust_log)
            .output()
            .expect("run")
    };
    let out = run("debug,x=loud");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("RUST_LOG"), "{err}");
    assert_eq!(run("debug").status.code(), Some(0));
}

/// The characters `--check-config` refuses in a `zk_path` are exactly the ones a real
/// ZooKeeper refuses (through the client nerve and synapse use), so no accepted path makes
/// an agent retry forever and no good path is refused.
#[test]
fn zk_path_characters_match_what_zookeeper_accepts() {
    use zookeeper_client as zkc;
    let zk = integration_tests::ZkCluster::standalone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let client = rt
        .block_on(zkc::Client::connector().connect(&zk.connect_string()))
        .expect("connect");
    let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
    let samples = [
        '\u{0}',
        '\u{1}',
        '\t',
        '\u{1f}',
        ' ',
        'a',
        '~',
        '\u{7f}',
        '\u{85}',
        '\u{9f}',
        '\u{a0}',
        'é',
        '\u{d7ff}',
        '\u{e000}',
        '\u{f8ff}',
        '\u{f900}',
        '\u{ffef}',
        '\u{fff0}',
        '\u{fffd}',
        '\u{10000}',
        '\u{1f600}',
    ];
    for (i, c) in samples.into_iter().enumerate() {
        let path = format!("/p{i}{c}x");
        let zk_ok = match rt.block_on(client.create(&path, b"", &opts)) {
            Ok(_) => true,
            Err(zkc::Error::BadArguments(_)) => false,
            // What the server itself refuses comes back as a server error.
            Err(e) => {
                assert!(
                    !matches!(e, zkc::Error::ConnectionLoss | zkc::Error::Timeout),
                    "{c:?}: {e}"
                );
                false
            }
        };
        let json = serde_json::json!({"services": [{"name": "web", "zk_hosts": "127.0.0.1:2181",
            "zk_path": path, "listen": 3306}]});
        let (code, err) = check("synapse", "p.json", &json.to_string());
        assert_eq!(
            code == 0,
            zk_ok,
            "U+{:04X}: ZooKeeper accepts: {zk_ok}; {err}",
            u32::from(c)
        );
    }
}
