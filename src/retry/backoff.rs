//! The delay before a retry: exponential (full or equal jitter) or fixed, a pure function of
//! inputs.

use crate::config::{Backoff, Jitter};

/// The longest delay in ms before retry number `retry` (1 = the first retry).
///
/// Exponential: `min(max, base * 2^(retry-1))`; fixed: the interval.
pub fn ceiling_ms(backoff: &Backoff, retry: u32) -> u64 {
    match *backoff {
        Backoff::Fixed { interval_ms } => interval_ms,
        Backoff::Exponential {
            base_ms, max_ms, ..
        } => {
            let shift = retry.saturating_sub(1).min(32);
            base_ms.saturating_mul(1u64 << shift).min(max_ms)
        }
    }
}

/// The shortest delay in ms before retry number `retry`: the wait it is guaranteed to get.
///
/// Full jitter: 0; equal jitter: half the ceiling, rounded up; fixed: the interval. Summed
/// over the retries, this is the longest outage of fast failures a request is sure to
/// outlast (see docs/operator-guide.md, "Sizing the retry schedule").
pub fn floor_ms(backoff: &Backoff, retry: u32) -> u64 {
    let ceiling = ceiling_ms(backoff, retry);
    match *backoff {
        Backoff::Fixed { interval_ms } => interval_ms,
        Backoff::Exponential {
            jitter: Jitter::Full,
            ..
        } => 0,
        Backoff::Exponential {
            jitter: Jitter::Equal,
            ..
        } => ceiling - ceiling / 2,
    }
}

/// Delay in ms before retry number `retry` (1 = the first retry), given a random `u64`.
///
/// Exponential draws uniformly in `[floor_ms, ceiling_ms]`: with full jitter (as Envoy does)
/// that is `[0, ceiling]`, with equal jitter `[ceiling/2, ceiling]`.
pub fn delay_ms(backoff: &Backoff, retry: u32, random: u64) -> u64 {
    match *backoff {
        Backoff::Fixed { interval_ms } => interval_ms,
        Backoff::Exponential { .. } => {
            let floor = floor_ms(backoff, retry);
            let spread = ceiling_ms(backoff, retry) - floor;
            floor + random % spread.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXP: Backoff = Backoff::Exponential {
        base_ms: 25,
        max_ms: 250,
        jitter: Jitter::Full,
    };

    const EQUAL: Backoff = Backoff::Exponential {
        base_ms: 300,
        max_ms: 1200,
        jitter: Jitter::Equal,
    };

    #[test]
    fn exponential_ceiling_doubles_then_caps() {
        // `random = c` yields exactly `c` when `c` is the ceiling, and `c + 1` wraps to 0.
        for (retry, ceiling) in [(1, 25), (2, 50), (3, 100), (4, 200), (5, 250), (9, 250)] {
            assert_eq!(delay_ms(&EXP, retry, ceiling), ceiling, "retry {retry}");
            assert_eq!(delay_ms(&EXP, retry, ceiling + 1), 0, "retry {retry}");
        }
    }

    #[test]
    fn exponential_stays_within_bounds_for_any_random() {
        for retry in [0, 1, 2, 3, 10, 64, u32::MAX] {
            for r in [0u64, 1, 7, 12345, u64::MAX, u64::MAX / 3] {
                assert!(delay_ms(&EXP, retry, r) <= 250);
            }
        }
        assert_eq!(delay_ms(&EXP, 1, 0), 0);
    }

    #[test]
    fn ceiling_is_the_largest_delay_drawn() {
        let slow = Backoff::Exponential {
            base_ms: 100,
            max_ms: 1000,
            jitter: Jitter::Full,
        };
        let fixed = Backoff::Fixed { interval_ms: 700 };
        for b in [EXP, slow, fixed, EQUAL] {
            for retry in 1..=10 {
                let c = ceiling_ms(&b, retry);
                let f = floor_ms(&b, retry);
                let spread = c - f;
                assert_eq!(delay_ms(&b, retry, spread), c, "{b:?} retry {retry}");
                if let Backoff::Exponential { .. } = b {
                    // One past the top wraps to the floor: nothing above the ceiling is drawn.
                    assert_eq!(delay_ms(&b, retry, spread + 1), f, "{b:?} retry {retry}");
                }
            }
        }
    }

    #[test]
    fn floor_is_the_shortest_delay_drawn() {
        for b in [EXP, EQUAL, Backoff::Fixed { interval_ms: 700 }] {
            for retry in [0, 1, 2, 3, 5, 10, 64, u32::MAX] {
                let f = floor_ms(&b, retry);
                assert_eq!(delay_ms(&b, retry, 0), f, "{b:?} retry {retry}");
                for r in [1u64, 7, 12345, u64::MAX, u64::MAX / 3] {
                    let d = delay_ms(&b, retry, r);
                    assert!(
                        (f..=ceiling_ms(&b, retry)).contains(&d),
                        "{b:?} retry {retry}: {d}"
                    );
                }
            }
        }
    }

    #[test]
    fn full_jitter_guarantees_no_wait() {
        for retry in 1..=10 {
            assert_eq!(floor_ms(&EXP, retry), 0);
        }
    }

    #[test]
    fn equal_jitter_waits_at_least_half_the_ceiling() {
        // The shipped schedule: 300/1200, 5 retries. Floors 150 + 300 + 600 + 600 + 600 = 2.25 s,
        // ceilings 300 + 600 + 1200 + 1200 + 1200 = 4.5 s.
        let floors: Vec<u64> = (1..=5).map(|n| floor_ms(&EQUAL, n)).collect();
        let ceilings: Vec<u64> = (1..=5).map(|n| ceiling_ms(&EQUAL, n)).collect();
        assert_eq!(floors, [150, 300, 600, 600, 600]);
        assert_eq!(ceilings, [300, 600, 1200, 1200, 1200]);
        assert_eq!(floors.iter().sum::<u64>(), 2250);
        assert_eq!(ceilings.iter().sum::<u64>(), 4500);
        // An odd ceiling: the floor rounds up, so the range is [13, 25], never below half.
        let odd = Backoff::Exponential {
            base_ms: 25,
            max_ms: 250,
            jitter: Jitter::Equal,
        };
        assert_eq!(floor_ms(&odd, 1), 13);
        assert_eq!(delay_ms(&odd, 1, 0), 13);
        assert_eq!(delay_ms(&odd, 1, 12), 25);
        assert_eq!(delay_ms(&odd, 1, 13), 13);
        // A 1 ms ceiling leaves no room to jitter.
        let tiny = Backoff::Exponential {
            base_ms: 1,
            max_ms: 1,
            jitter: Jitter::Equal,
        };
        assert_eq!(
            (delay_ms(&tiny, 1, 0), delay_ms(&tiny, 1, u64::MAX)),
            (1, 1)
        );
    }

    #[test]
    fn fixed_ignores_randomness() {
        let f = Backoff::Fixed { interval_ms: 5000 };
        assert_eq!(delay_ms(&f, 1, 0), 5000);
        assert_eq!(delay_ms(&f, 3, u64::MAX), 5000);
        assert_eq!(floor_ms(&f, 3), 5000);
    }

    #[test]
    fn huge_base_does_not_overflow() {
        for jitter in [Jitter::Full, Jitter::Equal] {
            let b = Backoff::Exponential {
                base_ms: u64::MAX / 2,
                max_ms: u64::MAX,
                jitter,
            };
            let _ = delay_ms(&b, 40, u64::MAX);
            let _ = delay_ms(&b, 40, 0);
        }
    }
}
