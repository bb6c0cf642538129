// Package controlplane drives one domain's gateways: it holds the domain configuration in
// force, watches the registry, translates both (with what peers export to it) into Envoy
// resources by a pure function, serves them over ADS, and serves and follows the
// Federation API between peer domains.
package controlplane

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/tunnel"
	"github.com/strait-mesh/strait/internal/xdsres"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// Inputs is everything the translation depends on.
type Inputs struct {
	Domain *config.Domain
	// Bundles holds each peer trust domain's CA bundle (PEM).
	Bundles map[string][]byte
	// Providers are the live providers of the local registry.
	Providers []mesh.Instance
	// Imports are what each peer exports to this domain (federation), by peer domain.
	Imports map[string]Import
}

// Resources are the xDS resources of one domain, per gateway role.
type Resources struct {
	Egress  map[resource.Type][]types.Resource
	Ingress map[resource.Type][]types.Resource
}

// Translate turns a validated domain and its live inputs into Envoy resources. It is a pure
// function. A provider that cannot be translated is reported in the returned error and
// skipped; the resources are still complete and consistent.
func Translate(in Inputs) (*Resources, error) {
	d := in.Domain
	l := d.Limits.WithDefaults()
	var errs []error
	r := &Resources{
		Egress:  map[resource.Type][]types.Resource{},
		Ingress: map[resource.Type][]types.Resource{},
	}

	// Secrets: every peer's bundle, bound to its trust domain.
	for _, p := range d.Peers {
		pem, ok := in.Bundles[p.TrustDomain]
		if !ok {
			errs = append(errs, fmt.Errorf("peer %s: no trust bundle for %s", p.Domain, p.TrustDomain))
			continue
		}
		if err := checkBundle(p.TrustDomain, pem); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: trust bundle: %w", p.Domain, err))
			continue
		}
		s := bundleSecret(p.TrustDomain, pem)
		r.Egress[resource.SecretType] = append(r.Egress[resource.SecretType], s)
		r.Ingress[resource.SecretType] = append(r.Ingress[resource.SecretType], s)
	}

	// Egress: a cluster per peer with its ingress instances (the live ones the peer
	// reports, else the domain file's), routes for what consumers call: the domain file's
	// and the imported services.
	for _, p := range d.Peers {
		name := xdsres.PeerCluster(p.Domain)
		r.Egress[resource.ClusterType] = append(r.Egress[resource.ClusterType], peerCluster(p, l, d.Governance))
		if imp, ok := in.Imports[p.Domain]; ok && len(imp.Ingress) > 0 {
			p.Ingress = imp.Ingress
		}
		r.Egress[resource.EndpointType] = append(r.Egress[resource.EndpointType], assignment(name, peerEndpoints(p)))
	}
	routes, rerrs := ImportedRoutes(d, in.Imports, in.Providers)
	errs = append(errs, rerrs...)
	r.Egress[resource.RouteType] = []types.Resource{egressRoutes(routes, d.Governance)}
	r.Egress[resource.ListenerType] = []types.Resource{listener(xdsres.RoleEgress, d, l)}

	// Ingress: a cluster per exported service (pattern exports resolved against the
	// registry) with its native providers, routes for the exports. Managed providers are
	// this domain's own egress instances standing in for another domain's service: an
	// ingress never forwards to them.
	exports := ResolveExports(d, in.Providers)
	clusters := map[string]mesh.Protocol{}
	for _, e := range exports {
		clusters[xdsres.ServiceCluster(e.Protocol, e.Service)] = e.Protocol
	}
	eps := map[string][]*endpointv3.LbEndpoint{}
	// Endpoint metadata depends only on protocol, version and group: one shared message per
	// combination (read-only once built), not one per endpoint, at 100,000 providers.
	metas := map[[3]string]*corev3.Metadata{}
	for _, p := range in.Providers {
		name := xdsres.ServiceCluster(p.Protocol, p.Service.Name)
		if _, exported := clusters[name]; !exported || registrysync.Managed(p) {
			continue
		}
		ep, err := providerEndpoint(p, metas)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		eps[name] = append(eps[name], ep)
	}
	for _, name := range sortedKeys(clusters) {
		r.Ingress[resource.ClusterType] = append(r.Ingress[resource.ClusterType], serviceCluster(name, clusters[name], l, d.Governance))
		r.Ingress[resource.EndpointType] = append(r.Ingress[resource.EndpointType], assignment(name, eps[name]))
	}
	r.Ingress[resource.RouteType] = []types.Resource{ingressRoutes(exports, d.Governance)}
	r.Ingress[resource.ListenerType] = []types.Resource{listener(xdsres.RoleIngress, d, l)}
	return r, errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func md(fields map[string]any) *corev3.Metadata {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		// Only strings, lists of strings and numbers go in; NewStruct cannot fail on them.
		panic(fmt.Sprintf("controlplane: metadata: %v", err))
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{xdsres.MetadataKey: s}}
}

func strs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func bundleSecret(td string, pem []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: xdsres.BundleSecret(td),
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pem}},
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + td + "/"}},
			}},
		}},
	}
}

func peerCluster(p config.Peer, l config.Limits, g config.Governance) *clusterv3.Cluster {
	transport := p.Transport
	if transport == "" {
		transport = "h2"
	}
	tlsCtx := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{tunnel.ALPN},
			TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: xdsres.BundleSecret(p.TrustDomain)},
			},
		},
	}
	return &clusterv3.Cluster{
		Name:                 xdsres.PeerCluster(p.Domain),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(l.DialTimeout.D()),
		LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
		TransportSocket: &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(tlsCtx)},
		},
		Metadata:        md(map[string]any{"domain": p.Domain, "trustDomain": p.TrustDomain, "transport": transport}),
		CircuitBreakers: circuitBreakers(g.Retries),
	}
}

func serviceCluster(name string, p mesh.Protocol, l config.Limits, g config.Governance) *clusterv3.Cluster {
	family := p.Family()
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(l.DialTimeout.D()),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		Metadata:             md(map[string]any{"family": family}),
		CircuitBreakers:      circuitBreakers(g.Retries),
		OutlierDetection:     outlierDetection(g.OutlierDetection),
	}
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func peerEndpoints(p config.Peer) []*endpointv3.LbEndpoint {
	var out []*endpointv3.LbEndpoint
	for _, a := range p.Ingress {
		ep, err := lbEndpoint(a, nil)
		if err == nil { // validated already
			out = append(out, ep)
		}
	}
	return out
}

func providerEndpoint(i mesh.Instance, metas map[[3]string]*corev3.Metadata) (*endpointv3.LbEndpoint, error) {
	k := [3]string{string(i.Protocol), i.Service.Version, i.Service.Group}
	m := metas[k]
	if m == nil {
		m = md(map[string]any{"protocol": k[0], "version": k[1], "group": k[2]})
		metas[k] = m
	}
	ep, err := lbEndpoint(i.Address, m)
	if err != nil {
		return nil, fmt.Errorf("provider %s: %w", i, err)
	}
	return ep, nil
}

func lbEndpoint(addr string, meta *corev3.Metadata) (*endpointv3.LbEndpoint, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		return nil, errors.New("no host")
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", port, err)
	}
	if pn == 0 {
		return nil, errors.New("port 0")
	}
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(pn)},
			}}},
		}},
		HealthStatus: corev3.HealthStatus_HEALTHY,
		Metadata:     meta,
	}, nil
}

// checkBundle refuses a trust bundle the gateways could not use: not PEM, or holding no
// CA certificate (x509bundle.Parse is what the gateways run on it).
func checkBundle(trustDomain string, pem []byte) error {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return err
	}
	b, err := x509bundle.Parse(td, pem)
	if err != nil {
		return err
	}
	if len(b.X509Authorities()) == 0 {
		return errors.New("no certificate")
	}
	return nil
}

func assignment(cluster string, eps []*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	sort.SliceStable(eps, func(i, j int) bool { return addrOf(eps[i]) < addrOf(eps[j]) })
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}},
	}
}

func addrOf(e *endpointv3.LbEndpoint) string {
	sa := e.GetEndpoint().GetAddress().GetSocketAddress()
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
}

// rpcMatch matches /<service>/ (or one method) and the Triple version and group headers.
func rpcMatch(service, version, group string, method string) *routev3.RouteMatch {
	m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/" + service + "/"}}
	if method != "" {
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: "/" + service + "/" + method}
	}
	for h, v := range map[string]string{"tri-service-version": version, "tri-service-group": group} {
		if v == "" {
			continue
		}
		m.Headers = append(m.Headers, &routev3.HeaderMatcher{Name: h, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}},
		}})
	}
	sort.Slice(m.Headers, func(i, j int) bool { return m.Headers[i].Name < m.Headers[j].Name })
	return m
}

func toCluster(name string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}}
}

// ImportedRoutes is the domain file's routes plus a route for every gRPC, Triple or Dubbo service a
// peer exports to this domain (one per version and group, and one for calls that name
// none). An import is refused (and reported) when the service exists
// natively here, or when the domain file already routes it; plain HTTP services need a
// host or path in the domain file and are not routed from imports alone.
func ImportedRoutes(d *config.Domain, imports map[string]Import, providers []mesh.Instance) ([]config.Route, []error) {
	routes := append([]config.Route(nil), d.Routes...)
	type key struct {
		family, name, version, group string
	}
	have := map[key]bool{}
	for _, r := range d.Routes {
		have[key{r.Protocol.Family(), r.Service, r.Version, r.Group}] = true
	}
	native := map[string]bool{}
	for _, p := range providers {
		if !registrysync.Managed(p) {
			native[p.Service.Name] = true
		}
	}
	var errs []error
	for _, peer := range sortedKeys(imports) {
		if _, ok := d.Peer(peer); !ok {
			continue // no longer a peer: nothing of it is routed
		}
		for _, s := range imports[peer].Services {
			p := mesh.Protocol(s.GetProtocol())
			if !p.Routed() {
				continue
			}
			k := key{p.Family(), s.GetName(), s.GetVersion(), s.GetGroup()}
			switch {
			case native[s.GetName()]:
				errs = append(errs, fmt.Errorf("import of %s from %s refused: the service exists natively in %s", ServiceKey(s), peer, d.Domain))
				continue
			case have[k]:
				continue
			}
			have[k] = true
			routes = append(routes, config.Route{Service: s.GetName(), Protocol: p, Version: s.GetVersion(), Group: s.GetGroup(), Peer: peer})
			if any := (key{p.Family(), s.GetName(), "", ""}); !have[any] {
				// A call that names no version or group (a gRPC client, say) goes to the
				// first peer importing the service; the peer's ingress picks among all
				// the exported versions' providers.
				have[any] = true
				routes = append(routes, config.Route{Service: s.GetName(), Protocol: p, Peer: peer})
			}
		}
	}
	return routes, errs
}

func egressRoutes(rs []config.Route, g config.Governance) *routev3.RouteConfiguration {
	def := &routev3.VirtualHost{Name: "default", Domains: []string{"*"}}
	hosts := map[string]*routev3.VirtualHost{}
	for _, r := range rs {
		meta := md(map[string]any{
			"protocol": string(r.Protocol), "service": r.Service, "version": r.Version, "group": r.Group,
			"peer": r.Peer, "host": r.Host, "pathPrefix": r.PathPrefix,
		})
		rt := &routev3.Route{Name: routeName(r.Protocol, r.Service, r.Version, r.Group, r.Host, r.PathPrefix), Action: toCluster(xdsres.PeerCluster(r.Peer)), Metadata: meta}
		govern(rt, xdsres.RoleEgress, r.Peer, r.Service, g)
		if r.Protocol.Routed() {
			rt.Match = rpcMatch(r.Service, r.Version, r.Group, "")
			def.Routes = append(def.Routes, rt)
			continue
		}
		prefix := r.PathPrefix
		if prefix == "" {
			prefix = "/"
		}
		rt.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: prefix}}
		if prefix == "/" {
			rt.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
		}
		if r.Host == "" {
			def.Routes = append(def.Routes, rt)
			continue
		}
		h := strings.ToLower(r.Host)
		vh := hosts[h]
		if vh == nil {
			vh = &routev3.VirtualHost{Name: "http/" + h, Domains: []string{h, h + ":*"}}
			hosts[h] = vh
		}
		vh.Routes = append(vh.Routes, rt)
	}
	rc := &routev3.RouteConfiguration{Name: xdsres.RoleEgress}
	for _, h := range sortedKeys(hosts) {
		rc.VirtualHosts = append(rc.VirtualHosts, hosts[h])
	}
	rc.VirtualHosts = append(rc.VirtualHosts, def)
	for _, vh := range rc.VirtualHosts {
		specificFirst(vh.Routes)
	}
	return rc
}

// routeName names a route uniquely within its route configuration.
func routeName(p mesh.Protocol, service, version, group, host, prefix string) string {
	n := string(p) + "/" + service
	if version != "" || group != "" {
		n += ":" + version + ":" + group
	}
	if host != "" || prefix != "" {
		n += "@" + strings.ToLower(host) + prefix
	}
	return n
}

// specificFirst orders a virtual host's routes as Envoy and gRPC's xDS resolver need them
// (the first match wins): longer paths first, and among equal paths those that match more
// headers (a version or group) first. Strait's gateways pick the most specific match
// whatever the order; other xDS clients of the controlplane take the first.
func specificFirst(rs []*routev3.Route) {
	key := func(r *routev3.Route) (int, int) {
		m := r.GetMatch()
		path := m.GetPath()
		if path == "" {
			path = m.GetPrefix() + m.GetPathSeparatedPrefix()
		}
		return len(path), len(m.GetHeaders())
	}
	sort.SliceStable(rs, func(i, j int) bool {
		li, hi := key(rs[i])
		lj, hj := key(rs[j])
		if li != lj {
			return li > lj
		}
		return hi > hj
	})
}

func ingressRoutes(exports []config.Export, g config.Governance) *routev3.RouteConfiguration {
	vh := &routev3.VirtualHost{Name: "exports", Domains: []string{"*"}}
	for _, e := range exports {
		meta := md(map[string]any{
			"protocol": string(e.Protocol), "service": e.Service, "version": e.Version, "group": e.Group,
			"allow": strs(e.To), "methods": strs(e.Methods),
		})
		rt := &routev3.Route{Name: routeName(e.Protocol, e.Service, e.Version, e.Group, "", ""), Action: toCluster(xdsres.ServiceCluster(e.Protocol, e.Service)), Metadata: meta}
		govern(rt, xdsres.RoleIngress, "", e.Service, g)
		if e.Protocol.Routed() {
			rt.Match = rpcMatch(e.Service, e.Version, e.Group, "")
		} else {
			rt.Match = &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routev3.HeaderMatcher{{Name: "strait-service", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
					StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: e.Service}},
				}}},
			}
		}
		vh.Routes = append(vh.Routes, rt)
	}
	specificFirst(vh.Routes)
	return &routev3.RouteConfiguration{Name: xdsres.RoleIngress, VirtualHosts: []*routev3.VirtualHost{vh}}
}

func listener(role string, d *config.Domain, l config.Limits) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: role,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: role, ConfigSource: adsSource(),
		}},
		MaxRequestHeadersKb:   wrapperspb.UInt32(uint32((l.MaxHeaderBytes + 1023) / 1024)),
		RequestHeadersTimeout: durationpb.New(l.ReadHeaderTimeout.D()),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout: durationpb.New(l.IdleTimeout.D()),
		},
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(l.MaxConcurrentStreams)},
		HttpFilters:          append(governanceFilters(role, d.Governance), &hcmv3.HttpFilter{Name: "strait." + role}),
	}
	peers := map[string]any{}
	for _, p := range d.Peers {
		peers[p.Domain] = p.TrustDomain
	}
	return &listenerv3.Listener{
		Name: role,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
		}}}},
		Metadata: md(map[string]any{
			"domain": d.Domain, "trustDomain": d.TrustDomain, "peers": peers,
			"maxBodyBytes": float64(l.MaxBodyBytes), "dialTimeout": l.DialTimeout.D().String(),
			"callTimeout": l.CallTimeout.D().String(),
		}),
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("controlplane: %v", err))
	}
	return a
}
