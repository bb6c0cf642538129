// Package xdsres holds what the controlplane and the gateways agree on about Strait's xDS
// resources: their names, the metadata Strait puts in them, and Decode, which turns the
// resources a gateway received into the configuration it runs on. Resources are real
// Envoy types (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, Secret), so a
// proxyless gRPC client or a stock Envoy can read the same control plane.
package xdsres

import (
	"strings"

	"github.com/strait-mesh/strait/internal/mesh"
)

// Roles of gateways, which are also the names of their listeners and route configurations
// and the groups the controlplane keeps one snapshot for.
const (
	RoleEgress  = "egress"
	RoleIngress = "ingress"
)

// MetadataKey is the filter-metadata namespace of Strait's fields in Envoy resources.
const MetadataKey = "strait"

// PeerCluster names the egress cluster of a peer domain's ingress instances.
func PeerCluster(domain string) string { return "peer/" + domain }

// ServiceCluster names the ingress cluster of a local service's providers of one protocol
// family (mesh.Protocol.Family): svc/rpc/<service> (gRPC and Triple), svc/dubbo/<service>
// or svc/http/<service>.
func ServiceCluster(p mesh.Protocol, name string) string {
	return "svc/" + p.Family() + "/" + name
}

// BundleSecret names the secret holding a trust domain's CA bundle.
func BundleSecret(trustDomain string) string { return "bundle/" + trustDomain }

func trimPrefix(s, prefix string) (string, bool) {
	if !strings.HasPrefix(s, prefix) || len(s) == len(prefix) {
		return "", false
	}
	return s[len(prefix):], true
}
