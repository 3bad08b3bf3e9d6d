//! The `hooks:` part of a service: commands run around availability changes, and the
//! minimum disable time (go-nerve's `preAvailableCommand`, `disableShutdownCommand`,
//! `disableGracefullyDoneCommand`, `disableMinDurationInMilli`).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use common::config::{self as cc, Problems};
use serde::Deserialize;

use super::checks::{exec_check, CheckDefaults, ExecCheck, MIN_INTERVAL};

/// Default time allowed to `pre_available`.
pub const PRE_AVAILABLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed to `on_disable` (go-nerve's `disableShutdownMaxDurationInMilli`).
pub const ON_DISABLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed to one run of `drained`.
pub const DRAINED_TIMEOUT: Duration = Duration::from_secs(5);
/// Default pause between two runs of `drained` (go-nerve's
/// `disableGracefullyDoneIntervalInMilli`).
pub const DRAINED_INTERVAL: Duration = Duration::from_secs(1);
/// Default longest wait for `drained` (go-nerve's `disableMaxDurationInMilli`).
pub const DRAINED_MAX_WAIT: Duration = Duration::from_secs(60);

/// A service's hooks. Every command runs without a shell unless `shell: true`, in its own
/// process group (killed whole on timeout), with nerve's environment plus `NERVE_SERVICE`,
/// `NERVE_HOST`, `NERVE_PORT`, `NERVE_HOOK` (the hook's name) and its `env`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hooks {
    /// Runs each time the service is about to become available (healthy or forced, from
    /// absent or unavailable); a failure keeps it unavailable until the next evaluation (the
    /// next check run), which tries again. Default none.
    pub pre_available: Option<Hook>,
    /// Runs once the node is gone or marked unavailable after an operator's disable, and on
    /// SIGTERM. Default none.
    pub on_disable: Option<Hook>,
    /// After `on_disable`: run every `interval` until it exits 0 or `max_wait` (counted
    /// from the disable) is over. Default none.
    pub drained: Option<Drained>,
    /// A disable (operator's, or SIGTERM's) lasts at least this long, counted from the
    /// disable: `disable?wait=` answers, and SIGTERM deletes the node (with
    /// `expose_unavailable`) and exits, no earlier. Default 0 s.
    pub min_disable_time: Duration,
}

impl Hooks {
    /// True when a disable has anything to do besides the ZooKeeper write.
    pub fn any_disable(&self) -> bool {
        self.on_disable.is_some() || self.drained.is_some() || !self.min_disable_time.is_zero()
    }
}

/// One hook command.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// The command and its environment.
    pub command: ExecCheck,
    /// Time allowed to one run; then its process group is killed and the run failed.
    pub timeout: Duration,
}

/// The `drained` hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Drained {
    /// The command, its environment and its per-run timeout (default 5 s).
    pub hook: Hook,
    /// Pause between the end of a failed run and the next one. Default 1 s.
    pub interval: Duration,
    /// Longest time from the disable to the end of polling. Default 60 s.
    pub max_wait: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pre_available: Option<RawHook>,
    on_disable: Option<RawHook>,
    drained: Option<RawHook>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    min_disable_time: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    command: Option<serde_json::Value>,
    shell: Option<bool>,
    env: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "cc::opt_duration")]
    max_wait: Option<Duration>,
}

/// Validates `hooks` of service `service` (at key path `at`).
pub(super) fn validate(
    at: &str,
    raw: RawHooks,
    service: &str,
    host: &str,
    port: u16,
    p: &mut Problems,
) -> Hooks {
    let d = CheckDefaults {
        service,
        host,
        port,
        interval: Duration::from_secs(1),
        rise: NonZeroU32::MIN,
        fall: NonZeroU32::MIN,
    };
    let hook = |name: &str, h: RawHook, default_timeout: Duration, p: &mut Problems| {
        let hat = format!("{at}.{name}");
        if name != "drained" {
            for (key, set) in [
                ("interval", h.interval.is_some()),
                ("max_wait", h.max_wait.is_some()),
            ] {
                if set {
                    p.push(format!("{hat}.{key}"), "only for the drained hook");
                }
            }
        }
        let mut command = exec_check(&hat, h.command, h.shell, h.env, d, host, port, p);
        command
            .env
            .entry("NERVE_HOOK".to_string())
            .or_insert_with(|| name.to_string());
        let timeout = h.timeout.unwrap_or(default_timeout);
        if timeout.is_zero() {
            p.push(format!("{hat}.timeout"), "must be more than 0");
        }
        (Hook { command, timeout }, h.interval, h.max_wait)
    };
    let pre_available = raw
        .pre_available
        .map(|h| hook("pre_available", h, PRE_AVAILABLE_TIMEOUT, p).0);
    let on_disable = raw
        .on_disable
        .map(|h| hook("on_disable", h, ON_DISABLE_TIMEOUT, p).0);
    let drained = raw.drained.map(|h| {
        let (hook, interval, max_wait) = hook("drained", h, DRAINED_TIMEOUT, p);
        let interval = interval.unwrap_or(DRAINED_INTERVAL);
        if interval < MIN_INTERVAL {
            p.push(format!("{at}.drained.interval"), "must be at least 10ms");
        }
        Drained {
            hook,
            interval,
            max_wait: max_wait.unwrap_or(DRAINED_MAX_WAIT),
        }
    });
    Hooks {
        pre_available,
        on_disable,
        drained,
        min_disable_time: raw.min_disable_time.unwrap_or(Duration::ZERO),
    }
}
