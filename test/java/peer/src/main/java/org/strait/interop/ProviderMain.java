package org.strait.interop;

import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ProtocolConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.ServiceConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;

/**
 * An EchoService provider, started with Dubbo's bootstrap API (no Spring). It prints one line,
 * READY, on stdout once the service is exported and registered; everything else goes to stderr.
 *
 * <pre>
 * java -cp java-peer.jar org.strait.interop.ProviderMain \
 *   --registry=zookeeper://127.0.0.1:2181 | nacos://127.0.0.1:8848
 *   --port=P                      the service's port on 127.0.0.1 (required)
 *   --protocol=tri | dubbo        (tri)
 *   --version=1.0.0 --group=g1    the service's version and group (none)
 *   --register-mode=interface | instance | all      (interface)
 *   --metadata-type=local | remote                  (local)
 *   --application=NAME            (java-provider)
 *   --parent-pid=PID              exit when that process is gone
 *   --log-level=warn              SLF4J level of the logs on stderr
 * </pre>
 *
 * QoS is off. With local metadata the MetadataService is exported on the service's protocol and
 * port (over Triple also as MetadataServiceV2, which Strait reads). Nothing else departs
 * from Dubbo's defaults: the registered URL is a default Java provider's, with the options above.
 */
public final class ProviderMain {
    private ProviderMain() {}

    public static void main(String[] argv) {
        Peer p = Peer.start(argv);
        String registry = p.need("registry");
        String protocol = p.opt("protocol", "tri");
        int port = Integer.parseInt(p.need("port"));
        String version = p.opt("version", "");
        String group = p.opt("group", "");
        String app = p.opt("application", "java-provider");

        ApplicationConfig application = new ApplicationConfig(app);
        application.setQosEnable(false);
        application.setEnableFileCache(false);
        application.setRegisterMode(p.opt("register-mode", "interface"));
        application.setMetadataType(p.opt("metadata-type", "local"));
        application.setProtocol(protocol);

        RegistryConfig reg = new RegistryConfig(registry);
        reg.setUseAsConfigCenter(false);

        ProtocolConfig proto = new ProtocolConfig(protocol, port);

        ServiceConfig<EchoService> service = new ServiceConfig<>();
        service.setInterface(EchoService.class);
        service.setRef(new EchoServiceImpl(version, group, port, app, protocol));
        if (!version.isEmpty()) {
            service.setVersion(version);
        }
        if (!group.isEmpty()) {
            service.setGroup(group);
        }

        DubboBootstrap bootstrap = DubboBootstrap.getInstance()
                .application(application)
                .registry(reg)
                .protocol(proto)
                .service(service);
        bootstrap.start();
        System.err.println("strait provider: exported " + service.getExportedUrls());
        System.out.println("READY");
        System.out.flush();
        bootstrap.await();
    }
}
