//! The harness's real etcd: it starts on loopback, serves the v3 JSON gateway, and keeps
//! its data across a restart (the idempotency store's tests rely on all three).

// Test code: a failed setup step should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kong_retry_harness::etcd::Etcd;

#[test]
fn etcd_serves_the_json_gateway_and_keeps_data_across_a_restart() {
    let mut etcd = Etcd::start().expect("etcd starts (./scripts/setup.sh installs it)");
    // key "k" = "aw==", value "v" = "dg==" (base64, as the gateway wants).
    let (status, body) = etcd
        .call("/v3/kv/put", r#"{"key":"aw==","value":"dg=="}"#)
        .unwrap();
    assert_eq!(status, 200, "{body}");
    etcd.stop();
    assert!(etcd.call("/v3/kv/range", r#"{"key":"aw=="}"#).is_err());
    etcd.restart().unwrap();
    let (status, body) = etcd.call("/v3/kv/range", r#"{"key":"aw=="}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""value":"dg==""#), "{body}");
}
