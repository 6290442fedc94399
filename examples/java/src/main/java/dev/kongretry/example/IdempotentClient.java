package dev.kongretry.example;

import java.io.IOException;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Optional;
import java.util.Random;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;
import java.util.random.RandomGenerator;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A POST that takes effect exactly once, even when attempts fail in the middle.
 *
 * <p>The rules, and why:
 * <ol>
 *   <li><b>One idempotency key per logical operation</b>, created before the first attempt and
 *       sent on every attempt. The server uses it to recognise a repeat and answer it with the
 *       stored result instead of doing the work again. A new key per attempt would defeat it.</li>
 *   <li><b>The same body bytes on every attempt.</b> The server compares a hash of the body to
 *       catch a key reused for something else (422). Re-serialising an object can change the
 *       bytes (field order, a timestamp): serialise once, keep the bytes.</li>
 *   <li><b>A timeout per attempt and a deadline for the whole operation</b>, so a hung attempt
 *       is abandoned and the caller always hears back in bounded time.</li>
 *   <li><b>Capped, fully jittered exponential backoff</b> between attempts, and at least what
 *       {@code Retry-After} asks for (up to a cap), so that retries spread out instead of
 *       hammering a service that is coming back.</li>
 *   <li><b>Retry only what may succeed later</b> (connect failures, resets, timeouts,
 *       502/503/504, 429, 409 "still in progress"); stop on 400/422 and other final answers.</li>
 * </ol>
 * A reset or timeout does not tell us whether the server did the work. The key is what makes
 * retrying anyway safe: either the work was done and we get its stored result, or it was not
 * and it is done now. Both sides are needed; see {@link PaymentServer}.
 *
 * <p><b>Several gateway nodes.</b> Given more than one base URL, the client sends to one node
 * and moves on to the next when that node cannot answer: a connect failure, a timeout, a
 * reset, or 502/503/504. The retry carries the same key and the same bytes, so it is the same
 * operation, and it is safe only when every node knows every key: the gateway's idempotency
 * store must be cluster-wide (kong-retry's {@code idempotency.store: "etcd"}), or a backend
 * that honours keys. It stays on the node for 409 (that node knows the request is in
 * progress) and 429, and keeps the node that answered for the next operations.
 */
public final class IdempotentClient {

    /** The result of one logical operation. Check it with {@code instanceof}. */
    public sealed interface Outcome permits Success, Rejected, GaveUp {
        int attempts();
        String idempotencyKey();
    }

    /**
     * A 2xx answer. {@code replayed} means the server answered from its idempotency store: an
     * earlier attempt had already taken effect and this is its original result.
     */
    public record Success(int status, byte[] body, HttpHeaders headers, boolean replayed,
                          int attempts, String idempotencyKey) implements Outcome {
        public String bodyText() { return new String(body, StandardCharsets.UTF_8); }
    }

    /**
     * A final, non-2xx answer (400, 422, 404, 500, ...). The server decided; repeating the same
     * request cannot change that. Fix the request; a corrected request is a new operation
     * with a new key.
     */
    public record Rejected(int status, byte[] body, int attempts, String idempotencyKey) implements Outcome {
        public String bodyText() { return new String(body, StandardCharsets.UTF_8); }
    }

    /**
     * No final answer within the deadline or the attempt limit. The operation <b>may or may not
     * have taken effect</b>. To find out, send it again later with the <b>same key and the same
     * body</b>: you get the stored result, or it runs now. (Never "retry" it with a new key.)
     */
    public record GaveUp(String reason, int attempts, String idempotencyKey) implements Outcome {}

    /** Response header our gateway filter adds: how many attempts it made upstream. */
    static final String GATEWAY_ATTEMPTS_HEADER = "x-kong-retry-attempts";

    private final HttpClient http;
    private final List<URI> nodes;
    /** The node the next attempt goes to: the last one that answered, or the next after a failure. */
    private final AtomicInteger current = new AtomicInteger();
    private final RetryPolicy policy;
    private final RandomGenerator random;
    private final Consumer<String> log;

    public IdempotentClient(URI baseUri, RetryPolicy policy, RandomGenerator random, Consumer<String> log) {
        this(List.of(baseUri), policy, random, log);
    }

    /**
     * A client of several gateway nodes (base URLs), tried in this order; see the class
     * comment for when it moves to the next.
     */
    public IdempotentClient(List<URI> nodes, RetryPolicy policy, RandomGenerator random, Consumer<String> log) {
        if (nodes.isEmpty()) throw new IllegalArgumentException("at least one base URL is needed");
        this.nodes = List.copyOf(nodes);
        this.policy = policy;
        this.random = random;
        this.log = log;
        this.http = HttpClient.newBuilder()
                // HTTP/1.1 on purpose: with plain http, HTTP_2 would add an h2c upgrade dance
                // that some proxies mishandle. Nothing here needs HTTP/2.
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(policy.perAttemptTimeout())
                .followRedirects(HttpClient.Redirect.NEVER)
                .build();
    }

    public IdempotentClient(URI baseUri, RetryPolicy policy) {
        this(baseUri, policy, new Random(), line -> System.err.println(line));
    }

    public IdempotentClient(List<URI> nodes, RetryPolicy policy) {
        this(nodes, policy, new Random(), line -> System.err.println(line));
    }

    /** Starts a new logical operation: a fresh key. */
    public Outcome post(String path, String contentType, byte[] body) {
        return post(path, contentType, body, UUID.randomUUID().toString());
    }

    /**
     * Runs (or resumes) the operation identified by {@code key}. Pass a key you stored earlier
     * to resume an operation that ended with {@link GaveUp}.
     */
    public Outcome post(String path, String contentType, byte[] body, String key) {
        // Our own copy: even if the caller reuses its array, every attempt sends these bytes.
        final byte[] bytes = body.clone();
        // Logs carry a short prefix: enough to correlate lines, not enough to replay someone's
        // operation from a log file (the full key is a capability for that operation's result).
        final String op = key.length() > 8 ? key.substring(0, 8) : key;
        final long start = System.nanoTime();
        final long deadline = start + policy.deadline().toNanos();

        String outcome = "none";      // what the last attempt got, for the log and for GaveUp
        for (int attempt = 1; ; attempt++) {
            long remaining = deadline - System.nanoTime();
            if (remaining < 1_000_000) { // overslept into the deadline: no time left for an attempt
                return new GaveUp("deadline of " + policy.deadline().toMillis() + " ms reached, last: " + outcome,
                        attempt - 1, key);
            }
            Duration timeout = min(policy.perAttemptTimeout(), Duration.ofNanos(remaining));
            final int node = Math.floorMod(current.get(), nodes.size());
            final String at = nodes.size() > 1 ? " node=" + authority(node) : "";
            HttpRequest request = HttpRequest.newBuilder(nodes.get(node).resolve(path))
                    .timeout(timeout)
                    .header("Content-Type", contentType)
                    // The draft defines the value as a Structured Field string: quoted.
                    .header("Idempotency-Key", "\"" + key + "\"")
                    .POST(HttpRequest.BodyPublishers.ofByteArray(bytes))
                    .build();

            Duration wait;            // how long to wait before the next attempt
            String gatewayAttempts = "-";
            boolean nodeFailed;       // this node could not answer: the next attempt goes to another
            try {
                HttpResponse<byte[]> response = send(request, timeout);
                int status = response.statusCode();
                gatewayAttempts = response.headers().firstValue(GATEWAY_ATTEMPTS_HEADER).orElse("-");
                if (status >= 200 && status < 300) {
                    boolean replayed = response.headers().firstValue("Idempotent-Replayed")
                            .map("true"::equalsIgnoreCase).orElse(false);
                    logAttempt(op, attempt, at, status + (replayed ? " replayed" : ""), gatewayAttempts, start, "done");
                    return new Success(status, response.body(), response.headers(), replayed, attempt, key);
                }
                if (!RetryPolicy.isRetryableStatus(status)) {
                    logAttempt(op, attempt, at, String.valueOf(status), gatewayAttempts, start, "stop: final answer");
                    return new Rejected(status, response.body(), attempt, key);
                }
                outcome = String.valueOf(status);
                // 502/503/504: this node found no healthy way on, another may. 409 (in
                // progress) and 429 (rate limited) are this node speaking for the key or
                // the client: going elsewhere would not change them.
                nodeFailed = status == 502 || status == 503 || status == 504;
                wait = policy.backoff(attempt, random);
                Optional<Duration> retryAfter = RetryAfter.parse(
                        response.headers().firstValue("Retry-After").orElse(null), Instant.now());
                if (retryAfter.isPresent()) {
                    if (retryAfter.get().compareTo(policy.maxRetryAfter()) > 0) {
                        // Coming back earlier than asked is what Retry-After forbids; waiting
                        // longer than we agreed to is not our call. Hand it to the caller.
                        String reason = status + " with Retry-After " + retryAfter.get().toSeconds()
                                + "s, more than the " + policy.maxRetryAfter().toSeconds() + "s we wait";
                        logAttempt(op, attempt, at, outcome, gatewayAttempts, start, "stop: " + reason);
                        return new GaveUp(reason, attempt, key);
                    }
                    // At least what the server asked; the jitter on top keeps clients that got
                    // the same Retry-After from coming back in the same millisecond.
                    wait = retryAfter.get().plus(wait);
                }
            } catch (AttemptFailed failure) {
                outcome = failure.getMessage();
                nodeFailed = true;
                wait = policy.backoff(attempt, random);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return new GaveUp("interrupted", attempt, key);
            }

            if (attempt >= policy.maxAttempts()) {
                String reason = attempt + " attempts made, last: " + outcome;
                logAttempt(op, attempt, at, outcome, gatewayAttempts, start, "stop: " + reason);
                return new GaveUp(reason, attempt, key);
            }
            if (wait.compareTo(Duration.ofNanos(deadline - System.nanoTime())) >= 0) {
                String reason = "the deadline of " + policy.deadline().toMillis()
                        + " ms leaves no time for another attempt, last: " + outcome;
                logAttempt(op, attempt, at, outcome, gatewayAttempts, start, "stop: " + reason);
                return new GaveUp(reason, attempt, key);
            }
            String next = "";
            if (nodeFailed && nodes.size() > 1) {
                // Only if no other operation moved on already: two operations that saw the same
                // node fail move the client one node on, not two.
                current.compareAndSet(node, (node + 1) % nodes.size());
                next = " on " + authority(Math.floorMod(current.get(), nodes.size()));
            }
            logAttempt(op, attempt, at, outcome, gatewayAttempts, start, "retry in " + wait.toMillis() + " ms" + next);
            try {
                Thread.sleep(wait.toMillis(), (int) (wait.toNanos() % 1_000_000));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return new GaveUp("interrupted", attempt, key);
            }
        }
    }

    /** One attempt that produced no HTTP response; the message names the kind of failure. */
    private static final class AttemptFailed extends Exception {
        private static final long serialVersionUID = 1L;
        AttemptFailed(String kind) { super(kind, null, false, false); }
    }

    private HttpResponse<byte[]> send(HttpRequest request, Duration timeout)
            throws AttemptFailed, InterruptedException {
        // HttpRequest.timeout bounds the wait for the response headers; the outer get() bounds
        // the whole attempt, body included, so a response that stalls mid-body is abandoned too.
        CompletableFuture<HttpResponse<byte[]>> future =
                http.sendAsync(request, HttpResponse.BodyHandlers.ofByteArray());
        try {
            return future.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (TimeoutException e) {
            future.cancel(true); // closes the connection: a late answer must not be mixed up
            throw new AttemptFailed("timeout");
        } catch (ExecutionException e) {
            throw new AttemptFailed(classify(e.getCause()));
        } catch (InterruptedException e) {
            future.cancel(true);
            throw e;
        }
    }

    /**
     * Names a transport failure. All of them are retried: "connect-failed" is always safe (the
     * request never left), the others are safe only because of the idempotency key (the server
     * may have done the work and we lost the answer).
     */
    private static String classify(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof HttpConnectTimeoutException) return "connect-timeout";
            if (c instanceof HttpTimeoutException) return "timeout";
            if (c instanceof ConnectException) return "connect-failed";
        }
        if (t instanceof IOException) {
            return "connection-lost (" + t.getMessage() + ")"; // reset, closed before a full response
        }
        // Not a network condition but a bug (bad URI, ...): retrying would not help.
        throw new IllegalStateException("unexpected failure", t);
    }

    /** {@code node} is {@code ""} for a one-node client, else {@code " node=host:port"}. */
    private void logAttempt(String op, int attempt, String node, String outcome, String gatewayAttempts, long start, String then) {
        log.accept(String.format("op=%s attempt=%d%s outcome=%s gateway_attempts=%s elapsed_ms=%d then=%s",
                op, attempt, node, outcome, gatewayAttempts, (System.nanoTime() - start) / 1_000_000, then));
    }

    private String authority(int node) {
        return nodes.get(node).getAuthority();
    }

    private static Duration min(Duration a, Duration b) {
        return a.compareTo(b) <= 0 ? a : b;
    }

    // ---- command line demo --------------------------------------------------------------

    private static final Pattern ID = Pattern.compile("\"id\"\\s*:\\s*\"([^\"]+)\"");

    private static final String USAGE = "usage: IdempotentClient <base-url>[,<base-url>...] [operations]"
            + " [--per-attempt-ms N] [--deadline-ms N] [--path P] [--print-keys]";

    /**
     * {@code IdempotentClient <base-url>[,<base-url>...] [operations] [--per-attempt-ms N]
     * [--deadline-ms N] [--path P] [--print-keys]}: creates {@code operations} payments at
     * {@code <base-url>/<P>} (default {@code payments}) one after the other and ends with
     * {@code operations=N ok=N failed=0 replayed=N attempts=N}. Several base URLs are gateway
     * nodes (see the class comment). {@code --print-keys} adds each operation's full key and the
     * SHA-256 of the body it got to its line, for a harness that matches them with what the
     * upstream saw; keep it out of real logs. Exit status 1 if any operation failed.
     */
    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println(USAGE);
            System.exit(2);
        }
        List<URI> nodes = new ArrayList<>();
        for (String url : args[0].split(",")) {
            nodes.add(URI.create(url.endsWith("/") ? url : url + "/"));
        }
        int operations = 10;
        String path = "payments";
        boolean printKeys = false;
        RetryPolicy p = RetryPolicy.defaults();
        Duration perAttempt = p.perAttemptTimeout();
        Duration deadline = p.deadline();
        for (int i = 1; i < args.length; i++) {
            switch (args[i]) {
                case "--per-attempt-ms" -> perAttempt = Duration.ofMillis(Long.parseLong(args[++i]));
                case "--deadline-ms" -> deadline = Duration.ofMillis(Long.parseLong(args[++i]));
                case "--path" -> path = args[++i];
                case "--print-keys" -> printKeys = true;
                default -> operations = Integer.parseInt(args[i]);
            }
        }
        RetryPolicy policy = new RetryPolicy(p.maxAttempts(), p.baseDelay(), p.maxDelay(),
                perAttempt, deadline, p.maxRetryAfter());
        IdempotentClient client = new IdempotentClient(nodes, policy);

        String run = UUID.randomUUID().toString().substring(0, 8);
        int ok = 0, replayed = 0, attempts = 0;
        for (int i = 1; i <= operations; i++) {
            String json = String.format("{\"amount\":%d,\"currency\":\"EUR\",\"reference\":\"demo-%s-%d\"}",
                    100 + i, run, i);
            Outcome outcome = client.post(path, "application/json", json.getBytes(StandardCharsets.UTF_8));
            attempts += outcome.attempts();
            String keys = printKeys ? " key=" + outcome.idempotencyKey() : "";
            if (outcome instanceof Success s) {
                Matcher m = ID.matcher(s.bodyText());
                System.out.printf("operation %d: %d %s attempts=%d%s%s%s%n", i, s.status(),
                        m.find() ? m.group(1) : "?", s.attempts(), s.replayed() ? " replayed" : "",
                        keys, printKeys ? " body_sha256=" + sha256Hex(s.body()) : "");
                ok++;
                if (s.replayed()) replayed++;
            } else if (outcome instanceof Rejected r) {
                System.out.printf("operation %d: rejected %d %s%s%n", i, r.status(), r.bodyText(), keys);
            } else if (outcome instanceof GaveUp g) {
                System.out.printf("operation %d: gave up after %d attempts (%s); outcome unknown, resume with the same key%s%n",
                        i, g.attempts(), g.reason(), keys);
            }
            System.out.flush(); // a harness reads the lines as they come
        }
        System.out.printf("operations=%d ok=%d failed=%d replayed=%d attempts=%d%n",
                operations, ok, operations - ok, replayed, attempts);
        System.out.flush();
        System.exit(ok == operations ? 0 : 1);
    }

    private static String sha256Hex(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }
}
