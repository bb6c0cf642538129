package nacos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client/naming_cache"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client/naming_grpc"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/common/http_agent"
	"github.com/nacos-group/nacos-sdk-go/v2/common/logger"
	"github.com/nacos-group/nacos-sdk-go/v2/common/nacos_server"
	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/util"
)

// client is the gRPC half of a nacos-sdk-go v2 naming client: the SDK's own gRPC proxy
// (connection, redo of registrations and subscriptions after a reconnect, push handling)
// and service-info cache, assembled the way the SDK's NamingClient assembles them, minus
// what the SDK's NamingClient adds that this adapter must not have:
//   - the HTTP/UDP half (persistent instances, v1 heartbeats) and its UDP push receiver,
//     which listens on a random port of every interface and whose goroutine CloseClient
//     cannot stop (nacos-group/nacos-sdk-go#733, #721);
//   - a file logger (lumberjack) that the SDK installs process-wide on every NewNamingClient
//     and whose goroutine never ends.
//
// Its methods are the gRPC requests the NamingClient would send for ephemeral instances.
// The SDK writes service snapshots to a cache directory; client owns a temporary one and
// removes it on close.
//
// After close no goroutine of the SDK is left (the tests check with goleak, ignoring
// nothing). What the SDK keeps process-wide is state, not goroutines: its logger (see
// useLogger), its Prometheus collectors (registered in the default registry by its monitor
// package's init), and a package map in common/remote/rpc that keeps every gRPC client it
// ever created, closed ones included (a few KB per Registry).
type client struct {
	cancel context.CancelFunc
	proxy  *naming_grpc.NamingGrpcProxy
	holder *naming_cache.ServiceInfoHolder
	dir    string
	once   sync.Once
}

func dial(servers []constant.ServerConfig, cc constant.ClientConfig, log *slog.Logger) (*client, error) {
	useLogger(log)
	dir, err := os.MkdirTemp("", "strait-nacos-")
	if err != nil {
		return nil, err
	}
	cc.CacheDir = dir
	cc.LogDir = dir
	cc.NotLoadCacheAtStart = true
	cc.UpdateCacheWhenEmpty = true // an emptied service is a change to report
	ctx, cancel := context.WithCancel(context.Background())
	c := &client{cancel: cancel, dir: dir}
	srv, err := nacos_server.NewNacosServer(ctx, servers, cc, &http_agent.HttpAgent{}, cc.TimeoutMs, "", nil)
	if err != nil {
		c.close()
		return nil, err
	}
	c.holder = naming_cache.NewServiceInfoHolder(cc.NamespaceId, dir, true, true)
	c.proxy, err = naming_grpc.NewNamingGrpcProxy(ctx, cc, srv, c.holder)
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// close disconnects (the server then drops this connection's ephemeral instances at once),
// stops the SDK's goroutines of this client and removes the cache directory.
func (c *client) close() {
	c.once.Do(func() {
		if c.proxy != nil {
			c.proxy.CloseClient()
		}
		c.cancel()
		_ = os.RemoveAll(c.dir)
	})
}

func accepted(done bool, err error) error {
	if err != nil {
		return err
	}
	if !done {
		return errors.New("the server refused the request")
	}
	return nil
}

func (c *client) batchRegister(service string, insts []model.Instance) error {
	return accepted(c.proxy.BatchRegisterInstance(service, Group, insts))
}

func (c *client) deregister(service string, inst model.Instance) error {
	return accepted(c.proxy.DeregisterInstance(service, Group, inst))
}

// services returns one page of the service names of Group.
func (c *client) services(page, size uint32, namespace string) (model.ServiceList, error) {
	return c.proxy.GetServiceList(page, size, Group, namespace, nil)
}

// query asks for a service's instances without subscribing to it.
func (c *client) query(service string) ([]model.Instance, error) {
	s, err := c.proxy.QueryInstancesOfService(service, Group, "", 0, false)
	if err != nil {
		return nil, err
	}
	return s.Hosts, nil
}

// subscribe asks the server to push service's instances to this connection. cb is called
// (from the SDK's goroutines, or from subscribe itself) with the full instance list after
// every change; subscribe returns the list the server had when it answered.
func (c *client) subscribe(service string, cb *func([]model.Instance, error)) ([]model.Instance, error) {
	key := util.GetGroupName(service, Group)
	c.holder.RegisterCallback(key, "", cb)
	s, err := c.proxy.Subscribe(service, Group, "")
	if err != nil {
		c.holder.DeregisterCallback(key, "", cb)
		_ = c.proxy.Unsubscribe(service, Group, "")
		return nil, err
	}
	c.holder.ProcessService(&s)
	return s.Hosts, nil
}

func (c *client) unsubscribe(service string, cb *func([]model.Instance, error)) error {
	key := util.GetGroupName(service, Group)
	c.holder.DeregisterCallback(key, "", cb)
	c.holder.StopUpdateIfContain(key, "")
	return c.proxy.Unsubscribe(service, Group, "")
}

// The SDK logs through one process-wide logger (nacos-sdk-go/v2/common/logger), which by
// default prints to stderr. The adapter replaces it with a bridge to the slog.Logger of the
// most recently created Registry: the SDK's errors and warnings at their level, its info
// and debug lines at Debug.
var sdkLog atomic.Pointer[slog.Logger]

func useLogger(l *slog.Logger) {
	sdkLog.Store(l.With("component", "nacos-sdk"))
	logger.SetLogger(bridge{})
}

type bridge struct{}

func (bridge) print(level slog.Level, args []any) {
	if l := sdkLog.Load(); l != nil && l.Enabled(context.Background(), level) {
		l.Log(context.Background(), level, fmt.Sprint(args...))
	}
}

func (bridge) printf(level slog.Level, format string, args []any) {
	if l := sdkLog.Load(); l != nil && l.Enabled(context.Background(), level) {
		l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (b bridge) Info(args ...any)  { b.print(slog.LevelDebug, args) }
func (b bridge) Warn(args ...any)  { b.print(slog.LevelWarn, args) }
func (b bridge) Error(args ...any) { b.print(slog.LevelError, args) }
func (b bridge) Debug(args ...any) { b.print(slog.LevelDebug, args) }

func (b bridge) Infof(f string, args ...any)  { b.printf(slog.LevelDebug, f, args) }
func (b bridge) Warnf(f string, args ...any)  { b.printf(slog.LevelWarn, f, args) }
func (b bridge) Errorf(f string, args ...any) { b.printf(slog.LevelError, f, args) }
func (b bridge) Debugf(f string, args ...any) { b.printf(slog.LevelDebug, f, args) }
