//! `kind = "api_key"`: a key in a header or a query parameter, looked up by its SHA-256 in a
//! table read from the keys file. Only digests are kept in memory, so a keys file may list
//! `sha256:<hex>` lines instead of the keys themselves.

use std::collections::HashMap;

use aws_lc_rs::constant_time::verify_slices_are_equal;

use super::request::sha256;

/// Where an API key is looked for, and the keys.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Header field name (as configured; compared case-insensitively).
    pub header: Option<Box<str>>,
    /// Query parameter name (compared exactly); its value is percent-decoded.
    pub query: Option<Box<str>>,
    pub keys: KeyTable,
}

impl ApiKey {
    pub(super) fn describe(&self) -> String {
        let from = match (&self.header, &self.query) {
            (Some(h), Some(q)) => format!("header {h} or query parameter {q}"),
            (Some(h), None) => format!("header {h}"),
            (None, Some(q)) => format!("query parameter {q}"),
            (None, None) => "nowhere".to_string(),
        };
        format!("api_key from {from}, {} keys", self.keys.len())
    }
}

/// The keys of a keys file by SHA-256, each with its consumer name (empty when none).
#[derive(Clone, Default)]
pub struct KeyTable {
    by_digest: HashMap<[u8; 32], Box<str>>,
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyTable({} keys)", self.by_digest.len())
    }
}

impl KeyTable {
    /// Parses a keys file: one key a line, optionally followed by whitespace and the consumer's
    /// name; `sha256:<64 hex digits>` stands for a key by its SHA-256; blank lines and lines
    /// starting with `#` are skipped. An error names the 1-based line.
    pub fn parse(text: &str) -> Result<KeyTable, (usize, String)> {
        let mut by_digest = HashMap::new();
        let mut lines: HashMap<[u8; 32], usize> = HashMap::new();
        for (n, line) in super::content_lines(text) {
            let mut words = line.split_whitespace();
            let (Some(key), consumer) = (words.next(), words.next()) else {
                continue;
            };
            if words.next().is_some() {
                return Err((
                    n,
                    "expected KEY or KEY CONSUMER (a consumer name is one word)".into(),
                ));
            }
            let consumer = consumer.unwrap_or("");
            if consumer.chars().any(char::is_control) {
                return Err((n, "the consumer name holds a control character".into()));
            }
            let digest = match key.strip_prefix("sha256:") {
                Some(hex) => parse_hex(hex).ok_or_else(|| {
                    (
                        n,
                        "sha256: must be followed by the key's SHA-256 in 64 hex digits".into(),
                    )
                })?,
                None => sha256(key.as_bytes()),
            };
            if let Some(first) = lines.insert(digest, n) {
                return Err((n, format!("duplicate key (also on line {first})")));
            }
            // A key without a name is its own consumer, named by the start of its digest
            // (distinct per key for consumer-keyed limits and logs, and not the key itself).
            let consumer: Box<str> = match consumer {
                "" => digest[..6]
                    .iter()
                    .fold(String::from("key-"), |s, b| s + &format!("{b:02x}"))
                    .into(),
                c => c.into(),
            };
            by_digest.insert(digest, consumer);
        }
        if by_digest.is_empty() {
            return Err((0, "holds no key".into()));
        }
        Ok(KeyTable { by_digest })
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The consumer of the key whose SHA-256 is `digest` (the digests compared in constant
    /// time once the table has found a candidate).
    pub fn lookup(&self, digest: &[u8; 32]) -> Option<&str> {
        let (k, consumer) = self.by_digest.get_key_value(digest)?;
        verify_slices_are_equal(k, digest).ok()?;
        Some(consumer)
    }
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = crate::http1::hex_digit(pair[0])? << 4 | crate::http1::hex_digit(pair[1])?;
    }
    Some(out)
}
