package dev.kongretry.example;

import static dev.kongretry.example.TestRunner.check;
import static dev.kongretry.example.TestRunner.eq;

import java.time.Duration;
import java.time.Instant;
import java.util.Optional;

/** Retry-After parsing: both RFC 9110 forms, the obsolete date forms, and malformed values. */
final class RetryAfterTests {
    private RetryAfterTests() {}

    static void register(TestRunner r) {
        Instant now = Instant.parse("2015-10-21T07:27:30Z");

        r.test("retry-after: delay-seconds", () -> {
            eq(Optional.of(Duration.ofSeconds(120)), RetryAfter.parse("120", now), "120");
            eq(Optional.of(Duration.ZERO), RetryAfter.parse("0", now), "0");
            eq(Optional.of(Duration.ofSeconds(7)), RetryAfter.parse("  7 ", now), "surrounding spaces");
        });

        r.test("retry-after: malformed values are ignored, not errors", () -> {
            for (String bad : new String[]{null, "", "  ", "-1", "+5", "1.5", "soon", "5s", "0x10",
                    "Wed, 21 Oct 2015 07:28:00", "Wed, 32 Oct 2015 07:28:00 GMT"}) {
                eq(Optional.empty(), RetryAfter.parse(bad, now), "value <" + bad + ">");
            }
        });

        r.test("retry-after: absurdly large seconds do not overflow", () -> {
            Duration d = RetryAfter.parse("99999999999999999999999", now).orElseThrow();
            check(d.compareTo(Duration.ofDays(365)) > 0, "should be huge, was " + d);
            Duration e = RetryAfter.parse("9999999999", now).orElseThrow();
            check(e.compareTo(Duration.ofDays(365)) > 0, "should be huge, was " + e);
        });

        r.test("retry-after: IMF-fixdate in the future, now, and in the past", () -> {
            eq(Optional.of(Duration.ofSeconds(30)), RetryAfter.parse("Wed, 21 Oct 2015 07:28:00 GMT", now), "future");
            eq(Optional.of(Duration.ZERO), RetryAfter.parse("Wed, 21 Oct 2015 07:27:30 GMT", now), "now");
            eq(Optional.of(Duration.ZERO), RetryAfter.parse("Tue, 20 Oct 2015 07:28:00 GMT", now), "past -> retry now");
        });

        r.test("retry-after: obsolete RFC 850 and asctime dates", () -> {
            Instant t = Instant.parse("1994-11-06T08:49:00Z");
            eq(Optional.of(Duration.ofSeconds(37)), RetryAfter.parse("Sunday, 06-Nov-94 08:49:37 GMT", t), "rfc850");
            eq(Optional.of(Duration.ofSeconds(37)), RetryAfter.parse("Sun Nov  6 08:49:37 1994", t), "asctime");
        });

        r.test("retry-after: httpDate() writes an IMF-fixdate that parses back", () -> {
            Instant at = Instant.parse("1994-11-06T08:49:37Z");
            eq("Sun, 06 Nov 1994 08:49:37 GMT", RetryAfter.httpDate(at), "format (two-digit day)");
            eq(Optional.of(Duration.ofSeconds(37)),
                    RetryAfter.parse(RetryAfter.httpDate(at), Instant.parse("1994-11-06T08:49:00Z")), "round trip");
        });
    }
}
