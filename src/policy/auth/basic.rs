//! `kind = "basic"`: `Authorization: Basic` checked against an htpasswd file. Hashes are
//! verified by the `pwhash` crate (bcrypt, SHA-256-crypt, SHA-512-crypt) and aws-lc-rs
//! (`{SHA}`); each hash's shape is checked when the file is read, so nothing malformed ever
//! reaches a verifier.

use std::collections::HashMap;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use base64::Engine as _;

/// The users of an htpasswd file.
#[derive(Clone)]
pub struct Htpasswd {
    users: HashMap<Box<[u8]>, PwHash>,
    /// Checked for an unknown user, so that it costs about what a wrong password costs.
    decoy: PwHash,
}

#[derive(Clone)]
enum PwHash {
    /// `$2y$` / `$2a$` / `$2b$` bcrypt, `$5$` / `$6$` SHA-crypt: verified by `pwhash`.
    Crypt(Box<str>),
    /// `{SHA}`: base64 of the SHA-1 of the password.
    Sha1([u8; 20]),
}

impl PwHash {
    /// How dear a check is, to order hashes: bcrypt by its cost, then SHA-crypt, then SHA-1.
    fn cost(&self) -> u32 {
        match self {
            PwHash::Crypt(c) if c.starts_with("$2") => {
                1000 + c.get(4..6).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0)
            }
            PwHash::Crypt(_) => 500,
            PwHash::Sha1(_) => 0,
        }
    }
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Htpasswd({} users)", self.users.len())
    }
}

const FORMATS: &str = "use bcrypt ($2y$, htpasswd -B), {SHA} (htpasswd -s), or SHA-256-crypt \
                       ($5$) / SHA-512-crypt ($6$)";

impl Htpasswd {
    /// Parses htpasswd text: `user:hash` lines; blank lines and lines starting with `#` are
    /// skipped. An error names the 1-based line (0: the file as a whole).
    pub fn parse(text: &str) -> Result<Htpasswd, (usize, String)> {
        let mut users: HashMap<Box<[u8]>, PwHash> = HashMap::new();
        let mut lines: HashMap<&str, usize> = HashMap::new();
        let mut decoy = None;
        for (n, line) in super::content_lines(text) {
            let Some((user, hash)) = line.split_once(':') else {
                return Err((n, "expected USER:HASH".into()));
            };
            if user.is_empty() || user.chars().any(char::is_control) {
                return Err((n, "invalid user name".into()));
            }
            let hash = parse_hash(hash).map_err(|m| (n, format!("user {user:?}: {m}")))?;
            if let Some(first) = lines.insert(user, n) {
                return Err((n, format!("duplicate user {user:?} (also on line {first})")));
            }
            // The decoy is the dearest hash, so that no unknown user answers faster than a
            // known one.
            if decoy
                .as_ref()
                .is_none_or(|d: &PwHash| d.cost() < hash.cost())
            {
                decoy = Some(hash.clone());
            }
            users.insert(user.as_bytes().into(), hash);
        }
        let Some(decoy) = decoy else {
            return Err((0, "holds no user".into()));
        };
        Ok(Htpasswd { users, decoy })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// True when `pass` is the password of `user`. An unknown user is checked against a decoy
    /// hash first, so the time taken does not tell which users exist.
    pub fn verify(&self, user: &[u8], pass: &[u8]) -> bool {
        match self.users.get(user) {
            Some(h) => h.verify(pass),
            None => {
                let _ = self.decoy.verify(pass);
                false
            }
        }
    }

    pub(super) fn describe(&self) -> String {
        format!("basic, {} users", self.users.len())
    }
}

impl PwHash {
    fn verify(&self, pass: &[u8]) -> bool {
        #[cfg(test)]
        super::tests::count_verification();
        match self {
            PwHash::Crypt(h) => pwhash::unix::verify(pass, h),
            PwHash::Sha1(want) => {
                let got = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, pass);
                verify_slices_are_equal(got.as_ref(), want).is_ok()
            }
        }
    }
}

/// The hash of one htpasswd line, its shape checked.
fn parse_hash(h: &str) -> Result<PwHash, String> {
    if let Some(b64) = h.strip_prefix("{SHA}") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|v| <[u8; 20]>::try_from(v).ok())
            .ok_or("malformed {SHA} hash: expected the base64 of 20 bytes")?;
        return Ok(PwHash::Sha1(raw));
    }
    let ok = match h.get(..3) {
        Some("$2a" | "$2b" | "$2y") => bcrypt_shape(h),
        Some("$5$") => sha_crypt_shape(&h[3..], 43),
        Some("$6$") => sha_crypt_shape(&h[3..], 86),
        _ => {
            // Only a short scheme tag is named: the rest may be a plain-text password.
            let tag_end = match h.as_bytes().first() {
                Some(b'$') => h[1..].find('$').map(|i| i + 1),
                Some(b'{') => h.find('}'),
                _ => None,
            };
            let scheme = tag_end.filter(|&i| i <= 8).map(|i| &h[..=i]);
            return Err(match scheme {
                Some(s) => format!("unsupported password hash {s}: {FORMATS}"),
                None => format!("a plain-text or DES-crypt password is not accepted: {FORMATS}"),
            });
        }
    };
    if !ok {
        return Err(format!("malformed {} hash", &h[..3]));
    }
    Ok(PwHash::Crypt(h.into()))
}

/// bcrypt's alphabet (and SHA-crypt's: the same characters in another order).
fn hash64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// `$2y$NN$` and 53 characters (22 of salt, 31 of hash), NN from 04 to 31.
fn bcrypt_shape(h: &str) -> bool {
    let b = h.as_bytes();
    b.len() == 60
        && b[3] == b'$'
        && b[6] == b'$'
        && h[4..6].parse::<u8>().is_ok_and(|c| (4..=31).contains(&c))
        && b[7..].iter().all(|&c| hash64(c))
}

/// `[rounds=N$]SALT$HASH` after `$5$` / `$6$`: N from 1000 to 999999999 written without
/// leading zeros, a salt of at most 16 characters, a hash of `len` characters (what
/// SHA-crypt writes, so that recomputing the string reproduces it exactly).
fn sha_crypt_shape(rest: &str, len: usize) -> bool {
    let mut parts = rest.split('$');
    let (first, second, third) = (parts.next(), parts.next(), parts.next());
    if parts.next().is_some() {
        return false;
    }
    let (salt, hash) = match (first, second, third) {
        (Some(r), Some(salt), Some(hash)) => match r.strip_prefix("rounds=") {
            Some(n) if !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()) => {
                match n.parse::<u32>() {
                    Ok(1000..=999_999_999) => (salt, hash),
                    _ => return false,
                }
            }
            _ => return false,
        },
        (Some(salt), Some(hash), None) => (salt, hash),
        _ => return false,
    };
    !salt.starts_with("rounds=")
        && salt.len() <= 16
        && salt
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'$' && b != b':')
        && hash.len() == len
        && hash.bytes().all(hash64)
}
