use super::*;

#[test]
fn connection_timeout_is_short_and_bounded() {
    let ms = Duration::from_millis;
    assert_eq!(
        connection_timeout(Duration::from_secs(10)),
        Duration::from_secs(2)
    );
    assert_eq!(
        connection_timeout(Duration::from_secs(60)),
        Duration::from_secs(2)
    );
    assert_eq!(connection_timeout(Duration::from_secs(4)), Duration::from_secs(1));
    assert_eq!(connection_timeout(Duration::from_secs(2)), ms(500));
    // Never above the library's default share of the session timeout (2/5).
    assert_eq!(connection_timeout(Duration::from_secs(1)), ms(400));
}

#[test]
fn backoff_doubles_with_jitter_up_to_its_cap() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let pauses: Vec<Duration> = (0..8).map(|_| b.pause()).collect();
    let caps = [100, 200, 400, 800, 1000, 1000, 1000, 1000].map(Duration::from_millis);
    for (pause, cap) in pauses.iter().zip(caps) {
        assert!(
            *pause >= cap / 2 && *pause <= cap,
            "{pause:?} not in [{:?}, {cap:?}]",
            cap / 2
        );
    }
    b.reset();
    assert!(b.pause() <= Duration::from_millis(100));
}

#[test]
fn backoff_jitter_spreads() {
    let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
    let pauses: std::collections::HashSet<Duration> = (0..20).map(|_| b.pause()).collect();
    assert!(pauses.len() > 10, "pauses are spread, not fixed: {pauses:?}");
}

#[test]
fn a_session_secret_shows_its_id_but_never_its_password() {
    let secret = SessionSecret {
        connect: "zk:2181".to_string(),
        auth: Some("digest:nerve".to_string()),
        id: 0x1234,
        password: b"hunter2-secret".to_vec(),
    };
    let shown = format!("{secret:?}");
    assert!(shown.contains("0x1234"), "{shown}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("104, 117"),
        "{shown}"
    );
    // It travels as JSON (over the owner-only upgrade socket) and comes back whole.
    let back: SessionSecret = serde_json::from_value(serde_json::to_value(&secret).unwrap()).unwrap();
    assert_eq!(back, secret);
}

#[test]
fn auth_names_carry_no_credentials() {
    let auth = ZkAuth {
        scheme: "digest".to_string(),
        credentials: "nerve:s3cret".to_string(),
    };
    assert_eq!(auth_name(Some(&auth)).as_deref(), Some("digest:nerve"));
    assert_eq!(auth_name(None), None);
}
