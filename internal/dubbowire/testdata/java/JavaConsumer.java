package dubbowire;

import java.lang.reflect.Field;
import java.net.InetAddress;

import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ReferenceConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.strait.interop.EchoService;

/**
 * A Java Apache Dubbo consumer for internal/dubbowire's tests: it calls EchoService.echo
 * ("hello") once, version 1.0.0 and group g1, at the direct URL it is given (no registry),
 * prints one line on stdout, "RESULT ok ANSWER" or "RESULT err MESSAGE", and exits. It is
 * compiled against test/java's peer jar (Dubbo and the EchoService interface).
 *
 * <pre>
 * java -cp java-peer.jar:DIR dubbowire.JavaConsumer dubbo://127.0.0.1:PORT/org.strait.interop.EchoService[?params]
 * </pre>
 */
public final class JavaConsumer {
    private JavaConsumer() {}

    public static void main(String[] args) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        pinLoopback();

        ApplicationConfig app = new ApplicationConfig("dubbowire-java-consumer");
        app.setQosEnable(false);
        app.setEnableFileCache(false);
        ReferenceConfig<EchoService> ref = new ReferenceConfig<>();
        ref.setInterface(EchoService.class);
        ref.setUrl(args[0]);
        ref.setVersion("1.0.0");
        ref.setGroup("g1");
        ref.setTimeout(10000);
        ref.setRetries(0);
        ref.setCheck(false);
        DubboBootstrap.getInstance().application(app).reference(ref).start();

        String line;
        try {
            line = "RESULT ok " + ref.get().echo("hello");
        } catch (RuntimeException e) {
            line = "RESULT err " + String.valueOf(e.getMessage()).replace('\n', ' ');
        }
        System.out.println(line);
        System.out.flush();
        Runtime.getRuntime().halt(0); // Dubbo's shutdown hooks take seconds
    }

    /**
     * Makes Dubbo take 127.0.0.1 as this host's address, as test/java's peers do: Dubbo 3.3
     * otherwise replaces a 127.x address with the host's first interface address.
     */
    private static void pinLoopback() throws Exception {
        Class<?> c = Class.forName("org.apache.dubbo.common.utils.NetUtils");
        set(c, "LOCAL_ADDRESS", InetAddress.getByName("127.0.0.1"));
        set(c, "HOST_ADDRESS", "127.0.0.1");
    }

    private static void set(Class<?> c, String field, Object value) throws ReflectiveOperationException {
        Field f = c.getDeclaredField(field);
        f.setAccessible(true);
        f.set(null, value);
    }
}
