//! The `rate` phase's load generator: HTTP/1.1 keep-alive requests sent at a fixed rate (open
//! loop), whatever the server's pace, so the latency is what a client at that rate sees.
//!
//! Debian has no wrk2, and wrk is closed loop: a slow response delays the next request, which
//! hides the slowness (coordinated omission). Here a pacer thread emits the intended send times
//! `start + k / rate`; `connections` keep-alive connections take them in turn (a pool: an idle
//! connection takes the next one), and each request's latency runs from its INTENDED send time
//! to the end of its response. A request that waits for a free connection, or a pacer that
//! wakes late, counts in the latency, as it would for a real client. The pacer's own wake-up
//! delay (tens of µs, `nanosleep` with the default timer slack) is in every target's numbers
//! alike: compare targets by the latency added over direct.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

use serde_json::{json, Value};

use crate::procs::{self, CpuPerRequest, Proc};
use crate::{fmt_ms, fmt_ms_spread, percentile, Bench, Spread};

/// One fixed-rate run's result (latencies in ms, from the intended send time).
#[derive(Debug, Clone)]
pub struct RateRun {
    /// Responses completed (200).
    pub requests: u64,
    /// Requests that failed (connection error, bad or non-200 response).
    pub errors: u64,
    /// Completed requests per second, from the schedule's start to the last response (below
    /// the rate when the target could not keep up).
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Sends GET / to 127.0.0.1:`port` at `rate` requests per second for `duration` over
/// `connections` keep-alive connections (opened first). Runs on the calling thread (pin it with
/// the driver) plus a pacer thread.
pub fn run(port: u16, rate: f64, connections: usize, duration: Duration) -> Result<RateRun> {
    if rate.is_nan() || rate <= 0.0 || connections == 0 {
        bail!("fixed-rate run needs a rate > 0 and connections (rate {rate}, connections {connections})");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut streams = Vec::with_capacity(connections);
        for _ in 0..connections {
            streams.push(connect(port).await?);
        }
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        let rx = Arc::new(Mutex::new(rx));
        let request: Arc<[u8]> = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
            .into_bytes()
            .into();
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|s| tokio::spawn(connection(s, port, rx.clone(), request.clone())))
            .collect();
        let start = Instant::now() + Duration::from_millis(10);
        let pacer = std::thread::spawn(move || pace(&tx, start, rate, duration));
        let (mut latencies, mut errors, mut last) = (Vec::new(), 0u64, start);
        let drained = tokio::time::timeout(duration + Duration::from_secs(20), async {
            for t in tasks {
                let (l, e, end) = t.await?;
                latencies.extend(l);
                errors += e;
                last = last.max(end);
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        pacer
            .join()
            .map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
        drained.context("responses still outstanding 20 s after the schedule ended")??;
        let requests = latencies.len() as u64;
        let ms: &mut [f64] = &mut latencies;
        Ok(RateRun {
            requests,
            errors,
            rps: requests as f64 / (last - start).max(duration).as_secs_f64(),
            p50: percentile(ms, 50.0),
            p99: percentile(ms, 99.0),
            p999: percentile(ms, 99.9),
            max: percentile(ms, 100.0),
        })
    })
}

/// Emits the intended send times `start + k / rate` until `duration` has passed, each when it
/// comes (all those already due when the thread wakes late).
fn pace(tx: &mpsc::UnboundedSender<Instant>, start: Instant, rate: f64, duration: Duration) {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    for k in 0..total {
        let at = start + Duration::from_secs_f64(k as f64 / rate);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        if tx.send(at).is_err() {
            return;
        }
    }
}

async fn connect(port: u16) -> Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One connection of the pool: takes the next intended send time, sends, reads the response,
/// records the latency; reconnects after an error. Returns (latencies in ms, errors, when the
/// last response came).
async fn connection(
    mut stream: TcpStream,
    port: u16,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>,
    request: Arc<[u8]>,
) -> (Vec<f64>, u64, Instant) {
    let (mut latencies, mut errors, mut last) = (Vec::new(), 0, Instant::now());
    let mut buf = Vec::with_capacity(4096);
    let mut broken = false;
    loop {
        let Some(intended) = queue.lock().await.recv().await else {
            return (latencies, errors, last);
        };
        if broken {
            match connect(port).await {
                Ok(s) => {
                    stream = s;
                    broken = false;
                }
                Err(_) => {
                    errors += 1;
                    continue;
                }
            }
        }
        match exchange(&mut stream, &request, &mut buf).await {
            Ok(()) => {
                last = Instant::now();
                latencies.push((last - intended).as_secs_f64() * 1e3);
            }
            Err(_) => {
                errors += 1;
                broken = true;
            }
        }
    }
}

/// Writes `request` and reads one whole response (its head, then `Content-Length` bytes of
/// body); fails on anything but a 200 with a length.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Result<()> {
    stream.write_all(request).await?;
    buf.clear();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(buf)? {
            if response.code != Some(200) {
                bail!("status {:?}", response.code);
            }
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .context("no Content-Length")
                .and_then(|h| Ok(std::str::from_utf8(h.value)?.trim().parse()?))?;
            let whole = head + length;
            while buf.len() < whole {
                read_more(stream, buf).await?;
            }
            if buf.len() > whole {
                bail!("bytes after the response");
            }
            return Ok(());
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        bail!("connection closed");
    }
    Ok(())
}

/// One protocol of the rate phase: its name, HAProxy's keep-alive maximum (req/s), and the
/// targets direct, HAProxy, synapse as (name, port, proxy process whose CPU is counted).
pub(crate) type Protocol<'a> = (&'static str, f64, [(&'static str, u16, Option<&'a Proc>); 3]);

/// `+120 µs` (signed, µs) of a latency difference in ms; with a range over rounds.
fn fmt_delta(s: &Spread) -> String {
    if s.min == s.max || s.min.is_nan() {
        format!("{:+.0} µs", s.median * 1e3)
    } else {
        format!(
            "{:+.0} µs ({:+.0} to {:+.0})",
            s.median * 1e3,
            s.min * 1e3,
            s.max * 1e3
        )
    }
}

impl Bench {
    /// The rate phase: for each protocol, direct, HAProxy and synapse at one fixed rate (rounds
    /// interleaved like the wrk phases); latency percentiles, the latency each proxy adds over
    /// direct (per round: proxy − direct of the same round), and the proxies' CPU per request.
    pub(crate) fn fixed_rate(&mut self, protocols: &[Protocol<'_>]) -> Result<()> {
        let (secs, connections) = (self.args.duration, self.args.connections);
        let rates: Vec<f64> = protocols
            .iter()
            .map(|(_, max, _)| self.args.rate_rps.unwrap_or(max * self.args.rate_percent / 100.0))
            .collect();
        // runs[protocol][target][round]
        let mut runs: Vec<Vec<Vec<(RateRun, CpuPerRequest)>>> = vec![vec![Vec::new(); 3]; protocols.len()];
        for round in 0..self.args.rounds {
            for (pi, (proto, _, targets)) in protocols.iter().enumerate() {
                for (ti, (name, port, proxy)) in targets.iter().enumerate() {
                    let (r, cpu) = procs::cpu_per_request(
                        *proxy,
                        || run(*port, rates[pi], connections, Duration::from_secs(secs)),
                        |r| r.requests,
                    )?;
                    eprintln!(
                        "  rate round {} {name} {proto} at {:.0}/s: {:.0} req/s p50 {:.3} ms p99 {:.3} ms \
                         p99.9 {:.3} ms errors {}  CPU {:.1} µs/request (user {:.1})",
                        round + 1,
                        rates[pi],
                        r.rps,
                        r.p50,
                        r.p99,
                        r.p999,
                        r.errors,
                        cpu.total_us,
                        cpu.user_us
                    );
                    runs[pi][ti].push((r, cpu));
                }
            }
        }
        let mut out = serde_json::Map::new();
        for (pi, (proto, max, targets)) in protocols.iter().enumerate() {
            let section: &'static str = if *proto == "TCP" {
                "fixed rate, TCP keep-alive (open loop)"
            } else {
                "fixed rate, HTTP keep-alive (open loop)"
            };
            let rate = rates[pi];
            let how = match self.args.rate_rps {
                Some(_) => "--rate-rps".to_string(),
                None => format!(
                    "{:.0} % of HAProxy {proto}'s keep-alive maximum, {max:.0} req/s",
                    self.args.rate_percent
                ),
            };
            self.row(
                section,
                "rate",
                format!(
                    "{rate:.0} req/s ({how}); {connections} connections, {secs} s × {} round(s)",
                    self.args.rounds
                ),
            );
            let mut section_json = serde_json::Map::new();
            section_json.insert("rate".into(), json!(rate));
            section_json.insert("haproxy_max_rps".into(), json!(max));
            let r = &runs[pi];
            for (ti, (name, _, proxy)) in targets.iter().enumerate() {
                let of = |f: fn(&(RateRun, CpuPerRequest)) -> f64| {
                    let v: Vec<f64> = r[ti].iter().map(f).collect();
                    (Spread::of(&v), v)
                };
                let (p50, p99, p999, rps) = (
                    of(|x| x.0.p50),
                    of(|x| x.0.p99),
                    of(|x| x.0.p999),
                    of(|x| x.0.rps),
                );
                let errors: u64 = r[ti].iter().map(|x| x.0.errors).sum();
                let short = if rps.0.min < 0.95 * rate {
                    "  (SHORT of the rate: saturated)"
                } else {
                    ""
                };
                self.row(
                    section,
                    format!("{name} {proto}"),
                    format!(
                        "p50 {}  p99 {}  p99.9 {}  ({} req/s done, errors {errors}){short}",
                        fmt_ms(p50.0.median),
                        fmt_ms_spread(&p99.0),
                        fmt_ms(p999.0.median),
                        rps.0.fmt(0)
                    ),
                );
                let mut entry = json!({
                    "p50_ms": p50.0.json(&p50.1), "p99_ms": p99.0.json(&p99.1),
                    "p999_ms": p999.0.json(&p999.1), "rps": rps.0.json(&rps.1), "errors": errors,
                    "max_ms": r[ti].iter().map(|x| x.0.max).collect::<Vec<_>>(),
                });
                if proxy.is_some() {
                    let (cpu, user) = (of(|x| x.1.total_us), of(|x| x.1.user_us));
                    self.cpu_row(section, &format!("{name} {proto}"), &cpu, &user, &mut entry);
                    // Added over direct, per round.
                    let added = |f: fn(&RateRun) -> f64| {
                        let v: Vec<f64> = r[ti].iter().zip(&r[0]).map(|(p, d)| f(&p.0) - f(&d.0)).collect();
                        (Spread::of(&v), v)
                    };
                    let (a50, a99, a999) = (added(|x| x.p50), added(|x| x.p99), added(|x| x.p999));
                    self.row(
                        section,
                        format!("{name} {proto}: added over direct"),
                        format!(
                            "p50 {}  p99 {}  p99.9 {}",
                            fmt_delta(&a50.0),
                            fmt_delta(&a99.0),
                            fmt_delta(&a999.0)
                        ),
                    );
                    entry["added_p50_ms"] = a50.0.json(&a50.1);
                    entry["added_p99_ms"] = a99.0.json(&a99.1);
                    entry["added_p999_ms"] = a999.0.json(&a999.1);
                }
                section_json.insert(name.to_string(), entry);
            }
            // The target: synapse's added p99 no higher than HAProxy's, i.e. synapse's p99 −
            // HAProxy's p99 of the same round ≤ 0.
            let v: Vec<f64> = r[2].iter().zip(&r[1]).map(|(s, h)| s.0.p99 - h.0.p99).collect();
            self.row(
                section,
                "synapse − HAProxy p99, per round",
                format!("{} (target ≤ 0)", fmt_delta(&Spread::of(&v))),
            );
            section_json.insert("synapse_minus_haproxy_p99_ms".into(), Spread::of(&v).json(&v));
            out.insert(proto.to_lowercase(), Value::Object(section_json));
        }
        let how = format!(
            "open loop (bench/src/rate.rs) on CPU {}, nginx and the proxies on CPU {}: requests sent on a \
             fixed schedule over a pool of keep-alive connections, latency from the INTENDED send time (no \
             coordinated omission); median (min–max) over rounds; added = proxy − direct of the same round",
            self.args.client_cpus, self.args.server_cpus
        );
        self.row("fixed rate, HTTP keep-alive (open loop)", "(how)", how);
        self.json.insert("rate".into(), Value::Object(out));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server answering `200 ok` at once, except that every response due in
    /// [`stall_from`, `stall_from + stall`) waits until the stall is over.
    fn server(stall_from: Instant, stall: Duration) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    let (mut s, _) = listener.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                return;
                            }
                            let now = Instant::now();
                            if now >= stall_from && now < stall_from + stall {
                                tokio::time::sleep_until((stall_from + stall).into()).await;
                            }
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        });
        port
    }

    /// The open loop's point: during a 300 ms stall, every request scheduled in it waits, and
    /// counts (about 15 % of 2 s at 1000/s), where a closed loop would record one slow request
    /// per connection. Outside the stall the latency stays small.
    #[test]
    fn a_stall_shows_in_the_latency_of_every_request_scheduled_during_it() {
        let port = server(
            Instant::now() + Duration::from_millis(800),
            Duration::from_millis(300),
        );
        let r = run(port, 1000.0, 4, Duration::from_secs(2)).unwrap();
        assert_eq!(r.errors, 0);
        assert_eq!(r.requests, 2000);
        assert!(r.p99 > 150.0, "p99 {} ms: the stall is not counted", r.p99);
        assert!(r.max >= 250.0, "max {} ms", r.max);
        assert!(r.p50 < 50.0, "p50 {} ms", r.p50);
    }

    #[test]
    fn a_closed_connection_is_an_error_then_the_next_request_reconnects() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Every connection answers one request, then closes without answering the next.
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 1024];
                    if s.read(&mut buf).unwrap_or(0) > 0 {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
                    }
                    let _ = s.read(&mut buf);
                });
            }
        });
        let r = run(port, 200.0, 1, Duration::from_millis(500)).unwrap();
        assert_eq!(r.requests + r.errors, 100);
        assert!(r.requests >= 40 && r.errors >= 40, "{r:?}");
    }
}
