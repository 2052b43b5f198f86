//! Backend selection. A balancer is built once per worker from the backend list and picks by
//! index: nothing is cloned or allocated per pick. State is a per-worker `Cell`.

use crate::config::Backend;
use std::cell::Cell;

/// Chooses the backend for the next request.
pub trait Balancer {
    fn pick(&self, backends: &[Backend]) -> usize;
}

/// Smooth weighted round robin (the nginx algorithm): with equal weights it is plain round
/// robin; with weights 5:1:1 it yields a a b a c a a, spreading the heavy backend out.
pub struct RoundRobin {
    /// Current weights, one per backend (unused when every weight is equal).
    current: Vec<Cell<i64>>,
    cursor: Cell<usize>,
    weighted: bool,
}

impl RoundRobin {
    pub fn new(backends: &[Backend]) -> RoundRobin {
        let weighted = backends.windows(2).any(|w| w[0].weight != w[1].weight);
        RoundRobin {
            current: backends.iter().map(|_| Cell::new(0)).collect(),
            cursor: Cell::new(0),
            weighted,
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, backends: &[Backend]) -> usize {
        if !self.weighted {
            let i = self.cursor.get();
            self.cursor
                .set(if i + 1 >= backends.len() { 0 } else { i + 1 });
            return i.min(backends.len() - 1);
        }
        let total: i64 = backends.iter().map(|b| b.weight as i64).sum();
        let mut best = 0;
        let mut best_weight = i64::MIN;
        for (i, (b, cur)) in backends.iter().zip(&self.current).enumerate() {
            let w = cur.get() + b.weight as i64;
            cur.set(w);
            if w > best_weight {
                best = i;
                best_weight = w;
            }
        }
        self.current[best].set(best_weight - total);
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| Backend {
                index,
                addr: ([127, 0, 0, 1], 1000 + index as u16).into(),
                address: String::new(),
                weight,
            })
            .collect()
    }

    #[test]
    fn equal_weights_rotate() {
        let b = backends(&[1, 1, 1]);
        let rr = RoundRobin::new(&b);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick(&b)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn smooth_weights() {
        let b = backends(&[5, 1, 1]);
        let rr = RoundRobin::new(&b);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick(&b)).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[rr.pick(&b)] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
    }
}
