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
	"github.com/nacos-group/nacos-sdk-go/v2/common/remote/rpc"
	"github.com/nacos-group/nacos-sdk-go/v2/common/remote/rpc/rpc_request"
	"github.com/nacos-group/nacos-sdk-go/v2/common/remote/rpc/rpc_response"
	"github.com/nacos-group/nacos-sdk-go/v2/common/security"
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
	ctx    context.Context
	cancel context.CancelFunc
	proxy  *naming_grpc.NamingGrpcProxy
	holder *naming_cache.ServiceInfoHolder
	dir    string
	once   sync.Once

	// The config half (application-level metadata and mappings): a second gRPC connection,
	// labelled for the config module as the SDK's ConfigClient labels its own, opened on
	// first use. Only requests and answers go over it (no listeners, no pushes).
	srv    *nacos_server.NacosServer
	cc     constant.ClientConfig
	cfgMu  sync.Mutex
	cfg    *rpc.RpcClient
	closed bool
}

var configClients atomic.Uint64 // names the config connections, unique in the SDK's client map

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
	c := &client{ctx: ctx, cancel: cancel, dir: dir, cc: cc}
	srv, err := nacos_server.NewNacosServer(ctx, servers, cc, &http_agent.HttpAgent{}, cc.TimeoutMs, "", nil)
	if err != nil {
		c.close()
		return nil, err
	}
	c.srv = srv
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
		c.cfgMu.Lock()
		c.closed = true
		if c.cfg != nil {
			c.cfg.Shutdown()
		}
		c.cfgMu.Unlock()
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

// config returns the config connection, opening it on first use.
func (c *client) config() (*rpc.RpcClient, error) {
	c.cfgMu.Lock()
	defer c.cfgMu.Unlock()
	if c.closed {
		return nil, errors.New("closed")
	}
	if c.cfg != nil {
		return c.cfg, nil
	}
	name := fmt.Sprintf("strait-config-%d-%d", os.Getpid(), configClients.Add(1))
	ic, err := rpc.CreateClient(c.ctx, name, rpc.GRPC, map[string]string{
		constant.LABEL_SOURCE: constant.LABEL_SOURCE_SDK,
		constant.LABEL_MODULE: constant.LABEL_MODULE_CONFIG,
	}, c.srv, &c.cc.TLSCfg, c.cc.AppConnLabels)
	if err != nil {
		return nil, err
	}
	rc := ic.GetRpcClient()
	rc.Tenant = c.tenant()
	rc.Start()
	c.cfg = rc
	return rc, nil
}

// tenant is the config namespace: configs of the public namespace have the empty tenant
// (naming calls it "public"), which is where Dubbo's config clients read and write.
func (c *client) tenant() string {
	if c.cc.NamespaceId == constant.DEFAULT_NAMESPACE_ID {
		return ""
	}
	return c.cc.NamespaceId
}

func (c *client) configRequest(req rpc_request.IRequest) (rpc_response.IResponse, error) {
	rc, err := c.config()
	if err != nil {
		return nil, err
	}
	c.srv.InjectSecurityInfo(req.GetHeaders(), security.BuildConfigResourceByRequest(req))
	return rc.Request(req, int64(c.cc.TimeoutMs))
}

// getConfig reads a config; found is false when it does not exist.
func (c *client) getConfig(dataID, group string) (content string, found bool, err error) {
	resp, err := c.configRequest(rpc_request.NewConfigQueryRequest(group, dataID, c.tenant()))
	if err != nil {
		return "", false, err
	}
	q, ok := resp.(*rpc_response.ConfigQueryResponse)
	if !ok {
		return "", false, fmt.Errorf("config %s/%s: unexpected answer %T", group, dataID, resp)
	}
	if q.GetErrorCode() == 300 { // not found
		return "", false, nil
	}
	if !q.IsSuccess() {
		return "", false, fmt.Errorf("config %s/%s: %s (code %d)", group, dataID, q.GetMessage(), q.GetErrorCode())
	}
	return q.Content, true, nil
}

// publishConfig writes a config; with casMD5 set, only if its content still has that MD5.
func (c *client) publishConfig(dataID, group, content, casMD5 string) error {
	resp, err := c.configRequest(rpc_request.NewConfigPublishRequest(group, dataID, c.tenant(), content, casMD5))
	if err != nil {
		return err
	}
	if !resp.IsSuccess() {
		return fmt.Errorf("config %s/%s: %w: %s (code %d)", group, dataID, errConfigRefused, resp.GetMessage(), resp.GetErrorCode())
	}
	return nil
}

var errConfigRefused = errors.New("the server refused the publication")

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
