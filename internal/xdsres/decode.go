package xdsres

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
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
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/routing"
)

// Peer is a peer domain as a gateway sees it.
type Peer struct {
	Domain      string
	TrustDomain string
	Transport   string
	// Bundle is the peer trust domain's CA bundle (PEM); nil while its secret has not
	// arrived, in which case the peer cannot be reached or admitted yet.
	Bundle []byte
	// Ingress lists the peer's ingress instances (egress only).
	Ingress []string
}

// GatewayConfig is the configuration a gateway runs on, decoded from its xDS resources.
type GatewayConfig struct {
	// Version is the controlplane's version of this configuration.
	Version     string
	Role        string
	Domain      string
	TrustDomain string
	Table       *routing.Table
	Peers       map[string]Peer
	// Providers holds each local service cluster's providers (ingress only).
	Providers map[string][]mesh.Instance
	Limits    config.Limits
	// Governance holds the policies of the gateway's role, its retry budget and (ingress)
	// outlier detection.
	Governance config.Governance
}

// DanglingError is an inconsistency that more resources can mend: a reference to a
// resource that has not arrived. A gateway refuses the update but keeps its resources,
// since what is missing may be on its way.
type DanglingError struct{ msg string }

func (e *DanglingError) Error() string { return e.msg }

func dangling(format string, args ...any) error {
	return &DanglingError{msg: fmt.Sprintf(format, args...)}
}

// Resources are the resources a gateway holds, by type URL and name.
type Resources map[string]map[string]proto.Message

// Decode checks a gateway's resources for validity and consistency and turns them into its
// configuration. Anything wrong is an error that names the resource: the update that led
// here must be refused (NACKed) and the last good configuration kept.
func Decode(role string, res Resources) (*GatewayConfig, error) {
	if role != RoleEgress && role != RoleIngress {
		return nil, fmt.Errorf("xds: unknown role %q", role)
	}
	lis, ok := res[resource.ListenerType][role].(*listenerv3.Listener)
	if !ok {
		return nil, dangling("xds: no listener %q", role)
	}
	c := &GatewayConfig{Role: role, Peers: map[string]Peer{}, Providers: map[string][]mesh.Instance{}}
	if err := decodeListener(c, lis); err != nil {
		return nil, err
	}
	rc, ok := res[resource.RouteType][role].(*routev3.RouteConfiguration)
	if !ok {
		return nil, dangling("xds: listener %q: no route configuration %q", role, role)
	}

	// Secrets: every bundle must be a PEM list of CA certificates.
	bundles := map[string][]byte{}
	for name, m := range res[resource.SecretType] {
		s, ok := m.(*tlsv3.Secret)
		if !ok {
			return nil, fmt.Errorf("xds: secret %q: wrong type", name)
		}
		td, ok := trimPrefix(name, "bundle/")
		if !ok {
			return nil, fmt.Errorf("xds: secret %q: not a trust bundle", name)
		}
		b := s.GetValidationContext().GetTrustedCa().GetInlineBytes()
		if err := checkBundle(b); err != nil {
			return nil, fmt.Errorf("xds: secret %q: %w", name, err)
		}
		bundles[td] = b
	}
	for d, p := range c.Peers {
		p.Bundle = bundles[p.TrustDomain]
		c.Peers[d] = p
	}

	// Clusters and their endpoints.
	clusters := map[string]*clusterv3.Cluster{}
	for name, m := range res[resource.ClusterType] {
		cl, ok := m.(*clusterv3.Cluster)
		if !ok || cl.GetName() != name {
			return nil, fmt.Errorf("xds: cluster %q: wrong type or name", name)
		}
		clusters[name] = cl
		r, err := retriesOf(cl)
		if err != nil {
			return nil, err
		}
		c.Governance.Retries = r
		if role == RoleIngress {
			if c.Governance.OutlierDetection, err = outliersOf(cl); err != nil {
				return nil, err
			}
		}
	}
	if len(clusters) == 0 {
		c.Governance.Retries = config.Retries{}.WithDefaults()
	}
	if role == RoleIngress && len(clusters) == 0 {
		c.Governance.OutlierDetection = config.OutlierDetection{}.WithDefaults()
	}
	retried := false
	endpoints := func(cluster string) ([]string, []*endpointv3.LbEndpoint, error) {
		cla, _ := res[resource.EndpointType][cluster].(*endpointv3.ClusterLoadAssignment)
		var addrs []string
		var eps []*endpointv3.LbEndpoint
		for _, loc := range cla.GetEndpoints() {
			for _, ep := range loc.GetLbEndpoints() {
				if hs := ep.GetHealthStatus(); hs != corev3.HealthStatus_HEALTHY && hs != corev3.HealthStatus_UNKNOWN {
					continue
				}
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				if sa.GetAddress() == "" || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
					return nil, nil, fmt.Errorf("xds: endpoints of %q: bad address %v", cluster, sa)
				}
				addrs = append(addrs, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
				eps = append(eps, ep)
			}
		}
		return addrs, eps, nil
	}

	switch role {
	case RoleEgress:
		for name, cl := range clusters {
			domain, ok := trimPrefix(name, "peer/")
			if !ok {
				return nil, fmt.Errorf("xds: cluster %q: an egress cluster must be peer/<domain>", name)
			}
			p, known := c.Peers[domain]
			if !known {
				// A peer being added (its listener entry follows) or removed: not used.
				continue
			}
			if t := str(cl.GetMetadata(), "transport"); t != "" {
				p.Transport = t
			}
			addrs, _, err := endpoints(name)
			if err != nil {
				return nil, err
			}
			p.Ingress = addrs
			c.Peers[domain] = p
		}
		var routes []routing.Route
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				rt, err := decodeRoute(r, clusters)
				if err != nil {
					return nil, err
				}
				peer, _ := trimPrefix(r.GetRoute().GetCluster(), "peer/")
				if rt.peer != peer {
					return nil, fmt.Errorf("xds: route %q: peer %q but cluster %q", r.GetName(), rt.peer, r.GetRoute().GetCluster())
				}
				dl, err := deadlineOf(r)
				if err != nil {
					return nil, err
				}
				retried = retried || r.GetRoute().GetRetryPolicy() != nil
				routes = append(routes, routing.Route{
					Service: rt.key, Protocol: rt.protocol, Peer: rt.peer,
					Host: str(r.GetMetadata(), "host"), PathPrefix: str(r.GetMetadata(), "pathPrefix"),
					Deadline: dl,
				})
			}
		}
		c.Table = routing.NewTable(routes, nil)

	case RoleIngress:
		for name := range clusters {
			rest, ok := trimPrefix(name, "svc/")
			var svc, family string
			if ok {
				for _, family = range []string{"rpc", "dubbo", "http"} {
					if svc, ok = trimPrefix(rest, family+"/"); ok {
						break
					}
				}
			}
			if !ok {
				return nil, fmt.Errorf("xds: cluster %q: an ingress cluster must be svc/rpc/<service>, svc/dubbo/<service> or svc/http/<service>", name)
			}
			_, eps, err := endpoints(name)
			if err != nil {
				return nil, err
			}
			insts := make([]mesh.Instance, 0, len(eps))
			for _, ep := range eps {
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				p := mesh.Protocol(str(ep.GetMetadata(), "protocol"))
				if !p.Valid() || p.Family() != family {
					return nil, fmt.Errorf("xds: endpoints of %q: protocol %q", name, p)
				}
				insts = append(insts, mesh.Instance{
					Service:  mesh.ServiceKey{Name: svc, Version: str(ep.GetMetadata(), "version"), Group: str(ep.GetMetadata(), "group")},
					Protocol: p,
					Address:  net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
				})
			}
			c.Providers[name] = insts
		}
		var exports []routing.Export
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				rt, err := decodeRoute(r, clusters)
				if err != nil {
					return nil, err
				}
				if want := ServiceCluster(rt.protocol, rt.key.Name); r.GetRoute().GetCluster() != want {
					return nil, fmt.Errorf("xds: route %q: cluster %q, want %q", r.GetName(), r.GetRoute().GetCluster(), want)
				}
				dl, err := deadlineOf(r)
				if err != nil {
					return nil, err
				}
				retried = retried || r.GetRoute().GetRetryPolicy() != nil
				e := routing.Export{Service: rt.key, Protocol: rt.protocol, Peers: map[string]bool{}, Deadline: dl}
				for _, a := range list(r.GetMetadata(), "allow") {
					if _, ok := c.Peers[a]; ok { // a peer not (or no longer) configured is never admitted
						e.Peers[a] = true
					}
				}
				if ms := list(r.GetMetadata(), "methods"); len(ms) > 0 {
					e.Methods = map[string]bool{}
					for _, m := range ms {
						e.Methods[m] = true
					}
				}
				exports = append(exports, e)
			}
		}
		c.Table = routing.NewTable(nil, exports)
	}
	// Routes either all retry or none do (the domain's retries.disabled); with no route,
	// nothing is retried anyway.
	c.Governance.Retries.Disabled = !retried
	return c, nil
}

type decodedRoute struct {
	key      mesh.ServiceKey
	protocol mesh.Protocol
	peer     string
}

func decodeRoute(r *routev3.Route, clusters map[string]*clusterv3.Cluster) (decodedRoute, error) {
	cl := r.GetRoute().GetCluster()
	if cl == "" {
		return decodedRoute{}, fmt.Errorf("xds: route %q: no cluster", r.GetName())
	}
	if clusters[cl] == nil {
		return decodedRoute{}, dangling("xds: route %q: unknown cluster %q", r.GetName(), cl)
	}
	m := r.GetMetadata()
	d := decodedRoute{
		key:      mesh.ServiceKey{Name: str(m, "service"), Version: str(m, "version"), Group: str(m, "group")},
		protocol: mesh.Protocol(str(m, "protocol")),
		peer:     str(m, "peer"),
	}
	if !d.protocol.Valid() {
		return decodedRoute{}, fmt.Errorf("xds: route %q: protocol %q", r.GetName(), d.protocol)
	}
	if d.key.Name == "" {
		return decodedRoute{}, fmt.Errorf("xds: route %q: no service", r.GetName())
	}
	return d, nil
}

func decodeListener(c *GatewayConfig, lis *listenerv3.Listener) error {
	m := lis.GetMetadata()
	c.Domain, c.TrustDomain, c.Version = str(m, "domain"), str(m, "trustDomain"), str(m, "version")
	if c.Domain == "" || c.TrustDomain == "" {
		return fmt.Errorf("xds: listener %q: no domain or trust domain", lis.GetName())
	}
	if f := fields(m); f != nil {
		for d, td := range f["peers"].GetStructValue().GetFields() {
			if td.GetStringValue() == "" {
				return fmt.Errorf("xds: listener %q: peer %q has no trust domain", lis.GetName(), d)
			}
			c.Peers[d] = Peer{Domain: d, TrustDomain: td.GetStringValue()}
		}
		c.Limits.MaxBodyBytes = int64(f["maxBodyBytes"].GetNumberValue())
		for key, dst := range map[string]*config.Duration{"dialTimeout": &c.Limits.DialTimeout, "callTimeout": &c.Limits.CallTimeout} {
			if v := f[key].GetStringValue(); v != "" {
				d, err := time.ParseDuration(v)
				if err != nil || d < 0 {
					return fmt.Errorf("xds: listener %q: %s %q", lis.GetName(), key, v)
				}
				*dst = config.Duration(d)
			}
		}
	}
	chains := lis.GetFilterChains()
	if len(chains) != 1 || len(chains[0].GetFilters()) != 1 {
		return fmt.Errorf("xds: listener %q: want one filter chain with one filter", lis.GetName())
	}
	var hcm hcmv3.HttpConnectionManager
	if err := chains[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		return fmt.Errorf("xds: listener %q: http connection manager: %w", lis.GetName(), err)
	}
	if got := hcm.GetRds().GetRouteConfigName(); got != c.Role {
		return fmt.Errorf("xds: listener %q: route configuration %q, want %q", lis.GetName(), got, c.Role)
	}
	if kb := hcm.GetMaxRequestHeadersKb().GetValue(); kb > 0 {
		c.Limits.MaxHeaderBytes = int(kb) * 1024
	}
	if d := hcm.GetRequestHeadersTimeout().AsDuration(); d > 0 {
		c.Limits.ReadHeaderTimeout = config.Duration(d)
	}
	if d := hcm.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration(); d > 0 {
		c.Limits.IdleTimeout = config.Duration(d)
	}
	c.Limits.MaxConcurrentStreams = hcm.GetHttp2ProtocolOptions().GetMaxConcurrentStreams().GetValue()
	c.Limits = c.Limits.WithDefaults()
	return decodeGovernance(c, lis.GetName(), hcm.GetHttpFilters())
}

func checkBundle(b []byte) error {
	if len(b) == 0 {
		return errors.New("empty bundle")
	}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("bundle holds a %s block", blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("bundle certificate %d: %w", n, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("bundle holds no PEM certificate")
	}
	return nil
}

func fields(m *corev3.Metadata) map[string]*structpb.Value {
	return m.GetFilterMetadata()[MetadataKey].GetFields()
}

func str(m *corev3.Metadata, k string) string { return fields(m)[k].GetStringValue() }

func list(m *corev3.Metadata, k string) []string {
	var out []string
	for _, v := range fields(m)[k].GetListValue().GetValues() {
		out = append(out, v.GetStringValue())
	}
	sort.Strings(out)
	return out
}

// Endpoints returns the providers of service k in the protocol family of p, filtered by
// version and group (empty matches any). It implements the ingress' Endpoints.
func (c *GatewayConfig) Endpoints(k mesh.ServiceKey, p mesh.Protocol) []mesh.Instance {
	return mesh.Serving(c.Providers[ServiceCluster(p, k.Name)], k, p)
}
