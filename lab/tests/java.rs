//! The Java example's client through real Envoy + kong-retry in front of an upstream that
//! ignores keys, with upstream 503s and answers lost on the way back: with the gateway's
//! idempotency every payment is applied once and each lost answer is replayed; without it
//! (the control) each lost answer is paid twice.

use kong_retry_lab::gateways::Modules;
use kong_retry_lab::java::{self, JavaRun};
use kong_retry_lab::pool::UpstreamProgram;

fn program() -> UpstreamProgram {
    UpstreamProgram {
        bin: env!("CARGO_BIN_EXE_kong-retry-lab").into(),
        leading_args: vec!["--as-upstream".into()],
    }
}

#[allow(clippy::panic)] // a test helper: a run that cannot start fails the test
fn run(gateway_idempotency: bool) -> (JavaRun, java::JavaResult) {
    if let Some(why) = java::unavailable() {
        panic!("{why}");
    }
    let r = JavaRun {
        payments: 10,
        path: "payments?id=java&delay_ms=5&plan=ok*2,503,ok*4,503,ok".into(),
        lose: vec![4, 8],
        gateway_idempotency,
    };
    let modules = Modules::build(false).unwrap_or_else(|e| panic!("{e}"));
    let result = java::run(&r, &modules.filter, &program()).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", result.lines(&r).join("\n"));
    (r, result)
}

#[test]
fn each_payment_once_the_lost_answers_replayed_by_the_gateway() {
    let (r, got) = run(true);
    let context = format!("client log {}", got.client_log.display());
    assert!(
        got.exactly_once(r.payments),
        "{context}: {:?}",
        got.effects()
    );
    assert_eq!(got.lost_answers, 2, "{context}: answers lost");
    let replayed = got.payments.iter().filter(|p| p.replayed).count();
    assert_eq!(replayed, 2, "{context}: payments replayed");
    assert_eq!(got.upstream_503s, 2, "{context}: upstream 503s");
    assert_eq!(got.gateway_retries, 2, "{context}: gateway retries");
    assert_eq!(got.client_requests, 12, "{context}: client attempts");
    assert!(got.filter_errors.is_empty(), "{:?}", got.filter_errors);
}

#[test]
fn without_the_gateways_idempotency_each_lost_answer_is_paid_twice() {
    let (r, got) = run(false);
    let context = format!("client log {}", got.client_log.display());
    assert!(!got.exactly_once(r.payments), "{context}");
    let mut effects = got.effects();
    effects.sort_unstable();
    let mut expected = vec![1; 8];
    expected.extend([2, 2]);
    assert_eq!(effects, expected, "{context}: effects per payment");
    assert_eq!(got.payments.iter().filter(|p| p.replayed).count(), 0);
}
