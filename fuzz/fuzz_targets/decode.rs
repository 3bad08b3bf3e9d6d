//! The node payload decoder, `common::codec::decode(child_name, data)`: it must never panic,
//! and whatever it accepts must survive a round trip through `encode` (and through
//! `encode_path_name`, airbnb's path-encoded child names) unchanged.
//!
//! Input layout: `<child name> 0x00 <znode data>`; without a 0x00 byte the whole input is the
//! data of a child named `member_0000000001`. So plain JSON files work as seeds, and the
//! fuzzer can still reach the path-encoded names (`base64_<len>_<b64>_<seq>`).
#![no_main]

use common::codec::{decode, encode, encode_path_name, Node};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (name, data) = match input.iter().position(|&b| b == 0) {
        Some(at) => (String::from_utf8_lossy(&input[..at]), &input[at + 1..]),
        None => ("member_0000000001".into(), input),
    };
    let Ok(node) = decode(&name, data) else {
        return;
    };
    // What encode keeps: no shard (a serverset concept), and a reason only when unavailable.
    let kept = Node {
        shard: None,
        unavailable_reason: if node.available {
            None
        } else {
            node.unavailable_reason.clone()
        },
        ..node.clone()
    };
    let again = decode("member_0000000001", &encode(&node));
    assert_eq!(again.as_ref(), Ok(&kept), "encode → decode changed the node");
    let path_name = format!("{}0000000001", encode_path_name(&node));
    let again = decode(&path_name, b"");
    assert_eq!(
        again.as_ref(),
        Ok(&kept),
        "encode_path_name → decode changed the node"
    );
});
