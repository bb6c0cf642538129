package xdsclient_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/xdsclient"
	"github.com/strait-mesh/strait/internal/xdsres"
)

// TestMain ends the package with a goroutine leak check: every client's Run and every
// server the tests start must be gone.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ---- the controlplane side: a real go-control-plane ADS server on loopback ----

// nodeHash keys snapshots by role, as the controlplane does (Node.Cluster).
type nodeHash struct{}

func (nodeHash) ID(n *corev3.Node) string { return n.GetCluster() }

// controlplane is a go-control-plane delta ADS server over a snapshot cache, recording
// every request a gateway sends and every response it is sent.
type controlplane struct {
	addr  string
	cache cachev3.SnapshotCache
	srv   *grpc.Server
	done  chan struct{}

	mu    sync.Mutex
	reqs  []*discoverygrpc.DeltaDiscoveryRequest
	resps []*discoverygrpc.DeltaDiscoveryResponse
}

// startControlplane serves on addr ("127.0.0.1:0" for a new port).
func startControlplane(t *testing.T, addr string, tlsConf *tls.Config) *controlplane {
	t.Helper()
	var ln net.Listener
	var err error
	// The address of a server just stopped: its port is free again at once (the listener
	// was closed; SO_REUSEADDR covers the connections in TIME_WAIT).
	for deadline := time.Now().Add(5 * time.Second); ; {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlplane{addr: ln.Addr().String(), cache: cachev3.NewSnapshotCache(true, nodeHash{}, nil), done: make(chan struct{})}
	cbs := serverv3.CallbackFuncs{
		StreamDeltaRequestFunc: func(_ int64, r *discoverygrpc.DeltaDiscoveryRequest) error {
			cp.mu.Lock()
			cp.reqs = append(cp.reqs, proto.Clone(r).(*discoverygrpc.DeltaDiscoveryRequest))
			cp.mu.Unlock()
			return nil
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoverygrpc.DeltaDiscoveryRequest, r *discoverygrpc.DeltaDiscoveryResponse) {
			cp.mu.Lock()
			cp.resps = append(cp.resps, proto.Clone(r).(*discoverygrpc.DeltaDiscoveryResponse))
			cp.mu.Unlock()
		},
	}
	var opts []grpc.ServerOption
	if tlsConf != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConf)))
	}
	cp.srv = grpc.NewServer(opts...)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(cp.srv, serverv3.NewServer(context.Background(), cp.cache, cbs))
	go func() {
		defer close(cp.done)
		_ = cp.srv.Serve(ln)
	}()
	t.Cleanup(cp.stop)
	return cp
}

// stop closes every stream at once, as a controlplane that dies does.
func (cp *controlplane) stop() {
	cp.srv.Stop()
	<-cp.done
}

func (cp *controlplane) publish(t *testing.T, version string, res map[resource.Type][]types.Resource) {
	t.Helper()
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), xdsres.RoleEgress, snap); err != nil {
		t.Fatal(err)
	}
}

func (cp *controlplane) requests() []*discoverygrpc.DeltaDiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.reqs)
}

func (cp *controlplane) responses() []*discoverygrpc.DeltaDiscoveryResponse {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.resps)
}

// nack returns the first refusal of a response of type typ the gateway sent, or nil.
func (cp *controlplane) nack(typ string) *discoverygrpc.DeltaDiscoveryRequest {
	for _, r := range cp.requests() {
		if r.GetTypeUrl() == typ && r.GetErrorDetail() != nil {
			return r
		}
	}
	return nil
}

// acked reports whether the gateway acknowledged (without error) a response of type typ
// carrying version.
func (cp *controlplane) acked(typ, version string) bool {
	nonces := map[string]bool{}
	for _, r := range cp.responses() {
		if r.GetTypeUrl() == typ && r.GetSystemVersionInfo() == version {
			nonces[r.GetNonce()] = true
		}
	}
	for _, r := range cp.requests() {
		if r.GetTypeUrl() == typ && nonces[r.GetResponseNonce()] && r.GetErrorDetail() == nil {
			return true
		}
	}
	return false
}

// ---- the resources: alpha's egress with one peer, beta ----

var betaBundle = func() []byte {
	ca, err := identity.NewCA("beta.strait.local", time.Hour)
	if err != nil {
		panic(err)
	}
	return ca.BundlePEM()
}()

// egress describes the egress resources of domain alpha.
type egress struct {
	ingress   []string // beta's ingress instances, host:port (port 0 is invalid)
	transport string   // beta's cluster's transport metadata
	gamma     string   // if set, a route of this service to peer gamma
	gammaCl   bool     // the cluster peer/gamma
}

func md(t *testing.T, f map[string]any) *corev3.Metadata {
	t.Helper()
	s, err := structpb.NewStruct(f)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{xdsres.MetadataKey: s}}
}

func (e egress) resources(t *testing.T) map[resource.Type][]types.Resource {
	t.Helper()
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:     "egress",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "egress"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	lis := &listenerv3.Listener{
		Name: "egress",
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
		Metadata: md(t, map[string]any{"domain": "alpha", "trustDomain": "alpha.strait.local", "peers": map[string]any{"beta": "beta.strait.local"}}),
	}
	rt := func(svc, peer string) *routev3.Route {
		return &routev3.Route{
			Name:     "grpc/" + svc,
			Match:    &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/" + svc + "/"}},
			Action:   &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: xdsres.PeerCluster(peer)}}},
			Metadata: md(t, map[string]any{"protocol": "grpc", "service": svc, "peer": peer}),
		}
	}
	vh := &routev3.VirtualHost{Name: "default", Domains: []string{"*"}, Routes: []*routev3.Route{rt("com.beta.Pay", "beta")}}
	if e.gamma != "" {
		vh.Routes = append(vh.Routes, rt(e.gamma, "gamma"))
	}
	transport := e.transport
	if transport == "" {
		transport = "h2"
	}
	clusters := []types.Resource{&clusterv3.Cluster{Name: "peer/beta", Metadata: md(t, map[string]any{"transport": transport})}}
	if e.gammaCl {
		clusters = append(clusters, &clusterv3.Cluster{Name: "peer/gamma"})
	}
	var eps []*endpointv3.LbEndpoint
	for _, a := range e.ingress {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		pn, _ := strconv.Atoi(port)
		eps = append(eps, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(pn)},
				}}},
			}},
			HealthStatus: corev3.HealthStatus_HEALTHY,
		})
	}
	return map[resource.Type][]types.Resource{
		resource.ListenerType: {lis},
		resource.RouteType:    {&routev3.RouteConfiguration{Name: "egress", VirtualHosts: []*routev3.VirtualHost{vh}}},
		resource.ClusterType:  clusters,
		resource.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: "peer/beta", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}},
		resource.SecretType: {&tlsv3.Secret{Name: "bundle/beta.strait.local", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: betaBundle}},
		}}}},
	}
}

// ---- the gateway side ----

type applied struct {
	cfg     *xdsres.GatewayConfig
	version string
}

// gateway runs an xdsclient.Client and records what it applies.
type gateway struct {
	c    *xdsclient.Client
	stop func()

	mu     sync.Mutex
	got    []applied
	refuse func(*xdsres.GatewayConfig) error
}

func startGateway(t *testing.T, addr string, tlsConf *tls.Config) *gateway {
	t.Helper()
	g := &gateway{}
	g.c = xdsclient.New(xdsclient.Options{
		Addr: addr, Role: xdsres.RoleEgress, NodeID: "alpha/egress/test-" + strings.ReplaceAll(t.Name(), "/", "-"), TLS: tlsConf,
		Apply: func(cfg *xdsres.GatewayConfig, v string) error {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.refuse != nil {
				if err := g.refuse(cfg); err != nil {
					return err
				}
			}
			g.got = append(g.got, applied{cfg, v})
			return nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.c.Run(ctx)
	}()
	g.stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context ending")
		}
	}
	t.Cleanup(g.stop)
	return g
}

func (g *gateway) applied() []applied {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.got)
}

func (g *gateway) last() applied {
	a := g.applied()
	if len(a) == 0 {
		return applied{}
	}
	return a[len(a)-1]
}

func ingressOf(a applied) string {
	if a.cfg == nil {
		return ""
	}
	return strings.Join(a.cfg.Peers["beta"].Ingress, ",")
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
	}
}

// TestFirstConfigAppliedAndACKed: the first configuration arrives type by type; it is
// applied once, whole, when it is complete, and every response is acknowledged.
func TestFirstConfigAppliedAndACKed(t *testing.T) {
	cp := startControlplane(t, "127.0.0.1:0", nil)
	cp.publish(t, "v1", egress{ingress: []string{"10.0.0.1:15443", "10.0.0.2:15443"}}.resources(t))
	g := startGateway(t, cp.addr, nil)

	eventually(t, "version v1 in force", func() bool { return g.c.Version() == "v1" })
	for _, typ := range xdsclient.Types {
		eventually(t, "an ACK of "+typ, func() bool { return cp.acked(typ, "v1") })
	}
	if !g.c.Connected() {
		t.Error("not connected")
	}
	if n := g.c.NACKs(); n != 0 {
		t.Errorf("%d NACKs while the first configuration arrived: %s", n, g.c.LastNACK())
	}
	got := g.applied()
	if len(got) != 1 {
		t.Fatalf("applied %d times, want once (only complete configurations are applied)", len(got))
	}
	a := got[0]
	if a.version != "v1" || a.cfg.Domain != "alpha" || ingressOf(a) != "10.0.0.1:15443,10.0.0.2:15443" {
		t.Errorf("applied %s: domain %q, beta ingress %q", a.version, a.cfg.Domain, ingressOf(a))
	}
	if p := a.cfg.Peers["beta"]; string(p.Bundle) != string(betaBundle) || p.Transport != "h2" {
		t.Errorf("peer beta: %+v", p)
	}
	if r, ok := a.cfg.Table.LookupRPC(mesh.ServiceKey{Name: "com.beta.Pay"}); !ok || r.Peer != "beta" {
		t.Errorf("route of com.beta.Pay: %+v %v", r, ok)
	}
	// The first request of the stream names the gateway; every type is subscribed.
	reqs := cp.requests()
	if n := reqs[0].GetNode(); n.GetId() != "alpha/egress/test-TestFirstConfigAppliedAndACKed" || n.GetCluster() != xdsres.RoleEgress {
		t.Errorf("first request's node: %v", n)
	}
	var subscribed []string
	for _, r := range reqs {
		if r.GetResponseNonce() == "" {
			subscribed = append(subscribed, r.GetTypeUrl())
		}
	}
	if !slices.Equal(subscribed, xdsclient.Types) {
		t.Errorf("subscribed to %v, want %v", subscribed, xdsclient.Types)
	}
}

// TestNACKKeepsLastGood: an update that does not decode is refused with its reason (a NACK
// with error_detail), the configuration in force stays, and the refused resource is
// forgotten: the next good update applies without it.
func TestNACKKeepsLastGood(t *testing.T) {
	cp := startControlplane(t, "127.0.0.1:0", nil)
	cp.publish(t, "v1", egress{ingress: []string{"10.0.0.1:15443"}}.resources(t))
	g := startGateway(t, cp.addr, nil)
	eventually(t, "version v1 in force", func() bool { return g.c.Version() == "v1" })

	// v2 changes only the endpoints, to an address with port 0.
	cp.publish(t, "v2", egress{ingress: []string{"10.0.0.1:0"}}.resources(t))
	eventually(t, "a NACK of the endpoints", func() bool { return cp.nack(resource.EndpointType) != nil })
	nack := cp.nack(resource.EndpointType).GetErrorDetail()
	if nack.GetCode() != int32(codes.InvalidArgument) || !strings.Contains(nack.GetMessage(), `xds: endpoints of "peer/beta": bad address`) {
		t.Errorf("error detail: code %d, %q", nack.GetCode(), nack.GetMessage())
	}
	if g.c.NACKs() != 1 || g.c.LastNACK() != nack.GetMessage() {
		t.Errorf("client: %d NACKs, last %q; sent %q", g.c.NACKs(), g.c.LastNACK(), nack.GetMessage())
	}
	if v := g.c.Version(); v != "v1" {
		t.Errorf("version in force after the NACK: %s, want v1", v)
	}
	if a := g.applied(); len(a) != 1 {
		t.Errorf("the refused update was applied: %d applications", len(a))
	}
	if !g.c.Connected() {
		t.Error("a NACK must not end the stream")
	}

	// v3: the endpoints are good again, at another address.
	cp.publish(t, "v3", egress{ingress: []string{"10.0.0.3:15443"}}.resources(t))
	eventually(t, "version v3 in force", func() bool { return g.c.Version() == "v3" })
	if got := ingressOf(g.last()); got != "10.0.0.3:15443" {
		t.Errorf("beta ingress after v3: %s", got)
	}
	if g.c.NACKs() != 1 {
		t.Errorf("%d NACKs, want 1: %s", g.c.NACKs(), g.c.LastNACK())
	}
}

// TestInvalidResourceForgotten: after a refused update, an update of another type applies
// with the resources in force before the refusal, not with the refused one.
func TestInvalidResourceForgotten(t *testing.T) {
	cp := startControlplane(t, "127.0.0.1:0", nil)
	cp.publish(t, "v1", egress{ingress: []string{"10.0.0.1:15443"}}.resources(t))
	g := startGateway(t, cp.addr, nil)
	eventually(t, "version v1 in force", func() bool { return g.c.Version() == "v1" })

	// v2 changes only the endpoints, to an invalid address: refused.
	cp.publish(t, "v2", egress{ingress: []string{"10.0.0.1:0"}}.resources(t))
	eventually(t, "a NACK of the endpoints", func() bool { return cp.nack(resource.EndpointType) != nil })

	// v3 keeps v2's (refused) endpoints and changes beta's cluster: only the cluster is
	// sent, and it applies with the endpoints of v1.
	r := egress{ingress: []string{"10.0.0.1:0"}, transport: "quic"}.resources(t)
	cp.publish(t, "v3", r)
	eventually(t, "version v3 in force", func() bool { return g.c.Version() == "v3" })
	a := g.last()
	if a.cfg.Peers["beta"].Transport != "quic" || ingressOf(a) != "10.0.0.1:15443" {
		t.Errorf("v3: transport %q, ingress %q; want quic and v1's 10.0.0.1:15443", a.cfg.Peers["beta"].Transport, ingressOf(a))
	}
}

// TestDanglingRoute: a route to a cluster that has not arrived is refused (NACK) and the
// configuration in force stays; the route is kept, so that when the cluster arrives the
// picture completes and applies without the route being sent again.
func TestDanglingRoute(t *testing.T) {
	cp := startControlplane(t, "127.0.0.1:0", nil)
	cp.publish(t, "v1", egress{ingress: []string{"10.0.0.1:15443"}}.resources(t))
	g := startGateway(t, cp.addr, nil)
	eventually(t, "version v1 in force", func() bool { return g.c.Version() == "v1" })

	// v2: only the route configuration changes, with a route to peer/gamma, a cluster
	// the gateway does not have.
	cp.publish(t, "v2", egress{ingress: []string{"10.0.0.1:15443"}, gamma: "com.gamma.Ledger"}.resources(t))
	eventually(t, "a NACK of the routes", func() bool { return cp.nack(resource.RouteType) != nil })
	if msg := cp.nack(resource.RouteType).GetErrorDetail().GetMessage(); msg != `xds: route "grpc/com.gamma.Ledger": unknown cluster "peer/gamma"` {
		t.Errorf("error detail: %q", msg)
	}
	if v := g.c.Version(); v != "v1" {
		t.Errorf("version in force after the dangling route: %s, want v1", v)
	}
	if _, ok := g.last().cfg.Table.LookupRPC(mesh.ServiceKey{Name: "com.gamma.Ledger"}); ok {
		t.Error("the dangling route is in force")
	}

	// v3: the cluster arrives (only the clusters are sent): the kept route completes.
	routesSent := countResources(cp.responses(), resource.RouteType)
	cp.publish(t, "v3", egress{ingress: []string{"10.0.0.1:15443"}, gamma: "com.gamma.Ledger", gammaCl: true}.resources(t))
	eventually(t, "version v3 in force", func() bool { return g.c.Version() == "v3" })
	r, ok := g.last().cfg.Table.LookupRPC(mesh.ServiceKey{Name: "com.gamma.Ledger"})
	if !ok || r.Peer != "gamma" {
		t.Errorf("route of com.gamma.Ledger in v3: %+v %v", r, ok)
	}
	if n := countResources(cp.responses(), resource.RouteType); n != routesSent {
		t.Errorf("the route configuration was sent again (%d → %d)", routesSent, n)
	}
	if r, ok := g.last().cfg.Table.LookupRPC(mesh.ServiceKey{Name: "com.beta.Pay"}); !ok || r.Peer != "beta" {
		t.Errorf("route of com.beta.Pay in v3: %+v %v", r, ok)
	}
}

func countResources(rs []*discoverygrpc.DeltaDiscoveryResponse, typ string) int {
	n := 0
	for _, r := range rs {
		if r.GetTypeUrl() == typ {
			n += len(r.GetResources())
		}
	}
	return n
}

// TestApplyRefusal: an update the gateway cannot install (Apply fails) is refused with
// "apply: …"; the configuration in force stays, and the refused resources do not ride
// along with a later, unrelated update.
func TestApplyRefusal(t *testing.T) {
	cp := startControlplane(t, "127.0.0.1:0", nil)
	cp.publish(t, "v1", egress{ingress: []string{"10.0.0.1:15443"}}.resources(t))
	g := startGateway(t, cp.addr, nil)
	g.mu.Lock()
	g.refuse = func(c *xdsres.GatewayConfig) error {
		if c.Peers["beta"].Transport == "carrier-pigeon" {
			return errors.New("transport carrier-pigeon not supported")
		}
		return nil
	}
	g.mu.Unlock()
	eventually(t, "version v1 in force", func() bool { return g.c.Version() == "v1" })

	cp.publish(t, "v2", egress{ingress: []string{"10.0.0.1:15443"}, transport: "carrier-pigeon"}.resources(t))
	eventually(t, "a NACK of the clusters", func() bool { return cp.nack(resource.ClusterType) != nil })
	if msg := cp.nack(resource.ClusterType).GetErrorDetail().GetMessage(); msg != "apply: transport carrier-pigeon not supported" {
		t.Errorf("error detail: %q", msg)
	}
	if v := g.c.Version(); v != "v1" {
		t.Errorf("version in force: %s, want v1", v)
	}

	// v3 changes only the endpoints; the refused cluster is not sent again.
	cp.publish(t, "v3", egress{ingress: []string{"10.0.0.4:15443"}, transport: "carrier-pigeon"}.resources(t))
	eventually(t, "the endpoints of v3 answered", func() bool {
		return cp.acked(resource.EndpointType, "v3") || cp.nackOf(resource.EndpointType, "v3") != nil
	})
	if n := cp.nackOf(resource.EndpointType, "v3"); n != nil {
		t.Fatalf("an update of the endpoints alone was refused for the cluster refused before: %s", n.GetErrorDetail().GetMessage())
	}
	eventually(t, "version v3 in force", func() bool { return g.c.Version() == "v3" })
	if a := g.last(); ingressOf(a) != "10.0.0.4:15443" || a.cfg.Peers["beta"].Transport != "h2" {
		t.Errorf("v3: ingress %q, transport %q; want 10.0.0.4:15443 and v1's h2", ingressOf(a), a.cfg.Peers["beta"].Transport)
	}
}

// nackOf returns the refusal of the response of type typ that carried version, or nil.
func (cp *controlplane) nackOf(typ, version string) *discoverygrpc.DeltaDiscoveryRequest {
	nonces := map[string]bool{}
	for _, r := range cp.responses() {
		if r.GetTypeUrl() == typ && r.GetSystemVersionInfo() == version {
			nonces[r.GetNonce()] = true
		}
	}
	for _, r := range cp.requests() {
		if r.GetTypeUrl() == typ && nonces[r.GetResponseNonce()] && r.GetErrorDetail() != nil {
			return r
		}
	}
	return nil
}

// TestResumeAfterControlplaneRestart: while the controlplane is down the gateway keeps its
// configuration; when a new controlplane answers on the same address, the gateway
// resubscribes with the versions it holds (initial_resource_versions), is sent only what
// changed (and the removal of what went), and applies the current configuration.
func TestResumeAfterControlplaneRestart(t *testing.T) {
	cp1 := startControlplane(t, "127.0.0.1:0", nil)
	cp1.publish(t, "v1", egress{ingress: []string{"10.0.0.1:15443"}, gammaCl: true}.resources(t))
	g := startGateway(t, cp1.addr, nil)
	eventually(t, "version v1 in force", func() bool { return g.c.Version() == "v1" })
	for _, typ := range xdsclient.Types {
		eventually(t, "an ACK of "+typ, func() bool { return cp1.acked(typ, "v1") })
	}
	// What the gateway holds: every resource of the first server's responses.
	held := map[string]map[string]string{}
	for _, r := range cp1.responses() {
		for _, res := range r.GetResources() {
			if held[r.GetTypeUrl()] == nil {
				held[r.GetTypeUrl()] = map[string]string{}
			}
			held[r.GetTypeUrl()][res.GetName()] = res.GetVersion()
		}
	}

	cp1.stop()
	eventually(t, "the gateway sees the controlplane gone", func() bool { return !g.c.Connected() })
	if v := g.c.Version(); v != "v1" {
		t.Fatalf("version while the controlplane is down: %q, want v1 kept", v)
	}

	// The new controlplane's configuration changed while it was down: beta's ingress
	// moved and the cluster of gamma went.
	cp2 := startControlplane(t, cp1.addr, nil)
	cp2.publish(t, "v2", egress{ingress: []string{"10.0.0.2:15443"}}.resources(t))
	eventually(t, "version v2 in force", func() bool { return g.c.Version() == "v2" && ingressOf(g.last()) == "10.0.0.2:15443" })
	if !g.c.Connected() {
		t.Error("not connected to the new controlplane")
	}

	reqs := cp2.requests()
	for _, typ := range xdsclient.Types {
		i := slices.IndexFunc(reqs, func(r *discoverygrpc.DeltaDiscoveryRequest) bool { return r.GetTypeUrl() == typ })
		if i < 0 {
			t.Errorf("no subscription to %s", typ)
			continue
		}
		if got := reqs[i].GetInitialResourceVersions(); !mapsEqual(got, held[typ]) {
			t.Errorf("%s: initial_resource_versions %v, want %v", typ, got, held[typ])
		}
	}
	// Only what changed was sent again.
	for _, r := range cp2.responses() {
		var names []string
		for _, res := range r.GetResources() {
			names = append(names, res.GetName())
		}
		switch r.GetTypeUrl() {
		case resource.EndpointType:
			if len(names) > 0 && !slices.Equal(names, []string{"peer/beta"}) {
				t.Errorf("endpoints sent: %v", names)
			}
		case resource.ClusterType:
			if len(names) > 0 {
				t.Errorf("unchanged clusters sent again: %v", names)
			}
			if rm := r.GetRemovedResources(); len(rm) > 0 && !slices.Equal(rm, []string{"peer/gamma"}) {
				t.Errorf("clusters removed: %v", rm)
			}
		default:
			if len(names) > 0 {
				t.Errorf("unchanged %s sent again: %v", r.GetTypeUrl(), names)
			}
		}
	}
	eventually(t, "the removal of peer/gamma sent and acknowledged", func() bool {
		for _, r := range cp2.responses() {
			if r.GetTypeUrl() == resource.ClusterType && slices.Contains(r.GetRemovedResources(), "peer/gamma") {
				return cp2.acked(resource.ClusterType, "v2")
			}
		}
		return false
	})
	if n := g.c.NACKs(); n != 0 {
		t.Errorf("%d NACKs on resuming: %s", n, g.c.LastNACK())
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestRunEnds: Run returns when its context ends, whether it is streaming or waiting for a
// controlplane that does not answer; the leak check in TestMain sees its goroutines gone.
func TestRunEnds(t *testing.T) {
	t.Run("streaming", func(t *testing.T) {
		cp := startControlplane(t, "127.0.0.1:0", nil)
		cp.publish(t, "v1", egress{ingress: []string{"10.0.0.1:15443"}}.resources(t))
		g := startGateway(t, cp.addr, nil)
		eventually(t, "version v1 in force", func() bool { return g.c.Version() == "v1" })
		g.stop()
		if g.c.Connected() {
			t.Error("connected after Run returned")
		}
		if v := g.c.Version(); v != "v1" {
			t.Errorf("version after Run returned: %q", v)
		}
	})
	t.Run("no controlplane", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there any more
		g := startGateway(t, addr, nil)
		g.stop()
		if g.c.Version() != "" || g.c.Connected() {
			t.Errorf("version %q, connected %v", g.c.Version(), g.c.Connected())
		}
	})
}

// TestMutualTLS: with the identity package's configurations, a gateway SVID gets its
// configuration over mutual TLS; a client SVID that is not a gateway's is refused by the
// controlplane, and a server presenting a gateway's SVID is refused by the gateway.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := identity.NewCA("alpha.strait.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundlePath := filepath.Join(dir, "bundle.pem")
	if err := ca.WriteBundle(bundlePath); err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(ca.TrustDomain, bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	svid := func(role, name string) *x509svid.SVID {
		id, err := identity.ID("alpha.strait.local", role, name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := ca.WriteSVID(dir, role+"-"+name, id, identity.IssueOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := identity.LoadSVID(f)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	td := ca.TrustDomain

	cp := startControlplane(t, "127.0.0.1:0", identity.ControlplaneServerConfig(svid(identity.RoleControlplane, "cp-1"), bundle, td))
	cp.publish(t, "v1", egress{ingress: []string{"10.0.0.1:15443"}}.resources(t))

	// First a client whose SVID is of the right trust domain but not a gateway's.
	intruder := startGateway(t, cp.addr, identity.ControlplaneClientConfig(svid(identity.RoleControlplane, "intruder"), bundle, td))
	good := startGateway(t, cp.addr, identity.ControlplaneClientConfig(svid(identity.RoleEgress, "egress-1"), bundle, td))
	eventually(t, "version v1 in force over mutual TLS", func() bool { return good.c.Version() == "v1" })
	if v := intruder.c.Version(); v != "" {
		t.Errorf("a client that is not a gateway got version %q", v)
	}
	for _, r := range cp.requests() {
		if id := r.GetNode().GetId(); id != "" && id != "alpha/egress/test-TestMutualTLS" {
			t.Errorf("the controlplane took a request of %q", id)
		}
	}

	// A server presenting an egress SVID is not the controlplane: the gateway's
	// configuration refuses it in the handshake.
	fake := startControlplane(t, "127.0.0.1:0", identity.ControlplaneServerConfig(svid(identity.RoleEgress, "egress-2"), bundle, td))
	conn, err := tls.Dial("tcp", fake.addr, identity.ControlplaneClientConfig(svid(identity.RoleIngress, "ingress-1"), bundle, td))
	if err == nil {
		conn.Close()
		t.Fatal("the gateway's TLS configuration accepted an egress SVID as its controlplane")
	}
	if !strings.Contains(err.Error(), "is not the controlplane of alpha.strait.local") {
		t.Errorf("handshake error: %v", err)
	}
}
