package dev.kongretry.example;

import java.time.Duration;
import java.time.Instant;
import java.time.LocalDate;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeFormatterBuilder;
import java.time.format.DateTimeParseException;
import java.time.temporal.ChronoField;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/**
 * Parses the {@code Retry-After} response header (RFC 9110, section 10.2.3).
 *
 * <p>The value is either a number of seconds ({@code Retry-After: 120}) or an HTTP-date
 * ({@code Retry-After: Wed, 21 Oct 2015 07:28:00 GMT}). Servers and gateways send it with
 * 503 (e.g. a pod that is draining) and 429 (rate limited). Waiting at least that long
 * is the polite thing to do, and it is also what makes the retry succeed.
 *
 * <p>This class only parses; deciding whether the wait is acceptable (the cap) is the
 * policy's job, see {@link RetryPolicy#maxRetryAfter()}.
 */
public final class RetryAfter {
    private RetryAfter() {}

    /** A date far in the future must not overflow; nobody will wait this long anyway. */
    private static final Duration HUGE = Duration.ofSeconds(1_000_000_000L);

    /*
     * RFC 9110 says a recipient must accept three date formats: the preferred IMF-fixdate
     * and two obsolete ones. Senders only produce IMF-fixdate, but parsing is cheap.
     */
    private static final List<DateTimeFormatter> DATE_FORMATS = List.of(
            DateTimeFormatter.RFC_1123_DATE_TIME,                                       // Sun, 06 Nov 1994 08:49:37 GMT
            rfc850(),                                                                   // Sunday, 06-Nov-94 08:49:37 GMT
            DateTimeFormatter.ofPattern("EEE MMM ppd HH:mm:ss yyyy", Locale.US)        // Sun Nov  6 08:49:37 1994 (asctime, GMT)
                    .withZone(ZoneOffset.UTC));

    /** Two-digit years: RFC 9110 reads "more than 50 years ahead" as the past century. */
    private static DateTimeFormatter rfc850() {
        return new DateTimeFormatterBuilder()
                .appendPattern("EEEE, dd-MMM-")
                .appendValueReduced(ChronoField.YEAR, 2, 2, LocalDate.now(ZoneOffset.UTC).minusYears(50))
                .appendPattern(" HH:mm:ss zzz")
                .toFormatter(Locale.US);
    }

    /**
     * Returns how long to wait, measured from {@code now}; empty when the header is absent
     * or malformed (a malformed header is ignored, not an error: the caller falls back to
     * its own backoff). A date in the past means "retry now" ({@link Duration#ZERO}).
     */
    public static Optional<Duration> parse(String value, Instant now) {
        if (value == null) {
            return Optional.empty();
        }
        String v = value.trim();
        if (v.isEmpty()) {
            return Optional.empty();
        }
        if (v.chars().allMatch(c -> c >= '0' && c <= '9')) {
            // delay-seconds = 1*DIGIT. No sign, no fraction: "-1" and "1.5" are malformed.
            if (v.length() > 10) {
                return Optional.of(HUGE);
            }
            long seconds = Long.parseLong(v);
            return Optional.of(seconds >= HUGE.getSeconds() ? HUGE : Duration.ofSeconds(seconds));
        }
        for (DateTimeFormatter format : DATE_FORMATS) {
            try {
                Instant at = ZonedDateTime.parse(v, format).toInstant();
                Duration wait = Duration.between(now, at);
                if (wait.isNegative()) {
                    return Optional.of(Duration.ZERO);
                }
                return Optional.of(wait.compareTo(HUGE) > 0 ? HUGE : wait);
            } catch (DateTimeParseException ignored) {
                // try the next format
            }
        }
        return Optional.empty();
    }

    /** IMF-fixdate has a two-digit day; {@link DateTimeFormatter#RFC_1123_DATE_TIME} prints "6 Nov". */
    private static final DateTimeFormatter IMF_FIXDATE =
            DateTimeFormatter.ofPattern("EEE, dd MMM yyyy HH:mm:ss 'GMT'", Locale.US).withZone(ZoneOffset.UTC);

    /** Formats an instant as an IMF-fixdate, the form servers should send. */
    public static String httpDate(Instant instant) {
        return IMF_FIXDATE.format(instant);
    }
}
