package dev.kongretry.example;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A small HTTP/1.1 fault proxy between the client and the server, on plain sockets.
 *
 * <p>It reads one request per connection, asks the {@link Schedule} what to do with it, and
 * then forwards it (over a fresh connection to the server), breaks it, or answers itself.
 * The schedule is keyed by (idempotency key, how many times the proxy has seen that key), so
 * the same seed injects the same faults into the same operations whatever the thread timing.
 *
 * <p>Every exchange ends with {@code Connection: close}: each client attempt then opens a new
 * connection, which is what makes "connection refused" reachable at all (a pooled, already
 * open connection is never refused).
 */
final class FaultProxy implements AutoCloseable {

    enum Fault {
        /** Forward, relay the response. */
        NONE,
        /** Reset this connection unprocessed, then close the listening port for a moment:
         *  the attempts that follow are refused (ECONNREFUSED) until it reopens. */
        REFUSE,
        /** The request never reaches the server: read it, then reset (RST) the client. */
        RESET_BEFORE,
        /** The server processes the request; its response is dropped and the client reset. */
        RESET_AFTER,
        /** The server processes the request; the response is held beyond the client's timeout. */
        SLOW,
        /** A draining gateway pod: 503 with {@code Retry-After: 1} (seconds form). */
        STATUS_503,
        /** Rate limited: 429 with {@code Retry-After} as an HTTP-date about a second ahead. */
        STATUS_429,
        /** No healthy upstream: 502, no Retry-After. */
        STATUS_502,
        /** Upstream timed out at the gateway: 504, no Retry-After. */
        STATUS_504
    }

    interface Schedule {
        /** @param attempt 1 for the first time the proxy sees this key, 2 for the second, ... */
        Fault faultFor(String idempotencyKey, int attempt);
    }

    private final int targetPort;
    private final Schedule schedule;
    private final Duration slowDelay;
    private final Duration refuseWindow;
    private final int port;
    private final ExecutorService pool = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r, "fault-proxy");
        t.setDaemon(true);
        return t;
    });
    private final Map<String, AtomicInteger> seen = new ConcurrentHashMap<>();
    private final Map<Fault, AtomicInteger> injected = new EnumMap<>(Fault.class);
    private final Object listenerLock = new Object();
    private volatile ServerSocket listener;
    private volatile boolean running = true;

    FaultProxy(int targetPort, Schedule schedule, Duration slowDelay, Duration refuseWindow) throws IOException {
        this.targetPort = targetPort;
        this.schedule = schedule;
        this.slowDelay = slowDelay;
        this.refuseWindow = refuseWindow;
        for (Fault f : Fault.values()) injected.put(f, new AtomicInteger());
        // Below the usual ephemeral range (32768+), so that while the port is closed for a
        // REFUSE window the kernel does not hand it out as the source port of some connection.
        Random r = new Random();
        ServerSocket s = null;
        for (int i = 0; s == null; i++) {
            try {
                s = bind(20000 + r.nextInt(12000));
            } catch (BindException e) {
                if (i > 50) throw e;
            }
        }
        this.listener = s;
        this.port = s.getLocalPort();
        Thread acceptor = new Thread(this::acceptLoop, "fault-proxy-accept");
        acceptor.setDaemon(true);
        acceptor.start();
    }

    int port() { return port; }

    /** How many times each fault was applied to a request (REFUSE counts the triggers). */
    Map<Fault, Integer> injected() {
        Map<Fault, Integer> m = new EnumMap<>(Fault.class);
        injected.forEach((f, n) -> m.put(f, n.get()));
        return m;
    }

    @Override
    public void close() throws IOException {
        running = false;
        synchronized (listenerLock) {
            if (listener != null) listener.close();
        }
        pool.shutdownNow();
    }

    private static ServerSocket bind(int port) throws IOException {
        ServerSocket s = new ServerSocket();
        s.setReuseAddress(true);
        try {
            s.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 256);
        } catch (IOException e) {
            s.close();
            throw e;
        }
        return s;
    }

    private void acceptLoop() {
        while (running) {
            ServerSocket l = listener;
            try {
                if (l == null || l.isClosed()) {
                    Thread.sleep(2); // inside a REFUSE window
                    continue;
                }
                Socket client = l.accept();
                pool.execute(() -> handle(client));
            } catch (IOException e) {
                // the listener was closed for a REFUSE window, or for good: loop and look again
            } catch (InterruptedException e) {
                return;
            }
        }
    }

    /** Closes the listening port now and reopens it after the window. */
    private void refuseForAWhile() {
        synchronized (listenerLock) {
            if (listener == null || !running) return; // a window is already open
            try {
                listener.close();
            } catch (IOException ignored) {
                // closed is closed
            }
            listener = null;
        }
        pool.execute(() -> {
            try {
                Thread.sleep(refuseWindow.toMillis());
                for (int i = 0; ; i++) {
                    try {
                        ServerSocket s = bind(port);
                        synchronized (listenerLock) {
                            if (!running) { s.close(); return; }
                            listener = s;
                        }
                        return;
                    } catch (BindException e) {
                        if (i > 200) throw e; // ~2 s: give up, the test will fail loudly
                        Thread.sleep(10);
                    }
                }
            } catch (IOException | InterruptedException e) {
                System.err.println("fault proxy could not reopen port " + port + ": " + e);
            }
        });
    }

    private void handle(Socket client) {
        try (client) {
            client.setSoTimeout(10_000);
            InputStream in = new BufferedInputStream(client.getInputStream());
            Message request = Message.read(in, true);
            if (request == null) return; // the client gave up before sending a request
            String key = request.header("Idempotency-Key");
            Fault fault = Fault.NONE;
            if (key != null) {
                int attempt = seen.computeIfAbsent(key, k -> new AtomicInteger()).incrementAndGet();
                fault = schedule.faultFor(key, attempt);
            }
            injected.get(fault).incrementAndGet();
            OutputStream out = client.getOutputStream();
            switch (fault) {
                case NONE -> out.write(forward(request).bytes());
                case REFUSE -> { reset(client); refuseForAWhile(); }
                case RESET_BEFORE -> reset(client);
                case RESET_AFTER -> { forward(request); reset(client); }
                case SLOW -> {
                    byte[] response = forward(request).bytes();
                    Thread.sleep(slowDelay.toMillis());
                    out.write(response); // usually fails: the client has timed out and left
                }
                case STATUS_503 -> out.write(synthetic(503, "Service Unavailable", "Retry-After: 1"));
                case STATUS_429 -> out.write(synthetic(429, "Too Many Requests",
                        "Retry-After: " + RetryAfter.httpDate(Instant.now().plusSeconds(1))));
                case STATUS_502 -> out.write(synthetic(502, "Bad Gateway", null));
                case STATUS_504 -> out.write(synthetic(504, "Gateway Timeout", null));
            }
            out.flush();
        } catch (IOException | InterruptedException e) {
            // The client left (timeout) or we reset it on purpose: nothing to do.
        }
    }

    /** RST instead of FIN: SO_LINGER 0 then close. The client sees "connection reset". */
    private static void reset(Socket s) throws IOException {
        s.setSoLinger(true, 0);
        s.close();
    }

    private Message forward(Message request) throws IOException {
        try (Socket upstream = new Socket(InetAddress.getLoopbackAddress(), targetPort)) {
            upstream.setSoTimeout(10_000);
            upstream.getOutputStream().write(request.withConnectionClose().bytes());
            upstream.getOutputStream().flush();
            Message response = Message.read(new BufferedInputStream(upstream.getInputStream()), false);
            if (response == null) throw new IOException("server closed without a response");
            return response.withConnectionClose();
        }
    }

    private static byte[] synthetic(int status, String reason, String extraHeader) {
        String body = status + " " + reason + " (injected by FaultProxy)\n";
        String head = "HTTP/1.1 " + status + " " + reason + "\r\n"
                + "Content-Type: text/plain\r\n"
                + "Content-Length: " + body.length() + "\r\n"
                + (extraHeader == null ? "" : extraHeader + "\r\n")
                + "Connection: close\r\n\r\n";
        return (head + body).getBytes(StandardCharsets.ISO_8859_1);
    }

    /** Just enough HTTP/1.1 framing for this test: head, then a Content-Length body. */
    record Message(String startLine, List<String[]> headers, byte[] body) {

        /** Null on a clean EOF before the first byte. */
        static Message read(InputStream in, boolean isRequest) throws IOException {
            ByteArrayOutputStream head = new ByteArrayOutputStream();
            int matched = 0;
            while (matched < 4) {
                int b = in.read();
                if (b < 0) {
                    if (head.size() == 0) return null;
                    throw new IOException("EOF inside the message head");
                }
                head.write(b);
                matched = (b == (matched % 2 == 0 ? '\r' : '\n')) ? matched + 1 : (b == '\r' ? 1 : 0);
            }
            String[] lines = head.toString(StandardCharsets.ISO_8859_1).split("\r\n");
            List<String[]> headers = new ArrayList<>();
            for (int i = 1; i < lines.length; i++) {
                int colon = lines[i].indexOf(':');
                if (colon > 0) headers.add(new String[]{lines[i].substring(0, colon).trim(), lines[i].substring(colon + 1).trim()});
            }
            Message m = new Message(lines[0], headers, new byte[0]);
            if (m.header("Transfer-Encoding") != null) throw new IOException("chunked bodies are not supported here");
            String length = m.header("Content-Length");
            byte[] body;
            if (length != null) {
                int n = Integer.parseInt(length);
                body = in.readNBytes(n);
                if (body.length != n) throw new IOException("EOF inside the body");
            } else {
                body = isRequest ? new byte[0] : in.readAllBytes(); // response without length: until close
            }
            return new Message(lines[0], headers, body);
        }

        String header(String name) {
            for (String[] h : headers) if (h[0].equalsIgnoreCase(name)) return h[1];
            return null;
        }

        Message withConnectionClose() {
            List<String[]> hs = new ArrayList<>();
            for (String[] h : headers) if (!h[0].equalsIgnoreCase("Connection")) hs.add(h);
            hs.add(new String[]{"Connection", "close"});
            return new Message(startLine, hs, body);
        }

        byte[] bytes() {
            StringBuilder sb = new StringBuilder(startLine).append("\r\n");
            for (String[] h : headers) sb.append(h[0]).append(": ").append(h[1]).append("\r\n");
            sb.append("\r\n");
            byte[] head = sb.toString().getBytes(StandardCharsets.ISO_8859_1);
            byte[] all = new byte[head.length + body.length];
            System.arraycopy(head, 0, all, 0, head.length);
            System.arraycopy(body, 0, all, head.length, body.length);
            return all;
        }
    }
}
