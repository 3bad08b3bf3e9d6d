//! Real targets for nerve's checks: an HTTP/HTTPS server that records what it receives, a
//! gRPC health server over HTTP/2 (h2c or TLS) whose answers can be switched, a real
//! `redis-server`, and self-signed certificates made at test time (`rcgen`).
//!
//! Each server runs on its own small tokio runtime, so it serves the same from a sync test
//! blocked in [`crate::eventually`] and from an async test; dropping the handle stops it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("target runtime")
}

/// A listener on a free loopback port, bound before the runtime runs anything (blocking
/// inside an async test is not allowed).
fn bind(what: &str) -> std::net::TcpListener {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind {what} target: {e}"));
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

/// A runtime owned by a target; stopped without blocking, so that a target may be dropped
/// inside an async test.
#[derive(Debug)]
struct Owned(Option<Runtime>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, made at test time.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate, PEM (what `tls_ca_file` points at).
    pub pem: String,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestCert {
    /// A new key pair and a self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn self_signed() -> TestCert {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
        TestCert {
            pem: certified.cert.pem(),
            cert: certified.cert.der().clone(),
            key: certified.key_pair.serialize_der(),
        }
    }

    /// Writes the certificate's PEM as `dir/name` and returns the path.
    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write pem");
        path
    }

    /// A TLS acceptor presenting this certificate, offering `alpn`.
    fn acceptor(&self, alpn: &[&[u8]]) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
            )
            .expect("server cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// One request as an [`HttpTarget`] saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Every header, names lower-case.
    pub headers: HashMap<String, String>,
}

type Routes = Arc<Mutex<HashMap<String, (u16, Bytes)>>>;

/// An HTTP/1.1 server (optionally over TLS) answering per path what [`HttpTarget::route`]
/// says (404 otherwise) and recording every request.
#[derive(Debug)]
pub struct HttpTarget {
    /// Its port on 127.0.0.1.
    pub port: u16,
    routes: Routes,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    _rt: Owned,
}

impl HttpTarget {
    /// Plain HTTP on a free port.
    pub fn start() -> HttpTarget {
        Self::spawn(None)
    }

    /// HTTPS on a free port, presenting `cert`.
    pub fn start_tls(cert: &TestCert) -> HttpTarget {
        Self::spawn(Some(cert.acceptor(&[b"http/1.1"])))
    }

    fn spawn(tls: Option<TlsAcceptor>) -> HttpTarget {
        let rt = runtime();
        let listener = bind("http");
        let port = listener.local_addr().expect("addr").port();
        let routes: Routes = Arc::default();
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let (r, s) = (routes.clone(), seen.clone());
        rt.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (r, s, tls) = (r.clone(), s.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (r, s) = (r.clone(), s.clone());
                        async move { Ok::<_, Infallible>(answer(&r, &s, req)) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            // A client that refuses our certificate ends here.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        HttpTarget {
            port,
            routes,
            seen,
            _rt: Owned(Some(rt)),
        }
    }

    /// From now on, `path` answers `status` with `body`.
    pub fn route(&self, path: &str, status: u16, body: impl Into<Bytes>) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (status, body.into()));
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(routes: &Routes, seen: &Mutex<Vec<SeenRequest>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    seen.lock().unwrap().push(SeenRequest {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers,
    });
    let (status, body) = routes
        .lock()
        .unwrap()
        .get(req.uri().path())
        .cloned()
        .unwrap_or((404, Bytes::from_static(b"not found")));
    Response::builder()
        .status(status)
        .body(Full::new(body))
        .expect("response")
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus` values.
pub mod serving {
    /// `SERVING`.
    pub const SERVING: u64 = 1;
    /// `NOT_SERVING`.
    pub const NOT_SERVING: u64 = 2;
}

type Statuses = Arc<Mutex<HashMap<String, u64>>>;

/// A gRPC health server (`grpc.health.v1.Health/Check`) over HTTP/2, h2c or TLS, written
/// with hyper's HTTP/2 server. A service it does not know gets `NOT_FOUND` (5), as the
/// reference implementation answers.
#[derive(Debug)]
pub struct GrpcHealth {
    /// Its port on 127.0.0.1.
    pub port: u16,
    statuses: Statuses,
    asked: Arc<Mutex<Vec<String>>>,
    _rt: Owned,
}

impl GrpcHealth {
    /// h2c on a free port; knows no service yet.
    pub fn start() -> GrpcHealth {
        Self::spawn(None)
    }

    /// HTTP/2 over TLS (ALPN `h2`) on a free port, presenting `cert`.
    pub fn start_tls(cert: &TestCert) -> GrpcHealth {
        Self::spawn(Some(cert.acceptor(&[b"h2"])))
    }

    fn spawn(tls: Option<TlsAcceptor>) -> GrpcHealth {
        let rt = runtime();
        let listener = bind("grpc");
        let port = listener.local_addr().expect("addr").port();
        let statuses: Statuses = Arc::default();
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let (st, a) = (statuses.clone(), asked.clone());
        rt.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, a, tls) = (st.clone(), a.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (st, a) = (st.clone(), a.clone());
                        async move { Ok::<_, Infallible>(health(&st, &a, req).await) }
                    });
                    let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = h2.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = h2.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        GrpcHealth {
            port,
            statuses,
            asked,
            _rt: Owned(Some(rt)),
        }
    }

    /// Sets what `service` answers ([`serving`] values); `None`: unknown service.
    pub fn set(&self, service: &str, status: Option<u64>) {
        let mut map = self.statuses.lock().unwrap();
        match status {
            Some(s) => map.insert(service.to_string(), s),
            None => map.remove(service),
        };
    }

    /// The service names asked about so far.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

type GrpcBody = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn health(
    statuses: &Statuses,
    asked: &Mutex<Vec<String>>,
    req: Request<Incoming>,
) -> Response<GrpcBody> {
    let trailers_only = |code: &str, message: &str| {
        Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", code)
            .header("grpc-message", message)
            .body(StreamBody::new(futures::stream::iter(Vec::new())))
            .expect("response")
    };
    if req.uri().path() != "/grpc.health.v1.Health/Check" {
        return trailers_only("12", "unimplemented");
    }
    let Ok(body) = req.into_body().collect().await else {
        return trailers_only("13", "bad request body");
    };
    let body = body.to_bytes();
    // HealthCheckRequest { string service = 1; }, short names only (one-byte length).
    let service = match body.get(5..) {
        Some([]) => String::new(),
        Some([0x0a, len, rest @ ..]) if rest.len() == usize::from(*len) => {
            String::from_utf8_lossy(rest).into_owned()
        }
        _ => return trailers_only("3", "cannot decode HealthCheckRequest"),
    };
    asked.lock().unwrap().push(service.clone());
    let Some(status) = statuses.lock().unwrap().get(&service).copied() else {
        return trailers_only("5", "unknown service");
    };
    // HealthCheckResponse { ServingStatus status = 1; }
    let message = [0x08, u8::try_from(status).expect("small status")];
    let mut data = vec![0u8];
    data.extend_from_slice(&(message.len() as u32).to_be_bytes());
    data.extend_from_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("header"));
    let frames = vec![Ok(Frame::data(Bytes::from(data))), Ok(Frame::trailers(trailers))];
    Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .expect("response")
}

/// A real `redis-server` (the Debian package) on a free loopback port, without
/// persistence, killed on drop.
#[derive(Debug)]
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// What a Redis command line needs, for a message that says how to get it.
const REDIS_MISSING: &str = "redis-server not found: the redis checks are tested against a real \
     Redis. Install it (Debian: apt-get install -y redis-server; deploy/test.sh does)";

impl Redis {
    /// Starts `redis-server`; `password` sets `requirepass`; `users` adds ACL users as
    /// `(name, password)` with every permission. Waits until it answers.
    pub fn start(password: Option<&str>, users: &[(&str, &str)]) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        for (user, pass) in users {
            cmd.arg("--user")
                .arg(user)
                .args(["on", &format!(">{pass}"), "~*", "&*", "+@all"]);
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{REDIS_MISSING}"),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut redis = Redis {
            port,
            child,
            _dir: dir,
        };
        crate::eventually("redis-server answers", Duration::from_secs(20), || {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server exited at start: {status}");
            }
            let reply = redis.send(b"PING\r\n").ok()?;
            (reply.starts_with("+PONG") || reply.starts_with("-NOAUTH")).then_some(())
        });
        redis
    }

    /// Sends `raw` on a new connection and returns the first reply.
    pub fn send(&self, raw: &[u8]) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(raw)?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
