#![allow(clippy::unwrap_used)]
use bytes::Bytes;

use super::*;

#[test]
fn a_replayable_message_is_copied_until_the_last_try() {
    let (parts, ()) = Request::put("/x").header("a", "1").body(()).unwrap().into_parts();
    let mut m = Message {
        parts: Some(parts),
        body: Some(ReqBody::Full(Some(Bytes::from_static(b"hello")))),
        replayable: true,
        host: false,
        on_upgrade: None,
    };
    let first = m.take(true).unwrap();
    assert_eq!(first.headers()["a"], "1");
    assert_eq!(first.body().size_hint().exact(), Some(5));
    let last = m.take(false).unwrap();
    assert_eq!(last.body().size_hint().exact(), Some(5));
    assert!(m.take(false).is_none(), "nothing left after the last try");
    m.restore(last);
    assert!(m.take(true).is_some(), "an unsent request is put back");
}

#[test]
fn a_streamed_body_is_not_replayable() {
    assert!(ReqBody::Empty.replay().is_some());
    assert!(ReqBody::Full(None).replay().is_some());
}
