package dubbo

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"dubbo.apache.org/dubbo-go/v3/global"
	"dubbo.apache.org/dubbo-go/v3/protocol"
	"dubbo.apache.org/dubbo-go/v3/registry"
	"dubbo.apache.org/dubbo-go/v3/server"
	"github.com/dubbogo/go-zookeeper/zk"
	dubbologger "github.com/dubbogo/gost/log/logger"

	// A provider: the proxy factory that turns the handler into an invoker, dubbo-go's
	// default provider filters, and for its application-level registration the
	// service-instance customizers (revision, endpoints, metadata storage type).
	_ "dubbo.apache.org/dubbo-go/v3/filter/accesslog"
	_ "dubbo.apache.org/dubbo-go/v3/filter/echo"
	_ "dubbo.apache.org/dubbo-go/v3/filter/exec_limit"
	_ "dubbo.apache.org/dubbo-go/v3/filter/generic"
	_ "dubbo.apache.org/dubbo-go/v3/filter/token"
	_ "dubbo.apache.org/dubbo-go/v3/filter/tps"
	_ "dubbo.apache.org/dubbo-go/v3/proxy/proxy_factory"
	_ "dubbo.apache.org/dubbo-go/v3/registry/servicediscovery/customizer"

	greetv1 "github.com/strait-mesh/strait/proto/demo/greet/v1"
	"github.com/strait-mesh/strait/test/ports"
)

// AppGreeter is the GreetService of StartAppLevelProvider (dubbo-go exports only exported types).
type AppGreeter struct{ app string }

func (g AppGreeter) Greet(_ context.Context, req *greetv1.GreetRequest) (*greetv1.GreetResponse, error) {
	return &greetv1.GreetResponse{Greeting: "hello " + req.GetName()}, nil
}

func (g AppGreeter) GreetStream(_ context.Context, stream greetv1.GreetService_GreetStreamServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if err := stream.Send(&greetv1.GreetResponse{Greeting: "hello " + req.GetName()}); err != nil {
			return err
		}
	}
}

// StartAppLevelProvider starts an ordinary dubbo-go v3.3.2 provider of GreetService in
// group kind (Triple on 127.0.0.1, a port chosen at run time) registered in one registry
// (kind "zookeeper" or "nacos", addr host:port) with application-level discovery only, as application app,
// with remote metadata (its MetadataInfo in the registry used as metadata report). It
// returns the provider's address at once (it registers in the background) and a channel
// that receives Serve's error if it fails.
//
// It is never stopped: dubbo-go stops a server only through its process-wide graceful
// shutdown, which would also destroy the consumers of this process. Its registration
// disappears with the registry (the topology's down.sh stops it); its listener and
// registry client live until the test process ends.
func StartAppLevelProvider(kind, addr, app string) (string, <-chan error, error) {
	// dubbo-go binds its port itself: the port is held until just before Serve, and stays
	// claimed (test/ports) for the life of the process, as the provider does.
	reserved, err := ports.ReservePort()
	if err != nil {
		return "", nil, err
	}
	defer reserved.Release()
	port := reserved.Port()
	var opts []registry.Option
	switch kind {
	case "zookeeper":
		opts = []registry.Option{registry.WithZookeeper()}
	case "nacos":
		dir := filepath.Join(nacosDir, "provider")
		opts = []registry.Option{registry.WithNacos(), registry.WithParams(map[string]string{
			"nacos.logDir":   filepath.Join(dir, "log"),
			"nacos.cacheDir": filepath.Join(dir, "cache"),
			"nacos.logLevel": "error",
		})}
	default:
		return "", nil, fmt.Errorf("kind %q is not zookeeper or nacos", kind)
	}
	dubbologger.SetLoggerLevel("error")
	zk.DefaultLogger = zkQuiet{}
	appCfg := global.DefaultApplicationConfig()
	appCfg.Name = app
	appCfg.MetadataType = "remote"
	srv, err := server.NewServer(
		server.SetServerApplication(appCfg),
		// dubbo-go keeps one service per interface, group and version per process: the
		// group tells the providers of successive registries apart.
		server.WithServerGroup(kind),
		server.WithServerProtocol(protocol.WithTriple(), protocol.WithIp("127.0.0.1"), protocol.WithPort(port)),
		server.WithServerRegistry(append(opts,
			registry.WithID(kind+"-provider"),
			registry.WithAddress(addr),
			registry.WithRegisterService(), // application level only
			registry.WithoutUseAsConfigCenter(),
		)...),
	)
	if err != nil {
		return "", nil, fmt.Errorf("dubbo-go provider: %w", err)
	}
	if err := greetv1.RegisterGreetServiceHandler(srv, AppGreeter{app}); err != nil {
		return "", nil, fmt.Errorf("dubbo-go provider: %w", err)
	}
	served := make(chan error, 1)
	reserved.Release()
	go func() { served <- srv.Serve() }()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), served, nil
}
