package controlplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/strait-mesh/strait/internal/backoff"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/governance"
	federationv1 "github.com/strait-mesh/strait/proto/federation/v1"
)

// Import is what a peer domain exports to this one, as last heard.
type Import struct {
	Peer     string
	Services []*federationv1.Service
	// Ingress is the peer's live ingress instances.
	Ingress []string
	// Stale is set while the peer cannot be reached: the catalog is kept (calls keep
	// flowing) but may be out of date. A withdrawn service, by contrast, is removed.
	Stale    bool
	Epoch    string
	Revision uint64
	LastErr  string
	// Withdrawn counts the services the peer withdrew since this importer started.
	Withdrawn uint64
	// Quota is the peer's quota; Refused what it refused in the catalog as last heard.
	Quota   config.Quota
	Refused Refused
}

// Refused is what a peer's quota keeps out of this domain.
type Refused struct {
	// Services counts the services refused (beyond the quota of services or of
	// metadata bytes); Sample names the first of them (at most refusedSample).
	Services int      `json:"services,omitempty"`
	Sample   []string `json:"sample,omitempty"`
	// Ingress counts the peer's ingress instances beyond the quota of instances.
	Ingress int `json:"ingress,omitempty"`
	// Updates counts catalog updates coalesced (over the quota of updates a second)
	// since the importer started.
	Updates uint64 `json:"updates,omitempty"`
}

// refusedSample bounds the names of refused services kept for /debug/config;
// maxRefusedTracked the refused services told apart (beyond, they are only counted).
const (
	refusedSample     = 10
	maxRefusedTracked = 100000
)

// Importer keeps one peer's catalog current over the Federation stream: a snapshot, then
// deltas; after a broken stream it reconnects with backoff and resumes from its revision.
type Importer struct {
	peer, self string
	client     federationv1.FederationClient
	onChange   func()
	log        *slog.Logger

	mu        sync.Mutex
	services  map[string]*federationv1.Service
	ingress   []string
	epoch     string
	rev       uint64
	stale     bool
	lastErr   string
	withdrawn uint64
	// quota bounds what is kept; mdBytes is the metadata the kept services hold;
	// refused is what the quota keeps out; loggedRefused what was logged last.
	quota         config.Quota
	mdBytes       int64
	refused       Refused
	loggedRefused Refused
	// refusedKeys are the services refused, by key (at most maxRefusedTracked; beyond,
	// refusedMore counts them), so that a service the peer sends again is counted once.
	refusedKeys map[string]bool
	refusedMore int
	// changes paces onChange at the quota's updates a second; pending is set while a
	// change waits for its turn.
	changes *governance.Bucket
	pending bool
	// cancelStream ends the stream being followed; resync, set with it, has Run follow
	// again at once, asking for a full catalog (a changed quota).
	cancelStream context.CancelFunc
	resync       bool
}

// NewImporter returns an importer of peer's catalog for the domain self. onChange (may be
// nil) is called after every change, from Run's goroutine.
func NewImporter(self, peer string, client federationv1.FederationClient, onChange func(), log *slog.Logger) *Importer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onChange == nil {
		onChange = func() {}
	}
	q := config.Quota{}.WithDefaults()
	return &Importer{
		peer: peer, self: self, client: client, onChange: onChange,
		log: log.With("peer", peer), services: map[string]*federationv1.Service{}, stale: true,
		quota: q, changes: governance.NewBucket(q.UpdatesPerSecond, math.Max(1, q.UpdatesPerSecond), time.Now().UnixNano()),
	}
}

// SetQuota sets the peer's quota (defaults filled in). When it changes while something is
// refused or kept beyond it, the importer asks the peer for its full catalog again and
// applies the new quota to it (services kept before stay first).
func (im *Importer) SetQuota(q config.Quota) {
	q = q.WithDefaults()
	im.mu.Lock()
	defer im.mu.Unlock()
	if q == im.quota {
		return
	}
	im.quota = q
	im.changes.Set(q.UpdatesPerSecond, math.Max(1, q.UpdatesPerSecond), time.Now().UnixNano())
	if im.refused.Services > 0 || im.refused.Ingress > 0 || len(im.services) > q.Services || im.mdBytes > q.MetadataBytes || len(im.ingress) > q.Instances {
		im.epoch, im.rev, im.resync = "", 0, true
		if im.cancelStream != nil {
			im.cancelStream()
		}
	}
}

// Carry takes over what another importer of the same peer last heard (the catalog, its
// epoch and revision), marked stale until this one hears from the peer: an importer
// restarted with new settings (a rotated trust bundle, other ingress seeds) keeps the
// routes in force meanwhile, and resumes the stream where the other left it. Call it
// before Run.
func (im *Importer) Carry(from *Importer) {
	from.mu.Lock()
	services := make(map[string]*federationv1.Service, len(from.services))
	for k, v := range from.services {
		services[k] = v
	}
	ingress := append([]string(nil), from.ingress...)
	epoch, rev, withdrawn, md, refused := from.epoch, from.rev, from.withdrawn, from.mdBytes, from.refused
	from.mu.Unlock()
	im.mu.Lock()
	im.services, im.ingress, im.epoch, im.rev, im.withdrawn = services, ingress, epoch, rev, withdrawn
	im.mdBytes, im.refused = md, refused
	im.stale = true
	im.mu.Unlock()
}

// Run follows the peer's catalog until ctx ends.
func (im *Importer) Run(ctx context.Context) {
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		start := time.Now()
		err := im.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		im.mu.Lock()
		if im.resync {
			// Not a failure: the quota changed; follow again, from a full catalog.
			im.resync = false
			im.mu.Unlock()
			continue
		}
		wasStale := im.stale
		im.stale = true
		if err != nil {
			im.lastErr = err.Error()
		}
		im.mu.Unlock()
		if !wasStale {
			im.log.Warn("peer unreachable; keeping its catalog, marked stale", "err", err)
			im.onChange()
		}
		if time.Since(start) > 10*time.Second {
			retry.Reset()
		}
		if !retry.Wait(ctx) {
			return
		}
	}
}

func (im *Importer) follow(ctx context.Context) error {
	im.mu.Lock()
	req := &federationv1.CatalogRequest{Domain: im.self, Epoch: im.epoch, ResumeRevision: im.rev}
	im.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	im.mu.Lock()
	im.cancelStream = cancel
	if im.resync {
		// The quota changed between two streams: this one starts from a full catalog.
		req.Epoch, req.ResumeRevision = "", 0
		im.resync = false
	}
	im.mu.Unlock()
	stream, err := im.client.Catalog(sctx, req)
	if err != nil {
		return err
	}
	for {
		u, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("federation: peer closed the stream")
			}
			return err
		}
		im.apply(u)
		im.changed(ctx)
	}
}

// changed calls onChange now if the quota of updates a second allows, else once, later,
// for all the updates that arrive meanwhile (the catalog is current; only passing it on
// to the routes and the registry is paced).
func (im *Importer) changed(ctx context.Context) {
	im.mu.Lock()
	if im.pending {
		im.refused.Updates++
		im.mu.Unlock()
		return
	}
	ok, wait := im.changes.Take(time.Now().UnixNano())
	if ok {
		im.mu.Unlock()
		im.onChange()
		return
	}
	im.pending = true
	im.refused.Updates++
	im.mu.Unlock()
	// The timer lives at most one pacing interval; after ctx ends it does nothing.
	time.AfterFunc(wait, func() {
		if ctx.Err() != nil {
			return
		}
		im.mu.Lock()
		im.pending = false
		im.mu.Unlock()
		im.onChange()
	})
}

func (im *Importer) apply(u *federationv1.CatalogUpdate) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if u.GetFull() {
		keep := make(map[string]bool, len(u.GetUpserted()))
		for _, s := range u.GetUpserted() {
			keep[ServiceKey(s)] = true
		}
		for k := range im.services {
			if !keep[k] {
				im.withdrawn++
			}
		}
		// Services kept before stay first in line; the rest are taken in key order.
		prev := im.services
		im.services, im.mdBytes = map[string]*federationv1.Service{}, 0
		im.refusedKeys, im.refusedMore, im.refused.Sample = nil, 0, nil
		ups := slices.Clone(u.GetUpserted())
		slices.SortStableFunc(ups, func(a, b *federationv1.Service) int {
			_, ka := prev[ServiceKey(a)]
			_, kb := prev[ServiceKey(b)]
			switch {
			case ka && !kb:
				return -1
			case kb && !ka:
				return 1
			}
			return strings.Compare(ServiceKey(a), ServiceKey(b))
		})
		for _, s := range ups {
			im.keepLocked(s)
		}
	} else {
		for _, k := range u.GetRemoved() {
			delete(im.refusedKeys, k)
			if s, ok := im.services[k]; ok {
				im.withdrawn++
				im.mdBytes -= metadataBytes(s)
				delete(im.services, k)
			}
		}
		for _, s := range u.GetUpserted() {
			im.keepLocked(s)
		}
	}
	im.refused.Services = len(im.refusedKeys) + im.refusedMore
	ingress := u.GetIngress()
	im.refused.Ingress = 0
	if n := im.quota.Instances; len(ingress) > n {
		im.refused.Ingress = len(ingress) - n
		ingress = slices.Sorted(slices.Values(ingress))[:n]
	}
	im.ingress = append([]string(nil), ingress...)
	im.epoch, im.rev = u.GetEpoch(), u.GetRevision()
	if im.stale {
		im.log.Info("peer catalog current", "revision", im.rev, "services", len(im.services))
	}
	im.stale, im.lastErr = false, ""
	if r := im.refused; r.Services != im.loggedRefused.Services || r.Ingress != im.loggedRefused.Ingress {
		if r.Services > 0 || r.Ingress > 0 {
			im.log.Warn("peer catalog over its quota: the excess is refused and not imported",
				"services", len(im.services), "refused_services", r.Services, "first_refused", r.Sample,
				"refused_ingress", r.Ingress, "quota_services", im.quota.Services,
				"quota_metadata_bytes", im.quota.MetadataBytes, "quota_instances", im.quota.Instances)
		} else {
			im.log.Info("peer catalog within its quota again", "services", len(im.services))
		}
		im.loggedRefused = r
	}
}

// keepLocked keeps s (a new service or a new version of one kept) unless the quota of
// services or of metadata bytes refuses it.
func (im *Importer) keepLocked(s *federationv1.Service) {
	k := ServiceKey(s)
	size := metadataBytes(s)
	old, had := im.services[k]
	grow := size
	if had {
		grow -= metadataBytes(old)
	}
	if (!had && len(im.services) >= im.quota.Services) || im.mdBytes+grow > im.quota.MetadataBytes {
		if had {
			// A kept service that grew beyond the quota: the old version stays.
			return
		}
		switch {
		case im.refusedKeys[k]:
		case len(im.refusedKeys) < maxRefusedTracked:
			if im.refusedKeys == nil {
				im.refusedKeys = map[string]bool{}
			}
			im.refusedKeys[k] = true
			if len(im.refused.Sample) < refusedSample {
				im.refused.Sample = append(im.refused.Sample, k)
			}
		default:
			im.refusedMore++
		}
		return
	}
	delete(im.refusedKeys, k)
	im.services[k] = s
	im.mdBytes += grow
}

// metadataBytes is what a service's metadata and methods take.
func metadataBytes(s *federationv1.Service) int64 {
	n := 0
	for k, v := range s.GetMetadata() {
		n += len(k) + len(v)
	}
	for _, m := range s.GetMethods() {
		n += len(m)
	}
	return int64(n)
}

// Import returns the catalog as last heard.
func (im *Importer) Import() Import {
	im.mu.Lock()
	defer im.mu.Unlock()
	out := Import{Peer: im.peer, Ingress: append([]string(nil), im.ingress...), Stale: im.stale, Epoch: im.epoch, Revision: im.rev, LastErr: im.lastErr, Withdrawn: im.withdrawn,
		Quota: im.quota, Refused: im.refused}
	out.Refused.Sample = slices.Clone(im.refused.Sample)
	for _, s := range im.services {
		out.Services = append(out.Services, s)
	}
	sort.Slice(out.Services, func(a, b int) bool { return ServiceKey(out.Services[a]) < ServiceKey(out.Services[b]) })
	return out
}
