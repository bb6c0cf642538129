package org.strait.interop;

import org.apache.dubbo.common.URL;
import org.apache.dubbo.rpc.cluster.Configurator;
import org.apache.dubbo.rpc.cluster.ConfiguratorFactory;

/**
 * Keeps an exported service on loopback. ServiceConfig applies the ConfiguratorFactory named
 * after the protocol (tri, dubbo) to the URL it exports, after it chose the host; this one
 * makes the URL say 127.0.0.1 (what is registered) and bind there.
 *
 * <p>The bind address is written as the IPv4-mapped form ::ffff:127.0.0.1: Dubbo's servers bind
 * 0.0.0.0 whenever bind.ip starts with "127." or anyhost is true, while Java turns an
 * IPv4-mapped address into the plain IPv4 one, so the server binds 127.0.0.1. bind.ip is never
 * registered (Dubbo removes it from the URLs it registers).
 */
public final class LoopbackConfiguratorFactory implements ConfiguratorFactory {
    @Override
    public Configurator getConfigurator(URL url) {
        return new Configurator() {
            @Override
            public URL getUrl() {
                return url;
            }

            @Override
            public URL configure(URL u) {
                return u.setHost("127.0.0.1")
                        .addParameter("anyhost", "false")
                        .addParameter("bind.ip", "::ffff:127.0.0.1");
            }
        };
    }
}
