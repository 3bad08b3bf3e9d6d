//! `http` / `https`: one HTTP/1.1 request (hyper client connection, `Connection: close`),
//! the status checked against a list of codes and ranges, optionally a substring looked for
//! in the first [`MAX_BODY`] bytes of the body.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{connect, contains_from, tls, CheckError, MAX_BODY};
use crate::config::{HttpCheck, HttpMethod};

/// Runs one request against `host:port` (over TLS when `tls` is given).
pub async fn run(
    host: &str,
    port: u16,
    check: &HttpCheck,
    tls: Option<&tls::Client>,
) -> Result<(), CheckError> {
    let stream = connect(host, port).await?;
    match tls {
        None => exchange(stream, check).await,
        Some(client) => exchange(client.connect(stream).await?, check).await,
    }
}

fn http_error(e: impl std::fmt::Display) -> CheckError {
    CheckError::Http(e.to_string())
}

async fn exchange<T>(io: T, check: &HttpCheck) -> Result<(), CheckError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_error)?;
    let method = match check.method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Head => Method::HEAD,
    };
    let mut req = Request::builder()
        .method(method)
        .uri(check.uri.as_str())
        .header(hyper::header::USER_AGENT, "nerve")
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in &check.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(http_error)?;
    let talk = async {
        let response = sender.send_request(req).await.map_err(http_error)?;
        judge(response, check).await
    };
    // The connection is driven here rather than in a spawned task, so that dropping the
    // check (timeout, shutdown) closes it at once instead of leaving a task on a hung peer.
    tokio::pin!(talk);
    tokio::select! {
        r = &mut talk => r,
        c = conn => match c {
            Err(e) => Err(http_error(e)),
            // Closed after a complete answer: what is left to read is buffered.
            Ok(()) => talk.await,
        },
    }
}

async fn judge(response: Response<Incoming>, check: &HttpCheck) -> Result<(), CheckError> {
    let status = response.status().as_u16();
    if !check.expect_status.contains(status) {
        return Err(CheckError::Status {
            status,
            expected: check.expect_status.to_string(),
        });
    }
    let Some(expected) = &check.expect_body else {
        return Ok(());
    };
    let needle = expected.as_bytes();
    let mut body = response.into_body();
    let mut seen: Vec<u8> = Vec::new();
    while seen.len() < MAX_BODY {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(http_error)?;
        if let Ok(data) = frame.into_data() {
            let from = seen.len();
            let take = data.len().min(MAX_BODY - from);
            seen.extend_from_slice(&data[..take]);
            if contains_from(&seen, needle, from) {
                return Ok(());
            }
        }
    }
    Err(CheckError::Body {
        expected: expected.clone(),
        read: seen.len(),
    })
}
