//! Least connections: the backend with the fewest requests in flight on this worker per unit of
//! weight; among equals, the next one after the previous pick (so ties rotate).

use super::{Pick, View};
use std::cell::Cell;

pub struct LeastConn {
    cursor: Cell<usize>,
}

impl LeastConn {
    pub fn new(backends: usize, worker: usize) -> LeastConn {
        LeastConn {
            cursor: Cell::new(if backends == 0 { 0 } else { worker % backends }),
        }
    }
}

impl Pick for LeastConn {
    #[inline]
    fn pick(&self, v: &View<'_>, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = v.live.len();
        let start = self.cursor.get();
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = if start + k >= n {
                start + k - n
            } else {
                start + k
            };
            if ok(i) && best.is_none_or(|b| super::lighter(v, i, b)) {
                best = Some(i);
            }
        }
        let b = best?;
        self.cursor.set(if b + 1 >= n { 0 } else { b + 1 });
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use super::*;

    #[test]
    fn fewest_in_flight_per_weight_ties_rotate() {
        let f = Fixture::new(&[1, 1, 1]);
        let lc = LeastConn::new(3, 0);
        let p: Vec<usize> = (0..6)
            .map(|_| lc.pick(&f.view(0), |_| true).unwrap())
            .collect();
        assert_eq!(p, [0, 1, 2, 0, 1, 2]);
        f.live[1].in_flight.set(1);
        let p: Vec<usize> = (0..4)
            .map(|_| lc.pick(&f.view(0), |_| true).unwrap())
            .collect();
        assert_eq!(p, [0, 2, 0, 2]);
        // Weight 3 with 2 in flight is lighter than weight 1 with 1.
        let f = Fixture::new(&[1, 3]);
        f.live[0].in_flight.set(1);
        f.live[1].in_flight.set(2);
        assert_eq!(LeastConn::new(2, 0).pick(&f.view(0), |_| true), Some(1));
        assert_eq!(LeastConn::new(2, 0).pick(&f.view(0), |i| i == 0), Some(0));
        assert_eq!(LeastConn::new(2, 0).pick(&f.view(0), |_| false), None);
    }
}
