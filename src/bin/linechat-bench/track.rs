//! Per sender, per receiver sequence tracking.

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obs {
    /// A sequence number not seen before, higher than all seen so far.
    Fresh,
    /// A sequence number not seen before but lower than one already seen.
    Late,
    /// Seen before.
    Dup,
}

/// Sequence numbers start at 1. `max` is the highest seen; `gaps` holds the missing numbers
/// below it as sorted, disjoint half-open ranges (almost always empty: TCP and a single
/// server keep order).
#[derive(Debug, Default, Clone)]
pub struct SeqTrack {
    max: u64,
    gaps: Vec<(u64, u64)>,
}

impl SeqTrack {
    pub fn observe(&mut self, q: u64) -> Obs {
        if q == self.max + 1 {
            self.max = q;
            return Obs::Fresh;
        }
        if q > self.max {
            self.gaps.push((self.max + 1, q));
            self.max = q;
            return Obs::Fresh;
        }
        let i = self.gaps.partition_point(|&(_, end)| end <= q);
        match self.gaps.get(i).copied() {
            Some((a, b)) if a <= q => {
                if a == q && q + 1 == b {
                    self.gaps.remove(i);
                } else if a == q {
                    self.gaps[i].0 = q + 1;
                } else if q + 1 == b {
                    self.gaps[i].1 = q;
                } else {
                    self.gaps[i].1 = q;
                    self.gaps.insert(i + 1, (q + 1, b));
                }
                Obs::Late
            }
            _ => Obs::Dup,
        }
    }

    /// Distinct sequence numbers seen.
    pub fn distinct(&self) -> u64 {
        self.max - self.gaps.iter().map(|&(a, b)| b - a).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gap_late_dup() {
        let mut t = SeqTrack::default();
        assert_eq!(t.observe(1), Obs::Fresh);
        assert_eq!(t.observe(2), Obs::Fresh);
        assert_eq!(t.observe(2), Obs::Dup);
        assert_eq!(t.observe(6), Obs::Fresh); // 3,4,5 missing
        assert_eq!(t.distinct(), 3);
        assert_eq!(t.observe(4), Obs::Late);
        assert_eq!(t.observe(4), Obs::Dup);
        assert_eq!(t.observe(3), Obs::Late);
        assert_eq!(t.observe(5), Obs::Late);
        assert_eq!(t.observe(5), Obs::Dup);
        assert_eq!(t.distinct(), 6);
        assert_eq!(t.observe(0), Obs::Dup);
    }
}
