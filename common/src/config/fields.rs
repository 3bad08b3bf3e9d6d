//! Validators of single values (durations, listen addresses, ZooKeeper hosts and paths,
//! names, log levels), shared by both agents' configs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use super::Problems;

/// `zk_hosts`: a connect string, or (airbnb nerve style) a list of `host:port`.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "not a connect string \"host:port,...[/chroot]\" nor a list of \"host:port\""
)]
pub enum ZkHosts {
    /// `host:port,host:port[/chroot]`.
    One(String),
    /// `[host:port, ...]`, joined with commas.
    Many(Vec<String>),
}

/// Validates a service's `zk_hosts` and `zk_path` (keys under `at`); returns the connect
/// string.
pub fn zk_location(p: &mut Problems, at: &str, hosts: ZkHosts, path: &str) -> String {
    let hosts = match hosts {
        ZkHosts::One(h) => h,
        ZkHosts::Many(list) => list.join(","),
    };
    if let Err(e) = check_zk_hosts(&hosts) {
        p.push(format!("{at}.zk_hosts"), e);
    }
    if let Err(e) = check_zk_path(path) {
        p.push(format!("{at}.zk_path"), e);
    }
    hosts
}

/// Longest service name or instance id, in bytes (the longest DNS name).
pub const MAX_NAME_BYTES: usize = 253;

/// Validates a service name (`at.name`): 1 to [`MAX_NAME_BYTES`] letters, digits, `-`, `_`,
/// `.`.
pub fn check_service_name(p: &mut Problems, at: &str, name: &str) {
    if let Err(e) = check_name(name) {
        p.push(format!("{at}.name"), e);
    }
}

/// Checks a name that ends up in ZooKeeper node names, payloads, HAProxy server names and
/// metrics labels: 1 to [`MAX_NAME_BYTES`] ASCII letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{:?} must be 1 to {MAX_NAME_BYTES} bytes long",
            shorten(name)
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "{:?} must be made of ASCII letters, digits, '-', '_', '.'",
            shorten(name)
        ));
    }
    Ok(())
}

/// `s` cut to 64 characters, so that a hostile value cannot flood an error message.
pub(super) fn shorten(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(64).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Longest duration any key accepts (24 h): far beyond any sensible timeout or interval,
/// and far from the overflows of `Instant + Duration` that an absurd value would cause.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"1.5s"` into a [`Duration`] of at most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a number and a unit, like \"250ms\" or \"2s\"")
    })?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => return Err(format!("invalid duration {text:?}: missing unit (ms, s, m or h)")),
        u => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {u:?} (use ms, s, m or h)"
            ))
        }
    };
    let d =
        Duration::try_from_secs_f64(value * scale).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("invalid duration {text:?}: longer than 24h"));
    }
    Ok(d)
}

/// Serde adapter for `Option<Duration>`.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// Checks a `log.level` directive: what `tracing_subscriber::EnvFilter` parses, and also
/// every comma-separated directive without `=` must be a level (`off`, `error`, `warn`,
/// `info`, `debug`, `trace`): `EnvFilter` would take a typo like `verbose` as a target name
/// and silently log nothing. (A bare target is written `target=trace`.)
pub fn check_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("empty log level: use off, error, warn, info, debug or trace".into());
    }
    if !level.is_ascii() {
        // Targets and levels are ASCII; tracing-subscriber's parser also panics on some
        // other characters (it slices inside them).
        return Err(format!(
            "invalid log level {:?}: only ASCII characters are allowed",
            shorten(level)
        ));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains(['=', '[']) && directive.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "invalid log level {:?}: {:?} is not a level (off, error, warn, info, debug, \
                 trace) nor a target=level directive",
                shorten(level),
                shorten(directive)
            ));
        }
    }
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("invalid log level {:?}: {e}", shorten(level)))
}

/// Parses a listen address: `ip:port` (`[v6]:port`), or a bare port meaning
/// `127.0.0.1:port`. Port 0 is refused: it would bind a random port nobody can reach.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let addr = match text.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => text.parse().map_err(|_| {
            format!(
                "invalid listen address {:?}: expected ip:port or a port",
                shorten(text)
            )
        })?,
    };
    if addr.port() == 0 {
        return Err(format!("invalid listen address {text:?}: port 0 is not allowed"));
    }
    Ok(addr)
}

/// True when `a` and `b` cannot both be bound: same port, and the same address or a
/// wildcard covering the other one. `0.0.0.0` covers every IPv4 address; `[::]` covers
/// every address of both families (Linux binds it dual-stack by default); an IPv4-mapped
/// IPv6 address is its IPv4 address.
pub fn listen_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    let v6_any = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unspecified());
    let v4_any_over =
        |any: IpAddr, other: IpAddr| matches!(any, IpAddr::V4(v4) if v4.is_unspecified()) && other.is_ipv4();
    x == y || v6_any(x) || v6_any(y) || v4_any_over(x, y) || v4_any_over(y, x)
}

/// Checks a ZooKeeper connect string: `host:port[,host:port...][/chroot]`, where `host`
/// is an IP address (IPv6 bracketed or not) or a host name (see
/// [`crate::codec::check_host`]) and the chroot a valid path ([`check_zk_path`]).
pub fn check_zk_hosts(text: &str) -> Result<(), String> {
    let (hosts, chroot) = match text.find('/') {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    if hosts.is_empty() {
        return Err("empty ZooKeeper connect string".into());
    }
    for h in hosts.split(',') {
        let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
            let host_ok = match host.strip_prefix('[').and_then(|v6| v6.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => crate::codec::check_host(host).is_ok(),
            };
            host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!(
                "invalid ZooKeeper server {:?}: expected host:port",
                shorten(h)
            ));
        }
    }
    if let Some(c) = chroot {
        check_zk_path(c).map_err(|e| format!("chroot: {e}"))?;
    }
    Ok(())
}

/// Checks an absolute ZooKeeper path: starts with `/`, no empty segment, no trailing `/`,
/// no `.` or `..` segment, and none of the characters ZooKeeper refuses (see
/// [`zk_char_allowed`]).
pub fn check_zk_path(path: &str) -> Result<(), String> {
    let bad = !path.starts_with('/')
        || path.len() > 1 && path.ends_with('/')
        || path.contains("//")
        || path.split('/').any(|s| s == "." || s == "..");
    if bad {
        return Err(format!(
            "invalid ZooKeeper path {:?}: expected an absolute path like /services/web",
            shorten(path)
        ));
    }
    if let Some(c) = path.chars().find(|c| !zk_char_allowed(*c)) {
        return Err(format!(
            "invalid ZooKeeper path {:?}: ZooKeeper refuses the character {:?} (U+{:04X})",
            shorten(path),
            c,
            u32::from(c)
        ));
    }
    Ok(())
}

/// Whether ZooKeeper accepts `c` in a path (its `PathUtils.validatePath`): not U+0000 to
/// U+001F, U+007F to U+009F, U+D800 to U+F8FF or U+FFF0 to U+FFFF. ZooKeeper checks UTF-16
/// units, so characters beyond U+FFFF (surrogate pairs) are refused as well.
pub fn zk_char_allowed(c: char) -> bool {
    !matches!(u32::from(c), 0..=0x1F | 0x7F..=0x9F | 0xD800..=0xF8FF | 0xFFF0..)
}

/// Where a service's nodes really live, to tell whether two services share a path: the
/// ensemble (its servers, sorted) and the absolute path (chroot + `zk_path`).
pub fn zk_location_key(zk_hosts: &str, zk_path: &str) -> (Vec<String>, String) {
    let (hosts, chroot) = match zk_hosts.find('/') {
        Some(i) => (&zk_hosts[..i], &zk_hosts[i..]),
        None => (zk_hosts, ""),
    };
    let mut servers: Vec<String> = hosts.split(',').map(str::to_ascii_lowercase).collect();
    servers.sort();
    servers.dedup();
    let path = match zk_path {
        "/" if !chroot.is_empty() => chroot.to_string(),
        _ => format!("{chroot}{zk_path}"),
    };
    (servers, path)
}
