use super::*;

#[test]
fn sequence_children() {
    assert!(is_seq_child("host_web_0000000007", "host_web_"));
    assert!(!is_seq_child("host_web_", "host_web_"));
    assert!(!is_seq_child("host_web_api_0000000007", "host_web_"));
    assert!(!is_seq_child("other_0000000001", "host_web_"));
}
