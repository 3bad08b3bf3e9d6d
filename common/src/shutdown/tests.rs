use super::*;

#[tokio::test]
async fn a_dropped_stream_means_unsupported() {
    let (tx, rx) = ReloadRequests::channel();
    drop(rx);
    assert_eq!(tx.request().await, ReloadOutcome::Unsupported);
}

#[tokio::test]
async fn the_outcome_travels_back_and_queued_requests_fold() {
    let (tx, mut rx) = ReloadRequests::channel();
    let first = tokio::spawn({
        let tx = tx.clone();
        async move { tx.request().await }
    });
    // Once the first request is queued, the next one folds into it.
    while tx.tx.capacity() > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(tx.request().await, ReloadOutcome::Pending);
    let r = rx.next().await;
    r.finish(Err("bad file".into()));
    assert_eq!(first.await.unwrap(), ReloadOutcome::Done(Err("bad file".into())));
    // Dropped unfinished: done, outcome unknown (counted as ok).
    let again = tokio::spawn(async move { tx.request().await });
    drop(rx.next().await);
    assert_eq!(again.await.unwrap(), ReloadOutcome::Done(Ok(())));
}
