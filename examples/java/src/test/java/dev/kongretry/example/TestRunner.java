package dev.kongretry.example;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * A plain test runner, JDK only: runs every registered test, prints one line per test and,
 * last, exactly {@code N passed, N failed}. Exit status 1 if anything failed.
 *
 * <p>{@code TestRunner [name-filter]} runs only the tests whose name contains the filter.
 */
public final class TestRunner {

    @FunctionalInterface
    interface Body {
        void run() throws Exception;
    }

    private record Test(String name, Body body) {}

    private final List<Test> tests = new ArrayList<>();

    void test(String name, Body body) {
        tests.add(new Test(name, body));
    }

    // ---- assertions -------------------------------------------------------------------

    static void check(boolean condition, String message) {
        if (!condition) throw new AssertionError(message);
    }

    static void eq(Object expected, Object actual, String what) {
        if (!Objects.equals(expected, actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    static <T> T as(Class<T> type, Object value, String what) {
        if (!type.isInstance(value)) {
            throw new AssertionError(what + ": expected a " + type.getSimpleName() + " but was " + value);
        }
        return type.cast(value);
    }

    // ---- main -------------------------------------------------------------------------

    public static void main(String[] args) {
        TestRunner runner = new TestRunner();
        RetryAfterTests.register(runner);
        RetryPolicyTests.register(runner);
        StoreAndServerTests.register(runner);
        ClientTests.register(runner);
        FaultInjectionTests.register(runner);

        String filter = args.length > 0 ? args[0] : "";
        int passed = 0, failed = 0;
        long start = System.nanoTime();
        for (Test t : runner.tests) {
            if (!t.name().contains(filter)) continue;
            long t0 = System.nanoTime();
            try {
                t.body().run();
                passed++;
                System.out.printf("ok    %-72s %6d ms%n", t.name(), (System.nanoTime() - t0) / 1_000_000);
            } catch (Throwable e) {
                failed++;
                System.out.printf("FAIL  %-72s %6d ms%n      %s%n", t.name(), (System.nanoTime() - t0) / 1_000_000, e);
                if (!(e instanceof AssertionError)) e.printStackTrace(System.out);
            }
        }
        System.out.printf("total %d ms%n", (System.nanoTime() - start) / 1_000_000);
        System.out.println(passed + " passed, " + failed + " failed");
        System.out.flush();
        System.exit(failed == 0 && passed > 0 ? 0 : 1);
    }
}
