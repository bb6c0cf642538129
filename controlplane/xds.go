package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/strait-mesh/strait/internal/xdsres"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// roleHash keys snapshots by gateway role: every egress of the domain shares one snapshot,
// every ingress another. A gateway sends its role as Node.Cluster.
type roleHash struct{}

func (roleHash) ID(n *corev3.Node) string { return n.GetCluster() }

// XDS serves the domain's resources to its gateways over ADS (delta and state of the world)
// with go-control-plane.
type XDS struct {
	log   *slog.Logger
	cache cachev3.SnapshotCache
	grpc  *grpc.Server

	mu      sync.Mutex
	version uint64
	cur     *Resources
}

// NewXDS returns an xDS server with no resources yet; gateways that connect wait for the
// first Publish. With tlsConf (identity.ControlplaneServerConfig) the server speaks
// mutual TLS; without, plaintext (for loopback only).
func NewXDS(log *slog.Logger, tlsConf *tls.Config) *XDS {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	x := &XDS{log: log, cache: cachev3.NewSnapshotCache(true, roleHash{}, nil)}
	srv := serverv3.NewServer(context.Background(), x.cache, nil)
	opts := []grpc.ServerOption{}
	if tlsConf != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConf)))
	}
	x.grpc = grpc.NewServer(append(opts,
		grpc.MaxConcurrentStreams(1<<16),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30e9, Timeout: 10e9}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5e9, PermitWithoutStream: true}),
	)...)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(x.grpc, srv)
	return x
}

// Serve answers gateways on ln until Stop.
func (x *XDS) Serve(ln net.Listener) error {
	err := x.grpc.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop closes every stream at once; gateways keep their last configuration and reconnect.
func (x *XDS) Stop() { x.grpc.Stop() }

// Version is the version of the resources last published.
func (x *XDS) Version() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return "v" + strconv.FormatUint(x.version, 10)
}

// Publish makes r the resources in force. It pushes make-before-break: first the new
// clusters, endpoints and secrets beside the old ones (so no route can point at something
// a gateway does not have), then the new routes and listeners, then without what is no
// longer used. It returns the final version.
func (x *XDS) Publish(r *Resources) (string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.cur
	if old != nil && sameResources(old.Egress, r.Egress) && sameResources(old.Ingress, r.Ingress) {
		return "v" + strconv.FormatUint(x.version, 10), nil
	}
	var steps []*Resources
	if old != nil {
		add := &Resources{Egress: union(old.Egress, r.Egress, false), Ingress: union(old.Ingress, r.Ingress, false)}
		routes := &Resources{Egress: union(old.Egress, r.Egress, true), Ingress: union(old.Ingress, r.Ingress, true)}
		steps = append(steps, add, routes)
	}
	steps = append(steps, r)
	for _, s := range steps {
		x.version++
		v := "v" + strconv.FormatUint(x.version, 10)
		for role, res := range map[string]map[resource.Type][]types.Resource{xdsres.RoleEgress: s.Egress, xdsres.RoleIngress: s.Ingress} {
			res = stamp(res, v)
			snap, err := cachev3.NewSnapshot(v, res)
			if err != nil {
				return "", fmt.Errorf("controlplane: snapshot %s for %s: %w", v, role, err)
			}
			if err := x.cache.SetSnapshot(context.Background(), role, snap); err != nil {
				return "", fmt.Errorf("controlplane: snapshot %s for %s: %w", v, role, err)
			}
		}
	}
	x.cur = r
	return "v" + strconv.FormatUint(x.version, 10), nil
}

// stamp returns res with its listeners carrying version v in their metadata, so that every
// publication reaches the gateways and each can tell which version it runs.
func stamp(res map[resource.Type][]types.Resource, v string) map[resource.Type][]types.Resource {
	out := make(map[resource.Type][]types.Resource, len(res))
	for t, rs := range res {
		out[t] = rs
	}
	ls := make([]types.Resource, 0, len(res[resource.ListenerType]))
	for _, r := range res[resource.ListenerType] {
		l := proto.Clone(r).(*listenerv3.Listener)
		if f := l.GetMetadata().GetFilterMetadata()[xdsres.MetadataKey]; f != nil {
			f.Fields["version"] = structpb.NewStringValue(v)
		}
		ls = append(ls, l)
	}
	out[resource.ListenerType] = ls
	return out
}

func sameResources(a, b map[resource.Type][]types.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	for t, as := range a {
		bs := b[t]
		if len(as) != len(bs) {
			return false
		}
		for i := range as {
			if !proto.Equal(as[i], bs[i]) {
				return false
			}
		}
	}
	return true
}

// union keeps old's listeners and routes (or next's, if newRoutes) and every cluster,
// endpoint assignment and secret of both, next's version winning.
func union(old, next map[resource.Type][]types.Resource, newRoutes bool) map[resource.Type][]types.Resource {
	out := map[resource.Type][]types.Resource{}
	for _, t := range []resource.Type{resource.ClusterType, resource.EndpointType, resource.SecretType} {
		byName := map[string]types.Resource{}
		var order []string
		for _, src := range [][]types.Resource{old[t], next[t]} {
			for _, r := range src {
				n := cachev3.GetResourceName(r)
				if _, seen := byName[n]; !seen {
					order = append(order, n)
				}
				byName[n] = r
			}
		}
		for _, n := range order {
			out[t] = append(out[t], byName[n])
		}
	}
	src := old
	if newRoutes {
		src = next
	}
	out[resource.ListenerType] = src[resource.ListenerType]
	out[resource.RouteType] = src[resource.RouteType]
	return out
}
