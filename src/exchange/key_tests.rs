//! The exchange with gateway idempotency: the messages it sends the store, in order, and
//! what the client gets. The store's own answers are given here; the stores themselves
//! are tested in `state::idempotency` and, on the hosts, in tests/ and harness/tests/.

use super::tests::native_answer;
use super::*;
use crate::config::{parse, Scheme};
use crate::state::idempotency::{RequestDecision, StoredResponse, REPLAYED_HEADER};

struct KeyEnv {
    now: u64,
    recorded: u32,
}

impl Env for KeyEnv {
    fn now_ms(&self) -> u64 {
        self.now
    }
    fn random(&mut self) -> u64 {
        7
    }
    fn record_request(&mut self) {
        self.recorded += 1;
    }
}

const ON: &str = r#"{"retries":2,"backoff":{"strategy":"fixed","interval":0},
    "idempotency":{"enabled":true,"ttl":60000,"lock_timeout":20000,"max_response_bytes":8}}"#;

fn exchange(json: &str, execution: Execution) -> Exchange {
    Exchange::new(
        Rc::new(parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))),
        execution,
        Target {
            upstream: "backend:80".into(),
            scheme: Scheme::Http,
        },
    )
    .with_key_scope("route-1".into())
}

fn post(key: Option<&str>, body: &[u8]) -> Vec<Event> {
    let mut headers: Headers = vec![
        (":method".into(), b"POST".to_vec()),
        (":path".into(), b"/pay".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
    ];
    if let Some(k) = key {
        headers.push(("idempotency-key".into(), k.as_bytes().to_vec()));
    }
    vec![
        Event::RequestHeaders {
            headers,
            path: None,
            authority: None,
        },
        Event::RequestBody(BodyRead::Complete(body.to_vec())),
    ]
}

fn feed(x: &mut Exchange, env: &mut KeyEnv, events: Vec<Event>) -> Action {
    let mut last = Action::Pause;
    for e in events {
        last = x.handle(e, env);
    }
    last
}

fn answered(code: u16, body: &[u8]) -> Event {
    Event::AttemptResult(AttemptResponse {
        outcome: Outcome::Status(code),
        headers: vec![
            (":status".into(), code.to_string().into_bytes()),
            ("x-order".into(), b"9".to_vec()),
            ("connection".into(), b"close".to_vec()),
        ],
        body: body.to_vec(),
    })
}

fn env() -> KeyEnv {
    KeyEnv {
        now: 1_000_000,
        recorded: 0,
    }
}

#[test]
fn a_keyed_post_claims_is_retried_and_stores_its_result_before_answering() {
    let (mut e, mut x) = (env(), exchange(ON, Execution::Dispatch));
    let Action::Claim(claim) = feed(&mut x, &mut e, post(Some("k1"), b"amt=1")) else {
        panic!("expected a claim");
    };
    assert_eq!(claim.lock_timeout_ms, 20_000);
    assert_eq!(e.recorded, 0, "not counted by the budget before the claim");
    let a = x.handle(
        Event::Claimed(ClaimAnswer::Decided(RequestDecision::Proceed)),
        &mut e,
    );
    assert!(matches!(a, Action::Dispatch(ref at) if at.number == 1));
    assert!(matches!(
        x.handle(answered(503, b"busy"), &mut e),
        Action::Dispatch(_)
    ));
    let Action::Settle(SettleRequest::Store {
        response,
        expires_at_ms,
        ..
    }) = x.handle(answered(201, b"paid"), &mut e)
    else {
        panic!("expected the result to be stored");
    };
    assert_eq!(expires_at_ms, 1_000_000 + 60_000);
    assert_eq!(response.status, 201);
    assert_eq!(response.body, b"paid");
    assert_eq!(response.headers, vec![("x-order".into(), b"9".to_vec())]);
    let Action::Respond(r) = x.handle(Event::Settled, &mut e) else {
        panic!("the response goes once stored");
    };
    assert_eq!((r.status, r.body.as_slice()), (201, b"paid".as_slice()));
    assert_eq!(x.stop_reason(), Some(StopReason::Final));
}

#[test]
fn a_replay_a_conflict_and_a_mismatch_are_answered_without_an_attempt() {
    let stored = StoredResponse {
        status: 201,
        headers: vec![("x-order".into(), b"9".to_vec())],
        body: b"paid".to_vec(),
    };
    for (decision, status) in [
        (RequestDecision::Replay(stored), 201),
        (RequestDecision::Conflict { retry_after_s: 4 }, 409),
        (RequestDecision::Mismatch, 422),
    ] {
        let (mut e, mut x) = (env(), exchange(ON, Execution::Dispatch));
        feed(&mut x, &mut e, post(Some("k1"), b"amt=1"));
        let Action::Respond(r) = x.handle(Event::Claimed(ClaimAnswer::Decided(decision)), &mut e)
        else {
            panic!("expected an answer");
        };
        assert_eq!(r.status, status);
        assert_eq!(x.attempts(), 0);
        if status == 201 {
            assert!(r
                .headers
                .contains(&(REPLAYED_HEADER.into(), b"true".to_vec())));
        }
        if status == 409 {
            assert!(r.headers.contains(&("retry-after".into(), b"4".to_vec())));
        }
        assert!(matches!(x.stop_reason(), Some(StopReason::Key(_))));
    }
}

#[test]
fn an_unknown_outcome_leaves_the_key_locked_and_a_refused_connect_releases_it() {
    let (mut e, mut x) = (env(), exchange(ON, Execution::Dispatch));
    feed(&mut x, &mut e, post(Some("k1"), b"amt=1"));
    x.handle(
        Event::Claimed(ClaimAnswer::Decided(RequestDecision::Proceed)),
        &mut e,
    );
    let mut a = Action::Pause;
    for f in [
        Failure::Timeout,
        Failure::ConnectFailure,
        Failure::ConnectFailure,
    ] {
        a = x.handle(
            Event::AttemptResult(AttemptResponse {
                outcome: Outcome::Failed(f),
                headers: vec![],
                body: vec![],
            }),
            &mut e,
        );
    }
    assert!(
        matches!(a, Action::Respond(ref r) if r.status == 502),
        "{a:?}"
    );

    let (mut e, mut x) = (env(), exchange(ON, Execution::Dispatch));
    feed(&mut x, &mut e, post(Some("k1"), b"amt=1"));
    x.handle(
        Event::Claimed(ClaimAnswer::Decided(RequestDecision::Proceed)),
        &mut e,
    );
    let connect_failed = || {
        Event::AttemptResult(AttemptResponse {
            outcome: Outcome::Failed(Failure::ConnectFailure),
            headers: vec![],
            body: vec![],
        })
    };
    x.handle(connect_failed(), &mut e);
    x.handle(connect_failed(), &mut e);
    assert!(matches!(
        x.handle(connect_failed(), &mut e),
        Action::Settle(SettleRequest::Release { .. })
    ));
    assert!(matches!(
        x.handle(Event::Settled, &mut e),
        Action::Respond(_)
    ));
}

#[test]
fn response_mode_reads_the_native_result_whole_then_stores_it() {
    let (mut e, mut x) = (env(), exchange(ON, Execution::Response));
    feed(&mut x, &mut e, post(Some("k1"), b"amt=1"));
    assert_eq!(
        x.handle(
            Event::Claimed(ClaimAnswer::Decided(RequestDecision::Proceed)),
            &mut e
        ),
        Action::PassThrough
    );
    let a = x.handle(native_answer(Some(201)), &mut e);
    assert_eq!(a, Action::ReadNativeBody);
    assert!(x.reads_native_body());
    let a = x.handle(
        Event::NativeResponse {
            body: Some(b"paid".to_vec()),
        },
        &mut e,
    );
    assert!(
        matches!(a, Action::Settle(SettleRequest::Store { ref response, .. }) if response.body == b"paid")
    );
    assert_eq!(x.handle(Event::Settled, &mut e), Action::PassThrough);

    // Over max_response_bytes: not stored, the key stays locked.
    let (mut e, mut x) = (env(), exchange(ON, Execution::Response));
    feed(&mut x, &mut e, post(Some("k1"), b"amt=1"));
    x.handle(
        Event::Claimed(ClaimAnswer::Decided(RequestDecision::Proceed)),
        &mut e,
    );
    x.handle(native_answer(Some(200)), &mut e);
    let a = x.handle(
        Event::NativeResponse {
            body: Some(b"more than eight".to_vec()),
        },
        &mut e,
    );
    assert_eq!(a, Action::PassThrough);
}

#[test]
fn keys_are_refused_or_unguarded_as_configured() {
    let required = r#"{"idempotency":{"enabled":true,"required":true}}"#;
    let (mut e, mut x) = (env(), exchange(required, Execution::Dispatch));
    let a = x.handle(post(None, b"x").remove(0), &mut e);
    assert!(matches!(a, Action::Respond(ref r) if r.status == 400));

    let (mut e, mut x) = (env(), exchange(ON, Execution::Dispatch));
    let long = "k".repeat(256);
    let a = x.handle(post(Some(&long), b"x").remove(0), &mut e);
    assert!(matches!(a, Action::Respond(ref r) if r.status == 400));

    // Store down: allow goes on without a key, deny answers 503.
    let (mut e, mut x) = (env(), exchange(ON, Execution::Dispatch));
    feed(&mut x, &mut e, post(Some("k1"), b"x"));
    let a = x.handle(Event::Claimed(ClaimAnswer::Unavailable), &mut e);
    assert!(matches!(a, Action::Dispatch(_)));
    assert!(!x.holds_key());
    let deny = r#"{"idempotency":{"enabled":true,"on_store_unavailable":"deny"}}"#;
    let (mut e, mut x) = (env(), exchange(deny, Execution::Dispatch));
    feed(&mut x, &mut e, post(Some("k1"), b"x"));
    let a = x.handle(Event::Claimed(ClaimAnswer::Unavailable), &mut e);
    assert!(matches!(a, Action::Respond(ref r) if r.status == 503));

    // A keyed body too large to fingerprint: allow forwards it once, deny answers 413.
    let small = r#"{"max_body_bytes":2,"idempotency":{"enabled":true}}"#;
    let (mut e, mut x) = (env(), exchange(small, Execution::Dispatch));
    assert_eq!(
        x.handle(post(Some("k1"), b"xyz").remove(0), &mut e),
        Action::PassThrough
    );
    assert_eq!(x.native_reason(), Some(NativeReason::BodyTooLarge));
    let small_deny =
        r#"{"max_body_bytes":2,"idempotency":{"enabled":true,"on_store_unavailable":"deny"}}"#;
    let (mut e, mut x) = (env(), exchange(small_deny, Execution::Dispatch));
    let a = x.handle(post(Some("k1"), b"xyz").remove(0), &mut e);
    assert!(matches!(a, Action::Respond(ref r) if r.status == 413));

    // Not covered (GET), or no key and not required: exactly as without idempotency.
    let (mut e, mut x) = (env(), exchange(ON, Execution::Dispatch));
    assert_eq!(
        x.handle(post(None, b"x").remove(0), &mut e),
        Action::PassThrough
    );
    assert_eq!(x.native_reason(), Some(NativeReason::NotRetryable));
}
