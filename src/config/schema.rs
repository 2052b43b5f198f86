//! The TOML schema as serde structs, exactly as the user writes it. Every table denies unknown
//! fields; fields that are checked after parsing (names, addresses, paths, cross references) keep
//! their span so the check can point at them. `validate.rs` turns this into a [`Snapshot`].
//!
//! [`Snapshot`]: super::Snapshot

use serde::Deserialize;
use toml::Spanned;

use super::values::{Dur, Size, Workers};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub rate_limits: Vec<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub auth: Vec<Spanned<super::auth::RawAuth>>,
    pub redis: Option<Spanned<RawRedis>>,
    pub admin: Option<Spanned<RawAdmin>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Spanned<String>,
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

/// `[[rate_limits]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub name: Spanned<String>,
    pub key: Spanned<String>,
    pub rate: Spanned<i64>,
    #[serde(default = "secs::<1>")]
    pub period: Dur<false>,
    pub burst: Option<Spanned<i64>>,
    #[serde(default)]
    pub mode: LimitMode,
    pub sync_interval: Option<Spanned<Dur<false>>>,
    pub max_keys: Option<Spanned<i64>>,
    pub status: Option<Spanned<u16>>,
    #[serde(default)]
    pub headers: LimitHeaders,
    #[serde(default)]
    pub on_redis_error: RedisFallback,
}

/// How the workers of one process (and several processes) share a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// Per-core buckets reconciled on the sync tick (the default).
    #[default]
    Sync,
    /// Each worker enforces `rate / workers` alone.
    Local,
    /// One shared atomic bucket per key (the accuracy baseline).
    Exact,
    /// `sync`, plus a count shared by several instances through Redis.
    Redis,
}

impl LimitMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMode::Sync => "sync",
            LimitMode::Local => "local",
            LimitMode::Exact => "exact",
            LimitMode::Redis => "redis",
        }
    }
}

/// Which responses carry `RateLimit-Policy` and `RateLimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitHeaders {
    All,
    #[default]
    Rejected,
    None,
}

/// What a `redis` limit does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisFallback {
    /// Go on with this instance's last known share of the limit.
    #[default]
    Local,
    /// Let everything through.
    Allow,
    /// Refuse everything.
    Deny,
}

/// `[redis]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Spanned<String>,
    #[serde(default = "ms_500")]
    pub timeout: Dur<false>,
}

fn ms_500() -> Dur<false> {
    Dur(std::time::Duration::from_millis(500))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    /// io_uring, falling back to epoll with a warning.
    #[default]
    Auto,
    IoUring,
    Epoll,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Auto => "auto",
            DriverKind::IoUring => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingFlag {
    CoopTaskrun,
    SingleIssuer,
    DeferTaskrun,
    Sqpoll,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    #[serde(default)]
    pub workers: Workers,
    #[serde(default = "yes")]
    pub pin: bool,
    #[serde(default)]
    pub driver: DriverKind,
    pub ring_entries: Option<Spanned<u32>>,
    pub ring_flags: Option<Spanned<Vec<Spanned<RingFlag>>>>,
    #[serde(default = "default_drain")]
    pub drain_timeout: Dur<true>,
    pub sync_interval: Option<Spanned<Dur<false>>>,
}

impl Default for RawRuntime {
    fn default() -> Self {
        RawRuntime {
            workers: Workers::Auto,
            pin: true,
            driver: DriverKind::Auto,
            ring_entries: None,
            ring_flags: None,
            drain_timeout: default_drain(),
            sync_interval: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_head_bytes: Option<Spanned<Size>>,
    pub max_headers: Option<Spanned<u32>>,
    pub max_body_bytes: Option<Spanned<Size>>,
    #[serde(default = "secs::<10>")]
    pub client_header_timeout: Dur<false>,
    #[serde(default = "secs::<60>")]
    pub client_idle_timeout: Dur<false>,
    #[serde(default)]
    pub ignore_client_abort: bool,
    #[serde(default = "secs::<3600>")]
    pub tunnel_idle_timeout: Dur<false>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_head_bytes: None,
            max_headers: None,
            max_body_bytes: None,
            client_header_timeout: secs::<10>(),
            client_idle_timeout: secs::<60>(),
            ignore_client_abort: false,
            tunnel_idle_timeout: secs::<3600>(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Spanned<String>>,
    pub address: Spanned<String>,
    pub routes: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default = "yes")]
    pub merge_slashes: bool,
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    pub access_log: Option<Spanned<RawAccessLog>>,
    #[serde(default)]
    pub proxy_protocol: bool,
    pub tls: Option<Spanned<RawListenerTls>>,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    pub upstream: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u32>>,
    pub idle_timeout: Option<Spanned<Dur<false>>>,
}

/// What a listener's connections carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    #[default]
    Http,
    /// Bytes relayed to an upstream as they are (L4).
    Tcp,
}

/// A listener's `tls` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Spanned<Vec<Spanned<RawCertificate>>>,
    #[serde(default)]
    pub min_version: TlsVersion,
    pub cipher_suites: Option<Vec<Spanned<String>>>,
    #[serde(default = "secs::<10>")]
    pub handshake_timeout: Dur<false>,
    #[serde(default = "yes")]
    pub session_tickets: bool,
    pub session_cache: Option<Spanned<i64>>,
    pub client_ca: Option<Spanned<String>>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    pub client_subject_header: Option<Spanned<String>>,
}

/// One certificate chain and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// Whether a client certificate is required once `client_ca` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Require,
    Optional,
}

/// `access_log` of a listener or a route: a table, or `"off"` (a route that logs nothing
/// although its listener does).
#[derive(Debug)]
pub enum RawAccessLog {
    Off,
    To(RawAccessLogTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLogTable {
    pub path: Spanned<String>,
    #[serde(default)]
    pub format: LogFormat,
    pub buffer: Option<Spanned<Size>>,
    pub flush: Option<Spanned<Dur<false>>>,
}

/// The line format of an access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// nginx's and Apache's `combined`, then request time, upstream address, upstream time and
    /// request id as `key=value`.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

impl<'de> Deserialize<'de> for RawAccessLog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawAccessLog;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a table { path = \"...\", format = \"combined\" | \"json\" } or \"off\"",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawAccessLog, E> {
                match s {
                    "off" => Ok(RawAccessLog::Off),
                    _ => Err(E::custom(format!(
                        "invalid access_log {s:?}: give a table {{ path = \"...\" }} or \"off\""
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawAccessLog, A::Error> {
                RawAccessLogTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawAccessLog::To)
            }
        }
        d.deserialize_any(V)
    }
}

/// What an escaped `/` or `\` (`%2F`, `%5C`) in a request path does. Either way it separates
/// segments for the routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Forward it as received (`/api/projects/group%2Fname` reaches the backend as sent).
    #[default]
    Keep,
    /// Answer 400.
    Reject,
    /// Forward it decoded, as `/`.
    Decode,
}

impl EscapedSlashes {
    pub fn as_str(self) -> &'static str {
        match self {
            EscapedSlashes::Keep => "keep",
            EscapedSlashes::Reject => "reject",
            EscapedSlashes::Decode => "decode",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    RoundRobin,
    LeastConn,
    /// Power of two random choices over in-flight requests: the default.
    #[default]
    P2c,
    Random,
    ConsistentHash,
}

impl BalancerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BalancerKind::RoundRobin => "round_robin",
            BalancerKind::LeastConn => "least_conn",
            BalancerKind::P2c => "p2c",
            BalancerKind::Random => "random",
            BalancerKind::ConsistentHash => "consistent_hash",
        }
    }
}

/// The PROXY protocol version an upstream expects on its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyVersion {
    V1,
    V2,
}

impl ProxyVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Spanned<String>,
    #[serde(default)]
    pub balancer: BalancerKind,
    pub hash_on: Option<Spanned<String>>,
    pub table_size: Option<Spanned<u64>>,
    pub backends: Spanned<Vec<Spanned<RawBackend>>>,
    #[serde(default)]
    pub pool: RawPool,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub max_response_head_bytes: Option<Spanned<Size>>,
    pub max_response_headers: Option<Spanned<u32>>,
    pub proxy_protocol: Option<ProxyVersion>,
    pub health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    pub outlier: RawOutlier,
    #[serde(default)]
    pub retry: RawRetry,
    pub panic_threshold: Option<Spanned<u32>>,
    pub slow_start: Option<Dur<true>>,
    pub max_connections: Option<Spanned<u32>>,
    pub max_pending: Option<Spanned<u32>>,
    pub resolve_interval: Option<Dur<false>>,
    #[serde(default)]
    pub tls: bool,
    pub sni: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub max_idle: Option<Spanned<i64>>,
    #[serde(default = "secs::<60>")]
    pub idle_timeout: Dur<false>,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            max_idle: None,
            idle_timeout: secs::<60>(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default = "secs::<2>")]
    pub connect: Dur<false>,
    #[serde(default = "secs::<30>")]
    pub response_head: Dur<false>,
    #[serde(default = "secs::<60>")]
    pub idle: Dur<false>,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            connect: secs::<2>(),
            response_head: secs::<30>(),
            idle: secs::<60>(),
        }
    }
}

/// `[upstreams.health]`: active checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub tcp: bool,
    #[serde(default = "secs::<2>")]
    pub interval: Dur<false>,
    #[serde(default = "secs::<1>")]
    pub timeout: Dur<false>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
    pub expect_status: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    #[serde(default)]
    pub start_down: bool,
}

/// `[upstreams.outlier]`: passive ejection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<Spanned<u32>>,
    #[serde(default = "secs_z::<30>")]
    pub base_ejection: Dur<true>,
    pub max_ejected_percent: Option<Spanned<u32>>,
}

impl Default for RawOutlier {
    fn default() -> Self {
        RawOutlier {
            consecutive_failures: None,
            base_ejection: secs_z::<30>(),
            max_ejected_percent: None,
        }
    }
}

/// `[upstreams.retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<Spanned<u32>>,
    pub budget_percent: Option<Spanned<u32>>,
    pub min_concurrent: Option<Spanned<u32>>,
    pub on: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub path_prefix: Option<Spanned<String>>,
    pub path_exact: Option<Spanned<String>>,
    pub strip_prefix: Option<Spanned<bool>>,
    pub replace_prefix: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub rate_limits: Option<Vec<Spanned<String>>>,
    pub access_log: Option<Spanned<RawAccessLog>>,
    #[serde(default)]
    pub redirect_https: bool,
    pub https_port: Option<Spanned<u16>>,
    pub upgrades: Option<Vec<Spanned<String>>>,
    pub client_subjects: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub connect: bool,
    // Gateway keys (issue #12): matching beyond host and path, split, policies, transforms.
    pub methods: Option<Vec<Spanned<String>>>,
    pub path_regex: Option<Spanned<String>>,
    pub match_headers: Option<Vec<Spanned<RawFieldMatch>>>,
    pub match_query: Option<Vec<Spanned<RawFieldMatch>>>,
    pub split: Option<Spanned<Vec<Spanned<RawSplit>>>>,
    pub auth: Option<Spanned<String>>,
    pub consumers: Option<Vec<Spanned<String>>>,
    pub request_headers: Option<Spanned<RawHeaderOps>>,
    pub response_headers: Option<Spanned<RawHeaderOps>>,
    pub path_rewrite: Option<Spanned<RawPathRewrite>>,
    pub query: Option<Spanned<RawQueryOps>>,
    pub host_rewrite: Option<Spanned<String>>,
    #[serde(default)]
    pub request_id: bool,
    pub cors: Option<Spanned<RawCors>>,
    #[serde(rename = "return")]
    pub ret: Option<Spanned<RawReturn>>,
    pub aggregate: Option<Spanned<Vec<Spanned<RawAggregatePart>>>>,
    #[serde(default)]
    pub aggregate_on_error: AggregateOnError,
    pub aggregate_max_bytes: Option<Spanned<Size>>,
}

/// One condition of `match_headers` / `match_query`: exactly one of `exact`, `prefix`, `regex`,
/// `present`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldMatch {
    pub name: Spanned<String>,
    pub exact: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    pub present: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub upstream: Spanned<String>,
    pub weight: Spanned<i64>,
}

/// `set` / `add` / `remove` of request or response fields.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    #[serde(default)]
    pub set: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub add: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRewrite {
    pub regex: Spanned<String>,
    pub replace: Spanned<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawQueryOps {
    #[serde(default)]
    pub set: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub origins: Spanned<Vec<Spanned<String>>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub headers: Option<Vec<Spanned<String>>>,
    pub expose_headers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub credentials: bool,
    pub max_age: Option<Dur<true>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReturn {
    pub status: Spanned<u16>,
    pub location: Option<Spanned<String>>,
    pub body: Option<Spanned<String>>,
    pub content_type: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregatePart {
    pub key: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
    pub path: Spanned<String>,
    pub timeout: Option<Spanned<Dur<false>>>,
}

/// What an aggregate route answers when a part fails.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AggregateOnError {
    /// 200 with `"partial": true` and the part's error under `"errors"`.
    #[default]
    Partial,
    /// 502 for the whole answer.
    Fail,
}

fn yes() -> bool {
    true
}

fn default_drain() -> Dur<true> {
    Dur(std::time::Duration::from_secs(10))
}

fn secs<const N: u64>() -> Dur<false> {
    Dur(std::time::Duration::from_secs(N))
}

fn secs_z<const N: u64>() -> Dur<true> {
    Dur(std::time::Duration::from_secs(N))
}
