//! The per-core cache of admitted credentials, and the check of one request against one
//! [`Auth`].
//!
//! Verifying is slow (an RSA signature tens of µs, bcrypt 50–100 ms), and clients send the same
//! token or password with every request. A credential this worker admitted before is admitted
//! again from the cache until its `exp` (tokens) or for [`BASIC_TTL`] (Basic), after comparing
//! its exact bytes, without allocating beyond copying the identity out. Entries carry the
//! snapshot generation and the auth's index, so after a reload nothing is admitted under the
//! old config. Only admissions are cached; the map is bounded and cleared of stale entries,
//! then emptied, when full. API keys are not cached: a SHA-256 and a hash lookup is their
//! whole cost.

use std::collections::HashMap;
use std::hash::BuildHasher;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine as _;

use super::request::{self, Ambiguous};
use super::{ApiKey, Auth, Htpasswd, Identity, Jwt, Kind, Verdict};
use crate::http1::Header;

/// Entries per worker.
const MAX_ENTRIES: usize = 8192;

/// How long admitted Basic credentials stay cached (seconds): a password removed from the
/// htpasswd file takes a reload, which empties the cache anyway.
pub const BASIC_TTL: u64 = 60;

/// Per-core cache of verified credentials (see the module comment).
pub struct AuthCache {
    entries: HashMap<u64, Entry, ahash::RandomState>,
    /// Keys the credential hashes (an attacker cannot aim at one entry).
    seed: u64,
}

struct Entry {
    generation: u64,
    index: usize,
    credential: Box<[u8]>,
    /// Unix seconds from which the entry no longer admits.
    until: u64,
    identity: Identity,
}

impl Default for AuthCache {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthCache {
    pub fn new() -> Self {
        AuthCache {
            entries: HashMap::with_hasher(ahash::RandomState::new()),
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64),
        }
    }

    /// Entries held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks one request against `auth` (`index`: its position in `Snapshot::auths`;
    /// `generation`: the snapshot's). `hs`/`buf`: the parsed request head (spans into `buf`);
    /// `query`: the raw query string after `?` (empty if none); `now`: unix seconds. On
    /// [`Verdict::Allowed`] `out` holds the identity; otherwise it is cleared.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        generation: u64,
        index: usize,
        auth: &Auth,
        hs: &[Header],
        buf: &[u8],
        query: &[u8],
        now: u64,
        out: &mut Identity,
    ) -> Verdict {
        let at = Slot {
            generation,
            index,
            now,
        };
        let v = match &auth.kind {
            Kind::Jwt(j) => self.jwt(at, j, hs, buf, out),
            Kind::ApiKey(k) => api_key(k, hs, buf, query, out),
            Kind::Basic(h) => self.basic(at, h, hs, buf, out),
        };
        if v != Verdict::Allowed {
            out.clear();
        }
        v
    }

    fn jwt(&mut self, at: Slot, j: &Jwt, hs: &[Header], buf: &[u8], out: &mut Identity) -> Verdict {
        let bearer = match request::single_field(hs, buf, "authorization") {
            Err(Ambiguous) => return Verdict::Invalid("several Authorization fields"),
            Ok(v) => v.and_then(|v| request::credentials(v, "Bearer")),
        };
        let token = bearer.or_else(|| {
            j.cookie
                .as_deref()
                .and_then(|c| request::cookie(hs, buf, c))
        });
        let Some(token) = token else {
            return Verdict::Missing;
        };
        if token.is_empty() {
            return Verdict::Invalid("empty token");
        }
        let key = self.key(at.index, token);
        if self.hit(key, at, token, out) {
            return Verdict::Allowed;
        }
        match j.verify(token, at.now, out) {
            Ok(until) => {
                self.insert(key, at, token, until, out);
                Verdict::Allowed
            }
            Err(v) => v,
        }
    }

    fn basic(
        &mut self,
        at: Slot,
        h: &Htpasswd,
        hs: &[Header],
        buf: &[u8],
        out: &mut Identity,
    ) -> Verdict {
        const MALFORMED: Verdict = Verdict::Invalid("malformed credentials");
        let creds = match request::single_field(hs, buf, "authorization") {
            Err(Ambiguous) => return Verdict::Invalid("several Authorization fields"),
            Ok(v) => v.and_then(|v| request::credentials(v, "Basic")),
        };
        let Some(creds) = creds else {
            return Verdict::Missing;
        };
        let key = self.key(at.index, creds);
        if self.hit(key, at, creds, out) {
            return Verdict::Allowed;
        }
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let Ok(decoded) = engine.decode(creds) else {
            return MALFORMED;
        };
        let Some(colon) = memchr::memchr(b':', &decoded) else {
            return MALFORMED;
        };
        let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        if !h.verify(user, pass) {
            return Verdict::Invalid("wrong user or password");
        }
        out.consumer.clear();
        // A user of the file, so UTF-8.
        out.consumer
            .push_str(std::str::from_utf8(user).unwrap_or_default());
        out.claims.clear();
        self.insert(key, at, creds, at.now.saturating_add(BASIC_TTL), out);
        Verdict::Allowed
    }

    fn key(&self, index: usize, credential: &[u8]) -> u64 {
        let seed = self.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        xxhash_rust::xxh3::xxh3_64_with_seed(credential, seed)
    }

    /// Copies the identity of a live entry for exactly `credential` into `out`.
    fn hit(&self, key: u64, at: Slot, credential: &[u8], out: &mut Identity) -> bool {
        let Some(e) = self.entries.get(&key) else {
            return false;
        };
        let live = e.generation == at.generation
            && e.index == at.index
            && at.now < e.until
            && verify_slices_are_equal(&e.credential, credential).is_ok();
        if live {
            out.clone_from(&e.identity);
        }
        live
    }

    fn insert(&mut self, key: u64, at: Slot, credential: &[u8], until: u64, id: &Identity) {
        if at.now >= until {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, e| e.generation == at.generation && at.now < e.until);
            if self.entries.len() > MAX_ENTRIES / 8 * 7 {
                self.entries.clear();
            }
        }
        self.entries.insert(
            key,
            Entry {
                generation: at.generation,
                index: at.index,
                credential: credential.into(),
                until,
                identity: id.clone(),
            },
        );
    }
}

/// Where and when a check happens.
#[derive(Clone, Copy)]
struct Slot {
    generation: u64,
    index: usize,
    now: u64,
}

fn api_key(k: &ApiKey, hs: &[Header], buf: &[u8], query: &[u8], out: &mut Identity) -> Verdict {
    const EMPTY: Verdict = Verdict::Invalid("empty api key");
    let in_header = match &k.header {
        None => None,
        Some(h) => match request::single_field(hs, buf, h) {
            Err(Ambiguous) => return Verdict::Invalid("api key given more than once"),
            Ok(v) => v,
        },
    };
    let digest = match (in_header, &k.query) {
        (Some([]), _) => return EMPTY,
        (Some(v), _) => request::sha256(v),
        (None, Some(q)) => match request::query_param(query, q) {
            Err(Ambiguous) => return Verdict::Invalid("api key given more than once"),
            Ok(None) => return Verdict::Missing,
            Ok(Some([])) => return EMPTY,
            Ok(Some(v)) => match request::decoded_digest(v) {
                Ok(d) => d,
                Err(Ambiguous) => return Verdict::Invalid("malformed api key"),
            },
        },
        (None, None) => return Verdict::Missing,
    };
    match k.keys.lookup(&digest) {
        Some(consumer) => {
            out.consumer.clear();
            out.consumer.push_str(consumer);
            out.claims.clear();
            Verdict::Allowed
        }
        None => Verdict::Invalid("unknown api key"),
    }
}
