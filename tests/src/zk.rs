//! A real ZooKeeper (the Debian `zookeeper` package) run as child JVMs, standalone or as an
//! ensemble, on free loopback ports, each server in its own temporary directory.
//!
//! Everything here blocks (std processes, std sockets); call it from `#[tokio::test]` bodies freely,
//! the waits are short polls bounded by deadlines.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The ZooKeeper server jar from the Debian package; its manifest Class-Path pulls in its deps.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// slf4j binding so the server logs (to its log file in the server's temp dir).
pub const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// Main class that serves both standalone and ensemble configurations.
pub const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";
/// How to get the above when missing.
pub const INSTALL_HINT: &str = "run deploy/zk-local.sh --install-only or apt-get install -y zookeeper";

/// ZooKeeper tick; session timeouts are negotiated within [`MIN_SESSION_TIMEOUT`, `MAX_SESSION_TIMEOUT`].
pub const TICK_TIME: Duration = Duration::from_millis(100);
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(400);
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_millis(30_000);

const STANDALONE_READY_TIMEOUT: Duration = Duration::from_secs(30);
const ENSEMBLE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Per four-letter-word exchange (connect + write + read to EOF).
const FOUR_LETTER_TIMEOUT: Duration = Duration::from_secs(2);
/// Port clashes (another process grabbed a port between our probe and the JVM's bind) are retried.
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 60;

const JVM_OPTS: &[&str] = &[
    "-Dzookeeper.admin.enableServer=false",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.net.preferIPv4Stack=true",
    // Tests do not need fsync on every transaction; it only slows writes down on busy disks.
    "-Dzookeeper.forceSync=no",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
];

// ---------------------------------------------------------------------------------------------
// Ports

fn handed_out() -> MutexGuard<'static, HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// `n` distinct free loopback ports, asked of the OS by binding `127.0.0.1:0` (all held at once,
/// then released). A port is never handed out twice by this process.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut seen = handed_out();
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        assert!(tries < 1000 + 10 * n, "could not find {n} free loopback ports");
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(listener) => listener,
            Err(err) => panic!("binding 127.0.0.1:0 to find a free port: {err}"),
        };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(err) => panic!("local address of a probe listener: {err}"),
        };
        if seen.insert(port) {
            ports.push(port);
        }
        held.push(listener);
    }
    drop(held);
    ports
}

/// One free loopback port (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

// ---------------------------------------------------------------------------------------------
// Four-letter words

/// Sends a four-letter word (`srvr`, `cons`, `mntr`, `ruok`, ...) to `127.0.0.1:port` and reads
/// the answer to EOF, the whole exchange bounded by `timeout`.
pub fn four_letter_word(port: u16, cmd: &str, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("`{cmd}` on port {port} timed out"),
            ))
        } else {
            Ok(left)
        }
    };
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), left()?)?;
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(cmd.as_bytes())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The `Mode:` of a `srvr` answer (`standalone`, `leader`, `follower`, `observer`), if any.
pub fn parse_mode(srvr: &str) -> Option<&str> {
    srvr.lines()
        .find_map(|line| line.trim().strip_prefix("Mode:"))
        .map(str::trim)
}

/// Session ids of the client connections listed in a `cons` answer. Connections without a
/// session (such as the four-letter-word probe itself) are skipped.
pub fn parse_cons_sessions(cons: &str) -> Vec<i64> {
    cons.lines()
        .filter_map(|line| {
            let hex = &line[line.find("sid=0x")? + "sid=0x".len()..];
            let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
            // Session ids are printed as unsigned hex; ZooKeeper's (and clients') i64 is the same bits.
            let sid = u64::from_str_radix(&hex[..end], 16).ok()? as i64;
            (sid != 0).then_some(sid)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Installation check

fn java_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("java"))
        .find(|candidate| candidate.is_file())
}

/// Panics with [`INSTALL_HINT`] unless `java` is on PATH and the ZooKeeper jar is installed.
/// Never skips: an end-to-end test without ZooKeeper is a failed test.
pub fn require_zookeeper() -> PathBuf {
    let java = java_on_path();
    let mut missing = Vec::new();
    if java.is_none() {
        missing.push("`java` is not on PATH".to_string());
    }
    for jar in [ZOOKEEPER_JAR, SLF4J_SIMPLE_JAR] {
        if !Path::new(jar).is_file() {
            missing.push(format!("{jar} does not exist"));
        }
    }
    match java {
        Some(java) if missing.is_empty() => java,
        _ => panic!(
            "a real ZooKeeper is required for these tests but {}: {INSTALL_HINT}",
            missing.join(" and ")
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// One server

/// Ports of one ensemble member.
#[derive(Debug, Clone, Copy)]
struct PeerPorts {
    client: u16,
    quorum: u16,
    election: u16,
    /// `secureClientPort` (TLS), when the cluster has TLS.
    secure: u16,
    /// An observer (serves clients, does not vote).
    observer: bool,
    /// `myid` (1-based); servers added later get the next free one.
    id: usize,
}

impl PeerPorts {
    /// The `server.N=` line of a config: `host:quorum:election[:observer]`, and the client
    /// address after `;` when the ensemble is dynamically reconfigurable.
    fn server_line(&self, with_client: bool) -> String {
        let role = if self.observer {
            ":observer"
        } else if with_client {
            ":participant"
        } else {
            ""
        };
        let client = if with_client {
            format!(";127.0.0.1:{}", self.client)
        } else {
            String::new()
        };
        format!(
            "server.{}=127.0.0.1:{}:{}{role}{client}",
            self.id, self.quorum, self.election
        )
    }
}

/// What a test ensemble has beyond the plain one ([`ZkCluster::start_with`]).
#[derive(Debug, Default, Clone)]
pub struct ZkOptions {
    /// Observers added to the participants (they serve clients and follow the leader without
    /// voting; `srvr` says `Mode: observer`).
    pub observers: usize,
    /// `readonlymode.enabled`: a server cut off from its quorum serves read-only sessions.
    pub read_only: bool,
    /// `reconfigEnabled=true` (ACLs skipped, so any client may reconfigure): the ensemble's
    /// membership can be changed with a reconfig request; client ports are part of the
    /// dynamic configuration (`/zookeeper/config`).
    pub reconfig: bool,
    /// TLS on a `secureClientPort` per server (client certificates required), beside the
    /// plaintext port (which the harness's four-letter words use).
    pub tls: Option<std::sync::Arc<ZkTlsFiles>>,
}

/// Certificates made at test time for a TLS ensemble: a CA, a server certificate for
/// `127.0.0.1` (PEM key store: key then certificate, as ZooKeeper's `ssl.keyStore.type=PEM`
/// reads it) and a client certificate signed by the same CA.
#[derive(Debug)]
pub struct ZkTlsFiles {
    dir: TempDir,
}

impl ZkTlsFiles {
    /// Makes the CA and the certificates.
    pub fn generate() -> ZkTlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::Builder::new()
            .prefix("zk-tls-")
            .tempdir()
            .expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "zk test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issue = |names: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names)
                .expect("params")
                .signed_by(&key, &ca, &ca_key)
                .expect("certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = issue(vec!["zk-client".into()]);
        let write = |name: &str, text: String| fs::write(dir.path().join(name), text).expect("write PEM");
        write("ca.pem", ca.pem());
        write("server.pem", format!("{server_key}{server_cert}"));
        write("client.pem", client_cert);
        write("client.key", client_key);
        ZkTlsFiles { dir }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The client certificate (PEM).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's key (PEM, PKCS#8).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    fn server_pem(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
}

/// One ZooKeeper JVM with its own temp dir (`zoo.cfg`, `data/`, `zookeeper.log`).
///
/// The process can be killed and started again with the same config, data and ports; dropping
/// the `ZkServer` kills the process (SIGKILL), reaps it, and removes the temp dir.
#[derive(Debug)]
pub struct ZkServer {
    /// `myid` in an ensemble, `None` standalone.
    myid: Option<usize>,
    client_port: u16,
    /// `secureClientPort`, when the cluster has TLS.
    secure_port: Option<u16>,
    observer: bool,
    /// JVM options beyond [`JVM_OPTS`].
    jvm_extra: Vec<String>,
    java: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    // Last, so the process is gone (see Drop) before the directory is removed.
    dir: TempDir,
}

impl ZkServer {
    /// Writes the config (and `myid`) for server `index` of `peers` (standalone when one peer).
    fn create(java: &Path, index: usize, peers: &[PeerPorts], options: &ZkOptions) -> io::Result<ZkServer> {
        let me = peers[index];
        let dir = tempfile::Builder::new()
            .prefix(&format!("zk{index}-"))
            .tempdir()?;
        let data = dir.path().join("data");
        fs::create_dir_all(&data)?;

        let mut cfg = String::new();
        let _ = writeln!(cfg, "tickTime={}", TICK_TIME.as_millis());
        let _ = writeln!(cfg, "minSessionTimeout={}", MIN_SESSION_TIMEOUT.as_millis());
        let _ = writeln!(cfg, "maxSessionTimeout={}", MAX_SESSION_TIMEOUT.as_millis());
        let _ = writeln!(cfg, "initLimit=50");
        let _ = writeln!(cfg, "syncLimit=20");
        let _ = writeln!(cfg, "dataDir={}", data.display());
        if !options.reconfig {
            // With reconfiguration the client address is part of each server line.
            let _ = writeln!(cfg, "clientPortAddress=127.0.0.1");
            let _ = writeln!(cfg, "clientPort={}", me.client);
        }
        let _ = writeln!(cfg, "admin.enableServer=false");
        let _ = writeln!(cfg, "4lw.commands.whitelist=*");
        // Every client of a test is on 127.0.0.1: the default cap of 60 connections per
        // address is a cap on the test, not a protection.
        let _ = writeln!(cfg, "maxClientCnxns=0");
        let _ = writeln!(cfg, "standaloneEnabled={}", !options.reconfig);
        // Small transaction-log preallocation (KiB) instead of 64 MiB per server.
        let _ = writeln!(cfg, "preAllocSize=1024");
        let mut jvm_extra = Vec::new();
        if options.reconfig {
            let _ = writeln!(cfg, "reconfigEnabled=true");
            let _ = writeln!(cfg, "skipACL=yes");
        }
        if me.observer {
            let _ = writeln!(cfg, "peerType=observer");
        }
        if options.read_only {
            jvm_extra.push("-Dreadonlymode.enabled=true".to_string());
            // A read-only server creates only local sessions (creating a global one is a
            // write it refuses): without them no new session is to be had in a partition.
            let _ = writeln!(cfg, "localSessionsEnabled=true");
        }
        let secure_port = options.tls.as_ref().map(|tls| {
            let _ = writeln!(cfg, "secureClientPortAddress=127.0.0.1");
            let _ = writeln!(cfg, "secureClientPort={}", me.secure);
            let _ = writeln!(cfg, "ssl.keyStore.location={}", tls.server_pem().display());
            let _ = writeln!(cfg, "ssl.keyStore.type=PEM");
            let _ = writeln!(cfg, "ssl.trustStore.location={}", tls.ca().display());
            let _ = writeln!(cfg, "ssl.trustStore.type=PEM");
            let _ = writeln!(cfg, "ssl.clientAuth=need");
            // TLS needs the Netty connection factory.
            jvm_extra.push(
                "-Dzookeeper.serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory"
                    .to_string(),
            );
            me.secure
        });
        let myid = (peers.len() > 1).then_some(me.id);
        if let Some(myid) = myid {
            for peer in peers {
                let _ = writeln!(cfg, "{}", peer.server_line(options.reconfig));
            }
            fs::write(data.join("myid"), format!("{myid}\n"))?;
        }
        let config = dir.path().join("zoo.cfg");
        fs::write(&config, cfg)?;

        Ok(ZkServer {
            myid,
            client_port: me.client,
            secure_port,
            observer: me.observer,
            jvm_extra,
            java: java.to_path_buf(),
            config,
            log: dir.path().join("zookeeper.log"),
            child: Mutex::new(None),
            dir,
        })
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the JVM (stdout and stderr appended to [`log_path`](Self::log_path)). Does not wait
    /// for readiness. No-op if it is already running.
    fn spawn(&self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        writeln!(
            log,
            "===== integration-tests harness: starting {} =====",
            self.describe()
        )?;
        // The jar's manifest lacks netty-codec and netty-resolver, which TLS (Netty) needs.
        let classpath = format!(
            "{ZOOKEEPER_JAR}:{SLF4J_SIMPLE_JAR}:/usr/share/java/netty-codec.jar:/usr/share/java/netty-resolver.jar"
        );
        let child = Command::new(&self.java)
            .args(JVM_OPTS)
            .args(&self.jvm_extra)
            .arg("-cp")
            .arg(classpath)
            .arg(MAIN_CLASS)
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        *self.child() = Some(child);
        Ok(())
    }

    /// SIGKILLs the JVM and waits for it to exit. No-op if it is not running.
    pub fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            // Fails only if it already exited; the wait below reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `SIGSTOP` (`freeze`) or `SIGCONT` (`thaw`) to the JVM: a frozen server keeps its
    /// sockets open (the kernel still accepts connections) but answers nothing, like a server
    /// stuck in a long GC pause or on a dead host. Panics if it is not running.
    fn signal(&self, sig: &str) {
        let pid = match self.child().as_ref() {
            Some(child) => child.id(),
            None => panic!("{} is not running", self.describe()),
        };
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status();
        assert!(
            status.as_ref().is_ok_and(ExitStatus::success),
            "kill -{sig} {pid} ({}): {status:?}",
            self.describe()
        );
    }

    /// Exit status if the JVM was started and has exited on its own (it stays reaped).
    fn exit_status(&self) -> Option<ExitStatus> {
        self.child()
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Whether the JVM is started and has not exited.
    pub fn is_running(&self) -> bool {
        self.child()
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The `secureClientPort` (TLS), when the cluster has TLS.
    pub fn secure_port(&self) -> Option<u16> {
        self.secure_port
    }

    /// `myid` in an ensemble, `None` standalone.
    pub fn myid(&self) -> Option<usize> {
        self.myid
    }

    /// The server's temp dir (`zoo.cfg`, `data/`, `zookeeper.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the server log (all starts of this server, appended).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned());
        match log {
            Ok(log) => {
                let all: Vec<&str> = log.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(err) => format!("<cannot read {}: {err}>", self.log.display()),
        }
    }

    /// A four-letter word to this server (see [`four_letter_word`]).
    pub fn four_letter(&self, cmd: &str) -> io::Result<String> {
        four_letter_word(self.client_port, cmd, FOUR_LETTER_TIMEOUT)
    }

    /// Current `Mode:` from `srvr`, or `None` if it does not answer or is not serving yet.
    pub fn mode(&self) -> Option<String> {
        self.four_letter("srvr")
            .ok()
            .as_deref()
            .and_then(parse_mode)
            .map(str::to_string)
    }

    fn describe(&self) -> String {
        match self.myid {
            Some(id) => format!(
                "ZooKeeper ensemble member myid={id} on 127.0.0.1:{}",
                self.client_port
            ),
            None => format!("standalone ZooKeeper on 127.0.0.1:{}", self.client_port),
        }
    }

    fn ready_modes(&self) -> &'static [&'static str] {
        if self.observer {
            &["observer"]
        } else if self.myid.is_some() {
            &["leader", "follower"]
        } else {
            &["standalone"]
        }
    }

    fn ready_timeout(&self) -> Duration {
        if self.myid.is_some() {
            ENSEMBLE_READY_TIMEOUT
        } else {
            STANDALONE_READY_TIMEOUT
        }
    }

    /// Whether the log shows the JVM died because a port was taken.
    fn died_of_port_clash(&self) -> bool {
        let tail = self.log_tail(200);
        tail.contains("Address already in use") || tail.contains("BindException")
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// Why a start did not become ready.
#[derive(Debug)]
enum NotReady {
    /// A JVM exited; `port_clash` if its log blames a port already in use (worth a retry on
    /// fresh ports).
    Exited {
        index: usize,
        status: ExitStatus,
        port_clash: bool,
    },
    TimedOut {
        detail: String,
    },
}

/// A running ZooKeeper: one standalone server or an ensemble. Dropping it kills every JVM and
/// removes their temp dirs; if the current thread is panicking, the tail of each server's log is
/// printed to stderr first (captured and shown by the test runner for failing tests).
#[derive(Debug)]
pub struct ZkCluster {
    servers: Vec<ZkServer>,
    peers: Vec<PeerPorts>,
    options: ZkOptions,
    java: PathBuf,
}

impl ZkCluster {
    /// One standalone server, started and ready (`srvr` answers `Mode: standalone`).
    #[track_caller]
    pub fn standalone() -> ZkCluster {
        Self::start(1)
    }

    /// An ensemble of `n` (normally 3) servers, started and ready: every server answers `srvr`
    /// with `Mode: leader` or `Mode: follower`, and exactly one is the leader.
    #[track_caller]
    pub fn ensemble(n: usize) -> ZkCluster {
        assert!(
            n >= 2,
            "an ensemble needs at least 2 servers; use ZkCluster::standalone() for one"
        );
        Self::start(n)
    }

    #[track_caller]
    fn start(n: usize) -> ZkCluster {
        Self::start_with(n, ZkOptions::default())
    }

    /// `participants` servers (1: standalone, unless `options` asks for an ensemble feature)
    /// plus `options.observers`, started and ready.
    #[track_caller]
    pub fn start_with(participants: usize, options: ZkOptions) -> ZkCluster {
        let java = require_zookeeper();
        let n = participants + options.observers;
        let timeout = if n == 1 {
            STANDALONE_READY_TIMEOUT
        } else {
            ENSEMBLE_READY_TIMEOUT
        };
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(4 * n);
            let peers: Vec<PeerPorts> = ports
                .chunks(4)
                .enumerate()
                .map(|(i, p)| PeerPorts {
                    client: p[0],
                    quorum: p[1],
                    election: p[2],
                    secure: p[3],
                    observer: i >= participants,
                    id: i + 1,
                })
                .collect();
            let servers = (0..n)
                .map(|i| ZkServer::create(&java, i, &peers, &options))
                .collect::<io::Result<Vec<_>>>()
                .unwrap_or_else(|err| panic!("preparing ZooKeeper temp dirs: {err}"));
            let cluster = ZkCluster {
                servers,
                peers,
                options: options.clone(),
                java: java.clone(),
            };
            for (i, server) in cluster.servers.iter().enumerate() {
                if let Err(err) = server.spawn() {
                    panic!(
                        "spawning {} (server {i}) with {}: {err}",
                        server.describe(),
                        java.display()
                    );
                }
            }
            match cluster.wait_until(timeout, |c| c.all_ready()) {
                Ok(()) => return cluster,
                Err(NotReady::Exited {
                    port_clash: true,
                    index,
                    ..
                }) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "ZooKeeper server {index} lost a port race (attempt {attempt}/{START_ATTEMPTS}); \
                         retrying on fresh ports"
                    );
                }
                Err(why) => cluster.fail("start", why),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }

    /// Ready when every server answers with its ready mode (and an ensemble has one leader).
    fn all_ready(&self) -> bool {
        let modes: Vec<Option<String>> = self
            .servers
            .iter()
            .map(|s| if s.is_running() { s.mode() } else { None })
            .collect();
        let each_ready = self
            .servers
            .iter()
            .zip(&modes)
            .all(|(s, mode)| mode.as_deref().is_some_and(|m| s.ready_modes().contains(&m)));
        let leaders = modes.iter().filter(|m| m.as_deref() == Some("leader")).count();
        each_ready && (self.servers.len() == 1 || leaders == 1)
    }

    /// Polls `ready` until true, failing early if a JVM exits.
    fn wait_until(&self, timeout: Duration, mut ready: impl FnMut(&Self) -> bool) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            if ready(self) {
                return Ok(());
            }
            for (index, server) in self.servers.iter().enumerate() {
                if let Some(status) = server.exit_status() {
                    return Err(NotReady::Exited {
                        index,
                        status,
                        port_clash: server.died_of_port_clash(),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut {
                    detail: self.modes_summary(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn modes_summary(&self) -> String {
        let modes: Vec<String> = (0..self.servers.len())
            .map(|i| {
                let state = if !self.is_running(i) {
                    "not running".to_string()
                } else {
                    match self.four_letter(i, "srvr") {
                        Ok(srvr) => parse_mode(&srvr).map_or_else(|| srvr.trim().to_string(), str::to_string),
                        Err(err) => format!("no answer ({err})"),
                    }
                };
                format!("server {i} (port {}): {state}", self.servers[i].client_port)
            })
            .collect();
        modes.join("; ")
    }

    #[track_caller]
    fn fail(&self, action: &str, why: NotReady) -> ! {
        let (headline, logs_of): (String, Vec<usize>) = match why {
            NotReady::Exited { index, status, .. } => (
                format!("ZooKeeper server {index} exited during {action} ({status})"),
                vec![index],
            ),
            NotReady::TimedOut { detail } => (
                format!("ZooKeeper did not become ready during {action}: {detail}"),
                (0..self.servers.len()).collect(),
            ),
        };
        let mut msg = headline;
        for i in logs_of {
            let server = &self.servers[i];
            let _ = write!(
                msg,
                "\n----- last {LOG_TAIL_LINES} lines of server {i} log ({}) -----\n{}",
                server.log.display(),
                server.log_tail(LOG_TAIL_LINES)
            );
        }
        panic!("{msg}")
    }

    fn server(&self, i: usize) -> &ZkServer {
        match self.servers.get(i) {
            Some(server) => server,
            None => panic!("no ZooKeeper server {i}: the cluster has {}", self.servers.len()),
        }
    }

    /// Number of servers (1 standalone).
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Indices of all servers, `0..server_count()`.
    pub fn indices(&self) -> std::ops::Range<usize> {
        0..self.servers.len()
    }

    /// `127.0.0.1:s1,...` of the `secureClientPort`s (TLS clusters only).
    pub fn secure_connect_string(&self) -> String {
        let hosts: Vec<String> = self
            .servers
            .iter()
            .map(|s| match s.secure_port {
                Some(port) => format!("127.0.0.1:{port}"),
                None => panic!(
                    "{} has no TLS port: start the cluster with ZkOptions::tls",
                    s.describe()
                ),
            })
            .collect();
        hosts.join(",")
    }

    /// `127.0.0.1:p` of server `i` alone.
    pub fn server_address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.server(i).client_port)
    }

    /// Server `i`'s `server.N=...` line, as a reconfig request names a joining server.
    pub fn server_spec(&self, i: usize) -> String {
        self.peers[i].server_line(true)
    }

    /// Starts one more server (a participant, or an observer) configured with the current
    /// membership plus itself, and waits until it follows the leader. In a reconfigurable
    /// ensemble it is not a voting member until a reconfig request adds it
    /// ([`server_spec`](Self::server_spec)). Returns its index.
    #[track_caller]
    pub fn add_server(&mut self, observer: bool) -> usize {
        let ports = free_ports(4);
        let id = self.peers.iter().map(|p| p.id).max().unwrap_or(0) + 1;
        self.peers.push(PeerPorts {
            client: ports[0],
            quorum: ports[1],
            election: ports[2],
            secure: ports[3],
            observer,
            id,
        });
        let index = self.peers.len() - 1;
        let server = ZkServer::create(&self.java, index, &self.peers, &self.options)
            .unwrap_or_else(|err| panic!("preparing ZooKeeper temp dir: {err}"));
        if let Err(err) = server.spawn() {
            panic!("spawning {}: {err}", server.describe());
        }
        self.servers.push(server);
        let ready = self.wait_until(ENSEMBLE_READY_TIMEOUT, |c| {
            c.server(index)
                .mode()
                .is_some_and(|m| m == "follower" || m == "observer")
        });
        if let Err(why) = ready {
            self.fail(&format!("start of added server {index}"), why);
        }
        index
    }

    /// Process id of server `i`'s JVM while it runs (CPU accounting from `/proc`).
    pub fn pid(&self, i: usize) -> Option<u32> {
        let server = self.server(i);
        let child = server.child();
        child.as_ref().map(Child::id)
    }

    /// `myid` of server `i` (ensembles).
    pub fn myid(&self, i: usize) -> usize {
        self.peers[i].id
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...` (killed servers included, as a real client config would).
    pub fn connect_string(&self) -> String {
        let hosts: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.client_port))
            .collect();
        hosts.join(",")
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.server(i).client_port
    }

    /// Four-letter word (`srvr`, `cons`, `mntr`, ...) to server `i`, read to EOF, bounded by 2 s.
    pub fn four_letter(&self, i: usize, cmd: &str) -> io::Result<String> {
        self.server(i).four_letter(cmd)
    }

    /// `Mode:` of server `i` (`standalone`, `leader`, `follower`), `None` if down or not serving.
    pub fn mode(&self, i: usize) -> Option<String> {
        self.server(i).mode()
    }

    /// Index of the current leader, if a running server reports `Mode: leader`.
    pub fn leader(&self) -> Option<usize> {
        self.indices()
            .find(|&i| self.is_running(i) && self.mode(i).as_deref() == Some("leader"))
    }

    /// Index of the server that currently holds a client connection with session `session_id`.
    pub fn server_with_session(&self, session_id: i64) -> Option<usize> {
        self.sessions()
            .into_iter()
            .find(|&(_, sid)| sid == session_id)
            .map(|(i, _)| i)
    }

    /// `(server index, session id)` of every client connection with a session on every running
    /// server (from `cons`; the harness's own probe connection has no session and is skipped).
    pub fn sessions(&self) -> Vec<(usize, i64)> {
        self.indices()
            .filter(|&i| self.is_running(i))
            .filter_map(|i| self.four_letter(i, "cons").ok().map(|cons| (i, cons)))
            .flat_map(|(i, cons)| parse_cons_sessions(&cons).into_iter().map(move |sid| (i, sid)))
            .collect()
    }

    /// SIGKILLs server `i` and waits for it to exit. Its config, data and ports are kept for
    /// [`restart`](Self::restart).
    pub fn kill(&mut self, i: usize) {
        self.server(i).kill();
    }

    /// Starts server `i` again with the same config, data and ports and waits until it is ready
    /// (`standalone`, or `leader`/`follower` in an ensemble). No-op start if it is running.
    #[track_caller]
    pub fn restart(&mut self, i: usize) {
        let server = self.server(i);
        if let Err(err) = server.spawn() {
            panic!("respawning {} (server {i}): {err}", server.describe());
        }
        let modes = server.ready_modes();
        let ready = self.wait_until(server.ready_timeout(), |c| {
            c.server(i).mode().as_deref().is_some_and(|m| modes.contains(&m))
        });
        if let Err(why) = ready {
            self.fail(&format!("restart of server {i}"), why);
        }
    }

    /// SIGKILLs every server (the whole ensemble is down) and waits for them to exit.
    pub fn kill_all(&mut self) {
        for server in &self.servers {
            server.kill();
        }
    }

    /// Starts every server that is not running, without waiting for readiness: poll
    /// [`serving`](Self::serving) (or [`mode`](Self::mode)) to see the ensemble serve again.
    pub fn spawn_all(&mut self) {
        for (i, server) in self.servers.iter().enumerate() {
            if let Err(err) = server.spawn() {
                panic!("respawning {} (server {i}): {err}", server.describe());
            }
        }
    }

    /// Whether the ensemble serves clients: some server answers `srvr` with its ready mode
    /// (`standalone`, or `leader`: followers serve once a leader exists). A frozen server costs
    /// the four-letter-word timeout (2 s) here.
    pub fn serving(&self) -> bool {
        self.indices()
            .any(|i| self.is_running(i) && self.mode(i).is_some_and(|m| m == "standalone" || m == "leader"))
    }

    /// Starts every server again (after [`kill_all`](Self::kill_all)) and waits until all are
    /// ready, as at start.
    #[track_caller]
    pub fn restart_all(&mut self) {
        self.spawn_all();
        let timeout = self.servers[0].ready_timeout();
        if let Err(why) = self.wait_until(timeout, |c| c.all_ready()) {
            self.fail("restart of every server", why);
        }
    }

    /// Freezes server `i` (`SIGSTOP`): its sockets stay open but it answers nothing, neither
    /// clients nor peers. [`thaw`](Self::thaw) resumes it; dropping the cluster kills it anyway.
    pub fn freeze(&mut self, i: usize) {
        self.server(i).signal("STOP");
    }

    /// Resumes a server frozen by [`freeze`](Self::freeze) (`SIGCONT`).
    pub fn thaw(&mut self, i: usize) {
        self.server(i).signal("CONT");
    }

    /// Whether server `i`'s JVM is running (it may not be serving yet).
    pub fn is_running(&self, i: usize) -> bool {
        self.server(i).is_running()
    }

    /// The last `lines` lines of server `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        self.server(i).log_tail(lines)
    }

    /// Server `i`'s temp dir (`zoo.cfg`, `data/`, `zookeeper.log`).
    pub fn server_dir(&self, i: usize) -> &Path {
        self.server(i).dir()
    }
}

impl Drop for ZkCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, server) in self.servers.iter().enumerate() {
                eprintln!(
                    "----- test failed; last {LOG_TAIL_LINES} lines of ZooKeeper server {i} log ({}) -----\n{}",
                    server.log.display(),
                    server.log_tail(LOG_TAIL_LINES)
                );
            }
        }
        // Kill them all first, then reap, so no server spends time electing a new leader.
        for server in &self.servers {
            if let Some(child) = server.child().as_mut() {
                let _ = child.kill();
            }
        }
        // Each ZkServer's Drop reaps its JVM and removes its temp dir.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_srvr_mode() {
        let srvr = "Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.0/0\nMode: follower\nNode count: 5\n";
        assert_eq!(parse_mode(srvr), Some("follower"));
        assert_eq!(
            parse_mode("This ZooKeeper instance is not currently serving requests\n"),
            None
        );
    }

    #[test]
    fn parses_cons_session_ids() {
        let cons =
            " /127.0.0.1:43210[1](queued=0,recved=5,sent=5,sid=0x1000a1b2c3d0000,lop=PING,est=1,to=6000)\n \
                    /127.0.0.1:43212[0](queued=0,recved=1,sent=0)\n \
                    /127.0.0.1:43214[1](queued=0,recved=1,sent=1,sid=0xff00000000000001,lop=PING)\n\n";
        assert_eq!(
            parse_cons_sessions(cons),
            vec![0x1000a1b2c3d0000, 0xff00000000000001_u64 as i64]
        );
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(9);
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), 9);
        assert!(!ports.contains(&free_port()));
    }
}
