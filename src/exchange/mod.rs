//! The per-request state machine: fed host events, it returns the next action to execute.
//!
//! The adapter turns host callbacks into [`Event`]s and executes the returned [`Action`]s;
//! everything that decides lives here and runs natively in tests. Time, randomness and the
//! retry budget come through the narrow [`Env`] trait.

mod key_guard;
#[cfg(test)]
mod key_tests;
mod messages;

pub use messages::{
    Action, Attempt, AttemptResponse, BodyRead, ClaimAnswer, ClaimRequest, Env, Event, Execution,
    FinalResponse, KeyAnswer, NativeReason, SettleRequest, StopReason, Target,
};

use crate::config::Plan;
use crate::header_map::{first, Headers};
use crate::request_copy::{body_expectation, forwardable, BodyExpectation, RequestCopy};
use crate::retry::backoff;
use crate::retry::outcome::{Failure, Outcome};
use crate::retry::policy::{RetryPolicy, Verdict};
use crate::retry::retry_after;
use crate::state::idempotency::Refusal;
use key_guard::{refused, Admitted, KeyGuard, Proceed};
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Last {
    /// Response mode: the native attempt's response, held at its headers.
    Native,
    Dispatched(FinalResponse),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Start,
    AwaitingBody,
    /// The filter stepped aside; the proxy sends the request once.
    Native(NativeReason),
    /// Response mode: attempt 1 is on its native way.
    NativeFirstAttempt,
    InFlight(u32),
    Waiting(u32),
    /// Gateway idempotency: the store is asked for the key before attempt 1.
    Claiming,
    /// Retrying is over; the store is settling the key before the final response goes.
    Settling(StopReason),
    /// Retrying is over; the native response's body is read so its result can be stored.
    ReadingNativeBody(StopReason),
    /// The final response was sent (or the native one released).
    Done(StopReason),
}

/// The state of one request's exchange with the upstream.
#[derive(Debug)]
pub struct Exchange {
    plan: Rc<Plan>,
    execution: Execution,
    target: Target,
    state: State,
    copy: Option<RequestCopy>,
    replayable: bool,
    started_ms: u64,
    attempts: u32,
    last: Option<Last>,
    last_failure: Option<Failure>,
    last_outcome: Option<Outcome>,
    wait_started_ms: u64,
    final_response: Option<Rc<FinalResponse>>,
    /// Gateway idempotency: the request's key, when it has one that is covered.
    guard: Option<KeyGuard>,
    /// Where the key lives (route or upstream id), from the adapter.
    key_scope: String,
    /// Every attempt's outcome, in order (kept only for a guarded request).
    outcomes: Vec<Outcome>,
    /// What to do once the store has settled the key.
    after_settle: Option<Action>,
    /// Response mode: the native response's headers, kept while its body is read whole
    /// for the store.
    native_headers: Option<Headers>,
}

impl Exchange {
    /// A new exchange for one request.
    pub fn new(plan: Rc<Plan>, execution: Execution, target: Target) -> Self {
        Exchange {
            plan,
            execution,
            target,
            state: State::Start,
            copy: None,
            replayable: false,
            started_ms: 0,
            attempts: 0,
            last: None,
            last_failure: None,
            last_outcome: None,
            wait_started_ms: 0,
            final_response: None,
            guard: None,
            key_scope: String::new(),
            outcomes: Vec::new(),
            after_settle: None,
            native_headers: None,
        }
    }

    /// Gateway idempotency: the id of the route or upstream the request's key lives in.
    pub fn with_key_scope(mut self, scope: String) -> Self {
        self.key_scope = scope;
        self
    }

    /// Attempts made so far (the native first attempt included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The outcome of the latest attempt.
    pub fn last_outcome(&self) -> Option<Outcome> {
        self.last_outcome
    }

    /// Why the filter stepped aside, if it did.
    pub fn native_reason(&self) -> Option<NativeReason> {
        match self.state {
            State::Native(r) => Some(r),
            _ => None,
        }
    }

    /// Why retrying stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self.state {
            State::Done(r) | State::Settling(r) | State::ReadingNativeBody(r) => Some(r),
            _ => None,
        }
    }

    /// Response mode: is the native response's body to be read whole for the store?
    pub fn reads_native_body(&self) -> bool {
        matches!(self.state, State::ReadingNativeBody(_))
    }

    /// Response mode: will attempt 1 go the proxy's native way (its timeout is then the
    /// proxy's, unless the adapter bounds it)?
    pub fn native_attempt_ahead(&self) -> bool {
        self.execution == Execution::Response
            && matches!(
                self.state,
                State::AwaitingBody | State::Claiming | State::NativeFirstAttempt
            )
    }

    /// The timeout of attempt 1: the per-try timeout, never past the deadline.
    pub fn first_attempt_timeout_ms(&self) -> u64 {
        self.plan.per_try_timeout_ms.min(self.plan.deadline_ms)
    }

    /// Does the idempotency store hold a lock of this request?
    pub fn holds_key(&self) -> bool {
        self.guard.as_ref().is_some_and(KeyGuard::claimed)
    }

    /// Is a retry in flight or waiting (response mode: the native response must be held)?
    pub fn retrying(&self) -> bool {
        matches!(self.state, State::InFlight(_) | State::Waiting(_))
    }

    /// Is a response-mode native attempt waiting for its response headers?
    pub fn awaits_native_response(&self) -> bool {
        self.state == State::NativeFirstAttempt
    }

    /// The local response sent to the client, kept so the adapter can repair what the host
    /// changes on the way out (Kong: repeated headers, the appended `"\n"`).
    pub fn sent_response(&self) -> Option<&FinalResponse> {
        self.final_response.as_deref()
    }

    /// The final response, shared, for an adapter that must send it later than it was
    /// decided (Kong: not from the callback of a failed dispatch).
    pub fn sent_response_rc(&self) -> Option<Rc<FinalResponse>> {
        self.final_response.clone()
    }

    /// The host could not deliver the final response: the request goes the native way, and
    /// nothing is left to repair on its way out.
    pub fn withdraw_response(&mut self) {
        self.final_response = None;
    }

    /// The full header list (pseudo headers included) of a dispatched attempt.
    pub fn dispatch_headers(&self, attempt: u32) -> Headers {
        match &self.copy {
            Some(c) => c.dispatch_headers(
                self.target.scheme.as_str(),
                &self.plan.attempt_header,
                attempt,
            ),
            None => Vec::new(),
        }
    }

    /// The body of every dispatched attempt.
    pub fn dispatch_body(&self) -> &[u8] {
        self.copy.as_ref().map_or(&[], |c| c.body.as_slice())
    }

    /// The dispatch target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// How attempts run for this request.
    pub fn execution(&self) -> Execution {
        self.execution
    }

    /// Gateway idempotency: the largest response body stored.
    pub fn max_response_bytes(&self) -> usize {
        self.plan.idempotency.max_response_bytes
    }

    /// The largest body this request may have and still be retried.
    pub fn max_body_bytes(&self) -> usize {
        self.plan.max_body_bytes
    }

    /// The client-facing attempts header name.
    pub fn attempts_header(&self) -> &str {
        &self.plan.attempts_header
    }

    /// Feeds one event; returns what to do next.
    pub fn handle(&mut self, event: Event, env: &mut dyn Env) -> Action {
        match event {
            Event::RequestHeaders {
                headers,
                path,
                authority,
            } => self.on_request_headers(headers, path, authority, env),
            Event::RequestBody(read) => self.on_request_body(read, env),
            Event::UpstreamResponseHeaders {
                headers,
                proxy_made,
            } => self.on_native_response(headers, proxy_made, env),
            Event::AttemptResult(resp) => self.on_attempt_result(resp, env),
            Event::DispatchRefused => self.on_dispatch_refused(env),
            Event::DelayElapsed => self.on_delay_elapsed(env),
            Event::Claimed(answer) => self.on_claimed(answer, env),
            Event::Settled => self.on_settled(),
            Event::NativeResponse { body } => self.on_native_body(body, env),
        }
    }

    /// The filter cannot copy this request. Unguarded it goes natively, once; a keyed one
    /// cannot be guarded either, and `on_store_unavailable` says whether it may go so.
    fn step_aside(&mut self, reason: NativeReason) -> Action {
        if self.guard.is_some()
            && self.plan.idempotency.on_store_unavailable == crate::config::StoreUnavailable::Deny
        {
            let refusal = match reason {
                NativeReason::HeaderNotText => Refusal::HeaderNotText,
                _ => Refusal::BodyTooLarge,
            };
            return self.answer_for_key(refused(refusal, &self.plan.idempotency_header));
        }
        self.guard = None;
        self.native(reason)
    }

    /// Gateway idempotency answers instead of the upstream.
    fn answer_for_key(&mut self, (why, resp): (KeyAnswer, FinalResponse)) -> Action {
        self.state = State::Done(StopReason::Key(why));
        self.copy = None;
        self.respond(resp)
    }

    fn native(&mut self, reason: NativeReason) -> Action {
        self.state = State::Native(reason);
        self.attempts = 1;
        self.copy = None;
        Action::PassThrough
    }

    fn on_request_headers(
        &mut self,
        headers: Headers,
        path: Option<String>,
        authority: Option<String>,
        env: &mut dyn Env,
    ) -> Action {
        if self.state != State::Start {
            return Action::PassThrough;
        }
        self.started_ms = env.now_ms();
        let mut copy = RequestCopy::from_headers(&headers);
        let has_key = copy.has_header(&self.plan.idempotency_header);
        self.replayable = RetryPolicy::new(&self.plan).replayable(&copy.method, has_key);
        if self.plan.idempotency.enabled {
            // Before any path override: the fingerprint is of what the client sent.
            match KeyGuard::admit(
                &self.plan.idempotency,
                &self.plan.idempotency_header,
                &copy,
                &self.key_scope,
                || env.random(),
            ) {
                Admitted::Unguarded => {}
                Admitted::Guarded(g) => self.guard = Some(g),
                Admitted::Refused(r) => {
                    return self.answer_for_key(refused(r, &self.plan.idempotency_header))
                }
            }
        }
        // A guarded request is copied even without retries: its result is stored.
        if (!self.replayable || self.plan.retries == 0) && self.guard.is_none() {
            return self.native(NativeReason::NotRetryable);
        }
        if copy
            .headers
            .iter()
            .any(|(_, v)| std::str::from_utf8(v).is_err())
        {
            return self.step_aside(NativeReason::HeaderNotText);
        }
        if let Some(path) = path {
            copy.path = path;
        }
        if let Some(authority) = authority {
            copy.authority = authority;
        }
        self.copy = Some(copy);
        match body_expectation(&headers) {
            BodyExpectation::Length(n) if n > self.plan.max_body_bytes as u64 => {
                self.step_aside(NativeReason::BodyTooLarge)
            }
            BodyExpectation::None => self.body_complete(env),
            BodyExpectation::Length(_) | BodyExpectation::Unknown => {
                self.state = State::AwaitingBody;
                Action::ReadBody
            }
        }
    }

    fn on_request_body(&mut self, read: BodyRead, env: &mut dyn Env) -> Action {
        match self.state {
            State::AwaitingBody => {}
            // Dispatched already (e.g. a body nobody announced): keep holding the request.
            State::InFlight(_) | State::Waiting(_) => return Action::Pause,
            _ => return Action::PassThrough,
        }
        match read {
            BodyRead::Partial(n) if n > self.plan.max_body_bytes => {
                self.step_aside(NativeReason::BodyTooLarge)
            }
            BodyRead::Partial(_) => Action::Pause,
            BodyRead::Unreadable => self.step_aside(NativeReason::BodyUnreadable),
            BodyRead::Complete(body) if body.len() > self.plan.max_body_bytes => {
                self.step_aside(NativeReason::BodyTooLarge)
            }
            BodyRead::Complete(body) => {
                if let Some(c) = self.copy.as_mut() {
                    c.body = body;
                }
                self.body_complete(env)
            }
        }
    }

    /// The request is copied whole: a guarded one first claims its key.
    fn body_complete(&mut self, env: &mut dyn Env) -> Action {
        if let (Some(guard), Some(copy)) = (self.guard.as_ref(), self.copy.as_ref()) {
            if !guard.claimed() {
                self.state = State::Claiming;
                return Action::Claim(guard.claim(
                    &self.plan.idempotency,
                    &copy.method,
                    &copy.body,
                ));
            }
        }
        self.proceed(env)
    }

    fn on_claimed(&mut self, answer: ClaimAnswer, env: &mut dyn Env) -> Action {
        if self.state != State::Claiming {
            return Action::Pause;
        }
        let Some(guard) = self.guard.as_mut() else {
            return self.proceed(env);
        };
        match guard.on_claim(
            answer,
            &self.plan.idempotency,
            &self.plan.idempotency_header,
        ) {
            Ok(Proceed::Guarded) => self.proceed(env),
            Ok(Proceed::Unguarded) => {
                self.guard = None;
                if !self.replayable || self.plan.retries == 0 {
                    // Copied only for the key: without it, the request goes as it would.
                    return self.native(NativeReason::NotRetryable);
                }
                self.proceed(env)
            }
            Err(answer) => {
                self.guard = None;
                self.answer_for_key(answer)
            }
        }
    }

    /// It may be retried, so it counts towards the budget; start attempt 1.
    fn proceed(&mut self, env: &mut dyn Env) -> Action {
        env.record_request();
        match self.execution {
            Execution::Dispatch => {
                let timeout_ms = self.first_attempt_timeout_ms();
                self.start(Attempt {
                    number: 1,
                    timeout_ms,
                    reason: None,
                    waited_ms: 0,
                })
            }
            Execution::Response => {
                self.state = State::NativeFirstAttempt;
                self.attempts = 1;
                Action::PassThrough
            }
        }
    }

    fn start(&mut self, attempt: Attempt) -> Action {
        self.state = State::InFlight(attempt.number);
        self.attempts = attempt.number;
        Action::Dispatch(attempt)
    }

    /// `proxy_made`: the proxy answered itself (Envoy's 503/504 after an upstream reset or
    /// timeout), not the upstream: for the key such an attempt's outcome is unknown.
    fn on_native_response(
        &mut self,
        headers: Headers,
        proxy_made: bool,
        env: &mut dyn Env,
    ) -> Action {
        if self.state != State::NativeFirstAttempt {
            return Action::PassThrough;
        }
        let outcome = match first(&headers, ":status").and_then(|s| s.trim().parse::<u16>().ok()) {
            Some(s) => Outcome::Status(s),
            None => Outcome::Failed(Failure::Unspecified),
        };
        let retry_after = first(&headers, "retry-after").map(str::to_string);
        let for_key = if proxy_made {
            Outcome::Failed(Failure::Unspecified)
        } else {
            outcome
        };
        if self.holds_key() {
            self.native_headers = Some(headers);
        }
        self.last = Some(Last::Native);
        self.after_attempt(1, outcome, for_key, retry_after.as_deref(), env)
    }

    fn on_attempt_result(&mut self, resp: AttemptResponse, env: &mut dyn Env) -> Action {
        let State::InFlight(n) = self.state else {
            return Action::Pause;
        };
        let retry_after = first(&resp.headers, "retry-after").map(str::to_string);
        match resp.outcome {
            Outcome::Status(status) => {
                let mut headers = forwardable(&resp.headers);
                // A HEAD answer has no body: its Content-Length is the client's only word on
                // the resource's size, and the host sends none for an empty local response
                // (seen on Envoy 1.40).
                if self.copy.as_ref().is_some_and(|c| c.method == "HEAD") {
                    headers.extend(
                        resp.headers
                            .iter()
                            .filter(|(name, _)| name == "content-length")
                            .cloned(),
                    );
                }
                headers.push((
                    self.plan.attempts_header.clone(),
                    n.to_string().into_bytes(),
                ));
                self.last = Some(Last::Dispatched(FinalResponse {
                    status,
                    headers,
                    body: resp.body,
                }));
            }
            Outcome::Failed(f) => self.last_failure = Some(f),
        }
        self.after_attempt(n, resp.outcome, resp.outcome, retry_after.as_deref(), env)
    }

    fn on_dispatch_refused(&mut self, env: &mut dyn Env) -> Action {
        match self.state {
            // Nothing was sent yet: the native path can still carry the request, once.
            State::InFlight(1) if self.execution == Execution::Dispatch => {
                self.native(NativeReason::DispatchRefused)
            }
            State::InFlight(n) => {
                self.last_failure = Some(Failure::DispatchRefused);
                let refused = Outcome::Failed(Failure::DispatchRefused);
                self.after_attempt(n, refused, refused, None, env)
            }
            _ => Action::Pause,
        }
    }

    fn on_delay_elapsed(&mut self, env: &mut dyn Env) -> Action {
        let State::Waiting(next) = self.state else {
            return Action::Pause;
        };
        let now = env.now_ms();
        let Some(timeout_ms) = self.time_for_attempt(now, 0) else {
            return self.finish(StopReason::Deadline, env);
        };
        self.start(Attempt {
            number: next,
            timeout_ms,
            reason: self.last_outcome,
            waited_ms: now.saturating_sub(self.wait_started_ms),
        })
    }

    /// The dispatch timeout for an attempt starting after `delay_ms`, or `None` when it could
    /// not finish before the deadline.
    fn time_for_attempt(&self, now_ms: u64, delay_ms: u64) -> Option<u64> {
        let elapsed = now_ms.saturating_sub(self.started_ms);
        let left = self
            .plan
            .deadline_ms
            .checked_sub(elapsed)?
            .checked_sub(delay_ms)?;
        (left >= self.plan.per_try_timeout_ms).then_some(self.plan.per_try_timeout_ms)
    }

    fn after_attempt(
        &mut self,
        n: u32,
        outcome: Outcome,
        for_key: Outcome,
        retry_after: Option<&str>,
        env: &mut dyn Env,
    ) -> Action {
        self.last_outcome = Some(outcome);
        // Gateway idempotency: `for_key` is what this attempt says about the key (Envoy's own
        // 503 after a broken connection is not the upstream's). Retries go on as `retry_on`
        // says, as without gateway idempotency (issue 12: "retry as today").
        if self.guard.is_some() {
            self.outcomes.push(for_key);
        }
        let policy = RetryPolicy::new(&self.plan);
        // A refused dispatch says nothing about the upstream.
        if outcome != Outcome::Failed(Failure::DispatchRefused) && policy.retryable_outcome(outcome)
        {
            env.failure_seen(outcome);
        }
        match policy.verdict(outcome, n, self.replayable) {
            Verdict::Final => return self.finish(StopReason::Final, env),
            Verdict::Exhausted => return self.finish(StopReason::Exhausted, env),
            Verdict::NotReplayable => return self.finish(StopReason::NotReplayable, env),
            Verdict::Retry => {}
        }
        let now = env.now_ms();
        let mut delay = backoff::delay_ms(&self.plan.backoff, n, env.random());
        let honoured = self.plan.retry_after_max_ms > 0
            && matches!(outcome, Outcome::Status(s) if retry_after::honoured_on(s));
        if let Some(value) = retry_after.filter(|_| honoured) {
            if let Some(asked) = retry_after::delay_ms(value, now) {
                if asked > self.plan.retry_after_max_ms {
                    return self.finish(StopReason::RetryAfterTooLong, env);
                }
                if asked > 0 && !env.can_wait() {
                    return self.finish(StopReason::CannotWait, env);
                }
                delay = delay.max(asked);
            }
        }
        let Some(timeout_ms) = self.time_for_attempt(now, delay) else {
            return self.finish(StopReason::Deadline, env);
        };
        if !env.allow_retry(n + 1) {
            return self.finish(StopReason::Budget, env);
        }
        if delay == 0 {
            return self.start(Attempt {
                number: n + 1,
                timeout_ms,
                reason: Some(outcome),
                waited_ms: 0,
            });
        }
        self.wait_started_ms = now;
        self.state = State::Waiting(n + 1);
        Action::Wait {
            ms: delay,
            next_attempt: n + 1,
        }
    }

    /// Retrying is over: answer with the last response, or say what failed; a guarded
    /// request settles its key first.
    fn finish(&mut self, reason: StopReason, env: &mut dyn Env) -> Action {
        self.state = State::Done(reason);
        self.copy = None;
        let last = self.last.take();
        if matches!(last, Some(Last::Native))
            && self
                .guard
                .as_ref()
                .is_some_and(|g| g.stores(&self.outcomes, &self.plan.idempotency))
        {
            // The result is the native response: its body must be read first.
            self.state = State::ReadingNativeBody(reason);
            return Action::ReadNativeBody;
        }
        let settle = match &last {
            Some(Last::Dispatched(r)) => {
                self.settle_request(Some((r.status, &r.headers, &r.body)), env.now_ms())
            }
            Some(Last::Native) | None => self.settle_request(None, env.now_ms()),
        };
        let action = self.final_action(last);
        self.settle_then(reason, settle, action)
    }

    /// What the store is asked once the exchange is over (`None`: nothing, the key is not
    /// held or stays locked); `response` is the final one when the exchange has it.
    fn settle_request(
        &self,
        response: Option<(u16, &Headers, &[u8])>,
        now_ms: u64,
    ) -> Option<SettleRequest> {
        self.guard.as_ref()?.settle(
            &self.outcomes,
            response,
            &self.plan.attempts_header,
            &self.plan.idempotency,
            now_ms,
        )
    }

    /// Settles the key first (when there is something to settle), then `action`.
    fn settle_then(
        &mut self,
        reason: StopReason,
        settle: Option<SettleRequest>,
        action: Action,
    ) -> Action {
        match settle {
            Some(request) => {
                self.state = State::Settling(reason);
                self.after_settle = Some(action);
                Action::Settle(request)
            }
            None => action,
        }
    }

    /// The store settled the key: the final response goes now.
    fn on_settled(&mut self) -> Action {
        let State::Settling(reason) = self.state else {
            return Action::Pause;
        };
        self.state = State::Done(reason);
        self.after_settle.take().unwrap_or(Action::PassThrough)
    }

    /// Response mode: the native response, read whole, is the result to store.
    fn on_native_body(&mut self, body: Option<Vec<u8>>, env: &mut dyn Env) -> Action {
        let State::ReadingNativeBody(reason) = self.state else {
            return Action::PassThrough;
        };
        self.state = State::Done(reason);
        let headers = self.native_headers.take().unwrap_or_default();
        let status = first(&headers, ":status").and_then(|s| s.trim().parse::<u16>().ok());
        let (Some(status), Some(body)) = (status, body) else {
            // Not readable whole: the key stays locked until its deadline (duplicates 409).
            return Action::PassThrough;
        };
        let settle = self.settle_request(Some((status, &headers, &body)), env.now_ms());
        self.settle_then(reason, settle, Action::PassThrough)
    }

    /// The action that ends the exchange for the client.
    fn final_action(&mut self, last: Option<Last>) -> Action {
        match last {
            Some(Last::Native) => Action::PassThrough,
            Some(Last::Dispatched(resp)) => self.respond(resp),
            None => {
                let failure = self.last_failure.unwrap_or(Failure::Unspecified);
                let body = format!(
                    "upstream request failed: {} (after {} attempt{})\n",
                    failure.as_str(),
                    self.attempts,
                    if self.attempts == 1 { "" } else { "s" }
                );
                let headers = vec![
                    (
                        "content-type".to_string(),
                        b"text/plain; charset=utf-8".to_vec(),
                    ),
                    (
                        self.plan.attempts_header.clone(),
                        self.attempts.to_string().into_bytes(),
                    ),
                ];
                self.respond(FinalResponse {
                    status: failure.final_status(),
                    headers,
                    body: body.into_bytes(),
                })
            }
        }
    }

    fn respond(&mut self, resp: FinalResponse) -> Action {
        let resp = Rc::new(resp);
        self.final_response = Some(resp.clone());
        Action::Respond(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Scheme};

    struct TestEnv {
        now: u64,
        random: u64,
        budget: bool,
        /// How often `record_request` was called.
        recorded: u32,
        /// The attempts `allow_retry` was asked about, in order.
        asked: Vec<u32>,
        /// What `can_wait` answers.
        waits: bool,
        /// The outcomes `failure_seen` was told about, in order.
        failures: Vec<Outcome>,
    }

    impl Env for TestEnv {
        fn now_ms(&self) -> u64 {
            self.now
        }
        fn random(&mut self) -> u64 {
            self.random
        }
        fn record_request(&mut self) {
            self.recorded += 1;
        }
        fn allow_retry(&mut self, attempt: u32) -> bool {
            self.asked.push(attempt);
            self.budget
        }
        fn can_wait(&self) -> bool {
            self.waits
        }
        fn failure_seen(&mut self, outcome: Outcome) {
            self.failures.push(outcome);
        }
    }

    fn env() -> TestEnv {
        TestEnv {
            now: 1_000_000,
            random: 0,
            budget: true,
            recorded: 0,
            asked: Vec::new(),
            waits: true,
            failures: Vec::new(),
        }
    }

    fn hs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn exchange(json: &str, execution: Execution) -> Exchange {
        Exchange::new(
            Rc::new(parse(json.as_bytes()).unwrap()),
            execution,
            Target {
                upstream: "backend:80".into(),
                scheme: Scheme::Http,
            },
        )
    }

    fn request(method: &str, extra: &[(&str, &str)]) -> Event {
        let mut h = hs(&[
            (":method", method),
            (":path", "/x?y=1"),
            (":authority", "gw"),
        ]);
        h.extend(hs(extra));
        Event::RequestHeaders {
            headers: h,
            path: None,
            authority: None,
        }
    }

    fn status(code: u16, extra: &[(&str, &str)]) -> Event {
        let mut h = hs(&[(":status", &code.to_string())]);
        h.extend(hs(extra));
        Event::AttemptResult(AttemptResponse {
            outcome: Outcome::Status(code),
            headers: h,
            body: format!("body {code}").into_bytes(),
        })
    }

    /// Response mode: the native attempt's answer (`None`: headers without a status).
    pub(super) fn native_answer(status: Option<u16>) -> Event {
        Event::UpstreamResponseHeaders {
            headers: status
                .map(|s| vec![(":status".to_string(), s.to_string().into_bytes())])
                .unwrap_or_default(),
            proxy_made: false,
        }
    }

    fn failed(f: Failure) -> Event {
        Event::AttemptResult(AttemptResponse {
            outcome: Outcome::Failed(f),
            headers: vec![],
            body: vec![],
        })
    }

    fn dispatched(a: &Action) -> u32 {
        match a {
            Action::Dispatch(at) => at.number,
            other => panic!("expected Dispatch, got {other:?}"),
        }
    }

    fn responded(a: Action) -> Rc<FinalResponse> {
        match a {
            Action::Respond(r) => r,
            other => panic!("expected Respond, got {other:?}"),
        }
    }

    #[test]
    fn get_without_body_dispatches_from_headers_and_retries_503() {
        let mut e = env();
        let mut x = exchange(
            r#"{"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        assert_eq!(dispatched(&x.handle(request("GET", &[]), &mut e)), 1);
        let h = x.dispatch_headers(1);
        assert_eq!(first(&h, ":path"), Some("/x?y=1"));
        assert_eq!(first(&h, "x-retry-attempt"), None);
        assert_eq!(dispatched(&x.handle(status(503, &[]), &mut e)), 2);
        assert_eq!(first(&x.dispatch_headers(2), "x-retry-attempt"), Some("2"));
        let r = responded(x.handle(
            status(200, &[("set-cookie", "a"), ("set-cookie", "b")]),
            &mut e,
        ));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"body 200");
        assert_eq!(
            r.headers,
            hs(&[
                ("set-cookie", "a"),
                ("set-cookie", "b"),
                ("x-kong-retry-attempts", "2")
            ])
        );
        assert_eq!(x.stop_reason(), Some(StopReason::Final));
        assert_eq!(x.sent_response(), Some(&*r));
    }

    #[test]
    fn exhausted_gives_last_response_after_retries_plus_one() {
        let mut e = env();
        let mut x = exchange(
            r#"{"retries":3,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        let mut a = x.handle(request("GET", &[]), &mut e);
        let mut calls = 0;
        while let Action::Dispatch(_) = a {
            calls += 1;
            a = x.handle(status(502, &[("connection", "close")]), &mut e);
        }
        assert_eq!(calls, 4);
        let r = responded(a);
        assert_eq!(r.status, 502);
        assert_eq!(r.headers, hs(&[("x-kong-retry-attempts", "4")]));
        assert_eq!(x.stop_reason(), Some(StopReason::Exhausted));
    }

    #[test]
    fn failures_only_give_plain_text_502_or_504() {
        let mut e = env();
        let mut x = exchange(
            r#"{"retries":1,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        x.handle(failed(Failure::ConnectFailure), &mut e);
        let r = responded(x.handle(failed(Failure::Timeout), &mut e));
        assert_eq!(r.status, 504);
        assert!(String::from_utf8_lossy(&r.body).contains("timeout"));
        assert_eq!(first(&r.headers, "x-kong-retry-attempts"), Some("2"));
    }

    #[test]
    fn last_real_response_wins_over_later_failure() {
        let mut e = env();
        let mut x = exchange(
            r#"{"retries":1,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        x.handle(status(503, &[]), &mut e);
        let r = responded(x.handle(failed(Failure::Reset), &mut e));
        assert_eq!((r.status, r.body.as_slice()), (503, b"body 503".as_slice()));
    }

    #[test]
    fn post_without_key_goes_native_with_key_is_copied() {
        let mut e = env();
        let mut x = exchange("{}", Execution::Dispatch);
        assert_eq!(
            x.handle(request("POST", &[("content-length", "3")]), &mut e),
            Action::PassThrough
        );
        assert_eq!(x.native_reason(), Some(NativeReason::NotRetryable));

        let mut x = exchange(
            r#"{"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        let a = x.handle(
            request(
                "POST",
                &[
                    ("content-length", "3"),
                    ("idempotency-key", "k1"),
                    ("expect", "100-continue"),
                ],
            ),
            &mut e,
        );
        assert_eq!(a, Action::ReadBody);
        assert_eq!(
            x.handle(Event::RequestBody(BodyRead::Partial(2)), &mut e),
            Action::Pause
        );
        let a = x.handle(
            Event::RequestBody(BodyRead::Complete(vec![0, 255, 7])),
            &mut e,
        );
        assert_eq!(dispatched(&a), 1);
        assert_eq!(x.dispatch_body(), &[0, 255, 7]);
        let h = x.dispatch_headers(1);
        assert_eq!(first(&h, "content-length"), Some("3"));
        assert_eq!(first(&h, "expect"), None);
        assert_eq!(dispatched(&x.handle(status(503, &[]), &mut e)), 2);
        assert_eq!(x.dispatch_body(), &[0, 255, 7]);
    }

    #[test]
    fn big_or_unreadable_bodies_go_native_once() {
        let mut e = env();
        let mut x = exchange(r#"{"max_body_bytes":10}"#, Execution::Dispatch);
        assert_eq!(
            x.handle(request("PUT", &[("content-length", "11")]), &mut e),
            Action::PassThrough
        );
        assert_eq!(x.native_reason(), Some(NativeReason::BodyTooLarge));

        let mut x = exchange(r#"{"max_body_bytes":10}"#, Execution::Dispatch);
        assert_eq!(
            x.handle(request("PUT", &[("transfer-encoding", "chunked")]), &mut e),
            Action::ReadBody
        );
        assert_eq!(
            x.handle(Event::RequestBody(BodyRead::Partial(11)), &mut e),
            Action::PassThrough
        );
        assert_eq!(x.native_reason(), Some(NativeReason::BodyTooLarge));

        let mut x = exchange("{}", Execution::Dispatch);
        x.handle(request("PUT", &[("content-length", "9000")]), &mut e);
        assert_eq!(
            x.handle(Event::RequestBody(BodyRead::Unreadable), &mut e),
            Action::PassThrough
        );
        assert_eq!(x.native_reason(), Some(NativeReason::BodyUnreadable));
        assert_eq!(x.attempts(), 1);
    }

    #[test]
    fn backoff_wait_then_dispatch() {
        let mut e = env();
        e.random = 10;
        let mut x = exchange(
            r#"{"backoff":{"base_interval":25,"max_interval":250}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        assert_eq!(
            x.handle(status(502, &[]), &mut e),
            Action::Wait {
                ms: 10,
                next_attempt: 2
            }
        );
        e.now += 10;
        let a = x.handle(Event::DelayElapsed, &mut e);
        match a {
            Action::Dispatch(at) => {
                assert_eq!(at.number, 2);
                assert_eq!(at.waited_ms, 10);
                assert_eq!(at.reason, Some(Outcome::Status(502)));
            }
            other => panic!("{other:?}"),
        }
    }

    /// The shipped schedule (kong/kong.yml, envoy/envoy.yaml) outlasts a 2 s gap in which
    /// every attempt fails fast, whatever the jitter draws: with the shortest waits
    /// (150 + 300 + 600 + 600 + 600 ms) the sixth attempt starts after the gap, and with the
    /// longest (300 + 600 + 1200 ms ...) every retry still passes the deadline check.
    #[test]
    fn equal_jitter_schedule_outlasts_a_two_second_gap() {
        const SHIPPED: &str = r#"{"retries":5,"per_try_timeout":2000,"deadline":10000,
            "backoff":{"strategy":"exponential","base_interval":300,"max_interval":1200,
            "jitter":"equal"}}"#;
        const GAP_MS: u64 = 2000;
        const ATTEMPT_MS: u64 = 5;
        // 0 draws every floor; one less than a multiple of every spread + 1 (151, 301, 601)
        // draws every ceiling.
        for (random, attempts) in [(0, "6"), (151 * 301 * 601 - 1, "4")] {
            let mut e = env();
            e.random = random;
            let gap_ends = e.now + GAP_MS;
            let mut x = exchange(SHIPPED, Execution::Dispatch);
            let mut a = x.handle(request("GET", &[]), &mut e);
            let mut waits = Vec::new();
            let r = loop {
                a = match a {
                    Action::Dispatch(_) => {
                        e.now += ATTEMPT_MS;
                        if e.now < gap_ends {
                            x.handle(status(503, &[]), &mut e)
                        } else {
                            x.handle(status(200, &[]), &mut e)
                        }
                    }
                    Action::Wait { ms, .. } => {
                        waits.push(ms);
                        e.now += ms;
                        x.handle(Event::DelayElapsed, &mut e)
                    }
                    other => break responded(other),
                };
            };
            assert_eq!(r.status, 200, "random {random}: waits {waits:?}");
            assert_eq!(
                first(&r.headers, "x-kong-retry-attempts"),
                Some(attempts),
                "random {random}: waits {waits:?}"
            );
            let expected: &[u64] = if random == 0 {
                &[150, 300, 600, 600, 600]
            } else {
                &[300, 600, 1200]
            };
            assert_eq!(waits, expected, "random {random}");
        }
        // Full jitter on the same ceilings guarantees nothing: drawing 0 every time, all six
        // attempts fall inside the gap and the client gets the 503.
        let mut e = env();
        let gap_ends = e.now + GAP_MS;
        let mut x = exchange(&SHIPPED.replace("equal", "full"), Execution::Dispatch);
        let mut a = x.handle(request("GET", &[]), &mut e);
        while let Action::Dispatch(_) = a {
            e.now += ATTEMPT_MS;
            assert!(e.now < gap_ends);
            a = x.handle(status(503, &[]), &mut e);
        }
        let r = responded(a);
        assert_eq!(r.status, 503);
        assert_eq!(first(&r.headers, "x-kong-retry-attempts"), Some("6"));
    }

    #[test]
    fn retry_after_honoured_and_capped() {
        let mut e = env();
        let mut x = exchange(
            r#"{"retry_after_max":3000,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        assert_eq!(
            x.handle(status(503, &[("retry-after", "2")]), &mut e),
            Action::Wait {
                ms: 2000,
                next_attempt: 2
            }
        );

        let mut x = exchange(r#"{"retry_after_max":3000}"#, Execution::Dispatch);
        x.handle(request("GET", &[]), &mut e);
        let r = responded(x.handle(status(503, &[("retry-after", "5")]), &mut e));
        assert_eq!(first(&r.headers, "retry-after"), Some("5"));
        assert_eq!(x.stop_reason(), Some(StopReason::RetryAfterTooLong));
    }

    #[test]
    fn a_retry_after_the_host_cannot_wait_for_goes_to_the_client() {
        let mut e = env();
        e.waits = false;
        let mut x = exchange(r#"{"retry_after_max":3000}"#, Execution::Dispatch);
        x.handle(request("GET", &[]), &mut e);
        let r = responded(x.handle(status(503, &[("retry-after", "2")]), &mut e));
        assert_eq!(
            (r.status, first(&r.headers, "retry-after")),
            (503, Some("2"))
        );
        assert_eq!(x.stop_reason(), Some(StopReason::CannotWait));
        assert_eq!(x.attempts(), 1);
        // Decided before the budget: no token spent on a retry that is not made.
        assert!(e.asked.is_empty());

        // Retry-After: 0 asks for no wait; without the header the retry goes at once.
        for extra in [&[("retry-after", "0")][..], &[]] {
            let mut x = exchange(
                r#"{"retry_after_max":3000,"backoff":{"strategy":"fixed","interval":0}}"#,
                Execution::Dispatch,
            );
            x.handle(request("GET", &[]), &mut e);
            assert_eq!(dispatched(&x.handle(status(503, extra), &mut e)), 2);
        }
        // retry_after_max: 0 ignores the header altogether.
        let mut x = exchange(
            r#"{"retry_after_max":0,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        let a = x.handle(status(429, &[("retry-after", "2")]), &mut e);
        assert_eq!(
            a,
            Action::Respond(Rc::new(x.sent_response().unwrap().clone()))
        );
        assert_eq!(
            x.stop_reason(),
            Some(StopReason::Final),
            "429 is not in retry_on"
        );
    }

    #[test]
    fn failures_in_retry_on_are_reported_whatever_is_decided() {
        let mut e = env();
        let mut x = exchange(
            r#"{"retries":1,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        x.handle(status(503, &[]), &mut e);
        x.handle(failed(Failure::Timeout), &mut e);
        assert_eq!(x.stop_reason(), Some(StopReason::Exhausted));
        assert_eq!(
            e.failures,
            vec![Outcome::Status(503), Outcome::Failed(Failure::Timeout)]
        );

        // Not in retry_on, a success, or the host refusing a dispatch: nothing reported.
        let mut e = env();
        let mut x = exchange(r#"{"retries":2}"#, Execution::Dispatch);
        x.handle(request("GET", &[]), &mut e);
        x.handle(Event::DispatchRefused, &mut e);
        let mut x = exchange(r#"{"retries":2}"#, Execution::Dispatch);
        x.handle(request("GET", &[]), &mut e);
        x.handle(status(500, &[]), &mut e);
        assert!(e.failures.is_empty(), "{:?}", e.failures);

        // Response mode: the native attempt's failure counts too.
        let mut x = exchange(r#"{"retries":2}"#, Execution::Response);
        x.handle(request("POST", &[("idempotency-key", "k")]), &mut e);
        x.handle(native_answer(Some(502)), &mut e);
        assert_eq!(e.failures, vec![Outcome::Status(502)]);
    }

    #[test]
    fn deadline_stops_attempts_that_cannot_finish() {
        let mut e = env();
        let mut x = exchange(
            r#"{"per_try_timeout":1000,"deadline":2500,"retries":5,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        e.now += 1000;
        assert_eq!(dispatched(&x.handle(failed(Failure::Timeout), &mut e)), 2);
        e.now += 1000;
        let r = responded(x.handle(failed(Failure::Timeout), &mut e));
        assert_eq!(r.status, 504);
        assert_eq!(x.stop_reason(), Some(StopReason::Deadline));
    }

    #[test]
    fn budget_denial_stops_retries() {
        let mut e = env();
        e.budget = false;
        let mut x = exchange("{}", Execution::Dispatch);
        x.handle(request("GET", &[]), &mut e);
        let r = responded(x.handle(status(503, &[]), &mut e));
        assert_eq!(r.status, 503);
        assert_eq!(x.stop_reason(), Some(StopReason::Budget));
    }

    #[test]
    fn only_requests_that_may_be_retried_count_towards_the_budget() {
        // A GET without a body counts when attempt 1 starts, once.
        let mut e = env();
        let mut x = exchange(
            r#"{"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        x.handle(status(503, &[]), &mut e);
        x.handle(status(200, &[]), &mut e);
        assert_eq!(e.recorded, 1);

        // A body counts once it is copied whole, not when the headers announce it.
        let mut e = env();
        let mut x = exchange("{}", Execution::Dispatch);
        x.handle(request("PUT", &[("content-length", "2")]), &mut e);
        assert_eq!(e.recorded, 0);
        x.handle(Event::RequestBody(BodyRead::Partial(1)), &mut e);
        assert_eq!(e.recorded, 0);
        x.handle(
            Event::RequestBody(BodyRead::Complete(b"ab".to_vec())),
            &mut e,
        );
        assert_eq!(e.recorded, 1);

        // Response mode: the native first attempt may be retried, so it counts too.
        let mut e = env();
        let mut x = exchange("{}", Execution::Response);
        x.handle(request("GET", &[]), &mut e);
        assert_eq!(e.recorded, 1);

        // Requests that go natively once never count.
        let mut e = env();
        for (json, req) in [
            ("{}", request("POST", &[("content-length", "3")])),
            (r#"{"retries":0}"#, request("GET", &[])),
            (
                r#"{"max_body_bytes":1}"#,
                request("PUT", &[("content-length", "2")]),
            ),
        ] {
            let mut x = exchange(json, Execution::Dispatch);
            assert_eq!(x.handle(req, &mut e), Action::PassThrough, "{json}");
        }
        let mut x = exchange("{}", Execution::Dispatch);
        x.handle(request("PUT", &[("content-length", "9000")]), &mut e);
        x.handle(Event::RequestBody(BodyRead::Unreadable), &mut e);
        assert_eq!(e.recorded, 0);
    }

    #[test]
    fn the_budget_pays_for_a_retry_before_its_backoff() {
        let mut e = env();
        e.random = 20;
        let mut x = exchange(r#"{"retries":2}"#, Execution::Dispatch);
        x.handle(request("GET", &[]), &mut e);
        let a = x.handle(status(503, &[]), &mut e);
        assert!(matches!(a, Action::Wait { ms: 20, .. }), "{a:?}");
        // Asked (and paid) when the retry was decided, not when it starts.
        assert_eq!(e.asked, vec![2]);
        e.now += 20;
        x.handle(Event::DelayElapsed, &mut e);
        assert_eq!(e.asked, vec![2]);

        // A denied retry never waits.
        let mut e = env();
        e.random = 20;
        e.budget = false;
        let mut x = exchange("{}", Execution::Dispatch);
        x.handle(request("GET", &[]), &mut e);
        assert!(matches!(
            x.handle(status(503, &[]), &mut e),
            Action::Respond(_)
        ));
        assert_eq!(x.stop_reason(), Some(StopReason::Budget));
    }

    #[test]
    fn retries_that_cannot_happen_cost_no_budget() {
        // Past the deadline, or a Retry-After above the cap: the budget is not asked.
        let mut e = env();
        let mut x = exchange(
            r#"{"per_try_timeout":1000,"deadline":1500,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        e.now += 600;
        responded(x.handle(status(503, &[]), &mut e));
        assert_eq!(x.stop_reason(), Some(StopReason::Deadline));

        let mut x = exchange(r#"{"retry_after_max":1000}"#, Execution::Dispatch);
        x.handle(request("GET", &[]), &mut e);
        responded(x.handle(status(429, &[("retry-after", "2")]), &mut e));
        assert!(e.asked.is_empty(), "{:?}", e.asked);
    }

    #[test]
    fn retry_after_date_form_and_the_larger_of_backoff_and_retry_after() {
        // The test clock is 1_000_000 ms = 1970-01-01 00:16:40 UTC.
        let mut e = env();
        e.random = 250;
        let mut x = exchange(
            r#"{"retry_on":"429,503","retry_after_max":5000,"backoff":{"base_interval":250}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        let a = x.handle(
            status(429, &[("retry-after", "Thu, 01 Jan 1970 00:16:43 GMT")]),
            &mut e,
        );
        assert_eq!(
            a,
            Action::Wait {
                ms: 3000,
                next_attempt: 2
            }
        );
        // Retry-After shorter than the backoff: the backoff wins.
        let mut x = exchange(
            r#"{"retry_on":"429,503","backoff":{"strategy":"fixed","interval":4000}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        assert_eq!(
            x.handle(status(503, &[("retry-after", "1")]), &mut e),
            Action::Wait {
                ms: 4000,
                next_attempt: 2
            }
        );
        // A date in the past means "now".
        let mut x = exchange(
            r#"{"retry_on":"503","backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        assert_eq!(
            dispatched(&x.handle(
                status(503, &[("retry-after", "Thu, 01 Jan 1970 00:00:01 GMT")]),
                &mut e
            )),
            2
        );
    }

    #[test]
    fn refused_first_dispatch_goes_native_later_ones_count_as_failures() {
        let mut e = env();
        let mut x = exchange(
            r#"{"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        assert_eq!(
            x.handle(Event::DispatchRefused, &mut e),
            Action::PassThrough
        );
        assert_eq!(x.native_reason(), Some(NativeReason::DispatchRefused));

        let mut x = exchange(
            r#"{"retries":1,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Dispatch,
        );
        x.handle(request("GET", &[]), &mut e);
        x.handle(status(503, &[]), &mut e);
        let r = responded(x.handle(Event::DispatchRefused, &mut e));
        assert_eq!(r.status, 503);
    }

    #[test]
    fn response_mode_native_first_then_dispatch_retry() {
        let mut e = env();
        let mut x = exchange(
            r#"{"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Response,
        );
        assert_eq!(x.handle(request("GET", &[]), &mut e), Action::PassThrough);
        assert!(x.awaits_native_response());
        let a = x.handle(native_answer(Some(503)), &mut e);
        assert_eq!(dispatched(&a), 2);
        let r = responded(x.handle(status(200, &[]), &mut e));
        assert_eq!(first(&r.headers, "x-kong-retry-attempts"), Some("2"));

        // Success on the native path: nothing to do.
        let mut x = exchange("{}", Execution::Response);
        x.handle(request("GET", &[]), &mut e);
        let a = x.handle(native_answer(Some(200)), &mut e);
        assert_eq!(a, Action::PassThrough);

        // Retries fail without a response: the held native response is released.
        let mut x = exchange(
            r#"{"retries":1,"backoff":{"strategy":"fixed","interval":0}}"#,
            Execution::Response,
        );
        x.handle(request("GET", &[]), &mut e);
        x.handle(native_answer(Some(503)), &mut e);
        assert_eq!(
            x.handle(failed(Failure::Reset), &mut e),
            Action::PassThrough
        );
        assert_eq!(x.attempts(), 2);
    }

    #[test]
    fn response_mode_copies_the_body_first() {
        let mut e = env();
        let mut x = exchange("{}", Execution::Response);
        assert_eq!(
            x.handle(request("PUT", &[("content-length", "2")]), &mut e),
            Action::ReadBody
        );
        assert_eq!(
            x.handle(
                Event::RequestBody(BodyRead::Complete(b"hi".to_vec())),
                &mut e
            ),
            Action::PassThrough
        );
        assert!(x.awaits_native_response());
        assert_eq!(x.dispatch_body(), b"hi");
    }

    #[test]
    fn non_utf8_header_goes_native() {
        let mut e = env();
        let mut x = exchange("{}", Execution::Dispatch);
        let mut h = hs(&[(":method", "GET"), (":path", "/")]);
        h.push(("x-latin".into(), vec![0xe9]));
        let a = x.handle(
            Event::RequestHeaders {
                headers: h,
                path: None,
                authority: None,
            },
            &mut e,
        );
        assert_eq!(a, Action::PassThrough);
        assert_eq!(x.native_reason(), Some(NativeReason::HeaderNotText));
    }

    #[test]
    fn stray_events_never_panic() {
        let mut e = env();
        let mut x = exchange("{}", Execution::Dispatch);
        assert_eq!(x.handle(status(200, &[]), &mut e), Action::Pause);
        assert_eq!(x.handle(Event::DelayElapsed, &mut e), Action::Pause);
        assert_eq!(x.handle(Event::DispatchRefused, &mut e), Action::Pause);
        assert_eq!(
            x.handle(Event::RequestBody(BodyRead::Unreadable), &mut e),
            Action::PassThrough
        );
        assert_eq!(x.handle(native_answer(None), &mut e), Action::PassThrough);
        assert!(x.dispatch_headers(1).is_empty());
    }
}
