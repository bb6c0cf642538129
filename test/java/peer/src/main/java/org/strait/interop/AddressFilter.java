package org.strait.interop;

import org.apache.dubbo.common.constants.CommonConstants;
import org.apache.dubbo.common.extension.Activate;
import org.apache.dubbo.rpc.Filter;
import org.apache.dubbo.rpc.Invocation;
import org.apache.dubbo.rpc.Invoker;
import org.apache.dubbo.rpc.Result;
import org.apache.dubbo.rpc.RpcException;

/**
 * Remembers, per thread, the address of the provider (for the tests: the egress gateway) that
 * the consumer's last call went to: the consumer's load reports how many calls each address
 * answered. Activated on the consumer side of every reference.
 */
@Activate(group = CommonConstants.CONSUMER)
public final class AddressFilter implements Filter {
    private static final ThreadLocal<String> LAST = new ThreadLocal<>();

    /** Forgets the calling thread's last address. */
    static void clear() {
        LAST.remove();
    }

    /** The address (host:port) the calling thread's last call went to, or "none". */
    static String last() {
        String a = LAST.get();
        return a == null ? "none" : a;
    }

    @Override
    public Result invoke(Invoker<?> invoker, Invocation invocation) throws RpcException {
        LAST.set(invoker.getUrl().getAddress());
        return invoker.invoke(invocation);
    }
}
