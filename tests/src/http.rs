//! HTTP test parts: a real HTTP backend ([`HttpBackend`], hyper on its own runtime; HTTP/1.1, or
//! HTTP/2 with prior knowledge) that says who answered and what it saw and can be told to fail,
//! delay, close or stream; and a small blocking keep-alive client ([`HttpConn`]).
//!
//! Backend behaviour, by request path (any method):
//! - `/status/<code>`: answers `<code>`.
//! - `/delay/<ms>`: answers 200 after `<ms>` milliseconds.
//! - `/close`: reads the request head, then closes the connection without answering.
//! - `/stream/<bytes>`: answers 200 with `<bytes>` zero bytes, streamed in 64 KiB chunks.
//! - `/hop`: answers with hop-by-hop headers (`Connection: x-private`, `X-Private`,
//!   `Keep-Alive`) next to `X-Public: yes`.
//! - anything else: reads the whole body (counting it, not keeping it) and answers 200 with
//!   JSON `{"backend", "method", "path", "headers": {name: [values]}, "body_len", "version"}`.
//! - a request with `Connection: upgrade`: answers `101` with the same `Upgrade`, then echoes
//!   every byte back, prefixed once with `<name>:`.
//!
//! [`HttpBackend::set_mode`] overrides the path for every request (e.g. fail them all with
//! 500). Every answer has `x-backend: <name>`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Size of the chunks of streamed bodies.
const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// What every request to a backend gets, whatever its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Behave by path (the default).
    ByPath,
    /// Answer this status.
    Status(u16),
    /// Close without answering.
    Close,
    /// Wait this many milliseconds, then behave by path.
    Delay(u64),
}

/// A request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, lowercase names.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The HTTP version it came in (`HTTP/1.1`, `HTTP/2.0`).
    pub version: String,
}

#[derive(Debug)]
struct Shared {
    name: String,
    connections: AtomicUsize,
    requests: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    mode: Mutex<Mode>,
}

/// A real HTTP/1.1 and h2c backend on 127.0.0.1 (see the module docs). Dropping it stops it.
#[derive(Debug)]
pub struct HttpBackend {
    /// Its name, in `x-backend` and in JSON answers.
    pub name: String,
    /// Its port.
    pub port: u16,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl HttpBackend {
    /// Starts on a free port.
    pub fn start(name: &str) -> HttpBackend {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("backend runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind HTTP backend");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::ByPath),
        });
        let s = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { answer(&s, req).await }
                    });
                    // HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
                    let _ =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                });
            }
        });
        HttpBackend {
            name: name.to_string(),
            port,
            shared,
            rt: Some(rt),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far (answered or not).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Overrides the behaviour of every request.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Why the backend closed without answering (hyper then drops the connection).
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closing without an answer, as asked")
    }
}

impl std::error::Error for Hangup {}

async fn answer(s: &Shared, mut req: Request<Incoming>) -> Result<Response<TestBody>, Hangup> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    s.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        headers: headers.clone(),
        version: version.clone(),
    });
    let mode = s.mode.lock().unwrap().clone();
    let reply = |status: u16, body: TestBody| {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut()
            .insert("x-backend", s.name.parse().expect("header value"));
        r
    };
    match mode {
        Mode::Status(code) => return Ok(reply(code, TestBody::text(&s.name))),
        Mode::Close => return Err(Hangup),
        Mode::Delay(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Mode::ByPath => {}
    }
    let upgrade = req.headers().get("upgrade").cloned();
    let wants_upgrade = req
        .headers()
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
    if let (Some(protocol), true) = (upgrade, wants_upgrade) {
        let on = hyper::upgrade::on(&mut req);
        let name = s.name.clone();
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut io = TokioIo::new(up);
            let _ = io.write_all(format!("{name}:").as_bytes()).await;
            let mut buf = [0u8; 4096];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut r = reply(101, TestBody::empty());
        r.headers_mut().insert("upgrade", protocol);
        r.headers_mut()
            .insert("connection", "upgrade".parse().expect("header value"));
        return Ok(r);
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some("status"), Some(code)) => {
            let code = code.parse().unwrap_or(500);
            Ok(reply(code, TestBody::text(&s.name)))
        }
        (Some("delay"), Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            Ok(reply(200, TestBody::text(&s.name)))
        }
        (Some("close"), _) => Err(Hangup),
        (Some("hop"), _) => {
            let mut r = reply(200, TestBody::text(&s.name));
            let h = r.headers_mut();
            h.insert("connection", "x-private".parse().expect("header value"));
            h.insert("x-private", "secret".parse().expect("header value"));
            h.insert("keep-alive", "timeout=5".parse().expect("header value"));
            h.insert("x-public", "yes".parse().expect("header value"));
            Ok(r)
        }
        (Some("stream"), Some(n)) => Ok(reply(200, TestBody::zeros(n.parse().unwrap_or(0)))),
        _ => {
            let mut body_len = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return Err(Hangup),
                }
            }
            let v = json!({
                "backend": s.name,
                "method": s.seen.lock().unwrap().last().map(|x| x.method.clone()),
                "path": path,
                "headers": headers,
                "body_len": body_len,
                "version": version,
            });
            let mut r = reply(200, TestBody::text(&v.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().expect("header value"));
            Ok(r)
        }
    }
}

/// A test body: fixed bytes, or `n` zero bytes streamed in 64 KiB chunks without allocating.
#[derive(Debug)]
pub enum TestBody {
    /// Fixed bytes (sent once).
    Full(Option<Bytes>),
    /// Zero bytes left to send.
    Zeros(u64),
}

impl TestBody {
    /// No body.
    pub fn empty() -> TestBody {
        TestBody::Full(None)
    }

    /// A text body.
    pub fn text(s: &str) -> TestBody {
        TestBody::Full(Some(Bytes::from(s.to_string())))
    }

    /// Bytes.
    pub fn bytes(b: impl Into<Bytes>) -> TestBody {
        TestBody::Full(Some(b.into()))
    }

    /// `n` zero bytes, streamed.
    pub fn zeros(n: u64) -> TestBody {
        TestBody::Zeros(n)
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            TestBody::Zeros(left) => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(CHUNK as u64) as usize;
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TestBody::Full(b) => b.is_none(),
            TestBody::Zeros(left) => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            // Unknown length: the request is sent chunked.
            TestBody::Zeros(_) => SizeHint::default(),
        }
    }
}

/// An answer, read whole (or only counted, see [`HttpConn::send_counting`]).
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Headers (lowercase names).
    pub headers: hyper::HeaderMap,
    /// Body (empty when counted only).
    pub body: Bytes,
    /// Body length.
    pub body_len: u64,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (the backend's echo).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `x-backend` header: which backend answered.
    pub fn backend(&self) -> Option<String> {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// One keep-alive HTTP/1.1 client connection, blocking (its own runtime).
#[derive(Debug)]
pub struct HttpConn {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
}

impl HttpConn {
    /// Connects to 127.0.0.1:`port`.
    pub fn open(port: u16) -> std::io::Result<HttpConn> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let sender = rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(sender)
        })?;
        Ok(HttpConn { rt, sender })
    }

    /// Sends `req` (give it a `host` header) and reads the whole answer, within 30 s.
    pub fn send(&mut self, req: Request<TestBody>) -> std::io::Result<Answer> {
        self.exchange(req, true)
    }

    /// Like [`send`](Self::send) but only counts the body bytes.
    pub fn send_counting(&mut self, req: Request<TestBody>) -> std::io::Result<Answer> {
        self.exchange(req, false)
    }

    fn exchange(&mut self, req: Request<TestBody>, keep: bool) -> std::io::Result<Answer> {
        let sender = &mut self.sender;
        self.rt.block_on(async {
            let work = async {
                sender.ready().await.map_err(std::io::Error::other)?;
                let resp = sender.send_request(req).await.map_err(std::io::Error::other)?;
                let (head, mut body) = resp.into_parts();
                let mut kept = Vec::new();
                let mut body_len = 0u64;
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(std::io::Error::other)?;
                    if let Some(d) = frame.data_ref() {
                        body_len += d.len() as u64;
                        if keep {
                            kept.extend_from_slice(d);
                        }
                    }
                }
                Ok(Answer {
                    status: head.status.as_u16(),
                    headers: head.headers,
                    body: Bytes::from(kept),
                    body_len,
                })
            };
            tokio::time::timeout(Duration::from_secs(30), work)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 30 s"))?
        })
    }

    /// `GET path` with `Host: host`.
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<Answer> {
        self.send(request("GET", host, path, TestBody::empty()))
    }
}

/// A request with a `Host` header.
pub fn request(method: &str, host: &str, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(body)
        .expect("request")
}

/// `GET path` on a new connection to `port` with `Host: localhost`.
pub fn get(port: u16, path: &str) -> std::io::Result<Answer> {
    HttpConn::open(port)?.get("localhost", path)
}
