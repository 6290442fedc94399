//! The delay before a retry: full-jitter exponential or fixed, a pure function of inputs.

use crate::config::Backoff;

/// The longest delay in ms before retry number `retry` (1 = the first retry).
///
/// Exponential: `min(max, base * 2^(retry-1))`; fixed: the interval.
pub fn ceiling_ms(backoff: &Backoff, retry: u32) -> u64 {
    match *backoff {
        Backoff::Fixed { interval_ms } => interval_ms,
        Backoff::Exponential { base_ms, max_ms } => {
            let shift = retry.saturating_sub(1).min(32);
            base_ms.saturating_mul(1u64 << shift).min(max_ms)
        }
    }
}

/// Delay in ms before retry number `retry` (1 = the first retry), given a random `u64`.
///
/// Exponential uses full jitter (as Envoy does): uniform in `[0, ceiling_ms]`.
pub fn delay_ms(backoff: &Backoff, retry: u32, random: u64) -> u64 {
    match *backoff {
        Backoff::Fixed { interval_ms } => interval_ms,
        Backoff::Exponential { .. } => random % ceiling_ms(backoff, retry).saturating_add(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXP: Backoff = Backoff::Exponential {
        base_ms: 25,
        max_ms: 250,
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
        };
        let fixed = Backoff::Fixed { interval_ms: 700 };
        for b in [EXP, slow, fixed] {
            for retry in 1..=10 {
                let c = ceiling_ms(&b, retry);
                assert_eq!(delay_ms(&b, retry, c), c, "{b:?} retry {retry}");
                if let Backoff::Exponential { .. } = b {
                    // One past the ceiling wraps: nothing above it is ever drawn.
                    assert_eq!(delay_ms(&b, retry, c + 1), 0, "{b:?} retry {retry}");
                }
            }
        }
    }

    #[test]
    fn fixed_ignores_randomness() {
        let f = Backoff::Fixed { interval_ms: 5000 };
        assert_eq!(delay_ms(&f, 1, 0), 5000);
        assert_eq!(delay_ms(&f, 3, u64::MAX), 5000);
    }

    #[test]
    fn huge_base_does_not_overflow() {
        let b = Backoff::Exponential {
            base_ms: u64::MAX / 2,
            max_ms: u64::MAX,
        };
        let _ = delay_ms(&b, 40, u64::MAX);
    }
}
