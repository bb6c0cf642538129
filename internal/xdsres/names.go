// Package xdsres holds what the controlplane and the gateways agree on about Strait's xDS
// resources: their names, the metadata Strait puts in them, and Decode, which turns the
// resources a gateway received into the configuration it runs on. Resources are real
// Envoy types (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, Secret), so a
// proxyless gRPC client or a stock Envoy can read the same control plane.
package xdsres

import (
	"strings"
	"time"

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

// Names of the listener's HTTP filters that carry governance policies: each is
// <prefix>/<policy name>. A rate limit's typed config is Envoy's LocalRateLimit; a
// concurrency limit's and a breaker's a Struct of their fields.
const (
	FilterRateLimit   = "strait.ratelimit"
	FilterConcurrency = "strait.concurrency"
	FilterBreaker     = "strait.breaker"
)

// MaxRateLimitKeys bounds the buckets of one rate limit that counts by keys (Envoy's
// max_dynamic_descriptors): beyond it, values not seen yet share one bucket.
const MaxRateLimitKeys = 10000

// RetryOn is the retry_on of every route: what provably never reached a provider.
const RetryOn = "connect-failure,refused-stream,reset-before-request"

// RetryBudgetTTL is the window over which a retry budget counts calls and retries.
const RetryBudgetTTL = 10 * time.Second
