//! The README's demo, run as a test: on both profiles the filter must turn 503 + refused +
//! 200 into a 200 after three attempts, send a POST without key once, and retry the same
//! POST with a key. Runs a fresh build of the filter (or `$KONG_RETRY_WASM`), not dist/.

use proxy_wasm_test_host::Profile;

#[test]
fn demo_succeeds_on_both_profiles_and_stays_short() {
    let (module, label) = kong_retry_demo::load_filter(false).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let run = kong_retry_demo::run(&module, &label, &mut out).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8(out).unwrap();
    assert!(run.ok(), "{}\n\n{text}", run.failures.join("\n"));
    assert!(run.checks >= 20, "{} checks", run.checks);

    let profiles: Vec<Profile> = run.profiles.iter().map(|p| p.profile).collect();
    assert_eq!(profiles, [Profile::Kong, Profile::Envoy]);
    for p in &run.profiles {
        let get = &p.get;
        assert_eq!(get.status, 200, "{text}");
        assert_eq!(get.attempts_header.as_deref(), Some("3"), "{text}");
        assert_eq!(get.attempts.len(), 3, "{text}");
        // Full jitter may draw 0 ms for one wait, hardly for both.
        let waited: u64 = get.waits.iter().map(|w| w.ms).sum();
        assert!(waited > 0, "no backoff at all\n{text}");
        // Kong waits on the delay endpoint; Envoy on the root context's tick.
        match p.profile {
            Profile::Kong => assert!(get.delay_calls > 0, "{text}"),
            Profile::Envoy => assert_eq!(get.delay_calls, 0, "{text}"),
        }
        // Envoy response mode: attempt 1 is Envoy's own forward.
        assert_eq!(
            get.attempts[0].proxied,
            p.profile == Profile::Envoy,
            "{text}"
        );

        assert_eq!(p.post_without_key.status, 503, "{text}");
        assert_eq!(p.post_without_key.attempts.len(), 1, "{text}");

        let keyed = &p.post_with_key;
        assert_eq!(keyed.status, 201, "{text}");
        assert_eq!(keyed.attempts.len(), 2, "{text}");
        assert!(keyed.attempts.iter().all(|a| a.body == keyed.request_body));
        assert_eq!(p.traps, 0);
    }

    assert!(text.contains("config: {\"retries\":3"), "{text}");
    assert!(text.contains("smoke check: ok"), "{text}");
    let lines = text.lines().count();
    assert!(lines <= 50, "{lines} lines:\n{text}");
}

#[test]
fn configs_are_json_objects() {
    for profile in [Profile::Kong, Profile::Envoy] {
        let config = kong_retry_demo::config(profile);
        let value: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert!(value.is_object(), "{config}");
        assert_eq!(value["retries"], 3);
    }
}
