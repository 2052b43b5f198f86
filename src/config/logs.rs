//! `access_log` of listeners and routes: validated into the snapshot's list of logs (one entry
//! per file, however many listeners and routes write it). Whether the file can be opened is
//! checked when the config is put in force (start or reload), not here: `coregate check` judges
//! a config meant for another machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::schema::{RawAccessLog, RawAccessLogTable};
use super::snapshot::AccessLog;
use super::validate::{err, Errors, Result};
use crate::route::LogChoice;

/// Default per-worker buffer of a log.
pub const DEFAULT_BUFFER: usize = 64 * 1024;
/// Default age at which a worker writes out its buffered lines.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(1);

/// The access logs of a config, gathered as listeners and routes name them.
#[derive(Default)]
pub(super) struct Logs(pub(super) Vec<AccessLog>);

impl Logs {
    /// A route's `access_log` (absent: the listener's).
    pub(super) fn route(
        &mut self,
        raw: Option<&Spanned<RawAccessLog>>,
        errs: &mut Errors,
    ) -> Option<LogChoice> {
        match raw.map(|r| (r, r.get_ref())) {
            None => Some(LogChoice::Listener),
            Some((_, RawAccessLog::Off)) => Some(LogChoice::Off),
            Some((at, RawAccessLog::To(t))) => self.add(at, t, errs).map(LogChoice::To),
        }
    }

    /// A listener's `access_log`: `Ok(None)` when it logs nothing.
    pub(super) fn listener(
        &mut self,
        raw: Option<&Spanned<RawAccessLog>>,
        errs: &mut Errors,
    ) -> Option<Option<usize>> {
        match raw.map(|r| (r, r.get_ref())) {
            None | Some((_, RawAccessLog::Off)) => Some(None),
            Some((at, RawAccessLog::To(t))) => self.add(at, t, errs).map(Some),
        }
    }

    fn add(
        &mut self,
        at: &Spanned<RawAccessLog>,
        t: &RawAccessLogTable,
        errs: &mut Errors,
    ) -> Option<usize> {
        let log = errs.take(access_log(t))?;
        if let Some(i) = self.0.iter().position(|l| l.path == log.path) {
            if self.0[i] == log {
                return Some(i);
            }
            errs.at(
                at,
                format!(
                    "access log {} is given elsewhere with another format, buffer or flush",
                    log.path.display()
                ),
            );
            return None;
        }
        self.0.push(log);
        Some(self.0.len() - 1)
    }
}

fn access_log(t: &RawAccessLogTable) -> Result<AccessLog> {
    let p = t.path.get_ref();
    if p.is_empty() {
        return err(&t.path, "access_log path must not be empty");
    }
    let path = Path::new(p);
    if !path.is_absolute() {
        return err(&t.path, format!("access_log path {p:?} must be absolute"));
    }
    let buffer = match &t.buffer {
        Some(b) => {
            let n = b.get_ref().0;
            if !(4096..=16 << 20).contains(&n) {
                return err(
                    b,
                    format!("invalid access_log buffer {n}: must be from 4KiB to 16MiB"),
                );
            }
            n as usize
        }
        None => DEFAULT_BUFFER,
    };
    let flush = match &t.flush {
        Some(f) => {
            let d = f.get_ref().0;
            if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&d) {
                return err(f, "access_log flush must be between 10ms and 60s");
            }
            d
        }
        None => DEFAULT_FLUSH,
    };
    Ok(AccessLog {
        path: Arc::from(path),
        format: t.format,
        buffer,
        flush,
    })
}
