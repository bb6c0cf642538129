package org.strait.interop;

import java.lang.reflect.Field;
import java.net.InetAddress;
import java.util.HashMap;
import java.util.Map;

/**
 * What the provider and the consumer share: their options, logging defaults, staying on
 * loopback, and ending with the process that started them.
 *
 * <p>Options are {@code --name=value} arguments; an option not given is read from the system
 * property {@code strait.<name>}, else it takes its default.
 */
final class Peer {
    private final Map<String, String> args = new HashMap<>();

    private Peer() {}

    /** Parses --name=value arguments and applies the settings every peer needs. */
    static Peer start(String[] argv) {
        Peer p = new Peer();
        for (String a : argv) {
            if (!a.startsWith("--") || !a.contains("=")) {
                throw new IllegalArgumentException("argument " + a + ": want --name=value");
            }
            int eq = a.indexOf('=');
            p.args.put(a.substring(2, eq), a.substring(eq + 1));
        }
        setDefault("org.slf4j.simpleLogger.defaultLogLevel", p.opt("log-level", "warn"));
        setDefault("org.slf4j.simpleLogger.logFile", "System.err");
        setDefault("org.slf4j.simpleLogger.showDateTime", "true");
        setDefault("org.slf4j.simpleLogger.dateTimeFormat", "HH:mm:ss.SSS");
        // The Nacos client logs through SLF4J instead of configuring a logback/log4j2 of its own.
        setDefault("nacos.logging.default.config.enabled", "false");
        String parent = p.opt("parent-pid", "");
        if (!parent.isEmpty()) {
            watchParent(Long.parseLong(parent));
        }
        pinLoopback();
        return p;
    }

    /** The option's value, or def. */
    String opt(String name, String def) {
        String v = args.get(name);
        if (v == null) {
            v = System.getProperty("strait." + name);
        }
        return v == null ? def : v;
    }

    /** The option's value; it must be set. */
    String need(String name) {
        String v = opt(name, null);
        if (v == null || v.isEmpty()) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return v;
    }

    int intOpt(String name, int def) {
        return Integer.parseInt(opt(name, Integer.toString(def)));
    }

    private static void setDefault(String key, String value) {
        if (System.getProperty(key) == null) {
            System.setProperty(key, value);
        }
    }

    /** Ends this JVM at once when the process with the given pid (the test) is gone. */
    private static void watchParent(long pid) {
        ProcessHandle.of(pid).ifPresentOrElse(
                h -> h.onExit().thenRun(() -> {
                    System.err.println("strait peer: parent process " + pid + " is gone; exiting");
                    Runtime.getRuntime().halt(3);
                }),
                () -> {
                    System.err.println("strait peer: parent process " + pid + " is gone; exiting");
                    Runtime.getRuntime().halt(3);
                });
    }

    /**
     * Makes Dubbo take 127.0.0.1 as this host's address. Dubbo 3.3 refuses loopback on purpose:
     * NetUtils.getLocalHost skips loopback interfaces, a protocol host of 127.x counts as "any
     * host" (the host's first interface address is registered instead) and DUBBO_IP_TO_REGISTRY
     * or DUBBO_IP_TO_BIND set to 127.x are rejected. NetUtils caches the address it found in two
     * fields; they are set here before anything asks. (A provider also needs
     * LoopbackConfiguratorFactory for the address it binds.)
     */
    private static void pinLoopback() {
        try {
            Class<?> c = Class.forName("org.apache.dubbo.common.utils.NetUtils");
            set(c, "LOCAL_ADDRESS", InetAddress.getByName("127.0.0.1"));
            set(c, "HOST_ADDRESS", "127.0.0.1");
        } catch (ReflectiveOperationException | java.net.UnknownHostException e) {
            throw new IllegalStateException("cannot pin Dubbo's local address to 127.0.0.1", e);
        }
    }

    private static void set(Class<?> c, String field, Object value) throws ReflectiveOperationException {
        Field f = c.getDeclaredField(field);
        f.setAccessible(true);
        f.set(null, value);
    }
}
