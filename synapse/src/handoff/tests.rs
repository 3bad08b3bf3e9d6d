use std::os::fd::OwnedFd;

use super::*;

fn offer(state: serde_json::Value, listeners: Vec<std::net::TcpListener>) -> common::handoff::Offer {
    common::handoff::Offer {
        pid: 1,
        state,
        fds: listeners.into_iter().map(OwnedFd::from).collect(),
    }
}

#[tokio::test]
async fn handed_sockets_are_found_by_address_and_members_decoded() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let state = serde_json::json!({
        "listeners": [addr],
        "members": {"web": [
            ["web_1", {"host": "10.0.0.1", "port": 80}],
            ["bad", {"host": "", "port": 0}]
        ]}
    });
    let mut inherited = Inherited::default();
    inherited.absorb(offer(state, vec![l])).unwrap();
    assert_eq!(inherited.len(), 1);
    // The member that does not decode is skipped, the good one kept.
    let web = &inherited.members["web"];
    assert_eq!(web.len(), 1);
    assert_eq!((web[0].0.as_str(), web[0].1.port), ("web_1", 80));
    let taken = inherited.listener(addr).await.unwrap();
    assert_eq!(
        taken.local_addr().unwrap(),
        addr,
        "the very socket, not a new one"
    );
    assert!(inherited.is_empty());
}

#[test]
fn a_state_that_does_not_match_its_descriptors_is_refused() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let state = serde_json::json!({"listeners": [], "members": {}});
    let err = Inherited::default().absorb(offer(state, vec![l])).unwrap_err();
    assert!(
        err.to_string()
            .contains("0 listeners named, 1 descriptors received"),
        "{err}"
    );
    let err = Inherited::default()
        .absorb(offer(serde_json::json!({"nope": 1}), vec![]))
        .unwrap_err();
    assert!(err.to_string().starts_with("takeover: "), "{err}");
}
