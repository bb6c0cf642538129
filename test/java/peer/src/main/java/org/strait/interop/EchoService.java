package org.strait.interop;

/**
 * The service both Java peers speak: a plain Java interface (no IDL), so Dubbo carries it over
 * Triple in its wrapper mode (hessian2 payloads inside gRPC frames) or over the dubbo protocol.
 */
public interface EchoService {

    /** Returns s. */
    String echo(String s);

    /** Returns p, unchanged. */
    Pojo echoPojo(Pojo p);

    /** Returns b, unchanged. */
    byte[] echoBytes(byte[] b);

    /** Always throws an InteropException carrying msg. */
    String fail(String msg) throws InteropException;

    /** Sleeps millis, then returns "slept <millis>". */
    String slow(int millis);

    /**
     * Names the provider that answered: "version=V,group=G,port=P,application=A,protocol=X".
     */
    String whoami();

    /** Records a notification (the consumer sends it one way: it expects no answer). */
    void notify(String s);

    /** How many notifications this provider has received. */
    long notified();

    /**
     * Returns "hidden". The interop tests' export of EchoService allows every method but
     * this one: a call of it is refused by the providers' domain.
     */
    String hidden();
}
