package dev.kongretry.example;

import java.time.Duration;
import java.util.random.RandomGenerator;

/**
 * How hard the client tries: attempts, delays, timeouts. Immutable.
 *
 * @param maxAttempts       attempts in total, the first one included (1 = never retry)
 * @param baseDelay         backoff ceiling before the first retry; it doubles per retry
 * @param maxDelay          the backoff ceiling never grows beyond this (the "cap")
 * @param perAttemptTimeout one attempt may take this long; then it is abandoned and retried.
 *                          Behind a retrying gateway, make it longer than the gateway's own
 *                          deadline, or the client gives up on attempts the gateway would have saved.
 * @param deadline          the whole operation (all attempts and waits) may take this long;
 *                          the caller gets an answer within it, one way or the other
 * @param maxRetryAfter     the longest {@code Retry-After} we agree to wait. A server asking for
 *                          more is not retried earlier than it asked: we stop and report it.
 */
public record RetryPolicy(int maxAttempts, Duration baseDelay, Duration maxDelay,
                          Duration perAttemptTimeout, Duration deadline, Duration maxRetryAfter) {

    public RetryPolicy {
        if (maxAttempts < 1) throw new IllegalArgumentException("maxAttempts must be >= 1, got " + maxAttempts);
        requirePositive("baseDelay", baseDelay);
        requirePositive("maxDelay", maxDelay);
        requirePositive("perAttemptTimeout", perAttemptTimeout);
        requirePositive("deadline", deadline);
        if (maxRetryAfter.isNegative()) throw new IllegalArgumentException("maxRetryAfter must be >= 0");
        if (maxDelay.compareTo(baseDelay) < 0) throw new IllegalArgumentException("maxDelay must be >= baseDelay");
    }

    /** Sensible values for a client calling through a gateway that retries too (see README). */
    public static RetryPolicy defaults() {
        return new RetryPolicy(8, Duration.ofMillis(100), Duration.ofSeconds(2),
                Duration.ofSeconds(12), Duration.ofSeconds(60), Duration.ofSeconds(10));
    }

    /**
     * The upper bound of the wait before retry number {@code retry} (1 = the first retry):
     * {@code min(maxDelay, baseDelay * 2^(retry-1))}. Computed without overflow for any retry.
     */
    public Duration ceiling(int retry) {
        if (retry < 1) throw new IllegalArgumentException("retry numbers start at 1");
        Duration d = baseDelay;
        // Stop doubling as soon as the cap is reached: no overflow whatever the retry number.
        for (int i = 1; i < retry && d.compareTo(maxDelay) < 0; i++) {
            d = d.multipliedBy(2);
        }
        return d.compareTo(maxDelay) < 0 ? d : maxDelay;
    }

    /**
     * "Full jitter" backoff: a uniformly random wait in [0, ceiling(retry)].
     *
     * <p>Why random: after a gateway pod goes away, all of its clients fail at the same
     * moment. With a fixed or merely exponential delay they would all come back at the same
     * moment too, and knock over whatever just came up. Spreading the whole interval
     * uniformly gives the least synchronised load (and the shortest average wait).
     */
    public Duration backoff(int retry, RandomGenerator random) {
        Duration ceiling = ceiling(retry);
        // toNanos() overflows beyond ~292 years; such a ceiling is absurd but must not crash.
        long nanos = ceiling.getSeconds() >= 9_000_000_000L ? Long.MAX_VALUE : ceiling.toNanos();
        return Duration.ofNanos((long) (random.nextDouble() * nanos));
    }

    /**
     * Statuses worth another attempt with the same key. Each says "not done, try later":
     * <ul>
     *   <li>502, 503, 504: a gateway could not reach a healthy backend (pods restarting).</li>
     *   <li>429: rate limited; usually comes with Retry-After.</li>
     *   <li>409: with an idempotency key, the server is still working on the original request.
     *       (In an API where 409 also means a business conflict, tell the two apart by the
     *       response body before retrying.)</li>
     * </ul>
     * Everything else is final. 400 and 422 in particular mean the request itself is wrong
     * (missing key, key reused for a different body): repeating it cannot help. 500 is
     * final too: the server's answer to this request, not a transient condition.
     */
    public static boolean isRetryableStatus(int status) {
        return status == 409 || status == 429 || status == 502 || status == 503 || status == 504;
    }

    private static void requirePositive(String name, Duration d) {
        if (d == null || d.isZero() || d.isNegative()) {
            throw new IllegalArgumentException(name + " must be > 0, got " + d);
        }
    }
}
