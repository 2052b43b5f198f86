//! Configuration: the TOML file is read once at start (before any worker exists), deserialised
//! into the schema in `schema.rs` and validated in `validate.rs` into an immutable [`Snapshot`]:
//! durations, resolved socket addresses, sizes in bytes, compiled route tables, upstreams with
//! numbered backends. Workers get the snapshot behind one `Arc` each and read it without locks;
//! nothing on the request path looks anything up by name. Every error carries
//! `file:line:col` of the offending value.

mod schema;
mod snapshot;
mod validate;
pub mod values;

use std::fmt;
use std::ops::Range;
use std::path::Path;

pub use schema::{BalancerKind, DriverKind, RingFlag};
pub use snapshot::{
    Backend, Limits, Listener, PoolSettings, RingFlags, RuntimeSettings, Snapshot, Upstream,
    UpstreamTimeouts,
};

/// A config error with its position (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 1,
        col: 1,
        message: format!("cannot read config file: {e}"),
    })?;
    parse(&file, &src)
}

/// Validates config text; `file` names it in errors.
pub fn parse(file: &str, src: &str) -> Result<Snapshot, ConfigError> {
    let raw: schema::RawConfig = toml::from_str(src)
        .map_err(|e| ConfigError::at(file, src, e.span(), e.message().trim_end()))?;
    validate::validate(raw).map_err(|e| ConfigError::at(file, src, e.span, e.message))
}

#[cfg(test)]
mod tests;
