package controlplane

import (
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	federationv1 "github.com/strait-mesh/strait/proto/federation/v1"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

// ServiceKey names an exported service in federation updates: protocol/name:version@group.
func ServiceKey(s *federationv1.Service) string {
	return s.GetProtocol() + "/" + s.GetName() + ":" + s.GetVersion() + "@" + s.GetGroup()
}

// ExportsFor computes what d exports to peer: each export that names the peer, pattern
// exports resolved against the providers (ResolveExports).
//
// An export carries each version and group its live native providers registered as a
// service of its own, so that the peer imports, routes and publishes them as Dubbo
// consumers expect (a Java consumer asks for version 1.0.0 and finds no provider
// published without one); an export naming a version or group carries only that one.
// Each such service carries the Dubbo service parameters of one of its providers
// (dubbourl.ServiceParam: methods, release, timestamp, …) and the metadata the export's
// allow-list lets cross.
//
// Providers registered by Strait for another domain (managed) are never exported again:
// an export whose only providers here are managed is itself an import, and is left out
// (no loops, even when two domains export the same service to each other). An export with
// no provider at all stays, with the version and group it names (its callers get
// UNAVAILABLE until one registers). It is a pure function.
func ExportsFor(d *config.Domain, peer string, providers []mesh.Instance) map[string]*federationv1.Service {
	return exportsFor(ResolveExports(d, providers), peer, indexByName(providers))
}

// indexByName groups the providers by service name, each name's sorted by address (so
// that the provider whose parameters an export carries does not depend on the registry's
// order).
func indexByName(providers []mesh.Instance) map[string][]mesh.Instance {
	m := map[string][]mesh.Instance{}
	for _, p := range providers {
		m[p.Service.Name] = append(m[p.Service.Name], p)
	}
	for _, ps := range m {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].Address < ps[j].Address })
	}
	return m
}

// exportsFor is ExportsFor over resolved exports and the providers by service name.
func exportsFor(exports []config.Export, peer string, byName map[string][]mesh.Instance) map[string]*federationv1.Service {
	out := map[string]*federationv1.Service{}
	for _, e := range exports {
		allowed := false
		for _, to := range e.To {
			allowed = allowed || to == peer
		}
		if !allowed {
			continue
		}
		// One service per version × group of the native providers; the first provider
		// (by address) of each gives its parameters.
		var keys []mesh.ServiceKey
		first := map[mesh.ServiceKey]mesh.Instance{}
		managed := false
		for _, p := range byName[e.Service] {
			if !p.Serves(mesh.ServiceKey{Name: e.Service, Version: e.Version, Group: e.Group}, e.Protocol) {
				continue
			}
			if registrysync.Managed(p) {
				managed = true
				continue
			}
			if _, ok := first[p.Service]; !ok {
				first[p.Service] = p
				keys = append(keys, p.Service)
			}
		}
		if len(keys) == 0 {
			if managed {
				continue
			}
			s := exported(e, mesh.ServiceKey{Name: e.Service, Version: e.Version, Group: e.Group}, nil)
			out[ServiceKey(s)] = s
			continue
		}
		for _, k := range keys {
			p := first[k]
			s := exported(e, k, &p)
			out[ServiceKey(s)] = s
		}
	}
	return out
}

// exported is the federation entry of export e for service key k, with the parameters of
// provider p when there is one.
func exported(e config.Export, k mesh.ServiceKey, p *mesh.Instance) *federationv1.Service {
	s := &federationv1.Service{
		Name: k.Name, Version: k.Version, Group: k.Group, Protocol: string(e.Protocol),
		Methods: append([]string(nil), e.Methods...),
	}
	if p == nil {
		return s
	}
	for k, v := range p.Metadata {
		if dubbourl.ServiceParam(k) || slices.Contains(e.Metadata, k) {
			if s.Metadata == nil {
				s.Metadata = map[string]string{}
			}
			s.Metadata[k] = v
		}
	}
	return s
}

const historyLen = 256

type delta struct {
	rev      uint64
	upserted []*federationv1.Service
	removed  []string
}

// peerLog is the export history of one peer: the current catalog and the recent deltas,
// so a caller that reconnects resumes instead of starting over.
type peerLog struct {
	rev     uint64
	cur     map[string]*federationv1.Service
	history []delta
}

// Federation serves the Federation API: each peer's exports and this domain's live
// ingress instances, as a snapshot and then deltas with revisions.
type Federation struct {
	federationv1.UnimplementedFederationServer
	log   *slog.Logger
	epoch string

	mu      sync.Mutex
	domain  *config.Domain
	peers   map[string]*peerLog
	ingress []string
	changed chan struct{} // closed and replaced on every change
}

// NewFederation returns a federation server for the domain d.
func NewFederation(d *config.Domain, log *slog.Logger) *Federation {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Federation{
		log: log, epoch: strconv.FormatInt(time.Now().UnixNano(), 36),
		domain: d, peers: map[string]*peerLog{}, changed: make(chan struct{}),
	}
}

// Update recomputes every peer's exports from the domain in force, the providers of the
// registry and the live ingress instances; peers see the differences.
func (f *Federation) Update(d *config.Domain, providers []mesh.Instance, ingress []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.domain = d
	ingress = append([]string(nil), ingress...)
	sort.Strings(ingress)
	ingressChanged := !equalStrings(ingress, f.ingress)
	f.ingress = ingress
	changed := ingressChanged
	exports, byName := ResolveExports(d, providers), indexByName(providers)
	for _, p := range d.Peers {
		l := f.peers[p.Domain]
		if l == nil {
			l = &peerLog{cur: map[string]*federationv1.Service{}}
			f.peers[p.Domain] = l
		}
		next := exportsFor(exports, p.Domain, byName)
		var dl delta
		for k, s := range next {
			if old, ok := l.cur[k]; !ok || !proto.Equal(old, s) {
				dl.upserted = append(dl.upserted, s)
			}
		}
		for k := range l.cur {
			if _, ok := next[k]; !ok {
				dl.removed = append(dl.removed, k)
			}
		}
		if len(dl.upserted) == 0 && len(dl.removed) == 0 && !ingressChanged {
			continue
		}
		l.rev++
		dl.rev = l.rev
		l.cur = next
		l.history = append(l.history, dl)
		if len(l.history) > historyLen {
			l.history = l.history[len(l.history)-historyLen:]
		}
		changed = true
	}
	// A peer no longer in the domain is exported nothing: its open stream hears every
	// service withdrawn, then ends (Catalog).
	for name, l := range f.peers {
		if _, ok := d.Peer(name); ok || len(l.cur) == 0 {
			continue
		}
		dl := delta{}
		for k := range l.cur {
			dl.removed = append(dl.removed, k)
		}
		sort.Strings(dl.removed)
		l.rev++
		dl.rev = l.rev
		l.cur = map[string]*federationv1.Service{}
		l.history = append(l.history, dl)
		if len(l.history) > historyLen {
			l.history = l.history[len(l.history)-historyLen:]
		}
		changed = true
	}
	if changed {
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// PeerDomainHeader is the gRPC metadata key in which this domain's ingress, having
// authenticated the peer controlplane's SVID, names the peer domain.
const PeerDomainHeader = "strait-peer-domain"

// Catalog streams the exports to req's domain. The caller's domain must be a peer, and
// the ingress that forwarded the call must have authenticated it as that peer.
func (f *Federation) Catalog(req *federationv1.CatalogRequest, stream federationv1.Federation_CatalogServer) error {
	peer := req.GetDomain()
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get(PeerDomainHeader); len(v) != 1 || v[0] != peer {
		return status.Errorf(codes.PermissionDenied, "federation: the caller was not authenticated as domain %q", peer)
	}
	f.mu.Lock()
	if _, ok := f.domain.Peer(peer); !ok {
		f.mu.Unlock()
		return status.Errorf(codes.PermissionDenied, "federation: %q is not a peer of %s", peer, f.domain.Domain)
	}
	l := f.peers[peer]
	if l == nil {
		l = &peerLog{cur: map[string]*federationv1.Service{}}
		f.peers[peer] = l
	}
	var first *federationv1.CatalogUpdate
	sent := req.GetResumeRevision()
	if req.GetEpoch() != f.epoch || !resumable(l, sent) {
		first = f.fullLocked(l)
		sent = l.rev
	} else if sent == l.rev {
		// Resumed with nothing missed: an empty delta tells the importer it is current
		// (else it would show the peer as stale until the next change).
		first = &federationv1.CatalogUpdate{Epoch: f.epoch, Revision: sent, Ingress: f.ingress}
	}
	f.mu.Unlock()
	if first != nil {
		if err := stream.Send(first); err != nil {
			return err
		}
	}
	ctx := stream.Context()
	for {
		f.mu.Lock()
		updates := f.sinceLocked(l, sent)
		wait := f.changed
		_, stillPeer := f.domain.Peer(peer)
		self := f.domain.Domain
		f.mu.Unlock()
		for _, u := range updates {
			if err := stream.Send(u); err != nil {
				return err
			}
			sent = u.GetRevision()
		}
		if !stillPeer {
			return status.Errorf(codes.PermissionDenied, "federation: %q is no longer a peer of %s", peer, self)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		}
	}
}

// resumable reports whether the deltas after rev are all still in the history.
func resumable(l *peerLog, rev uint64) bool {
	if rev == l.rev {
		return true
	}
	return rev > 0 && len(l.history) > 0 && l.history[0].rev <= rev+1 && rev < l.rev
}

func (f *Federation) fullLocked(l *peerLog) *federationv1.CatalogUpdate {
	u := &federationv1.CatalogUpdate{Epoch: f.epoch, Revision: l.rev, Full: true, Ingress: f.ingress}
	keys := make([]string, 0, len(l.cur))
	for k := range l.cur {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		u.Upserted = append(u.Upserted, l.cur[k])
	}
	return u
}

func (f *Federation) sinceLocked(l *peerLog, rev uint64) []*federationv1.CatalogUpdate {
	var out []*federationv1.CatalogUpdate
	for _, d := range l.history {
		if d.rev <= rev {
			continue
		}
		out = append(out, &federationv1.CatalogUpdate{Epoch: f.epoch, Revision: d.rev, Upserted: d.upserted, Removed: d.removed, Ingress: f.ingress})
	}
	return out
}
