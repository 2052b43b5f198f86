//! Configuration: the TOML file is read once at start (before any worker exists), deserialised
//! into the schema in `schema.rs` and validated in `validate.rs` into an immutable [`Snapshot`]:
//! durations, resolved socket addresses, sizes in bytes, compiled route tables, upstreams with
//! numbered backends. Workers get the snapshot behind one `Arc` each and read it without locks;
//! nothing on the request path looks anything up by name. Every error carries
//! `file:line:col` of the offending value.

mod auth;
mod gateway;
mod limits;
mod logs;
mod schema;
mod snapshot;
mod tls;
mod upstreams;
mod validate;
pub mod values;

use std::fmt;
use std::ops::Range;
use std::path::Path;

pub use schema::{
    BalancerKind, DriverKind, EscapedSlashes, LimitHeaders, LimitMode, LogFormat, ProxyVersion,
    RedisFallback, RingFlag,
};
pub use snapshot::{
    redact_url, AccessLog, AdminSettings, Backend, HashOn, HealthCheck, LimitKey, Limits, Listener,
    Outlier, PoolSettings, RateLimit, RedisSettings, RetryPolicy, RingFlags, RuntimeSettings,
    Snapshot, TcpForward, Upstream, UpstreamTimeouts, DEFAULT_MAX_RESPONSE_HEAD,
    DEFAULT_MAX_RESPONSE_HEADERS,
};

/// A config error with its position (1-based line and column, in characters; line 0: the file
/// could not be read, and `message` says why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Not a position in the file: the file itself (it could not be read).
            return write!(f, "cannot read {}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error at a byte offset of `src` (`None`: the start of the file).
    pub fn at(
        file: &str,
        src: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, col) = line_col(src, span.map_or(0, |s| s.start));
        ConfigError {
            file: file.to_string(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `src`.
pub fn line_col(src: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(src.len());
    while !src.is_char_boundary(at) {
        at -= 1;
    }
    let before = &src[..at];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Every error found in a config, in file order (a syntax error stops at the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl ConfigErrors {
    /// The first error (there is always one).
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }
}

/// Reads and validates a config file. A file that cannot be read is one error without a
/// position: `cannot read FILE: REASON`.
pub fn load(path: &Path) -> Result<Snapshot, ConfigErrors> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| CannotRead {
        file: file.clone(),
        reason: io_reason(&e),
    })?;
    parse(&file, &src)
}

/// A config file that could not be read.
#[derive(Debug)]
struct CannotRead {
    file: String,
    reason: String,
}

impl From<CannotRead> for ConfigErrors {
    fn from(e: CannotRead) -> Self {
        ConfigErrors(vec![ConfigError {
            file: e.file,
            line: 0,
            col: 0,
            message: e.reason,
        }])
    }
}

/// An I/O error's text without Rust's ` (os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Validates config text; `file` names it in errors. Every semantic error is reported, sorted
/// by position.
pub fn parse(file: &str, src: &str) -> Result<Snapshot, ConfigErrors> {
    let raw: schema::RawConfig = toml::from_str(src)
        .map_err(|e| ConfigError::at(file, src, e.span(), e.message().trim_end()))?;
    validate::validate(raw).map_err(|errs| {
        let mut errs: Vec<(usize, ConfigError)> = errs
            .into_iter()
            .map(|e| {
                let at = e.span.as_ref().map_or(0, |s| s.start);
                (at, ConfigError::at(file, src, e.span, e.message))
            })
            .collect();
        errs.sort_by_key(|(at, _)| *at);
        ConfigErrors(errs.into_iter().map(|(_, e)| e).collect())
    })
}

#[cfg(test)]
mod tests;
