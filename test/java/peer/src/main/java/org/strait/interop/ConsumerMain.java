package org.strait.interop;

import java.time.LocalTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.MethodConfig;
import org.apache.dubbo.config.ReferenceConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.rpc.RpcException;

/**
 * An EchoService consumer that finds its providers in a registry and runs a plan of checks,
 * printing one JSON line per check on stdout, {"check":..., "ok":true|false, "detail":...,
 * "ms":...}, and exiting 1 if any failed (2 on a usage error). Logs go to stderr.
 *
 * <pre>
 * java -cp java-peer.jar org.strait.interop.ConsumerMain \
 *   --registry=zookeeper://127.0.0.1:2181 | nacos://127.0.0.1:8848
 *   --protocol=tri | dubbo        (tri)
 *   --version=1.0.0 --group=g1    what to ask for (none)
 *   --discovery=interface | instance   migration step FORCE_INTERFACE | FORCE_APPLICATION (interface)
 *   --plan=checks,load:500        comma-separated steps: checks (all the checks below), one check by
 *                                 name (whoami, echo, echoPojo, fail, forbidden, missing, echoBytes,
 *                                 timeout, notify), load:N or load:N:Dms (checks)
 *   --egress=HOST:PORT            the egress gateway the missing check calls directly (required by
 *                                 checks and missing)
 *   --wait-ms=60000               how long the first call may wait for a provider to appear
 *   --timeout-ms=10000            timeout of every call but slow
 *   --concurrency=8               threads of load:N
 *   --application=NAME            (java-consumer)
 *   --parent-pid=PID              exit when that process is gone
 * </pre>
 *
 * The checks: discover (a first call answers), whoami (the provider that answered has the
 * version and group asked for), echo, echoPojo (a nested object round trip), fail (the
 * provider's InteropException comes back with its message), forbidden (hidden(), a method the
 * providers' domain does not export, is refused: an RpcException whose message says the caller
 * "may not call" it), missing (echo of org.strait.interop.Missing, a service nobody exports,
 * called through a direct URL to --egress, no registry: an RpcException whose message says
 * "unknown service"), echoBytes (1 MiB), timeout (slow(3000) with a 500 ms timeout fails as a
 * timeout, within 2.5 s), afterTimeout (the next call works), notify (calls configured one-way,
 * return=false, are all received: the provider's notified() count rises by as many). load:N
 * makes N echo calls from --concurrency threads, as fast as they go; load:N:Dms starts call i
 * D*i ms after the first (a steady rate, for a run that lasts N*D ms); either fails if any
 * call did, and reports each failure with the time it happened.
 */
public final class ConsumerMain {
    private static final int NOTIFICATIONS = 3;

    /** The plan's steps, besides load. */
    private static final Set<String> STEPS = Set.of(
            "checks", "whoami", "echo", "echoPojo", "fail", "forbidden", "missing", "echoBytes", "timeout", "notify");

    /** A load step: load:N, or load:N:Dms. */
    private static final Pattern LOAD = Pattern.compile("load:([0-9]+)(?::([0-9]+)ms)?");

    private static final DateTimeFormatter CLOCK = DateTimeFormatter.ofPattern("HH:mm:ss.SSS");

    private final EchoService echo;
    private final Missing missing; // null unless the plan calls it
    private final String version;
    private final String group;
    private boolean failed;

    private ConsumerMain(EchoService echo, Missing missing, String version, String group) {
        this.echo = echo;
        this.missing = missing;
        this.version = version;
        this.group = group;
    }

    public static void main(String[] argv) {
        Peer p;
        try {
            p = Peer.start(argv);
            p.need("registry");
        } catch (IllegalArgumentException e) {
            System.err.println("strait consumer: " + e.getMessage());
            System.exit(2);
            return;
        }
        String protocol = p.opt("protocol", "tri");
        String version = p.opt("version", "");
        String group = p.opt("group", "");
        String discovery = p.opt("discovery", "interface");
        String step;
        switch (discovery) {
            case "interface":
                step = "FORCE_INTERFACE";
                break;
            case "instance":
                step = "FORCE_APPLICATION";
                break;
            default:
                System.err.println("strait consumer: --discovery is interface or instance, not " + discovery);
                System.exit(2);
                return;
        }
        String[] plan = p.opt("plan", "checks").split(",");
        boolean callsMissing = false;
        for (String s : plan) {
            if (!STEPS.contains(s.trim()) && !LOAD.matcher(s.trim()).matches()) {
                System.err.println("strait consumer: unknown plan step " + s);
                System.exit(2);
                return;
            }
            callsMissing |= s.trim().equals("checks") || s.trim().equals("missing");
        }
        String egress = p.opt("egress", "");
        if (callsMissing && egress.isEmpty()) {
            System.err.println("strait consumer: the missing check (also in checks) needs --egress");
            System.exit(2);
            return;
        }
        System.setProperty("dubbo.application.migration.step", step);

        ApplicationConfig application = new ApplicationConfig(p.opt("application", "java-consumer"));
        application.setQosEnable(false);
        application.setEnableFileCache(false);
        application.setRegisterMode(discovery);

        RegistryConfig reg = new RegistryConfig(p.need("registry"));
        reg.setUseAsConfigCenter(false);

        ReferenceConfig<EchoService> ref = new ReferenceConfig<>();
        ref.setInterface(EchoService.class);
        ref.setProtocol(protocol);
        if (!version.isEmpty()) {
            ref.setVersion(version);
        }
        if (!group.isEmpty()) {
            ref.setGroup(group);
        }
        ref.setCheck(false);
        ref.setRetries(0);
        ref.setTimeout(p.intOpt("timeout-ms", 10000));
        MethodConfig slow = new MethodConfig();
        slow.setName("slow");
        slow.setTimeout(500);
        MethodConfig notify = new MethodConfig();
        notify.setName("notify");
        notify.setReturn(false);
        ref.setMethods(List.of(slow, notify));

        DubboBootstrap bootstrap = DubboBootstrap.getInstance()
                .application(application)
                .registry(reg)
                .reference(ref);
        // Missing, through a direct URL to the egress: the registry is not asked.
        ReferenceConfig<Missing> missingRef = null;
        if (callsMissing) {
            missingRef = new ReferenceConfig<>();
            missingRef.setInterface(Missing.class);
            missingRef.setUrl(protocol + "://" + egress + "/" + Missing.class.getName());
            missingRef.setCheck(false);
            missingRef.setRetries(0);
            missingRef.setTimeout(p.intOpt("timeout-ms", 10000));
            bootstrap.reference(missingRef);
        }
        bootstrap.start();

        ConsumerMain c = new ConsumerMain(ref.get(), missingRef == null ? null : missingRef.get(), version, group);
        if (c.discover(p.intOpt("wait-ms", 60000))) {
            for (String s : plan) {
                c.run(s.trim(), p.intOpt("concurrency", 8));
            }
        }
        int code = c.failed ? 1 : 0;
        stop(bootstrap);
        System.exit(code);
    }

    /** Stops Dubbo (deregisters the consumer), for at most 5 s. */
    private static void stop(DubboBootstrap bootstrap) {
        Thread t = new Thread(bootstrap::stop, "stop");
        t.setDaemon(true);
        t.start();
        try {
            t.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private void run(String step, int concurrency) {
        switch (step) {
            case "checks":
                whoami();
                echo();
                echoPojo();
                fail();
                forbidden();
                missing();
                echoBytes();
                timeout();
                afterTimeout();
                notifyOneway();
                break;
            case "whoami":
                whoami();
                break;
            case "echo":
                echo();
                break;
            case "echoPojo":
                echoPojo();
                break;
            case "fail":
                fail();
                break;
            case "forbidden":
                forbidden();
                break;
            case "missing":
                missing();
                break;
            case "echoBytes":
                echoBytes();
                break;
            case "timeout":
                timeout();
                afterTimeout();
                break;
            case "notify":
                notifyOneway();
                break;
            default:
                Matcher m = LOAD.matcher(step);
                if (!m.matches()) {
                    throw new IllegalArgumentException("unknown plan step " + step);
                }
                load(Integer.parseInt(m.group(1)), concurrency, m.group(2) == null ? 0 : Long.parseLong(m.group(2)));
        }
    }

    /**
     * Calls whoami until it answers: the registry may still be filling. While no provider is
     * known it tries for waitMs; once calls reach a provider but fail, for 10 s more at most.
     */
    private boolean discover(int waitMs) {
        long start = System.nanoTime();
        long deadline = start + TimeUnit.MILLISECONDS.toNanos(waitMs);
        String last = "";
        int tries = 0;
        while (true) {
            tries++;
            try {
                String who = echo.whoami();
                report("discover", true, "after " + tries + " tries: " + who, start);
                return true;
            } catch (RuntimeException e) {
                last = describe(e);
                if (!noProvider(e)) {
                    deadline = Math.min(deadline, System.nanoTime() + TimeUnit.SECONDS.toNanos(10));
                }
            }
            if (System.nanoTime() > deadline) {
                report("discover", false, "no answer after " + tries + " tries in "
                        + TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start) + " ms; last: " + last, start);
                return false;
            }
            try {
                Thread.sleep(200);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
        }
    }

    /** Reports whether e says that no provider is known (yet). */
    private static boolean noProvider(RuntimeException e) {
        if (!(e instanceof RpcException)) {
            return false;
        }
        int code = ((RpcException) e).getCode();
        return code == RpcException.FORBIDDEN_EXCEPTION
                || code == RpcException.NO_INVOKER_AVAILABLE_AFTER_FILTER
                || code == RpcException.ROUTER_CACHE_NOT_BUILD;
    }

    private void whoami() {
        long start = System.nanoTime();
        try {
            String who = echo.whoami();
            boolean ok = who.contains("version=" + version + ",") && who.contains("group=" + group + ",");
            report("whoami", ok, who, start);
        } catch (RuntimeException e) {
            report("whoami", false, describe(e), start);
        }
    }

    private void echo() {
        long start = System.nanoTime();
        String in = "hello from java, 你好 " + System.nanoTime();
        try {
            String out = echo.echo(in);
            report("echo", in.equals(out), "sent " + quoteShort(in) + ", got " + quoteShort(out), start);
        } catch (RuntimeException e) {
            report("echo", false, describe(e), start);
        }
    }

    private void echoPojo() {
        long start = System.nanoTime();
        Pojo in = Pojo.sample();
        try {
            Pojo out = echo.echoPojo(in);
            report("echoPojo", in.equals(out), "got " + out, start);
        } catch (RuntimeException e) {
            report("echoPojo", false, describe(e), start);
        }
    }

    private void fail() {
        long start = System.nanoTime();
        String msg = "expected failure ✗ " + System.nanoTime();
        try {
            String out = echo.fail(msg);
            report("fail", false, "no exception; returned " + quoteShort(out), start);
        } catch (InteropException e) {
            boolean ok = msg.equals(e.getMessage());
            report("fail", ok, e.getClass().getName() + ": " + e.getMessage(), start);
        } catch (RuntimeException e) {
            report("fail", false, "want " + InteropException.class.getName() + ", got " + describe(e), start);
        }
    }

    /** Calls hidden(), which the providers' domain does not export: the call is refused. */
    private void forbidden() {
        long start = System.nanoTime();
        try {
            String out = echo.hidden();
            report("forbidden", false, "hidden() returned " + quoteShort(out) + ", want a refusal", start);
        } catch (RpcException e) {
            String msg = String.valueOf(e.getMessage());
            report("forbidden", msg.contains("may not call"), describe(e, 1500), start);
        } catch (RuntimeException e) {
            report("forbidden", false, "want an RpcException, got " + describe(e, 1500), start);
        }
    }

    /** Calls Missing, a service nobody exports, at the egress: the egress does not know it. */
    private void missing() {
        long start = System.nanoTime();
        try {
            String out = missing.echo("anyone there?");
            report("missing", false, "Missing.echo returned " + quoteShort(out) + ", want a refusal", start);
        } catch (RpcException e) {
            String msg = String.valueOf(e.getMessage());
            report("missing", msg.contains("unknown service"), describe(e, 1500), start);
        } catch (RuntimeException e) {
            report("missing", false, "want an RpcException, got " + describe(e, 1500), start);
        }
    }

    private void echoBytes() {
        long start = System.nanoTime();
        byte[] in = new byte[1 << 20];
        new Random(42).nextBytes(in);
        try {
            byte[] out = echo.echoBytes(in);
            boolean ok = Arrays.equals(in, out);
            report("echoBytes", ok, "sent " + in.length + " bytes, got " + (out == null ? "null" : out.length + " bytes")
                    + (ok ? ", equal" : ", different"), start);
        } catch (RuntimeException e) {
            report("echoBytes", false, describe(e), start);
        }
    }

    private void timeout() {
        long start = System.nanoTime();
        try {
            String out = echo.slow(3000);
            report("timeout", false, "slow(3000) with a 500 ms timeout returned " + quoteShort(out), start);
        } catch (RpcException e) {
            long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            boolean ok = e.isTimeout() && ms < 2500;
            report("timeout", ok, "after " + ms + " ms: timeout=" + e.isTimeout() + " " + describe(e), start);
        } catch (RuntimeException e) {
            report("timeout", false, "want an RpcException, got " + describe(e), start);
        }
    }

    private void afterTimeout() {
        long start = System.nanoTime();
        try {
            String out = echo.echo("after timeout");
            report("afterTimeout", "after timeout".equals(out), "got " + quoteShort(out), start);
        } catch (RuntimeException e) {
            report("afterTimeout", false, describe(e), start);
        }
    }

    /** Sends NOTIFICATIONS one-way notifications and waits (5 s at most) for all to arrive. */
    private void notifyOneway() {
        long start = System.nanoTime();
        try {
            long before = echo.notified();
            for (int i = 0; i < NOTIFICATIONS; i++) {
                echo.notify("note " + i);
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            long now = before;
            while (now < before + NOTIFICATIONS && System.nanoTime() < deadline) {
                Thread.sleep(20);
                now = echo.notified();
            }
            report("notify", now == before + NOTIFICATIONS,
                    "notified() went from " + before + " to " + now + " after " + NOTIFICATIONS + " one-way calls", start);
        } catch (RuntimeException e) {
            report("notify", false, describe(e), start);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            report("notify", false, "interrupted", start);
        }
    }

    /**
     * Makes n echo calls from concurrency threads: as fast as they go if intervalMs is 0, else
     * call i starts i*intervalMs after the first. Fails if any call did; reports how many calls
     * each provider address answered and every failure with when it happened (also on stderr).
     */
    private void load(int n, int concurrency, long intervalMs) {
        long start = System.nanoTime();
        long interval = TimeUnit.MILLISECONDS.toNanos(intervalMs);
        AtomicInteger next = new AtomicInteger();
        AtomicInteger failures = new AtomicInteger();
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        Map<String, AtomicLong> byAddress = new ConcurrentHashMap<>();
        long[] nanos = new long[n];
        ExecutorService pool = Executors.newFixedThreadPool(concurrency);
        List<Future<?>> workers = new ArrayList<>();
        for (int w = 0; w < concurrency; w++) {
            workers.add(pool.submit(() -> {
                for (int i = next.getAndIncrement(); i < n; i = next.getAndIncrement()) {
                    // Pacing, not waiting for a condition: call i is due at start + i*interval.
                    for (long due = start + i * interval, d; (d = due - System.nanoTime()) > 0; ) {
                        LockSupport.parkNanos(d);
                    }
                    String in = "load " + i;
                    long t0 = System.nanoTime();
                    AddressFilter.clear();
                    try {
                        if (!in.equals(echo.echo(in))) {
                            throw new IllegalStateException("wrong answer to " + in);
                        }
                        byAddress.computeIfAbsent(AddressFilter.last(), k -> new AtomicLong()).incrementAndGet();
                    } catch (RuntimeException e) {
                        failures.incrementAndGet();
                        String what = String.format("call %d at +%d ms (%s) to %s: %s", i,
                                TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start), LocalTime.now().format(CLOCK),
                                AddressFilter.last(), describe(e));
                        System.err.println("strait consumer: load: " + what);
                        if (errors.size() < 10) {
                            errors.add(what);
                        }
                    }
                    nanos[i] = System.nanoTime() - t0;
                }
            }));
        }
        for (Future<?> f : workers) {
            try {
                f.get();
            } catch (Exception e) {
                failures.incrementAndGet();
                errors.add(e.toString());
            }
        }
        pool.shutdown();
        long took = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        Arrays.sort(nanos);
        Map<String, Long> answered = new TreeMap<>();
        byAddress.forEach((k, v) -> answered.put(k, v.get()));
        String detail = String.format("%d calls from %d threads%s in %d ms, %d failures, p50 %.2f ms, p99 %.2f ms, max %.2f ms, answered by %s%s",
                n, concurrency, intervalMs > 0 ? ", one every " + intervalMs + " ms," : "", took, failures.get(),
                pct(nanos, 0.50), pct(nanos, 0.99), pct(nanos, 1.0), answered,
                errors.isEmpty() ? "" : "; first errors: " + errors);
        report("load", failures.get() == 0, detail, start);
    }

    private static double pct(long[] sorted, double q) {
        if (sorted.length == 0) {
            return 0;
        }
        int i = (int) Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
        return sorted[Math.max(0, i)] / 1e6;
    }

    private static String describe(Throwable e) {
        return describe(e, 600);
    }

    /**
     * The exception's class (or RpcException code) and message, cut at limit characters, and
     * its root cause's (Dubbo's messages end with the cause, after a long URL).
     */
    private static String describe(Throwable e, int limit) {
        String s = e.getClass().getName() + ": " + e.getMessage();
        if (e instanceof RpcException) {
            s = "RpcException(code " + ((RpcException) e).getCode() + "): " + e.getMessage();
        }
        if (s.length() > limit) {
            s = s.substring(0, limit) + "…";
        }
        Throwable root = e;
        for (int i = 0; i < 16 && root.getCause() != null && root.getCause() != root; i++) {
            root = root.getCause();
        }
        if (root != e) {
            String m = root.getClass().getName() + ": " + root.getMessage();
            s += " [root cause " + (m.length() > 400 ? m.substring(0, 400) + "…" : m) + "]";
        }
        return s;
    }

    private static String quoteShort(String s) {
        if (s == null) {
            return "null";
        }
        return "\"" + (s.length() > 80 ? s.substring(0, 80) + "…" : s) + "\"";
    }

    private void report(String check, boolean ok, String detail, long startNanos) {
        if (!ok) {
            failed = true;
        }
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos);
        System.out.println("{\"check\":" + json(check) + ",\"ok\":" + ok + ",\"detail\":" + json(detail)
                + ",\"ms\":" + ms + "}");
        System.out.flush();
    }

    /** s as a JSON string. */
    static String json(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"':
                    b.append("\\\"");
                    break;
                case '\\':
                    b.append("\\\\");
                    break;
                case '\n':
                    b.append("\\n");
                    break;
                case '\r':
                    b.append("\\r");
                    break;
                case '\t':
                    b.append("\\t");
                    break;
                default:
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        return b.append('"').toString();
    }
}
