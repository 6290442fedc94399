//! Is this outcome worth another attempt, for this request, on this attempt?
//!
//! Only the static rules live here (method, key, outcome, attempt count). Time (deadline,
//! Retry-After) and the retry budget are decided by the exchange, which knows the clock.

use crate::config::Plan;
use crate::retry::outcome::Outcome;

/// What the policy says about one finished attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again: this outcome is in `retry_on` and attempts remain.
    Retry,
    /// A success or a non-retryable status: give it to the client.
    Final,
    /// Retryable, but all `retries + 1` attempts are spent.
    Exhausted,
    /// Retryable outcome, but the request must not be sent twice (method without key).
    NotReplayable,
}

/// The static retry rules of one plan.
#[derive(Debug, Clone)]
pub struct RetryPolicy<'a> {
    plan: &'a Plan,
}

impl<'a> RetryPolicy<'a> {
    /// The policy of this plan.
    pub fn new(plan: &'a Plan) -> Self {
        RetryPolicy { plan }
    }

    /// May a request with this method (and idempotency key or not) be sent more than once?
    pub fn replayable(&self, method: &str, has_key: bool) -> bool {
        has_key
            || self
                .plan
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method))
    }

    /// Is this outcome in `retry_on`?
    pub fn retryable_outcome(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Status(s) => self.plan.retry_on.status(s),
            Outcome::Failed(f) => f.retryable_under(&self.plan.retry_on),
        }
    }

    /// The verdict after attempt number `attempt` (1-based) ended with `outcome`.
    pub fn verdict(&self, outcome: Outcome, attempt: u32, replayable: bool) -> Verdict {
        if !self.retryable_outcome(outcome) {
            Verdict::Final
        } else if !replayable {
            Verdict::NotReplayable
        } else if attempt > self.plan.retries {
            Verdict::Exhausted
        } else {
            Verdict::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::retry::outcome::Failure;

    /// outcome × attempt × method × key, with `retries: 2` and the default `retry_on`.
    #[test]
    fn verdict_table() {
        let plan = parse(br#"{"retries":2,"retry_on":"502,503,504,429,connect-failure,timeout"}"#)
            .unwrap();
        let p = RetryPolicy::new(&plan);
        use Outcome::*;
        use Verdict::*;
        let outcomes = [
            (Status(200), false),
            (Status(404), false),
            (Status(500), false),
            (Status(502), true),
            (Status(503), true),
            (Status(504), true),
            (Status(429), true),
            (Failed(Failure::ConnectFailure), true),
            (Failed(Failure::DispatchRefused), true),
            (Failed(Failure::Timeout), true),
            (Failed(Failure::Reset), false),
            (Failed(Failure::Unspecified), true),
        ];
        let methods = [
            ("GET", true),
            ("HEAD", true),
            ("PUT", true),
            ("DELETE", true),
            ("OPTIONS", true),
            ("TRACE", true),
            ("get", true),
            ("POST", false),
            ("PATCH", false),
            ("CONNECT", false),
        ];
        for (outcome, retryable) in outcomes {
            for (method, idempotent) in methods {
                for has_key in [false, true] {
                    let replayable = p.replayable(method, has_key);
                    assert_eq!(replayable, idempotent || has_key, "{method} key={has_key}");
                    for attempt in 1..=4 {
                        let want = if !retryable {
                            Final
                        } else if !replayable {
                            NotReplayable
                        } else if attempt > 2 {
                            Exhausted
                        } else {
                            Retry
                        };
                        assert_eq!(
                            p.verdict(outcome, attempt, replayable),
                            want,
                            "{outcome:?} attempt {attempt} {method} key={has_key}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zero_retries_never_retries() {
        let plan = parse(br#"{"retries":0}"#).unwrap();
        let p = RetryPolicy::new(&plan);
        assert_eq!(p.verdict(Outcome::Status(503), 1, true), Verdict::Exhausted);
    }

    #[test]
    fn configured_methods_replace_defaults() {
        let plan = parse(br#"{"methods":["GET"]}"#).unwrap();
        let p = RetryPolicy::new(&plan);
        assert!(p.replayable("GET", false));
        assert!(!p.replayable("PUT", false));
        assert!(p.replayable("POST", true));
    }
}
