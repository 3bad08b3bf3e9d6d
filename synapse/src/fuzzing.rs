//! Not part of the API: synapse's HTTP front in one process, for the `http` fuzz target
//! (`fuzz/`) and the property tests (`tests/tests/it/http_props.rs`). Bytes go in as one
//! client connection's stream over an in-memory pipe; the real serving path runs (hyper's
//! server, routing by Host and path, hashing on a cookie or a header, header rewriting,
//! retries, pooled connections to an in-process HTTP/1.1 backend on loopback, upgrades), and
//! the bytes synapse answered come out.
//!
//! Routes of the shared listener (see [`HttpFront::new`]):
//! - host `api.local`, prefix `/v1`: `api` (`hash` on cookie `session`);
//! - host `*.web.local`, and prefix `/static/` on any host: `web` (`hash` on header `X-User`);
//! - host `down.local`: `down` (one backend on a port where nothing listens: 503);
//! - host `empty.local`: `empty` (no backend: 503).
//!
//! The backend answers `200 ok` (the status `NNN` for a path containing `/s/NNN`), with hop-by-hop
//! headers synapse must remove; it answers an upgrade request with `101` and closes.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::backend::BackendState;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::http::{serve_stream, HttpService, ListenerSettings, Routes, SharedRoutes};
use crate::service::Service;
use crate::table::{RouteTable, Snapshot, SyncSource};

/// How long one exchange may take before it counts as hung: 10 s.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// Which listener the bytes arrive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The shared listener (routes above).
    Shared,
    /// Service `api`'s own listener.
    Api,
}

/// What one exchange gave.
#[derive(Debug)]
pub struct Exchange {
    /// Every byte synapse wrote to the client.
    pub output: Vec<u8>,
    /// False when synapse neither closed the connection nor stopped writing within
    /// [`EXCHANGE_LIMIT`] after the client's input ended.
    pub ended: bool,
    /// The request heads the backend received meanwhile.
    pub seen: Vec<Seen>,
}

/// One request head as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `METHOD path`.
    pub line: String,
    /// Header (lowercase name, value bytes), in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Why the front could not be set up (the runtime, a loopback socket, the temporary config
/// file, metrics).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the fuzzing HTTP front: {0}")]
pub struct SetupError(String);

fn setup<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> SetupError {
    move |e| SetupError(format!("{what}: {e}"))
}

/// The HTTP front and its backend, on a current-thread runtime.
#[derive(Debug)]
pub struct HttpFront {
    rt: tokio::runtime::Runtime,
    shared: SharedRoutes,
    api: SharedRoutes,
    settings: ListenerSettings,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// One exchange at a time: what the backend saw belongs to it.
    one_at_a_time: Mutex<()>,
}

const CONFIG: &str = r#"
services:
  - {name: api, mode: http, zk_hosts: "127.0.0.1:2181", zk_path: /api, balance: hash,
     hash_on: "cookie:session", connect_timeout: 1s, request_timeout: 5s, try_timeout: 2s,
     idle_timeout: 2s}
  - {name: web, mode: http, zk_hosts: "127.0.0.1:2181", zk_path: /web, balance: hash,
     hash_on: "header:X-User", connect_timeout: 1s, request_timeout: 5s, idle_timeout: 2s}
  - {name: down, mode: http, zk_hosts: "127.0.0.1:2181", zk_path: /down, connect_timeout: 1s,
     request_timeout: 5s}
  - {name: empty, mode: http, zk_hosts: "127.0.0.1:2181", zk_path: /empty}
http_listeners:
  - listen: "127.0.0.1:1"
    routes:
      - {host: api.local, path_prefix: /v1, service: api}
      - {host: "*.web.local", service: web}
      - {path_prefix: /static/, service: web}
      - {host: down.local, service: down}
      - {host: empty.local, service: empty}
"#;

impl HttpFront {
    /// Starts the backend and builds the routes (see the module docs).
    pub fn new() -> Result<HttpFront, SetupError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(setup("runtime"))?;
        let file = std::env::temp_dir().join(format!("synapse-fuzz-{}.yaml", std::process::id()));
        std::fs::write(&file, CONFIG).map_err(setup("writing the config"))?;
        let config = Config::load(&file);
        let _ = std::fs::remove_file(&file);
        let config = config.map_err(setup("the config"))?;
        let metrics = Metrics::new(&prometheus::Registry::new()).map_err(setup("metrics"))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let backends = [
            rt.block_on(backend(seen.clone()))?,
            rt.block_on(backend(seen.clone()))?,
        ];
        // Nothing listens there: a port bound then released refuses connections.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(setup("a free port"))?;
        let services: Vec<Arc<HttpService>> = config
            .services
            .iter()
            .map(|cfg| {
                let service = Service::new(cfg.clone(), metrics.service(&cfg.name), None);
                let addrs = match cfg.name.as_str() {
                    "api" | "web" => backends.to_vec(),
                    "down" => vec![closed],
                    _ => vec![],
                };
                let entries = addrs
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| {
                        let data = format!("{{\"host\":\"127.0.0.1\",\"port\":{}}}", addr.port());
                        let node = common::codec::decode(&format!("n{i}"), data.as_bytes())
                            .map_err(setup("a backend's payload"))?;
                        let key = addr.to_string();
                        let state =
                            Arc::new(BackendState::new(key.clone(), metrics.backend(&cfg.name, &key)));
                        Ok((format!("n{i}"), node, state))
                    })
                    .collect::<Result<Vec<_>, SetupError>>()?;
                let table = RouteTable::build(entries, cfg.balance.name(), cfg.default_weight);
                service.snapshot.store(Arc::new(Snapshot {
                    table: Arc::new(table),
                    source: SyncSource::Zookeeper,
                    ..Snapshot::default()
                }));
                service.first_sync.send_replace(true);
                Ok(Arc::new(HttpService::new(Arc::new(service), &metrics)))
            })
            .collect::<Result<_, SetupError>>()?;
        let (Some(listener), Some(api)) = (config.http_listeners.first(), services.first()) else {
            return Err(SetupError(
                "the config has no shared listener or no service".into(),
            ));
        };
        let shared = Routes::shared(listener, &services, &metrics);
        let api = Routes::Service(api.clone());
        Ok(HttpFront {
            rt,
            shared: Arc::new(ArcSwap::from_pointee(shared)),
            api: Arc::new(ArcSwap::from_pointee(api)),
            settings: ListenerSettings {
                idle_timeout: Duration::from_secs(2),
                tcp_keepalive: Duration::ZERO,
                keepalive_timeout: Duration::from_secs(2),
            },
            seen,
            one_at_a_time: Mutex::new(()),
        })
    }

    /// Sends `input` on a new connection to `listener`, ends the client's side, and reads
    /// everything synapse answers until it closes (at most [`EXCHANGE_LIMIT`]). Exchanges
    /// from several threads run one after the other.
    pub fn exchange(&self, listener: Listener, input: &[u8]) -> Exchange {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let routes = match listener {
            Listener::Shared => self.shared.clone(),
            Listener::Api => self.api.clone(),
        };
        let peer = SocketAddr::from(([192, 0, 2, 7], 40000));
        let settings = self.settings;
        self.rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let serving = serve_stream(server, peer, routes, settings);
            let talking = async {
                let (mut read, mut write) = tokio::io::split(&mut client);
                let send = async {
                    let _ = write.write_all(input).await;
                    let _ = write.shutdown().await;
                };
                let mut output = Vec::new();
                let receive = read.read_to_end(&mut output);
                let (_, _) = tokio::join!(send, receive);
                output
            };
            // Both on this task (not spawned): a panic in synapse's code reaches the caller.
            let both = async { tokio::join!(serving, talking).1 };
            let (output, ended) = match tokio::time::timeout(EXCHANGE_LIMIT, both).await {
                Ok(output) => (output, true),
                Err(_) => (Vec::new(), false),
            };
            let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
            Exchange { output, ended, seen }
        })
    }
}

/// The in-process backend (see the module docs); returns its address.
async fn backend(seen: Arc<Mutex<Vec<Seen>>>) -> Result<SocketAddr, SetupError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(setup("binding the backend"))?;
    let addr = listener.local_addr().map_err(setup("the backend's address"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(answer(req, &seen).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(mut req: Request<Incoming>, seen: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    seen.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
        line: format!("{} {}", req.method(), req.uri()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
    });
    if let Some(protocol) = req.headers().get(UPGRADE).cloned() {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            // Switched, then closed at once.
            drop(on.await);
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert(UPGRADE, protocol);
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        return resp;
    }
    let path = req.uri().path();
    let status = path
        .find("/s/")
        .and_then(|at| path.get(at + 3..at + 6))
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (200..600).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("x-hop"));
    h.insert("x-hop", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("x-backend", HeaderValue::from_static("b"));
    resp
}
