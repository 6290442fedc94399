package dev.kongretry.example;

import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The server's memory of idempotency keys: for each key, a fingerprint of the request and,
 * once the work is done, the response that was sent. Thread-safe.
 *
 * <p>Life of a key:
 * <pre>
 *   (unknown) --begin--> IN PROGRESS --complete--> COMPLETED --ttl elapses--> (unknown)
 *                             \--abandon (the work failed and was rolled back)--> (unknown)
 * </pre>
 *
 * <p><b>Expiry.</b> A completed key is kept for {@code ttl} after completion (default 24 hours,
 * like Stripe's minimum). Publish this to API consumers: a client may safely retry an
 * operation with the same key within that window. After it, the same key and body count as a
 * new operation and run again.
 *
 * <p><b>This one lives in memory: an example, not a production store.</b> A restart forgets
 * every key, and a retry arriving after the restart runs the operation a second time. In
 * production, write the key record in the same database transaction as the effect itself
 * (insert payment + insert key result, commit once), and scope keys per client/account so two
 * clients cannot collide or read each other's results.
 */
public final class IdempotencyStore {

    /** The response we sent for a completed key: replayed byte for byte to duplicates. */
    public record StoredResponse(int status, String contentType, byte[] body, Map<String, String> headers) {}

    public enum Decision {
        /** First time we see this key: do the work, then call complete() or abandon(). */
        EXECUTE,
        /** Same key and payload, the work is done: send the stored response again. */
        REPLAY,
        /** Same key and payload, the first request is still being worked on: 409. */
        IN_PROGRESS,
        /** Same key, different payload: a client bug (key reused for another operation): 422. */
        MISMATCH
    }

    public record Claim(Decision decision, StoredResponse stored) {}

    public static final Duration DEFAULT_TTL = Duration.ofHours(24);

    private record Entry(byte[] fingerprint, StoredResponse response, Instant expiresAt) {
        boolean expired(Instant now) { return expiresAt != null && !now.isBefore(expiresAt); }
    }

    private final Map<String, Entry> entries = new ConcurrentHashMap<>();
    private final Duration ttl;
    private final Clock clock;
    private volatile Instant nextSweep;

    public IdempotencyStore(Duration ttl, Clock clock) {
        this.ttl = ttl;
        this.clock = clock;
        this.nextSweep = clock.instant().plus(sweepInterval());
    }

    public IdempotencyStore() {
        this(DEFAULT_TTL, Clock.systemUTC());
    }

    public Duration ttl() { return ttl; }

    /**
     * Decides what to do with a request carrying {@code key}. Atomic per key: of two
     * concurrent requests with a new key, exactly one gets {@link Decision#EXECUTE}.
     */
    public Claim begin(String key, byte[] fingerprint) {
        Instant now = clock.instant();
        sweepIfDue(now);
        Claim[] claim = new Claim[1];
        entries.compute(key, (k, e) -> {
            if (e == null || e.expired(now)) {
                claim[0] = new Claim(Decision.EXECUTE, null);
                return new Entry(fingerprint, null, null); // in progress: no expiry until completed
            }
            // Constant-time compare: habit for anything that could be probed from outside.
            if (!MessageDigest.isEqual(e.fingerprint(), fingerprint)) {
                claim[0] = new Claim(Decision.MISMATCH, null);
            } else if (e.response() == null) {
                claim[0] = new Claim(Decision.IN_PROGRESS, null);
            } else {
                claim[0] = new Claim(Decision.REPLAY, e.response());
            }
            return e;
        });
        return claim[0];
    }

    /** Records the response of the work started by {@link #begin}; the ttl runs from now. */
    public void complete(String key, StoredResponse response) {
        entries.computeIfPresent(key, (k, e) -> new Entry(e.fingerprint(), response, clock.instant().plus(ttl)));
    }

    /**
     * Forgets an in-progress key whose work failed <i>without effect</i> (rolled back), so that
     * a retry can run it. Never call it after the effect happened.
     */
    public void abandon(String key) {
        entries.computeIfPresent(key, (k, e) -> e.response() == null ? null : e);
    }

    /** Keys currently remembered (in progress or completed, expired ones not yet swept). */
    public int size() { return entries.size(); }

    /** SHA-256 over the parts that define "the same request". */
    public static byte[] fingerprint(String method, String path, byte[] body) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update((method + " " + path + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8));
            sha.update(body);
            return sha.digest();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }

    /** Expired entries are dropped at most once per sweep interval, on the request path. */
    private void sweepIfDue(Instant now) {
        if (now.isBefore(nextSweep)) return;
        nextSweep = now.plus(sweepInterval());
        entries.values().removeIf(e -> e.expired(now));
    }

    private Duration sweepInterval() {
        Duration tenth = ttl.dividedBy(10);
        return tenth.compareTo(Duration.ofMinutes(1)) < 0 ? tenth : Duration.ofMinutes(1);
    }
}
