package org.strait.interop;

/**
 * A service nobody provides and no domain exports: the consumer calls it through a direct
 * URL to an egress gateway, which answers that it does not know the service.
 */
public interface Missing {

    /** Would return s. */
    String echo(String s);
}
