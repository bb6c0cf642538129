package org.strait.interop;

/** What EchoService.fail throws: a checked business exception carrying the caller's message. */
public class InteropException extends Exception {
    private static final long serialVersionUID = 1L;

    public InteropException() {
        super();
    }

    public InteropException(String message) {
        super(message);
    }
}
