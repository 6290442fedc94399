mod common;

use common::*;
use proxy_wasm_test_host::{Profile, Reply, Request, Source};
use serde_json::json;

#[test]
fn passthrough_reaches_upstream_and_back() {
    for profile in [Profile::Kong, Profile::Envoy] {
        let mut gw = gateway(profile, json!({}));
        let ex = gw
            .run(Request::new("GET", "/hello"), |call| {
                assert_eq!(call.path, "/hello");
                Reply::status(200).header("content-length", "2").body("hi")
            })
            .unwrap();
        assert_eq!(ex.response.status, 200);
        assert_eq!(ex.response.body, b"hi");
        assert_eq!(ex.response.source, Source::Upstream);
        assert!(!ex.response.framing_error);
        assert_eq!(ex.calls.len(), 1);
        println!("{:#?}", messages(&gw));
    }
}
