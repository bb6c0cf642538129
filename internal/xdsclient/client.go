// Package xdsclient is the gateways' side of xDS: one delta ADS stream to the domain's
// controlplane carrying listeners, routes, clusters, endpoints and secrets. Every update is
// checked as a whole (xdsres.Decode) and applied atomically, or refused (NACK) with its
// reason while the last good configuration stays in force. When the controlplane goes
// away the gateway keeps serving and reconnects with backoff.
package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/strait-mesh/strait/internal/backoff"
	"github.com/strait-mesh/strait/internal/xdsres"
)

// Types are the resource types a gateway subscribes to, in the order it asks for them.
var Types = []string{resource.ClusterType, resource.EndpointType, resource.SecretType, resource.ListenerType, resource.RouteType}

// Options configure a Client.
type Options struct {
	// Addr is the controlplane's xDS address, host:port.
	Addr string
	// Role is xdsres.RoleEgress or xdsres.RoleIngress.
	Role string
	// NodeID names this gateway, e.g. "alpha/egress/egress-1".
	NodeID string
	// Apply installs a decoded configuration. It is called from one goroutine, in order. An
	// error refuses the update (NACK) and the gateway keeps its previous configuration.
	Apply func(cfg *xdsres.GatewayConfig, version string) error
	// TLS, if set (identity.ControlplaneClientConfig), makes the stream mutual TLS.
	TLS    *tls.Config
	Logger *slog.Logger
}

// Client keeps one gateway configured. Run it in a goroutine; it returns when ctx ends.
type Client struct {
	o   Options
	log *slog.Logger

	// state: only the Run goroutine touches res and versions.
	res      xdsres.Resources
	versions map[string]map[string]string // type → name → resource version

	applied   atomic.Pointer[string]
	connected atomic.Bool
	nacks     atomic.Uint64
	mu        sync.Mutex
	lastNACK  string
}

// New returns a client; Run starts it.
func New(o Options) *Client {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{
		o:        o,
		log:      o.Logger.With("component", "xds"),
		res:      xdsres.Resources{},
		versions: map[string]map[string]string{},
	}
}

// Version is the version of the configuration in force, "" before the first.
func (c *Client) Version() string {
	if v := c.applied.Load(); v != nil {
		return *v
	}
	return ""
}

// Connected reports whether a stream to the controlplane is open.
func (c *Client) Connected() bool { return c.connected.Load() }

// NACKs counts refused updates; LastNACK is the reason of the last one.
func (c *Client) NACKs() uint64 { return c.nacks.Load() }

// LastNACK is the reason the last refused update was refused.
func (c *Client) LastNACK() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastNACK
}

// Run connects and reconnects until ctx ends.
func (c *Client) Run(ctx context.Context) {
	creds := insecure.NewCredentials()
	if c.o.TLS != nil {
		creds = credentials.NewTLS(c.o.TLS)
	}
	cc, err := grpc.NewClient(c.o.Addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// Reconnect quickly when the controlplane comes back: at most a second apart.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}, MinConnectTimeout: 2 * time.Second}),
	)
	if err != nil {
		c.log.Error("xds: bad controlplane address", "addr", c.o.Addr, "err", err)
		return
	}
	defer cc.Close()
	retry := backoff.New(50*time.Millisecond, 2*time.Second)
	for ctx.Err() == nil {
		start := time.Now()
		err := c.stream(ctx, discoverygrpc.NewAggregatedDiscoveryServiceClient(cc))
		c.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			retry.Reset()
		}
		d := retry.Next()
		c.log.Warn("xds stream ended; keeping the last configuration", "addr", c.o.Addr, "err", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

func (c *Client) stream(ctx context.Context, ads discoverygrpc.AggregatedDiscoveryServiceClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.DeltaAggregatedResources(sctx, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("xds: open stream: %w", err)
	}
	node := &corev3.Node{Id: c.o.NodeID, Cluster: c.o.Role, UserAgentName: "strait"}
	for i, t := range Types {
		req := &discoverygrpc.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: c.versions[t]}
		if i == 0 {
			req.Node = node
		}
		if err := st.Send(req); err != nil {
			return fmt.Errorf("xds: subscribe: %w", err)
		}
	}
	c.connected.Store(true)
	for {
		resp, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("xds: controlplane closed the stream")
			}
			return fmt.Errorf("xds: %w", err)
		}
		ack := &discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if err := c.handle(resp); err != nil {
			c.nacks.Add(1)
			c.mu.Lock()
			c.lastNACK = err.Error()
			c.mu.Unlock()
			c.log.Warn("xds update refused; the last good configuration stays", "type", resp.GetTypeUrl(), "version", resp.GetSystemVersionInfo(), "err", err)
			ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		}
		if err := st.Send(ack); err != nil {
			return fmt.Errorf("xds: ack: %w", err)
		}
	}
}

// handle applies one response. Resources that are invalid on their own, or that make a
// configuration Apply refuses, are dropped and the response refused. Resources that are
// valid but leave the whole inconsistent (a route to a cluster not received yet) are kept,
// so that the picture completes when the rest arrives, but the configuration in force does
// not change and the response is refused with the reason.
func (c *Client) handle(resp *discoverygrpc.DeltaDiscoveryResponse) error {
	typ := resp.GetTypeUrl()
	decoded := make(map[string]proto.Message, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		if r.GetResource().GetTypeUrl() != typ {
			return fmt.Errorf("resource %q has type %q in a %s response", r.GetName(), r.GetResource().GetTypeUrl(), typ)
		}
		m, err := anypb.UnmarshalNew(r.GetResource(), proto.UnmarshalOptions{})
		if err != nil {
			return fmt.Errorf("resource %q: %w", r.GetName(), err)
		}
		decoded[r.GetName()] = m
	}
	cur, curVersions := c.res[typ], c.versions[typ]
	next := make(map[string]proto.Message, len(cur)+len(decoded))
	for n, m := range cur {
		next[n] = m
	}
	for _, n := range resp.GetRemovedResources() {
		delete(next, n)
	}
	for n, m := range decoded {
		next[n] = m
	}
	c.res[typ] = next
	vs := map[string]string{}
	for n, v := range c.versions[typ] {
		vs[n] = v
	}
	for _, n := range resp.GetRemovedResources() {
		delete(vs, n)
	}
	for _, r := range resp.GetResources() {
		vs[r.GetName()] = r.GetVersion()
	}
	c.versions[typ] = vs

	cfg, err := xdsres.Decode(c.o.Role, c.res)
	if err != nil {
		var de *xdsres.DanglingError
		if !errors.As(err, &de) {
			// Invalid: forget this response entirely.
			c.res[typ], c.versions[typ] = cur, curVersions
			return err
		}
		if c.Version() == "" && missing(c.res) {
			// Still receiving the first configuration: not an error yet.
			return nil
		}
		return err
	}
	v := cfg.Version
	if v == "" {
		v = resp.GetSystemVersionInfo()
	}
	if err := c.o.Apply(cfg, v); err != nil {
		// Refused by the gateway: forget this response, as an invalid one, so that it does
		// not ride along with (and refuse) the next update of another type.
		c.res[typ], c.versions[typ] = cur, curVersions
		return fmt.Errorf("apply: %w", err)
	}
	c.applied.Store(&v)
	return nil
}

// missing reports whether some resource type has not arrived at all.
func missing(res xdsres.Resources) bool {
	for _, t := range []string{resource.ListenerType, resource.RouteType} {
		if len(res[t]) == 0 {
			return true
		}
	}
	return false
}
