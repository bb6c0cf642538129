package dubbo

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/strait-mesh/strait/internal/samples"

	"dubbo.apache.org/dubbo-go/v3/client"
	"dubbo.apache.org/dubbo-go/v3/graceful_shutdown"
	"dubbo.apache.org/dubbo-go/v3/registry"
	"github.com/dubbogo/go-zookeeper/zk"
	dubbologger "github.com/dubbogo/gost/log/logger"

	// Application-level discovery, on top of the extensions registry_client_test.go
	// imports:
	//   - the service-discovery registry ("service-discovery-registry" protocol), which
	//     maps the interface to applications, subscribes to their instances and turns
	//     each instance and its revision's MetadataInfo into provider URLs;
	//   - the interface → application mapping read from the metadata report;
	//   - the metadata reports of ZooKeeper and Nacos (the registry used as metadata
	//     report: dubbo-go's default use-as-meta-report).
	// The ZooKeeper and Nacos service discoveries are in registry/zookeeper and
	// registry/nacos, already imported.
	_ "dubbo.apache.org/dubbo-go/v3/metadata/mapping/metadata"
	_ "dubbo.apache.org/dubbo-go/v3/metadata/report/nacos"
	_ "dubbo.apache.org/dubbo-go/v3/metadata/report/zookeeper"
	_ "dubbo.apache.org/dubbo-go/v3/registry/servicediscovery"

	greetv1 "github.com/strait-mesh/strait/proto/demo/greet/v1"
)

// TripleGreetViaAppLevel calls GreetService.Greet with an ordinary dubbo-go Triple
// consumer configured for application-level service discovery (registry-type
// "service") against one registry (kind "zookeeper" or "nacos", addr host:port), used
// as its metadata report too. The consumer reads the mapping of
// strait.demo.greet.v1.GreetService to its applications (ZooKeeper
// /dubbo/mapping/<interface>; Nacos config <interface> in group "mapping"), subscribes
// to their instances (ZooKeeper /services/<app>; Nacos service <app>), reads each
// revision's MetadataInfo from the metadata report (ZooKeeper /dubbo/<app>/<revision>;
// Nacos config <app> in group <revision>) and calls a provider over Triple.
//
// Like TripleGreetViaRegistry, its client is cached per registry and never closed; the
// goroutines it leaves are those listed there, plus the metadata report's registry
// client (a second ZooKeeper connection, or a nacos-sdk-go config client) and dubbo-go's
// metadata cache dumper (registry/servicediscovery/store.(*CacheManager).runDumpTask,
// which writes dubbo.metadata.<app> into the working directory every 10 minutes).
func TripleGreetViaAppLevel(ctx context.Context, kind, addr, name string) (string, error) {
	key := "app-" + kind + "://" + addr
	registryClients.Lock()
	svc, ok := registryClients.m[key]
	registryClients.Unlock()
	if !ok {
		var err error
		svc, err = newAppLevelGreetClient(kind, addr)
		if err != nil {
			return "", fmt.Errorf("triple app-level client %s: %w", key, err)
		}
		registryClients.Lock()
		if registryClients.m == nil {
			registryClients.m = make(map[string]greetv1.GreetService)
		}
		registryClients.m[key] = svc
		registryClients.Unlock()
	}
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
			return "", fmt.Errorf("triple Greet via %s %s (application level): %w", kind, addr, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("triple Greet via %s %s (application level): %w", kind, addr, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func newAppLevelGreetClient(kind, addr string) (svc greetv1.GreetService, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("refer: %v", r)
		}
	}()
	var opts []registry.Option
	switch kind {
	case "zookeeper":
		opts = []registry.Option{registry.WithZookeeper()}
	case "nacos":
		dir := filepath.Join(nacosDir, "app")
		opts = []registry.Option{registry.WithNacos(), registry.WithParams(map[string]string{
			"nacos.logDir":   filepath.Join(dir, "log"),
			"nacos.cacheDir": filepath.Join(dir, "cache"),
			"nacos.logLevel": "error",
		})}
	default:
		return nil, fmt.Errorf("kind %q is not zookeeper or nacos", kind)
	}
	dubbologger.SetLoggerLevel("error")
	zk.DefaultLogger = zkQuiet{}
	cli, err := client.NewClient(
		client.WithClientRegistry(append(opts,
			registry.WithID(kind+"-app"),
			registry.WithAddress(addr),
			registry.WithRegisterService(), // application level only
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
