//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI 2016, §3.4): each
//! backend has its own permutation of the table's slots, derived from two hashes of its name;
//! backends take turns claiming their next preferred free slot until the table is full (a
//! backend of weight w takes w turns for every turn of the heaviest). A key maps to
//! `table[hash(key) % M]`. Removing one of N backends moves about 1/N of the keys; the rest keep
//! their backend. The table is built once per config snapshot and read by every worker.
//!
//! A backend that is out (down, ejected, already tried) gives its keys to the next entries of
//! the table, which spread them over the others as the table does.

use super::{Pick, View};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Default table size: prime, about 100 times the backends of even a large upstream.
pub const DEFAULT_TABLE_SIZE: u64 = 65537;

const SEED_OFFSET: u64 = 0x6d61_676c_6576_0001;
const SEED_SKIP: u64 = 0x6d61_676c_6576_0002;
/// Seed of the key hash (fixed: every worker and every instance hashes a key the same way).
pub const SEED_KEY: u64 = 0x6b65_795f_6861_7368;

/// Hash of a request's key (client address, header or cookie value, path).
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, SEED_KEY)
}

#[derive(Debug, Clone)]
pub struct Maglev {
    table: Box<[u32]>,
}

impl Maglev {
    /// A table of `size` slots (a prime) over backends named `names` (their addresses as
    /// written) with `weights`.
    pub fn new(names: &[&str], weights: &[u32], size: u64) -> Maglev {
        let m = size as usize;
        let n = names.len();
        let mut table = vec![u32::MAX; m];
        if n == 0 {
            return Maglev {
                table: table.into(),
            };
        }
        let perm: Vec<(u64, u64)> = names
            .iter()
            .map(|name| {
                let offset = xxh3_64_with_seed(name.as_bytes(), SEED_OFFSET) % size;
                let skip = xxh3_64_with_seed(name.as_bytes(), SEED_SKIP) % (size - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_w = weights.iter().copied().max().unwrap_or(1).max(1) as u64;
        let mut next = vec![0u64; n];
        let mut claimed = vec![0u64; n];
        let mut filled = 0;
        let mut round = 0u64;
        while filled < m {
            round += 1;
            for i in 0..n {
                // After `round` rounds, backend i is owed round * w_i / max_w slots.
                let owed = round * weights[i].max(1) as u64 / max_w;
                while claimed[i] < owed && filled < m {
                    let (offset, skip) = perm[i];
                    let mut slot;
                    loop {
                        slot = ((offset + next[i] * skip) % size) as usize;
                        next[i] += 1;
                        if table[slot] == u32::MAX {
                            break;
                        }
                    }
                    table[slot] = i as u32;
                    claimed[i] += 1;
                    filled += 1;
                }
            }
        }
        Maglev {
            table: table.into(),
        }
    }

    /// The backend a key hash maps to when every backend is in.
    #[inline]
    pub fn lookup(&self, key: u64) -> usize {
        self.table[(key % self.table.len() as u64) as usize] as usize
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl Pick for Maglev {
    #[inline]
    fn pick(&self, v: &View<'_>, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let start = (v.key % m as u64) as usize;
        let first = self.table[start] as usize;
        if ok(first) {
            return Some(first);
        }
        // The next entries of the table: the backend each of them names, skipping the ones
        // that are out. Bounded by the table size.
        (1..m)
            .map(|k| {
                self.table[if start + k >= m {
                    start + k - m
                } else {
                    start + k
                }] as usize
            })
            .find(|&i| i != first && ok(i))
    }
}

/// True when `n` is prime (table sizes are checked at load).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn table(names: &[String], weights: &[u32]) -> Maglev {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Maglev::new(&refs, weights, DEFAULT_TABLE_SIZE)
    }

    #[test]
    fn slots_are_shared_by_weight() {
        let t = table(&names(3), &[1, 1, 1]);
        let mut c = [0usize; 3];
        for &i in t.table.iter() {
            c[i as usize] += 1;
        }
        assert_eq!(c.iter().sum::<usize>(), 65537);
        assert!(c.iter().all(|&x| (21_800..=21_900).contains(&x)), "{c:?}");
        let t = table(&names(3), &[3, 2, 1]);
        let mut c = [0usize; 3];
        for &i in t.table.iter() {
            c[i as usize] += 1;
        }
        for (got, share) in c.iter().zip([3.0, 2.0, 1.0]) {
            let want = 65537.0 * share / 6.0;
            assert!((*got as f64 - want).abs() < want * 0.01, "{c:?}");
        }
    }

    #[test]
    fn removing_one_of_five_moves_about_a_fifth_of_the_keys() {
        let all = names(5);
        let before = table(&all, &[1; 5]);
        let rest: Vec<String> = all
            .iter()
            .filter(|n| !n.ends_with(".2:8080"))
            .cloned()
            .collect();
        let after = table(&rest, &[1; 4]);
        let mut moved = 0;
        for k in 0..10_000u32 {
            let h = hash_key(format!("client-{k}").as_bytes());
            let b = &all[before.lookup(h)];
            let a = &rest[after.lookup(h)];
            moved += (a != b) as u32;
        }
        // Maglev's property: about 1/5 move (those of the removed backend), a little more.
        assert!(moved <= 2_000 + 200, "{moved} of 10000 keys moved");
        assert!(moved >= 1_800, "{moved}");
    }

    #[test]
    fn an_unavailable_backend_gives_its_keys_to_the_others_only() {
        let t = table(&names(4), &[1; 4]);
        let f = Fixture::new(&[1; 4]);
        for k in 0..2_000u64 {
            let key = hash_key(&k.to_le_bytes());
            let normal = t.pick(&f.view(key), |_| true).unwrap();
            assert_eq!(normal, t.lookup(key));
            let out = t.pick(&f.view(key), |i| i != 1).unwrap();
            assert_ne!(out, 1);
            if normal != 1 {
                assert_eq!(out, normal, "a key of a backend that is in moved");
            }
        }
        assert_eq!(t.pick(&f.view(1), |_| false), None);
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(2) && is_prime(251));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(91));
    }
}
