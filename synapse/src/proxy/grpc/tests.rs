#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[test]
fn grpc_timeouts_parse_in_every_unit() {
    let ms = Duration::from_millis;
    assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
    assert_eq!(parse_timeout(b"3S"), Some(Duration::from_secs(3)));
    assert_eq!(parse_timeout(b"250m"), Some(ms(250)));
    assert_eq!(parse_timeout(b"1500u"), Some(Duration::from_micros(1500)));
    assert_eq!(
        parse_timeout(b"99999999n"),
        Some(Duration::from_nanos(99_999_999))
    );
    assert_eq!(parse_timeout(b"0m"), Some(Duration::ZERO));
    for bad in [
        &b""[..],
        b"m",
        b"10",
        b"10s",
        b"10x",
        b"-1m",
        b"1.5S",
        b"123456789m",
        b" 1m",
        b"1 m",
    ] {
        assert_eq!(parse_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
    let mut h = HeaderMap::new();
    assert_eq!(timeout(&h), None);
    h.insert(&GRPC_TIMEOUT, HeaderValue::from_static("100m"));
    assert_eq!(timeout(&h), Some(ms(100)));
}

#[test]
fn encoded_timeouts_fit_eight_digits_and_never_exceed_the_deadline() {
    for d in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_nanos(99_999_999),
        Duration::from_nanos(100_000_001),
        Duration::from_millis(1234),
        Duration::from_secs(100_000),
        Duration::from_secs(99_999_999 * 3600),
        Duration::MAX,
    ] {
        let v = encode_timeout(d);
        let back = parse_timeout(v.as_bytes()).unwrap_or_else(|| panic!("{v:?} for {d:?} parses"));
        assert!(back <= d, "{v:?} is longer than {d:?}");
        if d < Duration::from_secs(99_999_999) {
            // The unit is the finest that fits: less than a thousandth is lost.
            assert!(d - back <= d / 1000 + Duration::from_nanos(1), "{v:?} for {d:?}");
        }
    }
    assert_eq!(encode_timeout(Duration::from_millis(250)), "250000u");
    assert_eq!(encode_timeout(Duration::from_secs(5)), "5000000u");
    assert_eq!(encode_timeout(Duration::from_secs(500)), "500000m");
}

#[test]
fn grpc_content_types() {
    let ct = |v: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
        is_grpc(&h)
    };
    assert!(ct("application/grpc"));
    assert!(ct("application/grpc+proto"));
    assert!(ct("application/grpc+json"));
    assert!(ct("application/grpc; charset=utf-8"));
    assert!(ct("Application/GRPC"));
    assert!(!ct("application/grpc-web"));
    assert!(!ct("application/grpc-web+proto"));
    assert!(!ct("application/grpcx"));
    assert!(!ct("application/json"));
    assert!(!is_grpc(&HeaderMap::new()));
}

#[test]
fn grpc_status_is_read_and_unknown_values_are_unknown() {
    let st = |v: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(&GRPC_STATUS, HeaderValue::from_static(v));
        status(&h)
    };
    assert_eq!(st("0"), Some(Code::Ok));
    assert_eq!(st("14"), Some(Code::Unavailable));
    assert_eq!(st("16"), Some(Code::Unauthenticated));
    assert_eq!(st("17"), Some(Code::Unknown));
    assert_eq!(st("x"), Some(Code::Unknown));
    assert_eq!(st("99999999999999"), Some(Code::Unknown));
    assert_eq!(status(&HeaderMap::new()), None);
    for (i, c) in Code::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
        assert_eq!(Code::from_value(i as u32), *c);
        assert_eq!(c.header(), i.to_string().as_str());
    }
    assert_eq!(Code::Unavailable.as_str(), "UNAVAILABLE");
    assert_eq!(
        Code::from_http(StatusCode::SERVICE_UNAVAILABLE),
        Code::Unavailable
    );
    assert_eq!(Code::from_http(StatusCode::NOT_FOUND), Code::Unimplemented);
    assert_eq!(Code::from_http(StatusCode::INTERNAL_SERVER_ERROR), Code::Unknown);
}

#[test]
fn messages_are_percent_encoded() {
    assert_eq!(encode_message("no backend"), "no backend");
    assert_eq!(encode_message("100% down"), "100%25 down");
    assert_eq!(encode_message("café\n"), "caf%C3%A9%0A");
}

#[test]
fn synapse_errors_are_trailers_only_answers() {
    let resp = trailers_only(Code::Unavailable, &encode_message("synapse: no backend"), ());
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/grpc");
    assert_eq!(status(resp.headers()), Some(Code::Unavailable));
    assert_eq!(resp.headers()[&GRPC_MESSAGE], "synapse: no backend");
    let t = status_trailers(Code::DeadlineExceeded, &HeaderValue::from_static(""));
    assert_eq!(status(&t), Some(Code::DeadlineExceeded));
    assert!(!t.contains_key(&GRPC_MESSAGE));
}

/// What a scripted HTTP/2 backend does once it has the client's request headers.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// RST_STREAM on the request's stream with this error code.
    Reset(u32),
    /// GOAWAY naming this last stream id, error NO_ERROR; the connection stays open.
    GoAway(u32),
    /// Close the connection.
    Close,
    /// GOAWAY naming this last stream id, then close the connection.
    GoAwayThenClose(u32),
}

/// Frames of an HTTP/2 server, written by hand: a fake peer that does exactly one thing.
async fn scripted(then: Then) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
            let mut f = Vec::with_capacity(9 + payload.len());
            f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(&[kind, flags]);
            f.extend_from_slice(&stream.to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
        // Client preface (24 bytes), then frames until the first HEADERS.
        let mut buf = vec![0u8; 24];
        s.read_exact(&mut buf).await.unwrap();
        let stream = loop {
            let mut head = [0u8; 9];
            s.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            if head[3] == 4 && head[4] & 1 == 0 {
                s.write_all(&frame(4, 1, 0, &[])).await.unwrap();
            }
            if head[3] == 1 {
                break u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            }
        };
        match then {
            Then::Reset(code) => s
                .write_all(&frame(3, 0, stream, &code.to_be_bytes()))
                .await
                .unwrap(),
            Then::GoAway(last) | Then::GoAwayThenClose(last) => {
                let mut p = last.to_be_bytes().to_vec();
                p.extend_from_slice(&0u32.to_be_bytes());
                s.write_all(&frame(7, 0, 0, &p)).await.unwrap();
                if matches!(then, Then::GoAwayThenClose(_)) {
                    return;
                }
            }
            Then::Close => {
                drop(s);
                return;
            }
        }
        // Keep the connection open until the client is done.
        let _ = s.read_to_end(&mut Vec::new()).await;
    });
    port
}

/// The error of one request through hyper's HTTP/2 client to a scripted backend.
async fn failed_try(then: Then) -> hyper::Error {
    let port = scripted(then).await;
    let io = TokioIo::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://127.0.0.1:{port}/svc/Method"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("the try ends");
    resp.expect_err("the scripted backend never answers")
}

#[tokio::test]
async fn refused_streams_and_streams_past_goaway_are_safe_to_send_again() {
    assert!(refused(&failed_try(Then::Reset(0x7)).await), "REFUSED_STREAM");
    assert!(
        refused(&failed_try(Then::GoAway(0)).await),
        "stream 1 past GOAWAY(last 0)"
    );
}

#[tokio::test]
async fn streams_the_backend_may_have_processed_are_not() {
    assert!(!refused(&failed_try(Then::Reset(0x8)).await), "CANCEL");
    assert!(!refused(&failed_try(Then::Reset(0x2)).await), "INTERNAL_ERROR");
    assert!(!refused(&failed_try(Then::Close).await), "connection closed");
}

#[tokio::test]
async fn a_stream_at_or_below_goaway_last_id_is_not_refused() {
    // GOAWAY(last 1): stream 1 may have been processed when the connection then closes.
    let err = failed_try(Then::GoAwayThenClose(1)).await;
    assert!(!refused(&err), "{err:?}");
}
