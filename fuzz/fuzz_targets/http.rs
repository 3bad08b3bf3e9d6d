//! synapse's HTTP front: the input is one client connection's byte stream, served by the
//! real serving path (hyper's server, routing, header rewriting, retries, pooled connections
//! to an in-process backend) over an in-memory pipe; or, for a third of the inputs, routes
//! and a request for the shared-listener router alone.
//!
//! First byte: 0 → router (`<host> <prefix>` route lines, the last line `<host> <path>`
//! routed), 1 → service `api`'s own listener, 2 → the shared listener (see
//! `synapse::fuzzing`). Asserted: no panic, the connection ends once the client's input has
//! ended, an HTTP/1 answer is an HTTP/1 status line, and the backend's hop-by-hop headers
//! never reach the client.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use synapse::fuzzing::{HttpFront, Listener};
use synapse::router::{HostMatch, Router};

static FRONT: OnceLock<HttpFront> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let listener = match first % 3 {
        0 => return route(rest),
        1 => Listener::Api,
        _ => Listener::Shared,
    };
    // The harness's own setup, not the input: a panic here means the machine has no loopback
    // (a broken environment, reported as such), never a finding.
    let front = FRONT
        .get_or_init(|| HttpFront::new().expect("the fuzzing front starts (loopback sockets, a temp file)"));
    let x = front.exchange(listener, rest);
    assert!(
        x.ended,
        "the connection did not end after the client's input ended"
    );
    let out = &x.output;
    if rest.starts_with(b"PRI * HTTP/2.0") {
        return;
    }
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1."),
        "not an HTTP/1 answer: {:?}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    for leaked in [&b"\r\nx-hop:"[..], b"\r\nkeep-alive:"] {
        assert!(
            !out.windows(leaked.len()).any(|w| w.eq_ignore_ascii_case(leaked)),
            "a hop-by-hop header reached the client: {:?}",
            String::from_utf8_lossy(out)
        );
    }
});

fn route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let Some(query) = lines.pop() else { return };
    let mut router = Router::new();
    for (i, line) in lines.iter().enumerate().take(64) {
        let (host, prefix) = line.split_once(' ').unwrap_or((line, ""));
        let host = if host == "-" {
            None
        } else {
            match HostMatch::parse(host) {
                Ok(h) => {
                    // What parses prints back to something that parses to the same.
                    assert_eq!(HostMatch::parse(&h.to_string()).as_ref(), Ok(&h));
                    Some(h)
                }
                Err(_) => continue,
            }
        };
        router.add(host.as_ref(), prefix, i);
    }
    let (host, path) = query.split_once(' ').unwrap_or((query, "/"));
    let host = (host != "-").then_some(host.as_bytes());
    if let Some(&i) = router.route(host, path) {
        let (_, prefix) = lines[i].split_once(' ').unwrap_or((lines[i], ""));
        assert!(
            path.starts_with(prefix),
            "route {i} ({prefix:?}) chosen for {path:?}"
        );
    }
}
