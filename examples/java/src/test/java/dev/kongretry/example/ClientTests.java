package dev.kongretry.example;

import static dev.kongretry.example.TestRunner.as;
import static dev.kongretry.example.TestRunner.check;
import static dev.kongretry.example.TestRunner.eq;

import com.sun.net.httpserver.HttpServer;

import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The client against a scripted stub server: what it retries, what it stops on, what it sends. */
final class ClientTests {
    private ClientTests() {}

    /** One scripted answer. {@code before} runs first (e.g. to tamper with the caller's array). */
    record Step(int status, Map<String, String> headers, String body, long delayMs, Runnable before) {
        static Step of(int status) { return new Step(status, Map.of(), "{\"status\":" + status + "}", 0, null); }
        static Step of(int status, String header, String value) {
            return new Step(status, Map.of(header, value), "{\"status\":" + status + "}", 0, null);
        }
    }

    record Seen(String key, byte[] body) {}

    /** Answers POSTs from a script; the last step repeats. Records what each attempt carried. */
    static final class Stub implements AutoCloseable {
        final HttpServer server;
        final List<Seen> seen = Collections.synchronizedList(new ArrayList<>());

        Stub(Step... script) throws Exception {
            server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 64);
            server.setExecutor(Executors.newCachedThreadPool(r -> { Thread t = new Thread(r); t.setDaemon(true); return t; }));
            server.createContext("/", ex -> {
                try (ex) {
                    byte[] body = ex.getRequestBody().readAllBytes();
                    int n;
                    synchronized (seen) { seen.add(new Seen(ex.getRequestHeaders().getFirst("Idempotency-Key"), body)); n = seen.size(); }
                    Step s = script[Math.min(n, script.length) - 1];
                    if (s.before() != null) s.before().run();
                    if (s.delayMs() > 0) Thread.sleep(s.delayMs());
                    s.headers().forEach((k, v) -> ex.getResponseHeaders().set(k, v));
                    byte[] out = s.body().getBytes(StandardCharsets.UTF_8);
                    ex.sendResponseHeaders(s.status(), out.length);
                    ex.getResponseBody().write(out);
                } catch (Exception e) {
                    // client timed out and left
                }
            });
            server.start();
        }

        URI uri() { return URI.create("http://127.0.0.1:" + server.getAddress().getPort() + "/"); }

        @Override public void close() { server.stop(0); }
    }

    /**
     * A node that dies with the request in hand: it accepts, reads the request head and its
     * body, then closes the connection without answering (the client cannot tell whether it
     * was applied). Counts the requests it swallowed.
     */
    static final class Swallower implements AutoCloseable {
        final ServerSocket socket;
        final AtomicInteger swallowed = new AtomicInteger();

        Swallower() throws Exception {
            socket = new ServerSocket(0, 16, java.net.InetAddress.getLoopbackAddress());
            Thread t = new Thread(() -> {
                while (!socket.isClosed()) {
                    try (Socket s = socket.accept()) {
                        InputStream in = s.getInputStream();
                        // Head, then the body: the client sends both before it waits for an answer.
                        String head = readHead(in);
                        Matcher m = Pattern.compile("(?i)content-length:\\s*(\\d+)").matcher(head);
                        in.readNBytes(m.find() ? Integer.parseInt(m.group(1)) : 0);
                        swallowed.incrementAndGet();
                    } catch (Exception e) {
                        // closed
                    }
                }
            });
            t.setDaemon(true);
            t.start();
        }

        private static String readHead(InputStream in) throws java.io.IOException {
            StringBuilder b = new StringBuilder();
            int c;
            while ((c = in.read()) >= 0) {
                b.append((char) c);
                if (b.length() >= 4 && b.substring(b.length() - 4).equals("\r\n\r\n")) break;
            }
            return b.toString();
        }

        URI uri() { return URI.create("http://127.0.0.1:" + socket.getLocalPort() + "/"); }

        @Override public void close() throws java.io.IOException { socket.close(); }
    }

    static IdempotentClient nodes(List<String> log, URI... nodes) {
        return new IdempotentClient(List.of(nodes), fast(6), new Random(1), log::add);
    }

    static URI closedPort() throws Exception {
        try (ServerSocket s = new ServerSocket(0)) { return URI.create("http://127.0.0.1:" + s.getLocalPort() + "/"); }
    }

    static RetryPolicy fast(int attempts) {
        return new RetryPolicy(attempts, Duration.ofMillis(10), Duration.ofMillis(50),
                Duration.ofMillis(300), Duration.ofSeconds(5), Duration.ofSeconds(3));
    }

    /** A client of the stub with {@code fast(attempts)}, a fixed seed and no log. */
    static IdempotentClient quiet(Stub stub, int attempts) {
        return new IdempotentClient(stub.uri(), fast(attempts), new Random(1), line -> {});
    }

    /** Posts {@code body} with {@code c}, checks the operation succeeded, returns how long it took, ms. */
    static long msToSuccess(IdempotentClient c, byte[] body) throws Exception {
        long t0 = System.nanoTime();
        as(IdempotentClient.Success.class, c.post("p", "application/json", body), "outcome");
        return (System.nanoTime() - t0) / 1_000_000;
    }

    static final Pattern QUOTED_UUID = Pattern.compile("\"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\"");

    static void register(TestRunner r) {
        byte[] body = TestHttp.payment(100, "x").getBytes(StandardCharsets.UTF_8);

        r.test("client: 409 (in progress) is retried with the same key and the same bytes", () -> {
            try (Stub stub = new Stub(Step.of(409), Step.of(409), Step.of(201))) {
                IdempotentClient c = quiet(stub, 5);
                var ok = as(IdempotentClient.Success.class, c.post("payments", "application/json", body), "outcome");
                eq(3, ok.attempts(), "attempts");
                eq(3, stub.seen.size(), "requests");
                String key = stub.seen.get(0).key();
                check(QUOTED_UUID.matcher(key).matches(), "key is a quoted random UUID: " + key);
                for (Seen s : stub.seen) {
                    eq(key, s.key(), "same key on every attempt");
                    check(Arrays.equals(body, s.body()), "same body bytes on every attempt");
                }
                eq("\"" + ok.idempotencyKey() + "\"", key, "outcome names its key");
            }
        });

        r.test("client: two operations get two different keys", () -> {
            try (Stub stub = new Stub(Step.of(201))) {
                IdempotentClient c = quiet(stub, 5);
                c.post("payments", "application/json", body);
                c.post("payments", "application/json", body);
                check(!stub.seen.get(0).key().equals(stub.seen.get(1).key()), "keys differ: " + stub.seen);
            }
        });

        for (int status : new int[]{400, 422, 404, 500}) {
            r.test("client: " + status + " is final: surfaced after one attempt, not retried", () -> {
                try (Stub stub = new Stub(Step.of(status), Step.of(201))) {
                    IdempotentClient c = quiet(stub, 5);
                    var rejected = as(IdempotentClient.Rejected.class, c.post("payments", "application/json", body), "outcome");
                    eq(status, rejected.status(), "status");
                    eq("{\"status\":" + status + "}", rejected.bodyText(), "the server's body is handed over");
                    eq(1, rejected.attempts(), "attempts");
                    eq(1, stub.seen.size(), "requests");
                }
            });
        }

        for (int status : new int[]{502, 503, 504, 429}) {
            r.test("client: " + status + " is retried", () -> {
                try (Stub stub = new Stub(Step.of(status), Step.of(201))) {
                    IdempotentClient c = quiet(stub, 5);
                    eq(2, as(IdempotentClient.Success.class, c.post("p", "application/json", body), "outcome").attempts(), "attempts");
                }
            });
        }

        r.test("client: 503 with Retry-After: 1 waits at least a second", () -> {
            try (Stub stub = new Stub(Step.of(503, "Retry-After", "1"), Step.of(201))) {
                long ms = msToSuccess(quiet(stub, 5), body);
                check(ms >= 1000 && ms < 2500, "elapsed " + ms + " ms");
            }
        });

        r.test("client: 429 with Retry-After as an HTTP-date waits until then", () -> {
            try (Stub stub = new Stub(
                    new Step(429, Map.of("Retry-After", RetryAfter.httpDate(Instant.now().plusSeconds(2))), "{}", 0, null),
                    Step.of(201))) {
                long ms = msToSuccess(quiet(stub, 5), body);
                // The date has one-second resolution: now+2s truncated is 1 to 2 seconds away.
                check(ms >= 900 && ms < 3000, "elapsed " + ms + " ms");
            }
        });

        r.test("client: Retry-After beyond the cap stops at once instead of retrying early", () -> {
            try (Stub stub = new Stub(Step.of(503, "Retry-After", "120"), Step.of(201))) {
                IdempotentClient c = quiet(stub, 5);
                long t0 = System.nanoTime();
                var gaveUp = as(IdempotentClient.GaveUp.class, c.post("p", "application/json", body), "outcome");
                check((System.nanoTime() - t0) / 1_000_000 < 500, "no waiting");
                check(gaveUp.reason().contains("Retry-After 120s"), "reason: " + gaveUp.reason());
                eq(1, stub.seen.size(), "requests");
            }
        });

        r.test("client: stops after maxAttempts, reports the last outcome", () -> {
            try (Stub stub = new Stub(Step.of(502))) {
                IdempotentClient c = quiet(stub, 4);
                var gaveUp = as(IdempotentClient.GaveUp.class, c.post("p", "application/json", body), "outcome");
                eq(4, gaveUp.attempts(), "attempts");
                eq(4, stub.seen.size(), "requests");
                check(gaveUp.reason().contains("502"), "reason: " + gaveUp.reason());
            }
        });

        r.test("client: the overall deadline bounds the whole operation", () -> {
            try (Stub stub = new Stub(new Step(503, Map.of(), "{}", 100, null))) {
                RetryPolicy p = new RetryPolicy(1000, Duration.ofMillis(20), Duration.ofMillis(100),
                        Duration.ofMillis(300), Duration.ofMillis(700), Duration.ofSeconds(3));
                IdempotentClient c = new IdempotentClient(stub.uri(), p, new Random(1), line -> {});
                long t0 = System.nanoTime();
                var gaveUp = as(IdempotentClient.GaveUp.class, c.post("p", "application/json", body), "outcome");
                long ms = (System.nanoTime() - t0) / 1_000_000;
                check(ms < 900, "took " + ms + " ms for a 700 ms deadline");
                check(gaveUp.reason().contains("deadline"), "reason: " + gaveUp.reason());
                check(gaveUp.attempts() >= 3, "several attempts fit: " + gaveUp.attempts());
            }
        });

        r.test("client: an attempt slower than the per-attempt timeout is abandoned and retried", () -> {
            try (Stub stub = new Stub(new Step(201, Map.of(), "{\"late\":true}", 1500, null), Step.of(201))) {
                List<String> log = Collections.synchronizedList(new ArrayList<>());
                IdempotentClient c = new IdempotentClient(stub.uri(), fast(5), new Random(1), log::add);
                long t0 = System.nanoTime();
                var ok = as(IdempotentClient.Success.class, c.post("p", "application/json", body), "outcome");
                long ms = (System.nanoTime() - t0) / 1_000_000;
                eq(2, ok.attempts(), "attempts");
                eq("{\"status\":201}", ok.bodyText(), "the answer of the second attempt");
                check(ms < 1200, "did not wait for the slow answer: " + ms + " ms");
                check(log.get(0).contains("outcome=timeout"), "log: " + log.get(0));
            }
        });

        r.test("client: connection refused is retried, then reported when it persists", () -> {
            int closedPort;
            try (ServerSocket s = new ServerSocket(0)) { closedPort = s.getLocalPort(); }
            List<String> log = Collections.synchronizedList(new ArrayList<>());
            IdempotentClient c = new IdempotentClient(URI.create("http://127.0.0.1:" + closedPort + "/"), fast(3), new Random(1), log::add);
            var gaveUp = as(IdempotentClient.GaveUp.class, c.post("p", "application/json", body), "outcome");
            eq(3, gaveUp.attempts(), "attempts");
            check(gaveUp.reason().contains("connect-failed"), "reason: " + gaveUp.reason());
            eq(3, log.size(), "one log line per attempt");
        });

        r.test("client: sends the bytes it was given even if the caller changes its array", () -> {
            byte[] mine = body.clone();
            try (Stub stub = new Stub(new Step(503, Map.of(), "{}", 0, () -> Arrays.fill(mine, (byte) 'X')), Step.of(201))) {
                IdempotentClient c = quiet(stub, 5);
                as(IdempotentClient.Success.class, c.post("p", "application/json", mine), "outcome");
                check(Arrays.equals(body, stub.seen.get(1).body()), "second attempt carried the original bytes");
            }
        });

        r.test("client: an explicit key resumes an operation (e.g. after GaveUp)", () -> {
            try (Stub stub = new Stub(Step.of(201))) {
                IdempotentClient c = quiet(stub, 5);
                c.post("p", "application/json", body, "resume-me-123");
                eq("\"resume-me-123\"", stub.seen.get(0).key(), "key sent");
            }
        });

        r.test("client: one log line per attempt with outcome, delay, gateway attempts; never the full key", () -> {
            try (Stub stub = new Stub(Step.of(503, "x-kong-retry-attempts", "3"), Step.of(201, "x-kong-retry-attempts", "1"))) {
                List<String> log = Collections.synchronizedList(new ArrayList<>());
                IdempotentClient c = new IdempotentClient(stub.uri(), fast(5), new Random(1), log::add);
                String key = "0123456789abcdef-secret-part";
                c.post("p", "application/json", body, key);
                eq(2, log.size(), "lines: " + log);
                check(log.get(0).matches("op=01234567 attempt=1 outcome=503 gateway_attempts=3 elapsed_ms=\\d+ then=retry in \\d+ ms"),
                        "line 1: " + log.get(0));
                check(log.get(1).matches("op=01234567 attempt=2 outcome=201 gateway_attempts=1 elapsed_ms=\\d+ then=done"),
                        "line 2: " + log.get(1));
                for (String line : log) check(!line.contains("secret"), "full key leaked: " + line);
            }
        });

        r.test("client: a replayed answer is reported as such", () -> {
            try (Stub stub = new Stub(Step.of(201, "Idempotent-Replayed", "true"))) {
                IdempotentClient c = quiet(stub, 5);
                check(as(IdempotentClient.Success.class, c.post("p", "application/json", body), "outcome").replayed(), "replayed");
            }
        });

        r.test("client, two nodes: a refused connection moves to the next node with the same key and bytes", () -> {
            URI dead = closedPort();
            try (Stub b = new Stub(Step.of(201))) {
                List<String> log = Collections.synchronizedList(new ArrayList<>());
                var ok = as(IdempotentClient.Success.class, nodes(log, dead, b.uri()).post("payments", "application/json", body, "key-refused-1"), "outcome");
                eq(2, ok.attempts(), "attempts");
                eq(1, b.seen.size(), "requests at the second node");
                eq("\"key-refused-1\"", b.seen.get(0).key(), "same key");
                check(Arrays.equals(body, b.seen.get(0).body()), "same bytes");
                check(log.get(0).matches("op=key-refu attempt=1 node=" + Pattern.quote(dead.getAuthority())
                        + " outcome=connect-failed gateway_attempts=- elapsed_ms=\\d+ then=retry in \\d+ ms on "
                        + Pattern.quote(b.uri().getAuthority())), "line 1: " + log.get(0));
                check(log.get(1).contains("node=" + b.uri().getAuthority() + " outcome=201"), "line 2: " + log.get(1));
            }
        });

        r.test("client, two nodes: a node that dies with the request in hand: the next node gets the same key and bytes", () -> {
            try (Swallower a = new Swallower(); Stub b = new Stub(Step.of(201, "Idempotent-Replayed", "true"))) {
                List<String> log = Collections.synchronizedList(new ArrayList<>());
                var ok = as(IdempotentClient.Success.class, nodes(log, a.uri(), b.uri()).post("payments", "application/json", body, "key-lost-1"), "outcome");
                eq(1, a.swallowed.get(), "the first node had the whole request");
                eq(1, b.seen.size(), "requests at the second node");
                eq("\"key-lost-1\"", b.seen.get(0).key(), "same key");
                check(Arrays.equals(body, b.seen.get(0).body()), "same bytes");
                check(ok.replayed(), "the second node's replay is reported");
                check(log.get(0).contains("outcome=connection-lost"), "line 1: " + log.get(0));
            }
        });

        r.test("client, two nodes: a node slower than the per-attempt timeout is left for the next", () -> {
            try (Stub a = new Stub(new Step(201, Map.of(), "{\"late\":true}", 1500, null)); Stub b = new Stub(Step.of(201))) {
                List<String> log = Collections.synchronizedList(new ArrayList<>());
                var ok = as(IdempotentClient.Success.class, nodes(log, a.uri(), b.uri()).post("p", "application/json", body), "outcome");
                eq("{\"status\":201}", ok.bodyText(), "the second node's answer");
                eq(1, b.seen.size(), "requests at the second node");
                eq(a.seen.get(0).key(), b.seen.get(0).key(), "same key at both nodes");
            }
        });

        for (int status : new int[]{502, 503, 504}) {
            r.test("client, two nodes: " + status + " moves on, and the next operation starts at the node that answered", () -> {
                try (Stub a = new Stub(Step.of(status), Step.of(201)); Stub b = new Stub(Step.of(201))) {
                    IdempotentClient c = nodes(new ArrayList<>(), a.uri(), b.uri());
                    as(IdempotentClient.Success.class, c.post("p", "application/json", body), "first operation");
                    as(IdempotentClient.Success.class, c.post("p", "application/json", body), "second operation");
                    eq(1, a.seen.size(), "requests at the first node");
                    eq(2, b.seen.size(), "requests at the second node");
                    eq(a.seen.get(0).key(), b.seen.get(0).key(), "the retry carried the first attempt's key");
                }
            });
        }

        for (int status : new int[]{409, 429}) {
            r.test("client, two nodes: " + status + " is retried at the same node", () -> {
                try (Stub a = new Stub(Step.of(status), Step.of(201)); Stub b = new Stub(Step.of(201))) {
                    as(IdempotentClient.Success.class, nodes(new ArrayList<>(), a.uri(), b.uri()).post("p", "application/json", body), "outcome");
                    eq(2, a.seen.size(), "requests at the first node");
                    eq(0, b.seen.size(), "requests at the second node");
                }
            });
        }

        r.test("client, two nodes: when both fail, attempts alternate and maxAttempts still bounds the call", () -> {
            try (Stub a = new Stub(Step.of(503)); Stub b = new Stub(Step.of(502))) {
                var gaveUp = as(IdempotentClient.GaveUp.class, nodes(new ArrayList<>(), a.uri(), b.uri()).post("p", "application/json", body), "outcome");
                eq(6, gaveUp.attempts(), "attempts");
                eq(3, a.seen.size(), "requests at the first node");
                eq(3, b.seen.size(), "requests at the second node");
            }
        });

        r.test("client, two nodes: a final answer (422) is not taken to another node", () -> {
            try (Stub a = new Stub(Step.of(422)); Stub b = new Stub(Step.of(201))) {
                as(IdempotentClient.Rejected.class, nodes(new ArrayList<>(), a.uri(), b.uri()).post("p", "application/json", body), "outcome");
                eq(0, b.seen.size(), "requests at the second node");
            }
        });
    }
}
