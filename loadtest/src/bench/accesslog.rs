//! The access log of a coregate variant that writes one (`log-combined`, `log-json`): its lines
//! counted as they are appended, and the file cut back to a short sample between runs so that it
//! does not fill the disk. coregate opens the file for appending, so after a truncation its next
//! line goes to the end of what is left.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long after a run its last lines may take to reach the file: coregate's default `flush`
/// (1 s, the age of a buffer's oldest line), its housekeeping tick (200 ms), the writer thread,
/// and a margin.
pub const SETTLE: Duration = Duration::from_secs(3);

/// A log file and the lines appended to it since it was last cut.
pub struct AccessLog {
    pub path: PathBuf,
    /// Bytes read so far.
    offset: u64,
    lines: u64,
}

impl AccessLog {
    pub fn new(path: PathBuf) -> AccessLog {
        AccessLog {
            path,
            offset: 0,
            lines: 0,
        }
    }

    fn err(&self, e: std::io::Error) -> String {
        format!("access log {}: {e}", self.path.display())
    }

    /// Lines appended since the file was last cut (reads only what was appended since the last
    /// call; a partial last line is not counted until its newline arrives).
    pub fn lines(&mut self) -> Result<u64, String> {
        let mut f = std::fs::File::open(&self.path).map_err(|e| self.err(e))?;
        let len = f.metadata().map_err(|e| self.err(e))?.len();
        if len < self.offset {
            // Truncated by someone else: count from the start.
            self.offset = 0;
            self.lines = 0;
        }
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| self.err(e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| self.err(e))?;
            if n == 0 {
                break;
            }
            self.lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            self.offset += n as u64;
        }
        Ok(self.lines)
    }

    /// Waits until at least `expected` lines were appended since the last cut, or `limit` has passed; the count.
    pub fn wait_for(&mut self, expected: u64, limit: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.lines()?;
            if n >= expected || Instant::now() >= deadline {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cuts the file to its first `n` lines (a sample of what was written, kept in the results;
    /// 0 empties it); counting starts again from zero. Only while nothing is being written.
    pub fn cut(&mut self, n: usize) -> Result<(), String> {
        self.offset = keep_first_lines(&self.path, n).map_err(|e| self.err(e))?;
        self.lines = 0;
        Ok(())
    }
}

/// Truncates the file after its first `n` lines (keeps all of it when it has fewer); its new
/// length.
fn keep_first_lines(path: &Path, n: usize) -> std::io::Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut seen, mut at) = (0usize, 0u64);
    'read: while seen < n {
        let got = f.read(&mut buf)?;
        if got == 0 {
            return Ok(at); // fewer than n lines: keep them all
        }
        for (i, &b) in buf[..got].iter().enumerate() {
            if b == b'\n' {
                seen += 1;
                if seen == n {
                    at += i as u64 + 1;
                    break 'read;
                }
            }
        }
        at += got as u64;
    }
    f.set_len(at)?;
    Ok(at)
}

/// What a variant's access log got, against the requests it forwarded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogCounts {
    pub path: String,
    pub format: String,
    /// Per round: lines the log got from the variant's runs in that round (its saturation run,
    /// warm-up included, and its fixed-rate run), each counted once its last lines had reached
    /// the file (at most `settle_s` after the run).
    pub lines: Vec<u64>,
    /// Per round: requests the backends received from the variant in the same runs.
    pub requests: Vec<u64>,
    /// Per round: lines not yet in the file when a run ended (still in the worker's buffer,
    /// written by the flush tick after the run).
    pub buffered_at_end_of_run: Vec<u64>,
    /// The longest wait for a run's last lines, in seconds.
    pub longest_wait_s: f64,
    pub settle_s: f64,
    /// Lines that reached the file after coregate was stopped with SIGTERM at the end of the
    /// scenario (every run's lines were counted before it; expected 0). None: not stopped.
    pub lines_after_stop: Option<u64>,
    /// How coregate exited after that SIGTERM.
    pub exit: Option<String>,
}

impl LogCounts {
    pub fn equal(&self) -> bool {
        self.lines == self.requests && self.lines_after_stop == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn counts_appended_lines_and_truncates() {
        let dir = std::env::temp_dir().join(format!("loadtest-accesslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        let mut w = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut log = AccessLog::new(path.clone());
        assert_eq!(log.lines(), Ok(0));
        w.write_all(b"a\nb\nc").unwrap();
        assert_eq!(log.lines(), Ok(2));
        w.write_all(b"\nd\n").unwrap();
        assert_eq!(log.lines(), Ok(4));
        assert_eq!(log.wait_for(4, Duration::ZERO), Ok(4));
        assert_eq!(log.wait_for(5, Duration::from_millis(50)), Ok(4));
        log.cut(0).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert_eq!(log.lines(), Ok(0));
        // The writer appends: its next line lands at the start of the emptied file.
        w.write_all(b"e\nf\ng\n").unwrap();
        assert_eq!(log.lines(), Ok(3));
        log.cut(2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "e\nf\n");
        assert_eq!(log.lines(), Ok(0));
        w.write_all(b"h\n").unwrap();
        assert_eq!(log.lines(), Ok(1));
        log.cut(5).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "e\nf\nh\n");
        assert_eq!(log.lines(), Ok(0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
