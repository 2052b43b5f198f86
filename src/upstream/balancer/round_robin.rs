//! Round robin. Equal weights: a cursor, each worker starting at its own offset. Different
//! weights: smooth weighted round robin (nginx's): with weights 5:1:1 it yields a a b a c a a,
//! spreading the heavy backend out. Backends the predicate refuses are skipped and do not count
//! towards the total, so the others keep their proportions.

use super::{Pick, View};
use crate::config::Backend;
use std::cell::Cell;

pub struct RoundRobin {
    /// Current smooth weights, one per backend (weighted picks only).
    current: Vec<Cell<i64>>,
    cursor: Cell<usize>,
}

impl RoundRobin {
    pub fn new(backends: &[Backend], worker: usize) -> RoundRobin {
        let rr = RoundRobin {
            current: backends.iter().map(|_| Cell::new(0)).collect(),
            cursor: Cell::new(if backends.is_empty() {
                0
            } else {
                worker % backends.len()
            }),
        };
        // Weighted: advance the smooth sequence by `worker` steps for the same effect.
        if backends.windows(2).any(|w| w[0].weight != w[1].weight) {
            for _ in 0..worker {
                rr.weighted(backends.iter().map(|b| b.weight), |_| true);
            }
        }
        rr
    }

    fn weighted(
        &self,
        weights: impl Iterator<Item = u32>,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, (w, cur)) in weights.zip(&self.current).enumerate() {
            if !ok(i) {
                continue;
            }
            let w = w as i64;
            let c = cur.get() + w;
            cur.set(c);
            total += w;
            if best.is_none_or(|(_, b)| c > b) {
                best = Some((i, c));
            }
        }
        let (i, c) = best?;
        self.current[i].set(c - total);
        Some(i)
    }
}

impl Pick for RoundRobin {
    #[inline]
    fn pick(&self, v: &View<'_>, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = v.live.len();
        if !v.uniform {
            return self.weighted(v.live.iter().map(|b| b.weight.get()), ok);
        }
        let start = self.cursor.get();
        for k in 0..n {
            let i = if start + k >= n {
                start + k - n
            } else {
                start + k
            };
            if ok(i) {
                self.cursor.set(if i + 1 >= n { 0 } else { i + 1 });
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use super::*;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| Backend {
                index,
                addr: ([127, 0, 0, 1], 1000 + index as u16).into(),
                address: String::new(),
                by_name: false,
                weight,
            })
            .collect()
    }

    fn picks(
        weights: &[u32],
        worker: usize,
        n: usize,
        ok: impl Fn(usize) -> bool + Copy,
    ) -> Vec<usize> {
        let f = Fixture::new(weights);
        let rr = RoundRobin::new(&backends(weights), worker);
        (0..n).map(|_| rr.pick(&f.view(0), ok).unwrap()).collect()
    }

    #[test]
    fn equal_weights_rotate_from_the_worker_offset() {
        assert_eq!(picks(&[1, 1, 1], 0, 7, |_| true), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(picks(&[1, 1, 1], 1, 4, |_| true), [1, 2, 0, 1]);
        assert_eq!(picks(&[1, 1, 1], 1, 4, |i| i != 2), [1, 0, 1, 0]);
    }

    #[test]
    fn smooth_weights() {
        assert_eq!(picks(&[5, 1, 1], 0, 7, |_| true), [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for i in picks(&[5, 1, 1], 0, 700, |_| true) {
            counts[i] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
        // Worker 1 starts one step further along the same sequence.
        assert_eq!(picks(&[5, 1, 1], 1, 6, |_| true), [0, 1, 0, 2, 0, 0]);
        // A backend that is out keeps the others in proportion.
        let mut counts = [0; 3];
        for i in picks(&[3, 2, 1], 0, 600, |i| i != 0) {
            counts[i] += 1;
        }
        assert_eq!(counts, [0, 400, 200]);
    }
}
