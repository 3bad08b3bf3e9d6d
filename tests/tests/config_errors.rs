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
