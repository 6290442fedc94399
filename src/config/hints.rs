//! Pointers for field names that operators bring from Kong, Envoy, NGINX or their notes, so
//! that a pasted `retry_timeout` is answered with ours, not a bare "unknown field".

/// Hints for names that operators bring from Kong, Envoy, NGINX or their notes.
pub(super) fn hint_for_unknown(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "retry_timeout" | "timeout" | "timeout_ms" | "retry_timeout_ms" | "try_timeout" => {
            "did you mean `per_try_timeout` (ms, the timeout of each attempt) or `deadline` (ms, the overall time for all attempts)?"
        }
        "per_try_timeout_ms" | "pertrytimeout" | "per-try-timeout" => {
            "did you mean `per_try_timeout` (ms, the timeout of each attempt)?"
        }
        "overall_timeout" | "total_timeout" | "request_timeout" | "deadline_ms" => {
            "did you mean `deadline` (ms, the overall time for all attempts)?"
        }
        "num_retries" | "max_retries" | "retry" | "retry_count" | "attempts" | "max_attempts" => {
            "did you mean `retries` (retries after the first attempt, 0-10)?"
        }
        "retry_on_status" | "retriable_status_codes" | "retry_statuses" | "status_codes"
        | "retryon" | "retry-on" => "did you mean `retry_on` (e.g. \"502,503,timeout\")?",
        "retry_methods" | "idempotent_methods" | "method" => "did you mean `methods`?",
        "idempotency_key" | "idempotency_key_header" => "did you mean `idempotency_header`?",
        "max_body_size" | "max_request_body" | "body_limit" => "did you mean `max_body_bytes`?",
        "base_interval" | "max_interval" | "interval" | "retry_back_off" | "backoff_base" => {
            "backoff settings go inside the `backoff` object, e.g. {\"backoff\":{\"strategy\":\"exponential\",\"base_interval\":25,\"max_interval\":250}}"
        }
        "host" | "service" | "cluster" | "upstream_url" | "url" => {
            "did you mean `upstream` (Kong: host:port or https://host:port; Envoy: cluster name)?"
        }
        _ => return None,
    })
}
