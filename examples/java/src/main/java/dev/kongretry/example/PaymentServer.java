package dev.kongretry.example;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.ToLongFunction;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A tiny payment service that honours {@code Idempotency-Key} the way
 * draft-ietf-httpapi-idempotency-key-header describes it:
 * <ul>
 *   <li>{@code POST /payments} without a key: 400. Creating money movements without a key
 *       would make every client retry a gamble.</li>
 *   <li>First request with a key: do the work, <b>store the response before sending it</b>
 *       (if the connection dies on the way back, the retry finds the result), send it.</li>
 *   <li>Same key and same body again, work done: the stored response, same status and body,
 *       plus {@code Idempotent-Replayed: true}. Nothing happens twice.</li>
 *   <li>Same key while the first request is still being worked on: 409, retry later.</li>
 *   <li>Same key, different body: 422; the client reused a key for another operation.</li>
 * </ul>
 * Endpoints: {@code POST /payments}, {@code GET /payments/{id}}, {@code GET /stats} (how many
 * times each operation, identified by its {@code reference}, took effect; the tests read it).
 *
 * <p>Run: {@code PaymentServer [port] [bind-address]}; port 0 picks a free one. Prints
 * {@code listening on PORT} on stdout once it accepts connections.
 */
public final class PaymentServer {

    record Payment(String id, long amount, String currency, String reference) {
        String json() {
            return String.format("{\"id\":\"%s\",\"amount\":%d,\"currency\":\"%s\",\"reference\":\"%s\",\"status\":\"created\"}",
                    id, amount, currency, reference);
        }
    }

    // A real service would use a JSON library; these patterns keep the example JDK-only.
    private static final Pattern AMOUNT = Pattern.compile("\"amount\"\\s*:\\s*(\\d{1,12})\\s*[,}]");
    private static final Pattern CURRENCY = Pattern.compile("\"currency\"\\s*:\\s*\"([A-Z]{3})\"");
    private static final Pattern REFERENCE = Pattern.compile("\"reference\"\\s*:\\s*\"([A-Za-z0-9._-]{1,64})\"");
    /** Visible ASCII, 1 to 255 characters (after removing the Structured Field quotes). */
    private static final Pattern KEY = Pattern.compile("[\\x21-\\x7e]{1,255}");
    private static final int MAX_BODY = 64 * 1024;

    private final HttpServer server;
    private final ExecutorService executor;
    private final IdempotencyStore store;
    private final ToLongFunction<String> simulatedWorkMillis;

    private final Map<String, Payment> payments = new ConcurrentHashMap<>();
    private final Map<String, AtomicInteger> effectsByReference = new ConcurrentHashMap<>();
    private final AtomicLong nextId = new AtomicLong();
    private final AtomicInteger replays = new AtomicInteger();
    private final AtomicInteger inProgress = new AtomicInteger();
    private final AtomicInteger mismatches = new AtomicInteger();
    private final AtomicInteger missingKeys = new AtomicInteger();

    /**
     * @param simulatedWorkMillis how long "the work" takes for a given key, in ms (0 = instant).
     *                            Lets tests keep a request in progress to provoke 409s.
     */
    public PaymentServer(InetSocketAddress address, IdempotencyStore store, ToLongFunction<String> simulatedWorkMillis)
            throws IOException {
        this.store = store;
        this.simulatedWorkMillis = simulatedWorkMillis;
        this.server = HttpServer.create(address, 128);
        this.executor = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "payment-server");
            t.setDaemon(true);
            return t;
        });
        server.setExecutor(executor);
        server.createContext("/payments", this::handlePayments);
        server.createContext("/stats", this::handleStats);
    }

    /** Listens on 127.0.0.1:{@code port}, keys kept for 24 h, no simulated work. */
    public PaymentServer(int port) throws IOException {
        this(new InetSocketAddress("127.0.0.1", port), new IdempotencyStore(), key -> 0);
    }

    public PaymentServer start() { server.start(); return this; }

    public int port() { return server.getAddress().getPort(); }

    public void stop() {
        server.stop(0);
        executor.shutdownNow();
    }

    private void handlePayments(HttpExchange ex) throws IOException {
        try {
            String path = ex.getRequestURI().getPath();
            if ("POST".equals(ex.getRequestMethod()) && path.equals("/payments")) {
                createPayment(ex);
            } else if ("GET".equals(ex.getRequestMethod()) && path.startsWith("/payments/")) {
                Payment p = payments.get(path.substring("/payments/".length()));
                if (p == null) problem(ex, 404, "Not Found", "no such payment");
                else send(ex, 200, "application/json", p.json().getBytes(StandardCharsets.UTF_8), Map.of());
            } else {
                problem(ex, 404, "Not Found", "try POST /payments or GET /payments/{id}");
            }
        } catch (IOException e) {
            // The client went away (reset, timeout). Whatever was stored stays stored.
        } finally {
            ex.close();
        }
    }

    private void createPayment(HttpExchange ex) throws IOException {
        String key = parseKey(ex.getRequestHeaders().getFirst("Idempotency-Key"));
        if (key == null) {
            missingKeys.incrementAndGet();
            problem(ex, 400, "Idempotency-Key required",
                    "POST /payments needs an Idempotency-Key header (1-255 visible ASCII characters, e.g. a UUID)");
            return;
        }
        byte[] body = readBody(ex.getRequestBody());
        if (body == null) {
            problem(ex, 413, "Payload Too Large", "at most " + MAX_BODY + " bytes");
            return;
        }
        // Validate before claiming the key: a malformed request has no effect and leaves no
        // record, so the client can correct it (with a new key, since the body changes).
        String text = new String(body, StandardCharsets.UTF_8);
        Matcher amount = AMOUNT.matcher(text), currency = CURRENCY.matcher(text), reference = REFERENCE.matcher(text);
        if (!amount.find() || !currency.find() || !reference.find() || Long.parseLong(amount.group(1)) <= 0) {
            problem(ex, 400, "Invalid payment",
                    "need {\"amount\": positive integer (minor units), \"currency\": \"EUR\", \"reference\": \"[A-Za-z0-9._-]{1,64}\"}");
            return;
        }

        IdempotencyStore.Claim claim = store.begin(key, IdempotencyStore.fingerprint("POST", "/payments", body));
        switch (claim.decision()) {
            case MISMATCH -> {
                mismatches.incrementAndGet();
                problem(ex, 422, "Idempotency-Key reused",
                        "this key was already used with a different request body; use a new key for a new operation");
            }
            case IN_PROGRESS -> {
                inProgress.incrementAndGet();
                problem(ex, 409, "Request in progress",
                        "a request with this key is still being processed; retry later with the same key and body");
            }
            case REPLAY -> {
                replays.incrementAndGet();
                IdempotencyStore.StoredResponse r = claim.stored();
                Map<String, String> headers = new TreeMap<>(r.headers());
                headers.put("Idempotent-Replayed", "true");
                send(ex, r.status(), r.contentType(), r.body(), headers);
            }
            case EXECUTE -> {
                IdempotencyStore.StoredResponse response;
                try {
                    response = execute(key, Long.parseLong(amount.group(1)), currency.group(1), reference.group(1));
                } catch (RuntimeException | InterruptedException e) {
                    // Nothing took effect (execute() commits last), so the key may be reused.
                    store.abandon(key);
                    if (e instanceof InterruptedException) Thread.currentThread().interrupt();
                    problem(ex, 500, "Internal Server Error", "payment not created; retrying is safe");
                    return;
                }
                // Stored first, sent second: if this send fails, the retry gets the stored copy.
                store.complete(key, response);
                send(ex, response.status(), response.contentType(), response.body(), response.headers());
            }
        }
    }

    /**
     * The business operation. In a real service, the payment insert and the key's result
     * would be committed in one database transaction; here "commit" is the map insert.
     */
    private IdempotencyStore.StoredResponse execute(String key, long amount, String currency, String reference)
            throws InterruptedException {
        long work = simulatedWorkMillis.applyAsLong(key);
        if (work > 0) Thread.sleep(work);
        Payment p = new Payment(String.format("pay_%06d", nextId.incrementAndGet()), amount, currency, reference);
        payments.put(p.id(), p);
        effectsByReference.computeIfAbsent(reference, r -> new AtomicInteger()).incrementAndGet();
        return new IdempotencyStore.StoredResponse(201, "application/json",
                p.json().getBytes(StandardCharsets.UTF_8), Map.of("Location", "/payments/" + p.id()));
    }

    private void handleStats(HttpExchange ex) throws IOException {
        try {
            StringBuilder effects = new StringBuilder();
            new TreeMap<>(effectsByReference).forEach((ref, n) ->
                    effects.append(effects.length() == 0 ? "" : ",").append('"').append(ref).append("\":").append(n.get()));
            String json = String.format("{\"payments\":%d,\"replays\":%d,\"in_progress_409\":%d,\"mismatch_422\":%d,"
                            + "\"missing_key_400\":%d,\"key_ttl_seconds\":%d,\"effects\":{%s}}",
                    payments.size(), replays.get(), inProgress.get(), mismatches.get(), missingKeys.get(),
                    store.ttl().toSeconds(), effects);
            send(ex, 200, "application/json", json.getBytes(StandardCharsets.UTF_8), Map.of());
        } catch (IOException ignored) {
            // client gone
        } finally {
            ex.close();
        }
    }

    /** Accepts the draft's quoted form ("...") and the common bare form. Null when invalid. */
    static String parseKey(String header) {
        if (header == null) return null;
        String v = header.trim();
        if (v.length() >= 2 && v.startsWith("\"") && v.endsWith("\"")) v = v.substring(1, v.length() - 1);
        return KEY.matcher(v).matches() ? v : null;
    }

    private static byte[] readBody(InputStream in) throws IOException {
        byte[] body = in.readNBytes(MAX_BODY + 1);
        return body.length > MAX_BODY ? null : body;
    }

    private static void problem(HttpExchange ex, int status, String title, String detail) throws IOException {
        String json = String.format("{\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"}",
                title, status, detail.replace("\\", "\\\\").replace("\"", "\\\""));
        send(ex, status, "application/problem+json", json.getBytes(StandardCharsets.UTF_8), Map.of());
    }

    private static void send(HttpExchange ex, int status, String contentType, byte[] body,
                             Map<String, String> headers) throws IOException {
        ex.getResponseHeaders().set("Content-Type", contentType);
        headers.forEach((k, v) -> ex.getResponseHeaders().set(k, v));
        ex.sendResponseHeaders(status, body.length == 0 ? -1 : body.length);
        ex.getResponseBody().write(body);
    }

    /** {@code PaymentServer [port] [bind-address]}: port 0 = any free port; address default 127.0.0.1. */
    public static void main(String[] args) throws IOException {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 8080;
        String host = args.length > 1 ? args[1] : "127.0.0.1";
        PaymentServer s = new PaymentServer(new InetSocketAddress(host, port), new IdempotencyStore(), key -> 0).start();
        System.out.println("listening on " + s.port());
        System.out.flush();
    }
}
