package dev.kongretry.example;

import static dev.kongretry.example.TestHttp.get;
import static dev.kongretry.example.TestHttp.number;
import static dev.kongretry.example.TestHttp.payment;
import static dev.kongretry.example.TestHttp.post;
import static dev.kongretry.example.TestRunner.check;
import static dev.kongretry.example.TestRunner.eq;

import java.net.InetSocketAddress;
import java.net.http.HttpResponse;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/** The server side of the contract: the store's decisions and the HTTP behaviour (400/409/422/replay). */
final class StoreAndServerTests {
    private StoreAndServerTests() {}

    /** A clock the test moves by hand. */
    static final class ManualClock extends Clock {
        private volatile Instant now = Instant.parse("2026-01-01T00:00:00Z");
        void advance(Duration d) { now = now.plus(d); }
        @Override public Instant instant() { return now; }
        @Override public ZoneId getZone() { return ZoneOffset.UTC; }
        @Override public Clock withZone(ZoneId zone) { return this; }
    }

    static PaymentServer server(ToLongFunctionOfKey work) throws Exception {
        return new PaymentServer(new InetSocketAddress("127.0.0.1", 0), new IdempotencyStore(), work::millis).start();
    }

    @FunctionalInterface
    interface ToLongFunctionOfKey { long millis(String key); }

    static void register(TestRunner r) {
        byte[] fpA = IdempotencyStore.fingerprint("POST", "/payments", "a".getBytes());
        byte[] fpB = IdempotencyStore.fingerprint("POST", "/payments", "b".getBytes());
        IdempotencyStore.StoredResponse resp = new IdempotencyStore.StoredResponse(201, "application/json", "{}".getBytes(), Map.of());

        r.test("store: execute, in progress, replay, mismatch", () -> {
            IdempotencyStore s = new IdempotencyStore(Duration.ofHours(24), new ManualClock());
            eq(IdempotencyStore.Decision.EXECUTE, s.begin("k", fpA).decision(), "first");
            eq(IdempotencyStore.Decision.IN_PROGRESS, s.begin("k", fpA).decision(), "while running");
            eq(IdempotencyStore.Decision.MISMATCH, s.begin("k", fpB).decision(), "other body while running");
            s.complete("k", resp);
            IdempotencyStore.Claim c = s.begin("k", fpA);
            eq(IdempotencyStore.Decision.REPLAY, c.decision(), "after completion");
            check(c.stored() == resp, "replays the stored response");
            eq(IdempotencyStore.Decision.MISMATCH, s.begin("k", fpB).decision(), "other body after completion");
        });

        r.test("store: a key expires ttl after completion, then counts as new", () -> {
            ManualClock clock = new ManualClock();
            IdempotencyStore s = new IdempotencyStore(Duration.ofHours(24), clock);
            s.begin("k", fpA);
            clock.advance(Duration.ofHours(30)); // a long-running operation: the ttl starts at completion
            s.complete("k", resp);
            clock.advance(Duration.ofHours(23));
            eq(IdempotencyStore.Decision.REPLAY, s.begin("k", fpA).decision(), "23 h after completion");
            clock.advance(Duration.ofHours(1));
            eq(IdempotencyStore.Decision.EXECUTE, s.begin("k", fpB).decision(), "24 h after completion: forgotten");
        });

        r.test("store: expired keys are swept, live ones kept", () -> {
            ManualClock clock = new ManualClock();
            IdempotencyStore s = new IdempotencyStore(Duration.ofMinutes(10), clock);
            for (int i = 0; i < 100; i++) { s.begin("old" + i, fpA); s.complete("old" + i, resp); }
            clock.advance(Duration.ofMinutes(11));
            s.begin("new", fpA);
            eq(1, s.size(), "only the new key remains after the sweep");
        });

        r.test("store: abandon frees an in-progress key, never a completed one", () -> {
            IdempotencyStore s = new IdempotencyStore(Duration.ofHours(1), new ManualClock());
            s.begin("k", fpA);
            s.abandon("k");
            eq(IdempotencyStore.Decision.EXECUTE, s.begin("k", fpA).decision(), "after abandon");
            s.complete("k", resp);
            s.abandon("k");
            eq(IdempotencyStore.Decision.REPLAY, s.begin("k", fpA).decision(), "abandon after completion is ignored");
        });

        r.test("store: of 32 concurrent first requests with one key, exactly one executes", () -> {
            IdempotencyStore s = new IdempotencyStore();
            ExecutorService pool = Executors.newFixedThreadPool(32);
            try {
                CountDownLatch go = new CountDownLatch(1);
                List<Future<IdempotencyStore.Decision>> fs = new ArrayList<>();
                for (int i = 0; i < 32; i++) {
                    fs.add(pool.submit((Callable<IdempotencyStore.Decision>) () -> { go.await(); return s.begin("k", fpA).decision(); }));
                }
                go.countDown();
                int executes = 0;
                for (Future<IdempotencyStore.Decision> f : fs) if (f.get() == IdempotencyStore.Decision.EXECUTE) executes++;
                eq(1, executes, "EXECUTE decisions");
            } finally {
                pool.shutdownNow();
            }
        });

        r.test("server: POST without Idempotency-Key is 400 and creates nothing", () -> {
            PaymentServer s = server(k -> 0);
            try {
                HttpResponse<String> res = post(s.port(), "/payments", null, payment(100, "r1"));
                eq(400, res.statusCode(), "status");
                check(res.body().contains("Idempotency-Key"), "the problem names the header: " + res.body());
                eq(400, post(s.port(), "/payments", "\"has space\"", payment(100, "r1")).statusCode(), "invalid key");
                eq(400, post(s.port(), "/payments", "\"\"", payment(100, "r1")).statusCode(), "empty key");
                String stats = get(s.port(), "/stats").body();
                eq(0L, number(stats, "payments"), "payments");
                eq(3L, number(stats, "missing_key_400"), "counted");
            } finally { s.stop(); }
        });

        r.test("server: duplicate of a completed request gets the same response, marked replayed", () -> {
            PaymentServer s = server(k -> 0);
            try {
                HttpResponse<String> first = post(s.port(), "/payments", "\"key-1\"", payment(250, "r1"));
                eq(201, first.statusCode(), "first status");
                check(first.headers().firstValue("Idempotent-Replayed").isEmpty(), "first is not a replay");
                // The bare form of the same key is the same key.
                HttpResponse<String> again = post(s.port(), "/payments", "key-1", payment(250, "r1"));
                eq(201, again.statusCode(), "replayed status");
                eq(first.body(), again.body(), "replayed body");
                eq(first.headers().firstValue("Location"), again.headers().firstValue("Location"), "replayed Location");
                eq("true", again.headers().firstValue("Idempotent-Replayed").orElse(null), "Idempotent-Replayed");
                String stats = get(s.port(), "/stats").body();
                eq(1L, number(stats, "payments"), "payments created");
                eq(1L, number(stats, "replays"), "replays");
                eq(1L, TestHttp.effects(stats, "r1"), "effects of r1");
            } finally { s.stop(); }
        });

        r.test("server: same key with a different body is 422 and changes nothing", () -> {
            PaymentServer s = server(k -> 0);
            try {
                eq(201, post(s.port(), "/payments", "\"key-2\"", payment(250, "r2")).statusCode(), "first");
                HttpResponse<String> res = post(s.port(), "/payments", "\"key-2\"", payment(999, "r2"));
                eq(422, res.statusCode(), "status");
                eq("application/problem+json", res.headers().firstValue("Content-Type").orElse(null), "content type");
                // Even a whitespace change is a different body: clients must resend the same bytes.
                eq(422, post(s.port(), "/payments", "\"key-2\"", payment(250, "r2").replace(":", ": ")).statusCode(),
                        "re-serialised body");
                eq(1L, number(get(s.port(), "/stats").body(), "payments"), "payments");
            } finally { s.stop(); }
        });

        r.test("server: duplicate while the original is in progress is 409, then replayed", () -> {
            PaymentServer s = server(k -> k.equals("slow") ? 600 : 0);
            ExecutorService pool = Executors.newSingleThreadExecutor();
            try {
                Future<HttpResponse<String>> original = pool.submit(() -> post(s.port(), "/payments", "\"slow\"", payment(5, "r3")));
                Thread.sleep(150);
                HttpResponse<String> dup = post(s.port(), "/payments", "\"slow\"", payment(5, "r3"));
                eq(409, dup.statusCode(), "status while in progress");
                HttpResponse<String> first = original.get();
                eq(201, first.statusCode(), "original");
                HttpResponse<String> later = post(s.port(), "/payments", "\"slow\"", payment(5, "r3"));
                eq(201, later.statusCode(), "after completion");
                eq(first.body(), later.body(), "same body");
                String stats = get(s.port(), "/stats").body();
                eq(1L, number(stats, "payments"), "payments");
                eq(1L, number(stats, "in_progress_409"), "409s");
            } finally { pool.shutdownNow(); s.stop(); }
        });

        r.test("server: an invalid payload is 400 and does not use up the key", () -> {
            PaymentServer s = server(k -> 0);
            try {
                eq(400, post(s.port(), "/payments", "\"key-4\"", "{\"amount\":-5}").statusCode(), "invalid");
                eq(201, post(s.port(), "/payments", "\"key-4\"", payment(5, "r4")).statusCode(), "corrected, same key: not 422");
            } finally { s.stop(); }
        });

        r.test("server: GET /payments/{id} returns what POST created; unknown id is 404", () -> {
            PaymentServer s = server(k -> 0);
            try {
                String created = post(s.port(), "/payments", "\"key-5\"", payment(777, "r5")).body();
                String id = TestHttp.string(created, "id");
                HttpResponse<String> got = get(s.port(), "/payments/" + id);
                eq(200, got.statusCode(), "status");
                eq("r5", TestHttp.string(got.body(), "reference"), "reference");
                eq(777L, number(got.body(), "amount"), "amount");
                eq(404, get(s.port(), "/payments/pay_999999").statusCode(), "unknown id");
            } finally { s.stop(); }
        });
    }
}
