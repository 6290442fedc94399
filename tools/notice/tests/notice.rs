//! The notice on config fixtures: the tool's own fixtures (numbers asserted) and the shipped
//! `kong/kong.yml` (whose committed example notices must match what the tool prints now).

// Test helpers outside #[test] functions are not covered by clippy.toml's allow-*-in-tests.
#![allow(clippy::unwrap_used, clippy::panic)]

use kong_retry_notice::source::{Coverage, NoRetry, Origin};
use kong_retry_notice::timing::{timing, Host};
use kong_retry_notice::{load, render, Input, Lang, DEFAULT_FILTER_NAME};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kong-retry-notice"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn multi_route_fixture_numbers() {
    let Input::Kong(routes) = load(&fixture("kong-multi.yml"), DEFAULT_FILTER_NAME).unwrap() else {
        panic!("not read as kong.yml");
    };
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "payments-api",
            "catalog-read",
            "catalog-admin",
            "catalog-export",
            "catalog-search",
            "legacy"
        ]
    );
    let plan = |i: usize| match &routes[i].coverage {
        Coverage::Retries { plan, origin, .. } => (plan.clone(), origin.clone()),
        other => panic!("{}: {other:?}", routes[i].name),
    };

    // payments-api: from the service's chain. 3 attempts x 3 s + waits 50 + 100 = 9.15 s,
    // capped by the 8 s deadline; if all time out only 2 fit (3 x 3 s > 8 s).
    let (p, origin) = plan(0);
    assert_eq!(origin, Origin::ServiceChain(Some("payments-retry".into())));
    let t = timing(&p, Host::Kong);
    assert_eq!(
        (t.attempts, t.waits_ms, t.sum_ms, t.longest_ms),
        (3, 150, 9_150, 8_000)
    );
    assert!(t.capped_by_deadline);
    assert_eq!(t.attempts_if_all_time_out, 2);
    assert_eq!(t.retry_after_cap_ms, None);

    // catalog-read: top-level chain, string config, no delay_endpoint: on Kong no waits at
    // all, so 4 x 1 s = 4 s, capped by the 3.5 s deadline; 3 timed-out attempts fit.
    let (p, origin) = plan(1);
    assert_eq!(
        origin,
        Origin::RouteChain(Some("catalog-read-retry".into()))
    );
    let t = timing(&p, Host::Kong);
    assert!(!t.waits_possible);
    assert_eq!(
        (
            t.attempts,
            t.waits_ms,
            t.sum_ms,
            t.longest_ms,
            t.attempts_if_all_time_out
        ),
        (4, 0, 4_000, 3_500, 3)
    );
    // The same config on a host that can wait: 503 is retried and `retry_after_max` keeps
    // its 10 s default, so any wait may stretch to 10 s: 4 x 1 s + 3 x 10 s = 34 s.
    let t = timing(&p, Host::Unknown);
    assert_eq!(t.backoff_ceilings_ms, vec![25, 50, 100]);
    assert_eq!(
        (t.waits_ms, t.sum_ms, t.longest_ms),
        (30_000, 34_000, 3_500)
    );

    assert_eq!(
        routes[2].coverage,
        Coverage::None(NoRetry::ChainDisabled(Some("admin-retry".into())))
    );
    assert_eq!(
        routes[3].coverage,
        Coverage::None(NoRetry::FilterDisabled(Some("export-chain".into())))
    );

    // catalog-search: plugin form; 5xx and 429 with Retry-After up to 2 s.
    // 2 x 2 s + max(25, 2000) = 6 s, within the 10 s default deadline.
    let (p, origin) = plan(4);
    assert_eq!(origin, Origin::RoutePlugin);
    let t = timing(&p, Host::Kong);
    assert_eq!((t.attempts, t.sum_ms, t.longest_ms), (2, 6_000, 6_000));
    assert_eq!(t.retry_after_cap_ms, Some(2_000));

    assert_eq!(routes[5].coverage, Coverage::None(NoRetry::NotConfigured));
}

#[test]
fn multi_route_fixture_notice_text() {
    let input = load(&fixture("kong-multi.yml"), DEFAULT_FILTER_NAME).unwrap();
    let en = render(&input, Lang::En, Some("2026-12-01 01:00–03:00 UTC"));
    for needle in [
        "**Maintenance window:** 2026-12-01 01:00–03:00 UTC",
        "## Route `payments-api` — `/payments` · GET/POST",
        "up to 2 retries after the first attempt (3 attempts in total)",
        "**Longest a request can take at the gateway:** 8 s.",
        "If every attempt times out, only 2 attempts fit into the deadline.",
        // The route matches GET and POST only: PATCH is not mentioned.
        "POST requests **without** an `Idempotency-Key` header",
        "requests with a body larger than 16 KiB",
        "## Route `catalog-read` — `/catalog`",
        "up to 3 retries after the first attempt (4 attempts in total), retrying at once, without waiting between attempts.",
        "**Longest a request can take at the gateway:** 3.5 s. 4 attempts of up to 1 s each could add up to 4 s,",
        // Kong without delay_endpoint cannot wait: a Retry-After response goes to the client.
        "the gateway cannot wait here, so a 503 response that asks for a wait with `Retry-After` is not retried: it is passed on to you unchanged.",
        "## Route `catalog-search` — `/search` · `api.example.com`",
        "429, 500–599 responses",
        "on a 429 or 503 response asking for up to 2 s, the gateway waits as asked, then retries — but only while the wait and one more attempt of up to 2 s still fit into the overall deadline of 10 s, counted from the request's arrival;",
        "**Longest a request can take at the gateway:** 6 s: 2 attempts of up to 2 s each plus waits of up to 2 s (`Retry-After` included)",
        "## Routes without gateway retries",
        "- `catalog-admin` — `/catalog/admin`: the retry filter chain `admin-retry` is switched off.",
        "- `catalog-export` — `/catalog/export`: the retry filter is switched off.",
        "- `legacy` — `/legacy`: no retry filter is configured.",
        "6. **Allow each attempt more than 8 s**",
    ] {
        assert!(en.contains(needle), "missing {needle:?} in:\n{en}");
    }

    let zh = render(&input, Lang::Zh, None);
    for needle in [
        "# 通知：API 网关维护与自动重试",
        "## 路由 `payments-api` — `/payments` · GET/POST",
        "首次之后最多再重试 2 次（共 3 次尝试）",
        "**单个请求在网关最长耗时：** 8 秒。",
        "如果每次尝试都超时，总时限内只来得及尝试 2 次。",
        "请求体超过 16 KiB 的请求",
        "## 没有网关重试的路由",
        "`catalog-admin` — `/catalog/admin`：重试过滤器链 `admin-retry` 已关闭。",
        "6. **单次尝试的超时要大于 8 秒**",
    ] {
        assert!(zh.contains(needle), "missing {needle:?} in:\n{zh}");
    }
}

#[test]
fn adaptive_mode_says_when_retries_are_on() {
    let config = r#"{"mode":"adaptive","upstream":"orders:8080","delay_endpoint":"127.0.0.1:8555",
        "adaptive":{"window":20000},
        "maintenance_windows":[{"start":"2026-12-01T01:00:00Z","end":"2026-12-01T03:00:00Z"},
        {"daily":{"start":"23:00","end":"23:30"}}]}"#;
    let input = load(config, DEFAULT_FILTER_NAME).unwrap();
    let en = render(&input, Lang::En, None);
    for needle in [
        "- **When:** only while the gateway sees trouble.",
        "it retries requests for the next 20 s (longer while failures continue), and throughout the scheduled maintenance windows (2026-12-01T01:00:00Z/2026-12-01T03:00:00Z; daily 23:00/23:30 UTC).",
        "The failure that first shows the trouble is passed on to you unretried",
        "the header is absent when the request went straight through because the gateway saw no trouble",
    ] {
        assert!(en.contains(needle), "missing {needle:?} in:\n{en}");
    }
    let zh = render(&input, Lang::Zh, None);
    for needle in [
        "- **何时重试：** 只在网关发现故障时。",
        "就在之后 20 秒内重试请求",
        "daily 23:00/23:30 UTC",
        "最先暴露故障的那个失败响应不会被重试",
    ] {
        assert!(zh.contains(needle), "missing {needle:?} in:\n{zh}");
    }
    // Other modes say nothing of it.
    let input = load(r#"{"upstream":"orders:8080"}"#, DEFAULT_FILTER_NAME).unwrap();
    assert!(!render(&input, Lang::En, None).contains("**When:**"));
}

#[test]
fn filter_config_fixture_through_the_binary() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/filter-config.json");
    let (code, out, err) = run(&["--lang", "en", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // 5 attempts x 1.5 s + 4 waits of max(1 s fixed, 3 s Retry-After) = 19.5 s < 20 s.
    for needle in [
        "## Routes that use this retry configuration",
        "up to 4 retries after the first attempt (5 attempts in total), waiting 1 s before each retry",
        "**Longest a request can take at the gateway:** 19.5 s: 5 attempts of up to 1.5 s each plus waits of up to 12 s (`Retry-After` included) (the overall deadline is 20 s).",
        "on a 429 or 503 response asking for up to 3 s, the gateway waits as asked, then retries — but only while the wait and one more attempt of up to 1.5 s still fit into the overall deadline of 20 s",
        "requests with a body larger than 1 MiB",
        "from a filter configuration, not from a route list",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.contains("If every attempt times out"), "{out}");
    // (20 s - 1.5 s) / 3 s: six full waits fit, more than the 4 retries: no count to give.
    assert!(!out.contains("wait of the full"), "{out}");
    assert!(!out.contains("waits of the full"), "{out}");
}

/// Equal jitter: the notice gives each wait's shortest and longest time and their sums (what
/// a request is sure to wait, and at most waits), in both languages; full jitter keeps
/// "up to".
#[test]
fn equal_jitter_states_the_shortest_and_longest_waits() {
    let equal = r#"{"upstream":"orders:8080","retries":5,"retry_on":"502,504,connect-failure",
        "per_try_timeout":2000,"deadline":10000,
        "backoff":{"base_interval":300,"max_interval":1200,"jitter":"equal"}}"#;
    let input = load(equal, DEFAULT_FILTER_NAME).unwrap();
    let en = render(&input, Lang::En, None);
    assert!(
        en.contains(
            "waiting a random time of 150 ms to 300 ms, 300 ms to 600 ms, 600 ms to 1.2 s, \
             600 ms to 1.2 s, and 600 ms to 1.2 s before successive retries: in all at least \
             2.25 s and at most 4.5 s."
        ),
        "{en}"
    );
    assert!(!en.contains("up to 300 ms"), "{en}");
    // 6 attempts x 2 s + 4.5 s of waits = 16.5 s, cut to the 10 s deadline; all timed out,
    // the shortest waits leave room for 4 attempts (8 s + 150 + 300 + 600 ms).
    assert!(
        en.contains("waits of up to 4.5 s could add up to 16.5 s"),
        "{en}"
    );
    assert!(en.contains("only 4 attempts fit into the deadline"), "{en}");
    let zh = render(&input, Lang::Zh, None);
    assert!(
        zh.contains(
            "每次重试前随机等待，依次为 150 毫秒～300 毫秒、300 毫秒～600 毫秒、600 毫秒～1.2 秒、\
             600 毫秒～1.2 秒、600 毫秒～1.2 秒，各次等待合计至少 2.25 秒、最多 4.5 秒。"
        ),
        "{zh}"
    );

    // One retry, and a 503 whose Retry-After may stretch the wait.
    let one = r#"{"upstream":"orders:8080","retries":1,"retry_on":"503","retry_after_max":3000,
        "backoff":{"base_interval":400,"jitter":"equal"}}"#;
    let input = load(one, DEFAULT_FILTER_NAME).unwrap();
    let en = render(&input, Lang::En, None);
    assert!(
        en.contains(
            "waiting a random time of 200 ms to 400 ms before the retry, unless a `Retry-After` asks for longer."
        ),
        "{en}"
    );
    let zh = render(&input, Lang::Zh, None);
    assert!(
        zh.contains("重试前随机等待 200 毫秒～400 毫秒（`Retry-After` 要求等更久时除外）。"),
        "{zh}"
    );

    // Full jitter, same ceilings: only the longest waits are promised.
    let full = equal.replace(r#","jitter":"equal""#, "");
    let en = render(&load(&full, DEFAULT_FILTER_NAME).unwrap(), Lang::En, None);
    assert!(
        en.contains(
            "waiting a random time of up to 300 ms, 600 ms, 1.2 s, 1.2 s, and 1.2 s before successive retries."
        ),
        "{en}"
    );
    assert!(!en.contains("in all at least"), "{en}");
}

/// The filter waits for a `Retry-After` only while the wait and one more attempt fit into the
/// deadline (src/exchange/mod.rs, `time_for_attempt`); with kong/kong.yml's numbers only the
/// first wait of the full 5 s does.
#[test]
fn retry_after_waits_are_limited_by_the_deadline() {
    let config = r#"{"upstream":"orders:8080","delay_endpoint":"127.0.0.1:8555","retries":3,
        "per_try_timeout":2000,"deadline":10000,"retry_after_max":5000}"#;
    let input = load(config, DEFAULT_FILTER_NAME).unwrap();
    let en = render(&input, Lang::En, None);
    for needle in [
        "on a 503 response asking for up to 5 s, the gateway waits as asked, then retries — but only while the wait and one more attempt of up to 2 s still fit into the overall deadline of 10 s, counted from the request's arrival; otherwise, or when `Retry-After` asks for more than 5 s, the response is passed on to you unchanged.",
        "Only one wait of the full 5 s fits: a second response asking for that long is passed on to you.",
    ] {
        assert!(en.contains(needle), "missing {needle:?} in:\n{en}");
    }
    let zh = render(&input, Lang::Zh, None);
    for needle in [
        "而且等完之后还来得及在总时限 10 秒内（从请求到达网关算起）再尝试一次（每次最长 2 秒），网关就等够再重试",
        "完整的 5 秒只能等一次",
    ] {
        assert!(zh.contains(needle), "missing {needle:?} in:\n{zh}");
    }

    // The defaults: a 10 s Retry-After can never be waited for in full within 10 s.
    let input = load(r#"{"upstream":"orders:8080"}"#, DEFAULT_FILTER_NAME).unwrap();
    let en = render(&input, Lang::En, None);
    assert!(
        en.contains("Even one wait of the full 10 s does not fit."),
        "{en}"
    );
    let zh = render(&input, Lang::Zh, None);
    assert!(zh.contains("即使只等一次完整的 10 秒也来不及。"), "{zh}");

    // Two full waits of 4 s fit (2 x 4 s + 2 s = 10 s), fewer than the 3 retries.
    let input = load(
        r#"{"upstream":"orders:8080","retries":3,"retry_after_max":4000}"#,
        DEFAULT_FILTER_NAME,
    )
    .unwrap();
    let en = render(&input, Lang::En, None);
    assert!(
        en.contains("At most 2 waits of the full 4 s fit into one request."),
        "{en}"
    );
}

/// The filter labels every response to a request it took on, including requests it sent once
/// natively because they were not eligible (src/adapter/driver/mod.rs, `label_native_response`):
/// the notice must not call the header absent there.
#[test]
fn attempts_header_is_one_on_requests_sent_once() {
    let input = load(r#"{"upstream":"orders:8080"}"#, DEFAULT_FILTER_NAME).unwrap();
    let en = render(&input, Lang::En, None);
    assert!(
        en.contains("1 means no retry: the first attempt answered, or the request was not eligible for gateway retries and was sent once."),
        "{en}"
    );
    assert!(!en.contains("absent"), "{en}");
    let zh = render(&input, Lang::Zh, None);
    assert!(
        zh.contains(
            "1 表示没有重试：要么第一次就拿到了结果，要么请求不符合网关重试条件、只发送了一次。"
        ),
        "{zh}"
    );
    assert!(!zh.contains("不带这个头"), "{zh}");
}

#[test]
fn binary_rejects_what_the_filter_rejects() {
    let dir = std::env::temp_dir().join(format!("kong-retry-notice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"retries":3,"retry_on":"502,503,timeout","retry_timeout":5000}"#,
    )
    .unwrap();
    let (code, out, err) = run(&["--lang", "zh", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.is_empty(),
        "no notice for a config the filter would reject: {out}"
    );
    assert!(
        err.contains("retry_timeout") && err.contains("per_try_timeout"),
        "{err}"
    );

    let (code, _, err) = run(&["--lang", "fr", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&[bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped kong.yml parses with the filter's parser, and the committed example notices
/// are exactly what the tool prints for it now.
#[test]
fn shipped_kong_yml_and_committed_examples_agree() {
    let kong_yml = repo().join("kong/kong.yml");
    let Ok(text) = std::fs::read_to_string(&kong_yml) else {
        eprintln!("kong/kong.yml not present; skipped");
        return;
    };
    let input = load(&text, DEFAULT_FILTER_NAME).unwrap();
    let Input::Kong(routes) = &input else {
        panic!("kong/kong.yml not read as a declarative config")
    };
    assert!(
        routes
            .iter()
            .any(|r| matches!(r.coverage, Coverage::Retries { .. })),
        "no route of kong/kong.yml has the filter enabled"
    );
    for (lang, tag) in [(Lang::En, "en"), (Lang::Zh, "zh")] {
        let path = repo().join(format!("docs/{tag}/maintenance-notice.example.md"));
        let Ok(committed) = std::fs::read_to_string(&path) else {
            panic!("{} is missing", path.display());
        };
        let now = render(&input, lang, Some(EXAMPLE_WINDOW));
        assert!(
            committed == now,
            "{} is stale: kong/kong.yml changed. Regenerate with\n  \
             cargo run -p kong-retry-notice -- --lang {tag} --window \"{EXAMPLE_WINDOW}\" kong/kong.yml > docs/{tag}/maintenance-notice.example.md",
            path.display()
        );
    }
}

const EXAMPLE_WINDOW: &str = "2026-12-01 01:00–03:00 UTC";
