package xdsres_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/routing"
	"github.com/strait-mesh/strait/internal/xdsres"
)

// The fixtures below build, by hand, the resources a controlplane sends (the same shapes
// controlplane.Translate produces): a domain alpha with one peer beta. Each error case
// starts from a valid set and breaks one thing.

var betaBundle = func() []byte {
	ca, err := identity.NewCA("beta.strait.local", time.Hour)
	if err != nil {
		panic(err)
	}
	return ca.BundlePEM()
}()

func meta(t *testing.T, f map[string]any) *corev3.Metadata {
	t.Helper()
	s, err := structpb.NewStruct(f)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{xdsres.MetadataKey: s}}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func hcm(role string) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix:            role,
		RouteSpecifier:        &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: role}},
		MaxRequestHeadersKb:   wrapperspb.UInt32(32),
		RequestHeadersTimeout: durationpb.New(3 * time.Second),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout: durationpb.New(time.Minute),
		},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(77)},
	}
}

func listener(t *testing.T, role string, md map[string]any) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name: role,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm(role))},
		}}}},
		Metadata: meta(t, md),
	}
}

func listenerMeta() map[string]any {
	return map[string]any{
		"domain": "alpha", "trustDomain": "alpha.strait.local",
		"peers":        map[string]any{"beta": "beta.strait.local"},
		"maxBodyBytes": float64(1 << 20), "dialTimeout": "1.5s", "callTimeout": "20s",
		"version": "v7",
	}
}

func secret(name string, pem []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pem}},
		}},
	}
}

func lbEndpoint(t *testing.T, host string, port uint32, md map[string]any) *endpointv3.LbEndpoint {
	ep := &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus: corev3.HealthStatus_HEALTHY,
	}
	if md != nil {
		ep.Metadata = meta(t, md)
	}
	return ep
}

func cla(name string, eps ...*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

func route(t *testing.T, name, cluster string, md map[string]any) *routev3.Route {
	r := &routev3.Route{
		Name:  name,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
	}
	if cluster != "" {
		r.Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}
	}
	if md != nil {
		r.Metadata = meta(t, md)
	}
	return r
}

func routeConfig(name string, rs ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: "default", Domains: []string{"*"}, Routes: rs}}}
}

func set(res xdsres.Resources, typ, name string, m proto.Message) {
	if res[typ] == nil {
		res[typ] = map[string]proto.Message{}
	}
	res[typ][name] = m
}

// egressResources is alpha's egress: one peer beta with two ingress instances, a gRPC
// route and an HTTP route to it, and beta's bundle.
func egressResources(t *testing.T) xdsres.Resources {
	t.Helper()
	res := xdsres.Resources{}
	set(res, resource.ListenerType, "egress", listener(t, "egress", listenerMeta()))
	set(res, resource.RouteType, "egress", routeConfig("egress",
		route(t, "grpc/com.beta.Pay", "peer/beta", map[string]any{"protocol": "grpc", "service": "com.beta.Pay", "peer": "beta"}),
		route(t, "http/echo", "peer/beta", map[string]any{"protocol": "http", "service": "echo", "peer": "beta", "host": "echo.beta", "pathPrefix": ""}),
	))
	set(res, resource.ClusterType, "peer/beta", &clusterv3.Cluster{Name: "peer/beta", Metadata: meta(t, map[string]any{"transport": "quic"})})
	unhealthy := lbEndpoint(t, "10.0.0.9", 15443, nil)
	unhealthy.HealthStatus = corev3.HealthStatus_UNHEALTHY
	set(res, resource.EndpointType, "peer/beta", cla("peer/beta", lbEndpoint(t, "10.0.0.1", 15443, nil), unhealthy, lbEndpoint(t, "10.0.0.2", 15443, nil)))
	set(res, resource.SecretType, "bundle/beta.strait.local", secret("bundle/beta.strait.local", betaBundle))
	return res
}

// ingressResources is alpha's ingress: one gRPC service exported to beta (and to a
// domain that is not a peer), methods limited, with two providers.
func ingressResources(t *testing.T) xdsres.Resources {
	t.Helper()
	res := xdsres.Resources{}
	set(res, resource.ListenerType, "ingress", listener(t, "ingress", listenerMeta()))
	set(res, resource.RouteType, "ingress", routeConfig("ingress",
		route(t, "grpc/com.alpha.Ledger", "svc/rpc/com.alpha.Ledger", map[string]any{
			"protocol": "grpc", "service": "com.alpha.Ledger", "allow": []any{"beta", "stranger"}, "methods": []any{"Get"},
		}),
	))
	set(res, resource.ClusterType, "svc/rpc/com.alpha.Ledger", &clusterv3.Cluster{Name: "svc/rpc/com.alpha.Ledger"})
	pm := map[string]any{"protocol": "grpc", "version": "", "group": ""}
	set(res, resource.EndpointType, "svc/rpc/com.alpha.Ledger", cla("svc/rpc/com.alpha.Ledger",
		lbEndpoint(t, "10.1.0.1", 50051, pm), lbEndpoint(t, "10.1.0.2", 50051, pm)))
	set(res, resource.SecretType, "bundle/beta.strait.local", secret("bundle/beta.strait.local", betaBundle))
	return res
}

func TestDecodeEgress(t *testing.T) {
	c, err := xdsres.Decode(xdsres.RoleEgress, egressResources(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != "v7" || c.Domain != "alpha" || c.TrustDomain != "alpha.strait.local" || c.Role != xdsres.RoleEgress {
		t.Errorf("identity of the config: %+v", c)
	}
	p := c.Peers["beta"]
	if p.TrustDomain != "beta.strait.local" || p.Transport != "quic" || string(p.Bundle) != string(betaBundle) {
		t.Errorf("peer beta: %+v", p)
	}
	if got := strings.Join(p.Ingress, ","); got != "10.0.0.1:15443,10.0.0.2:15443" {
		t.Errorf("peer beta ingress (the unhealthy one left out): %s", got)
	}
	want := config.Limits{
		MaxHeaderBytes: 32 << 10, MaxBodyBytes: 1 << 20, MaxConcurrentStreams: 77,
		ReadHeaderTimeout: config.Duration(3 * time.Second), IdleTimeout: config.Duration(time.Minute),
		DialTimeout: config.Duration(1500 * time.Millisecond), CallTimeout: config.Duration(20 * time.Second),
	}.WithDefaults()
	if c.Limits != want {
		t.Errorf("limits %+v, want %+v", c.Limits, want)
	}
	if r, ok := c.Table.LookupRPC(mesh.ServiceKey{Name: "com.beta.Pay"}); !ok || r.Peer != "beta" || r.Protocol != mesh.ProtocolGRPC {
		t.Errorf("rpc route: %+v %v", r, ok)
	}
	if r, ok := c.Table.LookupHTTP("echo.beta", "/x"); !ok || r.Peer != "beta" || r.Service.Name != "echo" {
		t.Errorf("http route: %+v %v", r, ok)
	}
}

func TestDecodeIngress(t *testing.T) {
	c, err := xdsres.Decode(xdsres.RoleIngress, ingressResources(t))
	if err != nil {
		t.Fatal(err)
	}
	k := mesh.ServiceKey{Name: "com.alpha.Ledger"}
	if _, d := c.Table.Authorize("beta", mesh.ProtocolTriple, k, "Get"); d != routing.Allowed {
		t.Errorf("beta Get: %v", d)
	}
	if _, d := c.Table.Authorize("beta", mesh.ProtocolGRPC, k, "Put"); d != routing.Forbidden {
		t.Errorf("beta Put (not an allowed method): %v", d)
	}
	// "stranger" is in the route's allow list but not a configured peer: never admitted.
	if _, d := c.Table.Authorize("stranger", mesh.ProtocolGRPC, k, "Get"); d != routing.Forbidden {
		t.Errorf("stranger: %v", d)
	}
	eps := c.Endpoints(k, mesh.ProtocolGRPC)
	if len(eps) != 2 || eps[0].Address != "10.1.0.1:50051" || eps[1].Protocol != mesh.ProtocolGRPC {
		t.Errorf("providers: %v", eps)
	}
	if got := c.Endpoints(k, mesh.ProtocolHTTP); len(got) != 0 {
		t.Errorf("http providers of an rpc service: %v", got)
	}
}

// TestDecodeErrors: every way a resource set can be wrong is refused with an error that
// names the resource; the ones more resources can mend are DanglingErrors.
func TestDecodeErrors(t *testing.T) {
	type mutate func(t *testing.T, res xdsres.Resources)
	lis := func(role string, f func(l *listenerv3.Listener)) mutate {
		return func(t *testing.T, res xdsres.Resources) {
			l := res[resource.ListenerType][role].(*listenerv3.Listener)
			f(l)
		}
	}
	lisMeta := func(role string, f func(m map[string]any)) mutate {
		return func(t *testing.T, res xdsres.Resources) {
			m := listenerMeta()
			f(m)
			set(res, resource.ListenerType, role, listener(t, role, m))
		}
	}
	withHCM := func(role string, a func(t *testing.T) *anypb.Any) mutate {
		return lis(role, func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a(t)}
		})
	}
	egressRoute := func(md map[string]any, cluster string) mutate {
		return func(t *testing.T, res xdsres.Resources) {
			set(res, resource.RouteType, "egress", routeConfig("egress", route(t, "grpc/com.beta.Pay", cluster, md)))
		}
	}
	ingressRoute := func(md map[string]any, cluster string) mutate {
		return func(t *testing.T, res xdsres.Resources) {
			set(res, resource.RouteType, "ingress", routeConfig("ingress", route(t, "grpc/com.alpha.Ledger", cluster, md)))
		}
	}
	bundle := func(pem string) mutate {
		return func(t *testing.T, res xdsres.Resources) {
			set(res, resource.SecretType, "bundle/beta.strait.local", secret("bundle/beta.strait.local", []byte(pem)))
		}
	}
	endpoint := func(host string, port uint32) mutate {
		return func(t *testing.T, res xdsres.Resources) {
			set(res, resource.EndpointType, "peer/beta", cla("peer/beta", lbEndpoint(t, host, port, nil)))
		}
	}
	grpcMeta := map[string]any{"protocol": "grpc", "service": "com.beta.Pay", "peer": "beta"}

	cases := []struct {
		name     string
		role     string
		base     string // the valid set the case breaks: the role's own unless set
		mutate   mutate
		want     string // the whole error, or its beginning when prefix is set
		prefix   bool
		also     string // more the error must say (protobuf's own words, after its prefix)
		dangling bool
	}{
		{name: "unknown role", role: "sidecar", want: `xds: unknown role "sidecar"`},
		{name: "no listener", role: "egress", dangling: true, want: `xds: no listener "egress"`,
			mutate: func(t *testing.T, res xdsres.Resources) { delete(res[resource.ListenerType], "egress") }},
		{name: "listener of the other role only", role: "ingress", base: "egress", dangling: true, want: `xds: no listener "ingress"`},
		{name: "listener without domain", role: "egress", want: `xds: listener "egress": no domain or trust domain`,
			mutate: lisMeta("egress", func(m map[string]any) { delete(m, "domain") })},
		{name: "listener without trust domain", role: "ingress", want: `xds: listener "ingress": no domain or trust domain`,
			mutate: lisMeta("ingress", func(m map[string]any) { m["trustDomain"] = "" })},
		{name: "listener without metadata", role: "egress", want: `xds: listener "egress": no domain or trust domain`,
			mutate: lis("egress", func(l *listenerv3.Listener) { l.Metadata = nil })},
		{name: "peer without trust domain", role: "egress", want: `xds: listener "egress": peer "beta" has no trust domain`,
			mutate: lisMeta("egress", func(m map[string]any) { m["peers"] = map[string]any{"beta": ""} })},
		{name: "peer trust domain not a string", role: "egress", want: `xds: listener "egress": peer "beta" has no trust domain`,
			mutate: lisMeta("egress", func(m map[string]any) { m["peers"] = map[string]any{"beta": 1.0} })},
		{name: "dial timeout not a duration", role: "egress", want: `xds: listener "egress": dialTimeout "soon"`,
			mutate: lisMeta("egress", func(m map[string]any) { m["dialTimeout"] = "soon" })},
		{name: "negative call timeout", role: "ingress", want: `xds: listener "ingress": callTimeout "-1s"`,
			mutate: lisMeta("ingress", func(m map[string]any) { m["callTimeout"] = "-1s" })},
		{name: "no filter chain", role: "egress", want: `xds: listener "egress": want one filter chain with one filter`,
			mutate: lis("egress", func(l *listenerv3.Listener) { l.FilterChains = nil })},
		{name: "two filter chains", role: "egress", want: `xds: listener "egress": want one filter chain with one filter`,
			mutate: lis("egress", func(l *listenerv3.Listener) { l.FilterChains = append(l.FilterChains, l.FilterChains[0]) })},
		{name: "two filters", role: "ingress", want: `xds: listener "ingress": want one filter chain with one filter`,
			mutate: lis("ingress", func(l *listenerv3.Listener) {
				l.FilterChains[0].Filters = append(l.FilterChains[0].Filters, l.FilterChains[0].Filters[0])
			})},
		{name: "filter without typed config", role: "egress", prefix: true,
			want:   `xds: listener "egress": http connection manager: `,
			mutate: lis("egress", func(l *listenerv3.Listener) { l.FilterChains[0].Filters[0].ConfigType = nil })},
		{name: "filter config of another type", role: "egress", prefix: true,
			want:   `xds: listener "egress": http connection manager: proto:`,
			also:   "mismatched message type",
			mutate: withHCM("egress", func(t *testing.T) *anypb.Any { return mustAny(t, &clusterv3.Cluster{Name: "x"}) })},
		{name: "filter config with an unknown type URL", role: "egress", prefix: true,
			want: `xds: listener "egress": http connection manager: `,
			mutate: withHCM("egress", func(t *testing.T) *anypb.Any {
				return &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Message", Value: []byte{1, 2, 3}}
			})},
		{name: "malformed filter config bytes", role: "ingress", prefix: true,
			want: `xds: listener "ingress": http connection manager: `,
			mutate: withHCM("ingress", func(t *testing.T) *anypb.Any {
				a := mustAny(t, hcm("ingress"))
				a.Value = []byte{0x0a, 0xff, 0xff, 0xff} // field 1, length 2^28-ish: truncated
				return a
			})},
		{name: "route configuration of the other role", role: "egress", want: `xds: listener "egress": route configuration "ingress", want "egress"`,
			mutate: withHCM("egress", func(t *testing.T) *anypb.Any { return mustAny(t, hcm("ingress")) })},
		{name: "no route configuration", role: "egress", dangling: true, want: `xds: listener "egress": no route configuration "egress"`,
			mutate: func(t *testing.T, res xdsres.Resources) { delete(res[resource.RouteType], "egress") }},
		{name: "route configuration of a wrong type", role: "ingress", dangling: true, want: `xds: listener "ingress": no route configuration "ingress"`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.RouteType, "ingress", &clusterv3.Cluster{})
			}},
		{name: "secret of a wrong type", role: "egress", want: `xds: secret "bundle/beta.strait.local": wrong type`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.SecretType, "bundle/beta.strait.local", &clusterv3.Cluster{})
			}},
		{name: "secret that is not a bundle", role: "egress", want: `xds: secret "svid/egress-1": not a trust bundle`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.SecretType, "svid/egress-1", secret("svid/egress-1", betaBundle))
			}},
		{name: "bundle of no trust domain", role: "ingress", want: `xds: secret "bundle/": not a trust bundle`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.SecretType, "bundle/", secret("bundle/", betaBundle))
			}},
		{name: "empty bundle", role: "egress", want: `xds: secret "bundle/beta.strait.local": empty bundle`, mutate: bundle("")},
		{name: "bundle without PEM", role: "egress", want: `xds: secret "bundle/beta.strait.local": bundle holds no PEM certificate`,
			mutate: bundle("not a certificate")},
		{name: "bundle holding a key", role: "ingress", want: `xds: secret "bundle/beta.strait.local": bundle holds a PRIVATE KEY block`,
			mutate: bundle("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")},
		{name: "bundle with a broken certificate", role: "egress", prefix: true,
			want:   `xds: secret "bundle/beta.strait.local": bundle certificate 1: x509: `,
			mutate: bundle(string(betaBundle) + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
		{name: "cluster named other than its key", role: "egress", want: `xds: cluster "peer/beta": wrong type or name`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.ClusterType, "peer/beta", &clusterv3.Cluster{Name: "peer/gamma"})
			}},
		{name: "cluster of a wrong type", role: "ingress", want: `xds: cluster "svc/rpc/com.alpha.Ledger": wrong type or name`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.ClusterType, "svc/rpc/com.alpha.Ledger", secret("svc/rpc/com.alpha.Ledger", betaBundle))
			}},
		{name: "egress cluster not of a peer", role: "egress", want: `xds: cluster "svc/rpc/x": an egress cluster must be peer/<domain>`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.ClusterType, "svc/rpc/x", &clusterv3.Cluster{Name: "svc/rpc/x"})
			}},
		{name: "egress cluster of no domain", role: "egress", want: `xds: cluster "peer/": an egress cluster must be peer/<domain>`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.ClusterType, "peer/", &clusterv3.Cluster{Name: "peer/"})
			}},
		{name: "endpoint port 0", role: "egress", prefix: true, want: `xds: endpoints of "peer/beta": bad address `, mutate: endpoint("10.0.0.1", 0)},
		{name: "endpoint port out of range", role: "egress", prefix: true, want: `xds: endpoints of "peer/beta": bad address `, mutate: endpoint("10.0.0.1", 70000)},
		{name: "endpoint without host", role: "egress", prefix: true, want: `xds: endpoints of "peer/beta": bad address `, mutate: endpoint("", 15443)},
		{name: "endpoint without address", role: "egress", prefix: true, want: `xds: endpoints of "peer/beta": bad address `,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.EndpointType, "peer/beta", cla("peer/beta", &endpointv3.LbEndpoint{}))
			}},
		{name: "route without cluster", role: "egress", want: `xds: route "grpc/com.beta.Pay": no cluster`, mutate: egressRoute(grpcMeta, "")},
		{name: "route to an unknown cluster", role: "egress", dangling: true, want: `xds: route "grpc/com.beta.Pay": unknown cluster "peer/gamma"`,
			mutate: egressRoute(map[string]any{"protocol": "grpc", "service": "com.beta.Pay", "peer": "gamma"}, "peer/gamma")},
		{name: "route of an unknown protocol", role: "egress", want: `xds: route "grpc/com.beta.Pay": protocol "soap"`,
			mutate: egressRoute(map[string]any{"protocol": "soap", "service": "com.beta.Pay", "peer": "beta"}, "peer/beta")},
		{name: "route without metadata", role: "egress", want: `xds: route "grpc/com.beta.Pay": protocol ""`, mutate: egressRoute(nil, "peer/beta")},
		{name: "route without service", role: "egress", want: `xds: route "grpc/com.beta.Pay": no service`,
			mutate: egressRoute(map[string]any{"protocol": "grpc", "peer": "beta"}, "peer/beta")},
		{name: "route to the cluster of another peer", role: "egress", want: `xds: route "grpc/com.beta.Pay": peer "gamma" but cluster "peer/beta"`,
			mutate: egressRoute(map[string]any{"protocol": "grpc", "service": "com.beta.Pay", "peer": "gamma"}, "peer/beta")},
		{name: "ingress cluster of an unknown family", role: "ingress", want: `xds: cluster "svc/grpc/x": an ingress cluster must be svc/rpc/<service>, svc/dubbo/<service> or svc/http/<service>`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.ClusterType, "svc/grpc/x", &clusterv3.Cluster{Name: "svc/grpc/x"})
			}},
		{name: "ingress cluster of no service", role: "ingress", want: `xds: cluster "svc/http/": an ingress cluster must be svc/rpc/<service>, svc/dubbo/<service> or svc/http/<service>`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.ClusterType, "svc/http/", &clusterv3.Cluster{Name: "svc/http/"})
			}},
		{name: "ingress cluster of a peer", role: "ingress", want: `xds: cluster "peer/beta": an ingress cluster must be svc/rpc/<service>, svc/dubbo/<service> or svc/http/<service>`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.ClusterType, "peer/beta", &clusterv3.Cluster{Name: "peer/beta"})
			}},
		{name: "provider of an unknown protocol", role: "ingress", want: `xds: endpoints of "svc/rpc/com.alpha.Ledger": protocol "dubbo"`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.EndpointType, "svc/rpc/com.alpha.Ledger", cla("svc/rpc/com.alpha.Ledger",
					lbEndpoint(t, "10.1.0.1", 50051, map[string]any{"protocol": "dubbo"})))
			}},
		{name: "provider without metadata", role: "ingress", want: `xds: endpoints of "svc/rpc/com.alpha.Ledger": protocol ""`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.EndpointType, "svc/rpc/com.alpha.Ledger", cla("svc/rpc/com.alpha.Ledger", lbEndpoint(t, "10.1.0.1", 50051, nil)))
			}},
		{name: "provider with a bad address", role: "ingress", prefix: true, want: `xds: endpoints of "svc/rpc/com.alpha.Ledger": bad address `,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.EndpointType, "svc/rpc/com.alpha.Ledger", cla("svc/rpc/com.alpha.Ledger",
					lbEndpoint(t, "10.1.0.1", 0, map[string]any{"protocol": "grpc"})))
			}},
		{name: "export routed to the cluster of another family", role: "ingress",
			want:   `xds: route "grpc/com.alpha.Ledger": cluster "svc/rpc/com.alpha.Ledger", want "svc/http/com.alpha.Ledger"`,
			mutate: ingressRoute(map[string]any{"protocol": "http", "service": "com.alpha.Ledger"}, "svc/rpc/com.alpha.Ledger")},
		{name: "export routed to another service's cluster", role: "ingress",
			want: `xds: route "grpc/com.alpha.Ledger": cluster "svc/rpc/com.alpha.Other", want "svc/rpc/com.alpha.Ledger"`,
			mutate: func(t *testing.T, res xdsres.Resources) {
				set(res, resource.ClusterType, "svc/rpc/com.alpha.Other", &clusterv3.Cluster{Name: "svc/rpc/com.alpha.Other"})
				ingressRoute(map[string]any{"protocol": "grpc", "service": "com.alpha.Ledger"}, "svc/rpc/com.alpha.Other")(t, res)
			}},
		{name: "export to an unknown cluster", role: "ingress", dangling: true,
			want:   `xds: route "grpc/com.alpha.Ledger": unknown cluster "svc/rpc/com.alpha.Gone"`,
			mutate: ingressRoute(map[string]any{"protocol": "grpc", "service": "com.alpha.Ledger"}, "svc/rpc/com.alpha.Gone")},
		{name: "export without service", role: "ingress", want: `xds: route "grpc/com.alpha.Ledger": no service`,
			mutate: ingressRoute(map[string]any{"protocol": "triple"}, "svc/rpc/com.alpha.Ledger")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.base
			if base == "" {
				base = tc.role
			}
			res := egressResources(t)
			if base == xdsres.RoleIngress {
				res = ingressResources(t)
			}
			if tc.mutate != nil {
				tc.mutate(t, res)
			}
			c, err := xdsres.Decode(tc.role, res)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if c != nil {
				t.Errorf("a configuration came with the error: %+v", c)
			}
			got := err.Error()
			if tc.prefix && !strings.HasPrefix(got, tc.want) || !tc.prefix && got != tc.want {
				t.Errorf("error\n  %s\nwant\n  %s", got, tc.want)
			}
			if !strings.Contains(got, tc.also) {
				t.Errorf("error %q does not say %q", got, tc.also)
			}
			t.Log(got)
			var de *xdsres.DanglingError
			if errors.As(err, &de) != tc.dangling {
				t.Errorf("dangling %v, want %v (%v)", !tc.dangling, tc.dangling, err)
			}
		})
	}
}

// TestDecodeTolerates: what is incomplete but harmless is not an error.
func TestDecodeTolerates(t *testing.T) {
	t.Run("no secrets: peers without bundles", func(t *testing.T) {
		res := egressResources(t)
		delete(res, resource.SecretType)
		c, err := xdsres.Decode(xdsres.RoleEgress, res)
		if err != nil {
			t.Fatal(err)
		}
		if c.Peers["beta"].Bundle != nil {
			t.Errorf("bundle of beta: %q", c.Peers["beta"].Bundle)
		}
	})
	t.Run("a cluster of a peer not configured (yet)", func(t *testing.T) {
		res := egressResources(t)
		set(res, resource.ClusterType, "peer/gamma", &clusterv3.Cluster{Name: "peer/gamma"})
		set(res, resource.EndpointType, "peer/gamma", cla("peer/gamma", lbEndpoint(t, "", 0, nil))) // not even read
		c, err := xdsres.Decode(xdsres.RoleEgress, res)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Peers["gamma"]; ok {
			t.Errorf("gamma became a peer: %+v", c.Peers)
		}
	})
	t.Run("a cluster without endpoints", func(t *testing.T) {
		res := egressResources(t)
		delete(res[resource.EndpointType], "peer/beta")
		c, err := xdsres.Decode(xdsres.RoleEgress, res)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Peers["beta"].Ingress) != 0 {
			t.Errorf("ingress of beta: %v", c.Peers["beta"].Ingress)
		}
	})
	t.Run("unset limits take the defaults", func(t *testing.T) {
		res := egressResources(t)
		m := listenerMeta()
		delete(m, "dialTimeout")
		delete(m, "callTimeout")
		delete(m, "maxBodyBytes")
		l := listener(t, "egress", m)
		l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &hcmv3.HttpConnectionManager{
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "egress"}},
		})}
		set(res, resource.ListenerType, "egress", l)
		c, err := xdsres.Decode(xdsres.RoleEgress, res)
		if err != nil {
			t.Fatal(err)
		}
		if c.Limits != (config.Limits{}).WithDefaults() {
			t.Errorf("limits %+v", c.Limits)
		}
	})
}
