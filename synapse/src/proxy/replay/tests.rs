#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

use futures::channel::mpsc;
use futures::FutureExt;
use http_body_util::{BodyExt, Empty, StreamBody};

type Source = StreamBody<mpsc::UnboundedReceiver<Result<Frame<Bytes>, &'static str>>>;

fn source() -> (mpsc::UnboundedSender<Result<Frame<Bytes>, &'static str>>, Source) {
    let (tx, rx) = mpsc::unbounded();
    (tx, StreamBody::new(rx))
}

fn data(s: &'static str) -> Result<Frame<Bytes>, &'static str> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

/// The next frame if one is ready now: Some(None) at the end, None when it would wait.
fn next<B: Body<Data = Bytes> + Unpin>(b: &mut B) -> Option<Option<Result<Frame<Bytes>, B::Error>>> {
    b.frame().now_or_never()
}

fn text(f: Option<Option<Result<Frame<Bytes>, &'static str>>>) -> String {
    let f = f
        .expect("a frame is ready")
        .expect("not the end")
        .expect("not an error");
    String::from_utf8(f.into_data().expect("data").to_vec()).unwrap()
}

#[test]
fn frames_pass_as_they_arrive_and_a_second_try_replays_then_continues() {
    let (tx, body) = source();
    let mut first = Replay::new(body, 1024);
    assert!(next(&mut first).is_none(), "nothing sent yet: the body waits");
    tx.unbounded_send(data("a")).unwrap();
    assert_eq!(text(next(&mut first)), "a");
    tx.unbounded_send(data("b")).unwrap();
    assert_eq!(text(next(&mut first)), "b");

    // The first try was refused: the second gets a, b, then what the client sends next.
    let mut second = first.again().expect("under the limit");
    assert!(matches!(next(&mut first), Some(None)), "the old try ends");
    assert!(first.is_end_stream());
    assert_eq!(second.size_hint().lower(), 2);
    assert_eq!(text(next(&mut second)), "a");
    assert_eq!(text(next(&mut second)), "b");
    assert!(next(&mut second).is_none(), "then waits for the client");
    tx.unbounded_send(data("c")).unwrap();
    assert_eq!(text(next(&mut second)), "c");
    drop(tx);
    assert!(matches!(next(&mut second), Some(None)));
    assert!(second.is_end_stream());

    // A third try gets the whole body.
    let mut third = second.again().unwrap();
    assert!(!third.is_end_stream());
    assert_eq!(third.size_hint().exact(), Some(3));
    let all: Vec<String> = (0..3).map(|_| text(next(&mut third))).collect();
    assert_eq!(all, ["a", "b", "c"]);
    assert!(matches!(next(&mut third), Some(None)));
}

#[test]
fn trailers_are_replayed_once_per_try() {
    let (tx, body) = source();
    let mut first = Replay::new(body, 1024);
    let mut t = HeaderMap::new();
    t.insert("x-check", "1".parse().unwrap());
    tx.unbounded_send(data("m")).unwrap();
    tx.unbounded_send(Ok(Frame::trailers(t))).unwrap();
    drop(tx);
    assert_eq!(text(next(&mut first)), "m");
    let f = next(&mut first).unwrap().unwrap().unwrap();
    assert_eq!(f.trailers_ref().unwrap()["x-check"], "1");
    assert!(matches!(next(&mut first), Some(None)));

    let mut second = first.again().unwrap();
    assert_eq!(text(next(&mut second)), "m");
    assert!(!second.is_end_stream(), "the trailers are still to come");
    let f = next(&mut second).unwrap().unwrap().unwrap();
    assert_eq!(f.trailers_ref().unwrap()["x-check"], "1");
    assert!(second.is_end_stream());
    assert!(matches!(next(&mut second), Some(None)));
}

#[test]
fn past_the_limit_the_body_streams_on_but_cannot_be_replayed() {
    let (tx, body) = source();
    let mut first = Replay::new(body, 4);
    tx.unbounded_send(data("abc")).unwrap();
    assert_eq!(text(next(&mut first)), "abc");
    assert!(first.replayable());
    tx.unbounded_send(data("def")).unwrap();
    assert_eq!(text(next(&mut first)), "def", "still forwarded");
    assert!(!first.replayable());
    assert!(first.again().is_none());
    tx.unbounded_send(data("g")).unwrap();
    assert_eq!(text(next(&mut first)), "g");
    drop(tx);
    assert!(matches!(next(&mut first), Some(None)));
}

#[test]
fn a_failed_client_body_cannot_be_replayed() {
    let (tx, body) = source();
    let mut first = Replay::new(body, 1024);
    tx.unbounded_send(Err("reset by the client")).unwrap();
    assert!(matches!(next(&mut first), Some(Some(Err(_)))));
    assert!(first.again().is_none());
}

#[test]
fn an_empty_body_is_at_its_end_from_the_start() {
    let b = Replay::new(Empty::<Bytes>::new(), 1024);
    assert!(b.is_end_stream());
    let again = b.again().unwrap();
    assert!(again.is_end_stream());
    assert_eq!(again.size_hint().exact(), Some(0));
}
