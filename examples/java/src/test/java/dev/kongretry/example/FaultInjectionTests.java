package dev.kongretry.example;

import static dev.kongretry.example.TestRunner.check;
import static dev.kongretry.example.TestRunner.eq;

import dev.kongretry.example.FaultProxy.Fault;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The end-to-end claim: client -> fault proxy -> server, 100 logical POSTs, faults injected at
 * every stage, and every operation takes effect exactly once with the result the client expects.
 *
 * <p>The schedule comes from a seed ({@code -Dseed=N}, default 7): which operation meets
 * which faults, on which attempt, is the same on every run. Thread timing still varies, so
 * the number of attempts refused while the proxy port is closed varies a little; the
 * assertions do not depend on it.
 */
final class FaultInjectionTests {
    private FaultInjectionTests() {}

    static final int OPERATIONS = 100;
    static final int CONCURRENCY = 8;
    static final long SLOW_SERVER_MS = 900;

    /** Per-attempt 400 ms, backoff 20 ms doubling to 250 ms, Retry-After honoured up to 3 s. */
    static RetryPolicy testPolicy() {
        return new RetryPolicy(20, Duration.ofMillis(20), Duration.ofMillis(250),
                Duration.ofMillis(400), Duration.ofSeconds(20), Duration.ofSeconds(3));
    }

    record Operation(int index, String key, String reference, long amount, List<Fault> faults, boolean slowServer) {
        byte[] body() { return TestHttp.payment(amount, reference).getBytes(StandardCharsets.UTF_8); }
        /** Did an attempt reach the server and lose its answer? Then the final answer is a replay. */
        boolean expectsReplay() { return slowServer || faults.contains(Fault.RESET_AFTER) || faults.contains(Fault.SLOW); }
    }

    /** Weighted fault mix for the random part of the schedule. */
    private static final Fault[] MIX = weighted(Map.of(
            Fault.RESET_BEFORE, 20, Fault.RESET_AFTER, 20, Fault.SLOW, 15, Fault.STATUS_502, 10,
            Fault.STATUS_504, 10, Fault.STATUS_503, 8, Fault.STATUS_429, 5, Fault.REFUSE, 3));

    private static Fault[] weighted(Map<Fault, Integer> weights) {
        List<Fault> l = new ArrayList<>();
        new TreeMap<>(weights).forEach((f, w) -> { for (int i = 0; i < w; i++) l.add(f); });
        return l.toArray(new Fault[0]);
    }

    static List<Operation> schedule(long seed) {
        Random rnd = new Random(seed);
        List<Fault> every = List.of(Fault.REFUSE, Fault.RESET_BEFORE, Fault.RESET_AFTER, Fault.SLOW,
                Fault.STATUS_503, Fault.STATUS_429, Fault.STATUS_502, Fault.STATUS_504);
        List<Operation> ops = new ArrayList<>();
        for (int i = 0; i < OPERATIONS; i++) {
            List<Fault> faults = new ArrayList<>();
            boolean slowServer;
            if (i < every.size()) {
                faults.add(every.get(i)); // every kind of fault at least once, whatever the seed
                slowServer = false;
            } else {
                int roll = rnd.nextInt(100);
                int n = roll < 30 ? 0 : roll < 70 ? 1 : roll < 90 ? 2 : 3;
                for (int k = 0; k < n; k++) faults.add(MIX[rnd.nextInt(MIX.length)]);
                slowServer = i == every.size() || rnd.nextInt(100) < 8; // and one slow server at least
            }
            String key = UUID.nameUUIDFromBytes(("op-" + seed + "-" + i).getBytes(StandardCharsets.UTF_8)).toString();
            ops.add(new Operation(i, key, "op-" + i, 100 + rnd.nextInt(100_000), List.copyOf(faults), slowServer));
        }
        return ops;
    }

    static void register(TestRunner r) {
        long seed = Long.getLong("seed", 7L);

        r.test("fault injection (seed " + seed + "): " + OPERATIONS + " POSTs, every fault, each takes effect exactly once", () -> {
            List<Operation> ops = schedule(seed);
            Map<String, Operation> byKey = new HashMap<>();
            for (Operation op : ops) byKey.put(op.key(), op);
            Set<String> slowKeys = new HashSet<>();
            for (Operation op : ops) if (op.slowServer()) slowKeys.add(op.key());

            PaymentServer server = new PaymentServer(new InetSocketAddress("127.0.0.1", 0), new IdempotencyStore(),
                    key -> slowKeys.contains(key) ? SLOW_SERVER_MS : 0).start();
            FaultProxy.Schedule plan = (key, attempt) -> {
                Operation op = byKey.get(PaymentServer.parseKey(key));
                return op != null && attempt <= op.faults().size() ? op.faults().get(attempt - 1) : Fault.NONE;
            };
            List<String> log = Collections.synchronizedList(new ArrayList<>());
            ExecutorService pool = Executors.newFixedThreadPool(CONCURRENCY);
            try (FaultProxy proxy = new FaultProxy(server.port(), plan, Duration.ofMillis(700), Duration.ofMillis(300))) {
                IdempotentClient client = new IdempotentClient(URI.create("http://127.0.0.1:" + proxy.port() + "/"),
                        testPolicy(), new Random(seed), log::add);

                List<Future<IdempotentClient.Outcome>> futures = new ArrayList<>();
                for (Operation op : ops) {
                    futures.add(pool.submit(() -> client.post("payments", "application/json", op.body(), op.key())));
                }
                List<String> problems = new ArrayList<>();
                Set<String> ids = new HashSet<>();
                int replayed = 0, unexpectedReplays = 0, attempts = 0;
                for (Operation op : ops) {
                    IdempotentClient.Outcome outcome = futures.get(op.index()).get();
                    attempts += outcome.attempts();
                    if (!(outcome instanceof IdempotentClient.Success ok) || ok.status() != 201) {
                        problems.add(op.reference() + ": " + outcome);
                        continue;
                    }
                    // The intended result: the payment the server created for this operation.
                    String id = TestHttp.string(ok.bodyText(), "id");
                    HttpResponse<String> stored = TestHttp.get(server.port(), "/payments/" + id);
                    if (stored.statusCode() != 200
                            || !op.reference().equals(TestHttp.string(stored.body(), "reference"))
                            || op.amount() != TestHttp.number(stored.body(), "amount")) {
                        problems.add(op.reference() + ": client got " + ok.bodyText() + ", server has " + stored.body());
                    }
                    if (!ids.add(id)) problems.add(op.reference() + ": payment id " + id + " handed to two operations");
                    if (ok.replayed()) replayed++;
                    if (op.expectsReplay() && !ok.replayed()) {
                        problems.add(op.reference() + ": faults " + op.faults() + (op.slowServer() ? " + slow server" : "")
                                + " should have ended in a replay");
                    }
                    if (!op.expectsReplay() && ok.replayed()) unexpectedReplays++;
                }

                // Exactly once, seen from the server.
                String stats = TestHttp.get(server.port(), "/stats").body();
                for (Operation op : ops) {
                    long n = TestHttp.effects(stats, op.reference());
                    if (n != 1) problems.add(op.reference() + ": took effect " + n + " times");
                }
                eq((long) OPERATIONS, TestHttp.number(stats, "payments"), "payments created in total");

                // Every stage was really exercised.
                Map<Fault, Integer> injected = proxy.injected();
                for (Fault f : Fault.values()) {
                    if (f != Fault.NONE && injected.get(f) < 1) problems.add("fault " + f + " never injected");
                }
                Map<String, Integer> seenOutcomes = countOutcomes(log);
                for (String o : List.of("connect-failed", "connection-lost", "timeout", "409", "429", "502", "503", "504")) {
                    if (seenOutcomes.getOrDefault(o, 0) < 1) problems.add("the client never saw outcome " + o);
                }
                long serverReplays = TestHttp.number(stats, "replays");
                long expected = ops.stream().filter(Operation::expectsReplay).count();
                if (serverReplays < expected) problems.add("server replays " + serverReplays + " < " + expected);
                if (TestHttp.number(stats, "in_progress_409") < 1) problems.add("no 409 from the server");
                for (String line : log) {
                    for (Operation op : ops) {
                        if (line.contains(op.key())) { problems.add("a log line carries a full key: " + line); break; }
                    }
                }

                writeLog(log);
                System.out.printf("      faults injected %s%n      client outcomes %s%n"
                                + "      %d attempts for %d operations; %d replayed (%d expected + %d after own timeouts); "
                                + "server: %d replays, %d x 409%n",
                        withoutNone(injected), seenOutcomes, attempts, OPERATIONS, replayed, expected, unexpectedReplays,
                        serverReplays, TestHttp.number(stats, "in_progress_409"));
                check(problems.isEmpty(), problems.size() + " problem(s):\n        " + String.join("\n        ", problems));
            } finally {
                pool.shutdownNow();
                server.stop();
            }
        });

        r.test("control: the same faults double-charge a client that makes a new key per attempt", () -> {
            PaymentServer server = new PaymentServer(new InetSocketAddress("127.0.0.1", 0), new IdempotencyStore(), k -> 0).start();
            // Every other request that reaches the proxy is processed, then its answer is lost.
            AtomicInteger requests = new AtomicInteger();
            FaultProxy.Schedule plan = (key, attempt) -> requests.incrementAndGet() % 2 == 1 ? Fault.RESET_AFTER : Fault.NONE;
            int n = 10;
            try (FaultProxy proxy = new FaultProxy(server.port(), plan, Duration.ofMillis(700), Duration.ofMillis(300))) {
                URI base = URI.create("http://127.0.0.1:" + proxy.port() + "/");
                // The right way: one key per operation.
                IdempotentClient client = new IdempotentClient(base, testPolicy(), new Random(1), line -> {});
                for (int i = 0; i < n; i++) {
                    client.post("payments", "application/json", TestHttp.payment(10, "good-" + i).getBytes(StandardCharsets.UTF_8));
                }
                // The classic bug: a fresh key on every attempt (e.g. generated inside the retry loop).
                HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
                for (int i = 0; i < n; i++) {
                    byte[] body = TestHttp.payment(10, "naive-" + i).getBytes(StandardCharsets.UTF_8);
                    for (int attempt = 1; attempt <= 5; attempt++) {
                        HttpRequest req = HttpRequest.newBuilder(base.resolve("payments")).timeout(Duration.ofSeconds(2))
                                .header("Idempotency-Key", UUID.randomUUID().toString())
                                .POST(HttpRequest.BodyPublishers.ofByteArray(body)).build();
                        try {
                            if (http.send(req, HttpResponse.BodyHandlers.discarding()).statusCode() == 201) break;
                        } catch (IOException lost) {
                            // "retry"
                        }
                    }
                }
                String stats = TestHttp.get(server.port(), "/stats").body();
                for (int i = 0; i < n; i++) {
                    eq(1L, TestHttp.effects(stats, "good-" + i), "effects of good-" + i);
                    eq(2L, TestHttp.effects(stats, "naive-" + i), "effects of naive-" + i + " (the harness must see the bug)");
                }
            } finally {
                server.stop();
            }
        });
    }

    /** "outcome=503", "outcome=connection-lost (Connection reset)" ... -> counts by first word. */
    static Map<String, Integer> countOutcomes(List<String> log) {
        Map<String, Integer> counts = new TreeMap<>();
        synchronized (log) {
            for (String line : log) {
                int at = line.indexOf("outcome=");
                if (at < 0) continue;
                String rest = line.substring(at + "outcome=".length());
                String word = rest.split("[ (]")[0];
                counts.merge(word, 1, Integer::sum);
            }
        }
        return counts;
    }

    private static Map<Fault, Integer> withoutNone(Map<Fault, Integer> m) {
        Map<Fault, Integer> copy = new EnumMap<>(m);
        copy.remove(Fault.NONE);
        return copy;
    }

    private static void writeLog(List<String> log) {
        Path dir = Path.of(System.getProperty("log.dir", "build"));
        try {
            Files.createDirectories(dir);
            Files.write(dir.resolve("fault-injection-client.log"), log);
        } catch (IOException e) {
            System.out.println("      (could not write the client log: " + e + ")");
        }
    }
}
