package dubbo

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/strait-mesh/strait/internal/samples"

	"dubbo.apache.org/dubbo-go/v3/client"
	"dubbo.apache.org/dubbo-go/v3/graceful_shutdown"
	"dubbo.apache.org/dubbo-go/v3/registry"
	"github.com/dubbogo/go-zookeeper/zk"
	dubbologger "github.com/dubbogo/gost/log/logger"

	// Extensions a registry-discovering Triple client needs: those of a direct
	// Triple client (tri protocol, failfast cluster, random load balancer,
	// cshutdown filter, tag router), and:
	//   - the "registry" protocol, which refers through a registry and builds
	//     a cluster invoker over the registry directory;
	//   - the registry directory (interface-level discovery: it subscribes to
	//     the providers of the interface and turns each provider URL into a
	//     Triple invoker);
	//   - the zookeeper and nacos registries.
	_ "dubbo.apache.org/dubbo-go/v3/cluster/cluster/failfast"
	_ "dubbo.apache.org/dubbo-go/v3/cluster/loadbalance/random"
	_ "dubbo.apache.org/dubbo-go/v3/cluster/router/tag"
	_ "dubbo.apache.org/dubbo-go/v3/filter/graceful_shutdown"
	_ "dubbo.apache.org/dubbo-go/v3/protocol/triple"
	_ "dubbo.apache.org/dubbo-go/v3/registry/directory"
	_ "dubbo.apache.org/dubbo-go/v3/registry/etcdv3"
	_ "dubbo.apache.org/dubbo-go/v3/registry/nacos"
	_ "dubbo.apache.org/dubbo-go/v3/registry/protocol"
	_ "dubbo.apache.org/dubbo-go/v3/registry/zookeeper"

	greetv1 "github.com/strait-mesh/strait/proto/demo/greet/v1"
)

// registryClients caches one registry-discovering GreetService client per
// registry (kind and address), for the reasons given on greetClients: a
// dubbo-go client cannot be closed, and each one adds a registry
// subscription, a directory and invokers to process-wide state.
var registryClients struct {
	sync.Mutex
	m map[string]greetv1.GreetService
}

// TripleGreetViaRegistry calls GreetService.Greet with an ordinary dubbo-go
// Triple consumer that knows only a registry: kind is "zookeeper" or "nacos",
// addr its host:port. The client discovers the providers of
// strait.demo.greet.v1.GreetService at interface level (ZooKeeper:
// /dubbo/<interface>/providers; Nacos: service providers:<interface>:1.0.0:),
// with the service version its provider in beta registers, and calls one of
// them over Triple (gRPC over h2c). It returns the greeting.
//
// The consumer also registers itself in the registry, as any dubbo-go
// consumer does (ZooKeeper: /dubbo/<interface>/consumers/...; Nacos: service
// consumers:<interface>:1.0.0:).
//
// Goroutines left running (process-wide, never stopped: dubbo-go offers no
// way to close a client, its registries or its directories; the registry
// protocol's Destroy only forgets them), as seen in goroutine dumps after a
// call:
//   - per provider (here each alpha egress instance): those listed in
//     TripleClientGoroutines;
//   - per ZooKeeper registry: github.com/dubbogo/go-zookeeper/zk.(*Conn)
//     sendLoop and recvLoop (connect once the server is gone),
//     github.com/dubbogo/gost/database/kv/zk.(*DefaultHandler).HandleZkEvent,
//     dubbo-go's remoting/zookeeper.HandleClientRestart,
//     (*ZkEventListener).startScheduleWatchTask and listenServiceNodeEvent
//     (one per provider node), registry/zookeeper.
//     (*RegistryConfigurationListener).Next, and a gost UnboundedChan.run;
//   - per Nacos registry: the nacos-sdk-go gRPC connection
//     (google.golang.org/grpc transport and CallbackSerializer goroutines,
//     common/remote/rpc.(*RpcClient).Start.func1 and func2),
//     common/security.(*SecurityProxy).AutoRefresh.func1,
//     naming_http.(*PushReceiver).handleClient, its lumberjack logger's
//     millRun, dubbo-go's registry/nacos.(*nacosListener).Next and
//     (*nacosRegistry).subscribeUntilSuccess.func1, and a gost
//     UnboundedChan.run.
//
// When a registry server goes away for good, its orphaned ZooKeeper client
// keeps reconnecting and dubbo-go logs an ERROR with a stack trace
// (remoting/zookeeper/listener.go, "child nodes changed, zk.Children() =
// error") from then on.
//
// Process-wide settings it changes: dubbo-go's logger level (error, as
// TripleGreet does) and github.com/dubbogo/go-zookeeper/zk.DefaultLogger
// (discarded).
func TripleGreetViaRegistry(ctx context.Context, kind, addr, name string) (string, error) {
	svc, err := registryClientFor(kind, addr)
	if err != nil {
		return "", err
	}
	// dubbo-go subscribes to the registry in the background
	// (registry/directory.(*RegistryDirectory).Subscribe starts
	// registry.Subscribe in a goroutine and returns), so a client's first calls
	// can find no provider yet. Retry those until ctx ends (at most
	// discoveryWait when ctx has no deadline).
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, discoveryWait)
		defer cancel()
	}
	for {
		resp, err := svc.Greet(ctx, &greetv1.GreetRequest{Name: name})
		if err == nil {
			return resp.GetGreeting(), nil
		}
		if !strings.Contains(err.Error(), "No provider available") {
			return "", fmt.Errorf("triple Greet via %s %s: %w", kind, addr, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("triple Greet via %s %s: %w", kind, addr, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// discoveryWait bounds how long TripleGreetViaRegistry waits for the first
// providers when its context has no deadline.
const discoveryWait = 10 * time.Second

// zkQuiet discards the logs of dubbo-go's ZooKeeper library
// (github.com/dubbogo/go-zookeeper/zk), which otherwise prints every
// connection, session and reconnection on the standard logger.
type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

func registryClientFor(kind, addr string) (greetv1.GreetService, error) {
	var regKind []registry.Option
	switch kind {
	case "zookeeper":
		regKind = []registry.Option{registry.WithZookeeper()}
	case "nacos":
		// The nacos SDK otherwise writes its log and cache under log/ and
		// cache/ next to the executable (nacos_client.go, LogDir/CacheDir
		// defaults), and logs at info.
		dir := filepath.Join(nacosDir, "client")
		regKind = []registry.Option{registry.WithNacos(), registry.WithParams(map[string]string{
			"nacos.logDir":   filepath.Join(dir, "log"),
			"nacos.cacheDir": filepath.Join(dir, "cache"),
			"nacos.logLevel": "error",
		})}
	case "etcd":
		regKind = []registry.Option{registry.WithEtcdV3()}
	default:
		return nil, fmt.Errorf("triple registry client: kind %q is not zookeeper, nacos or etcd", kind)
	}
	key := kind + "://" + addr
	registryClients.Lock()
	defer registryClients.Unlock()
	if svc, ok := registryClients.m[key]; ok {
		return svc, nil
	}
	svc, err := newRegistryGreetClient(regKind, addr)
	if err != nil {
		return nil, fmt.Errorf("triple registry client %s: %w", key, err)
	}
	if registryClients.m == nil {
		registryClients.m = make(map[string]greetv1.GreetService)
	}
	registryClients.m[key] = svc
	return svc, nil
}

func newRegistryGreetClient(kind []registry.Option, addr string) (svc greetv1.GreetService, err error) {
	// dubbo-go panics on refer errors (client/action.go refer); turn them
	// into errors.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("refer: %v", r)
		}
	}()
	dubbologger.SetLoggerLevel("error")
	// Process-wide: applies to the ZooKeeper connections made from now on.
	zk.DefaultLogger = zkQuiet{}
	cli, err := client.NewClient(
		client.WithClientRegistry(append(kind,
			registry.WithAddress(addr),
			// Interface-level discovery only: no application-level service
			// discovery, no metadata report, no config centre.
			registry.WithRegisterInterface(),
			registry.WithoutUseAsMetaReport(),
			registry.WithoutUseAsConfigCenter(),
		)...),
		client.WithClientProtocolTriple(),
		client.WithClientClusterFailFast(),
		client.WithClientShutdown(graceful_shutdown.WithoutInternalSignal()),
	)
	if err != nil {
		return nil, err
	}
	// The version the provider registers (samples.TripleServiceVersion): imports carry it,
	// and a Dubbo consumer finds only providers of the version it asks for.
	return greetv1.NewGreetService(cli, client.WithVersion(samples.TripleServiceVersion))
}
