use super::*;

fn naming(sequential: bool, path_encoding: Option<&str>) -> Naming {
    Naming {
        parent: "/s/web".into(),
        base: "/s/web/host_web".into(),
        options: NodeOptions {
            sequential,
            path_encoding: path_encoding.map(str::to_string),
            protected: false,
        },
    }
}

#[test]
fn sequence_children() {
    let n = naming(true, None);
    assert!(n.is_ours("host_web_0000000007"));
    assert!(!n.is_ours("host_web_"));
    assert!(!n.is_ours("host_web"));
    assert!(!n.is_ours("host_web_api_0000000007"));
    assert!(!n.is_ours("other_0000000001"));
    assert_eq!(n.create_path(b"x"), "/s/web/host_web_");
    assert!(n.matches("/s/web/host_web_0000000001", b"x"));
}

#[test]
fn plain_ephemeral_children() {
    let n = naming(false, None);
    assert!(n.is_ours("host_web"));
    assert!(!n.is_ours("host_web_0000000007"));
    assert_eq!(n.create_path(b"x"), "/s/web/host_web");
    assert!(n.matches("/s/web/host_web", b"y"));
}

#[test]
fn path_encoded_children_carry_the_payload_and_are_recognised_by_its_name() {
    let payload = br#"{"host":"10.0.0.1","port":80,"name":"host"}"#;
    let other = br#"{"host":"10.0.0.1","port":81,"name":"host"}"#;
    let stranger = br#"{"host":"10.0.0.2","port":80,"name":"other"}"#;
    for sequential in [true, false] {
        let n = naming(sequential, Some("host"));
        let path = n.create_path(payload);
        let full = if sequential {
            format!("{path}0000000003")
        } else {
            path.clone()
        };
        let child = full.rsplit('/').next().unwrap();
        assert!(child.starts_with("base64_"), "{child}");
        let decoded = crate::codec::decode(child, b"").unwrap();
        assert_eq!((decoded.host.as_str(), decoded.port), ("10.0.0.1", 80));
        assert!(n.is_ours(child), "{child}");
        assert!(n.matches(&full, payload));
        assert!(!n.matches(&full, other), "another payload is another name");
        let s = n.create_path(stranger);
        let s = if sequential { format!("{s}0000000001") } else { s };
        assert!(
            !n.is_ours(s.rsplit('/').next().unwrap()),
            "another instance's node"
        );
    }
}
