package dev.kongretry.example;

import static dev.kongretry.example.TestRunner.check;
import static dev.kongretry.example.TestRunner.eq;

import java.time.Duration;
import java.util.Random;

/** Backoff bounds and shape, policy validation, which statuses are retried. */
final class RetryPolicyTests {
    private RetryPolicyTests() {}

    static RetryPolicy policy(int attempts, long baseMs, long capMs) {
        return new RetryPolicy(attempts, Duration.ofMillis(baseMs), Duration.ofMillis(capMs),
                Duration.ofMillis(500), Duration.ofSeconds(5), Duration.ofSeconds(3));
    }

    static void register(TestRunner r) {
        r.test("backoff: ceiling doubles from base and stops at the cap, no overflow", () -> {
            RetryPolicy p = policy(10, 25, 250);
            eq(Duration.ofMillis(25), p.ceiling(1), "retry 1");
            eq(Duration.ofMillis(50), p.ceiling(2), "retry 2");
            eq(Duration.ofMillis(100), p.ceiling(3), "retry 3");
            eq(Duration.ofMillis(200), p.ceiling(4), "retry 4");
            eq(Duration.ofMillis(250), p.ceiling(5), "retry 5 (capped)");
            eq(Duration.ofMillis(250), p.ceiling(64), "retry 64");
            eq(Duration.ofMillis(250), p.ceiling(Integer.MAX_VALUE), "retry MAX_VALUE");
            RetryPolicy big = new RetryPolicy(3, Duration.ofDays(1), Duration.ofDays(365_000),
                    Duration.ofSeconds(1), Duration.ofSeconds(1), Duration.ZERO);
            check(!big.ceiling(1000).isNegative(), "no overflow with huge durations: " + big.ceiling(1000));
            check(!big.backoff(1000, new Random(1)).isNegative(), "no overflow in the jittered delay");
        });

        r.test("backoff: full jitter stays within [0, ceiling] and spreads over all of it", () -> {
            RetryPolicy p = policy(10, 20, 300);
            Random random = new Random(42);
            for (int retry = 1; retry <= 12; retry++) {
                long ceiling = p.ceiling(retry).toNanos();
                long min = Long.MAX_VALUE, max = 0;
                double sum = 0;
                int n = 5000;
                for (int i = 0; i < n; i++) {
                    long d = p.backoff(retry, random).toNanos();
                    check(d >= 0 && d <= ceiling, "retry " + retry + ": " + d + " outside [0, " + ceiling + "]");
                    min = Math.min(min, d);
                    max = Math.max(max, d);
                    sum += d;
                }
                check(min < ceiling * 0.02, "retry " + retry + ": full jitter reaches near 0, min was " + min);
                check(max > ceiling * 0.98, "retry " + retry + ": full jitter reaches near the ceiling, max was " + max);
                double mean = sum / n / ceiling;
                check(mean > 0.45 && mean < 0.55, "retry " + retry + ": mean should be ~ceiling/2, was " + mean);
            }
        });

        r.test("backoff: same seed, same delays (reproducible test runs)", () -> {
            RetryPolicy p = policy(10, 20, 300);
            Random a = new Random(7), b = new Random(7);
            for (int retry = 1; retry < 20; retry++) eq(p.backoff(retry, a), p.backoff(retry, b), "retry " + retry);
        });

        r.test("policy: invalid settings are refused with a message", () -> {
            String[] cases = {"attempts", "base", "cap<base", "timeout", "deadline", "retry-after"};
            for (String c : cases) {
                try {
                    switch (c) {
                        case "attempts" -> policy(0, 10, 100);
                        case "base" -> policy(3, 0, 100);
                        case "cap<base" -> policy(3, 100, 10);
                        case "timeout" -> new RetryPolicy(3, Duration.ofMillis(1), Duration.ofMillis(1),
                                Duration.ZERO, Duration.ofSeconds(1), Duration.ZERO);
                        case "deadline" -> new RetryPolicy(3, Duration.ofMillis(1), Duration.ofMillis(1),
                                Duration.ofSeconds(1), Duration.ofMillis(-1), Duration.ZERO);
                        case "retry-after" -> new RetryPolicy(3, Duration.ofMillis(1), Duration.ofMillis(1),
                                Duration.ofSeconds(1), Duration.ofSeconds(1), Duration.ofMillis(-1));
                        default -> throw new AssertionError(c);
                    }
                    throw new AssertionError(c + ": accepted");
                } catch (IllegalArgumentException expected) {
                    check(expected.getMessage() != null && !expected.getMessage().isEmpty(), c + ": message");
                }
            }
        });

        r.test("policy: retried statuses are 409, 429, 502, 503, 504 and nothing else", () -> {
            for (int s = 100; s < 600; s++) {
                boolean expected = s == 409 || s == 429 || s == 502 || s == 503 || s == 504;
                eq(expected, RetryPolicy.isRetryableStatus(s), "status " + s);
            }
        });
    }
}
