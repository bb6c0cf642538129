package org.strait.interop;

import java.util.concurrent.atomic.AtomicLong;

/** The provider's EchoService. */
public final class EchoServiceImpl implements EchoService {
    private final String identity;
    private final AtomicLong notifications = new AtomicLong();

    EchoServiceImpl(String version, String group, int port, String application, String protocol) {
        this.identity = "version=" + version + ",group=" + group + ",port=" + port + ",application=" + application
                + ",protocol=" + protocol;
    }

    @Override
    public String echo(String s) {
        return s;
    }

    @Override
    public Pojo echoPojo(Pojo p) {
        return p;
    }

    @Override
    public byte[] echoBytes(byte[] b) {
        return b;
    }

    @Override
    public String fail(String msg) throws InteropException {
        throw new InteropException(msg);
    }

    @Override
    public String slow(int millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "interrupted";
        }
        return "slept " + millis;
    }

    @Override
    public String whoami() {
        return identity;
    }

    @Override
    public void notify(String s) {
        notifications.incrementAndGet();
    }

    @Override
    public long notified() {
        return notifications.get();
    }

    @Override
    public String hidden() {
        return "hidden";
    }
}
