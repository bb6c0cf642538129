package controlplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/strait-mesh/strait/internal/backoff"
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
}

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
	return &Importer{
		peer: peer, self: self, client: client, onChange: onChange,
		log: log.With("peer", peer), services: map[string]*federationv1.Service{}, stale: true,
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
	epoch, rev, withdrawn := from.epoch, from.rev, from.withdrawn
	from.mu.Unlock()
	im.mu.Lock()
	im.services, im.ingress, im.epoch, im.rev, im.withdrawn = services, ingress, epoch, rev, withdrawn
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
		im.onChange()
	}
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
		im.services = map[string]*federationv1.Service{}
	}
	for _, k := range u.GetRemoved() {
		if _, ok := im.services[k]; ok {
			im.withdrawn++
			delete(im.services, k)
		}
	}
	for _, s := range u.GetUpserted() {
		im.services[ServiceKey(s)] = s
	}
	im.ingress = append([]string(nil), u.GetIngress()...)
	im.epoch, im.rev = u.GetEpoch(), u.GetRevision()
	if im.stale {
		im.log.Info("peer catalog current", "revision", im.rev, "services", len(im.services))
	}
	im.stale, im.lastErr = false, ""
}

// Import returns the catalog as last heard.
func (im *Importer) Import() Import {
	im.mu.Lock()
	defer im.mu.Unlock()
	out := Import{Peer: im.peer, Ingress: append([]string(nil), im.ingress...), Stale: im.stale, Epoch: im.epoch, Revision: im.rev, LastErr: im.lastErr, Withdrawn: im.withdrawn}
	for _, s := range im.services {
		out.Services = append(out.Services, s)
	}
	sort.Slice(out.Services, func(a, b int) bool { return ServiceKey(out.Services[a]) < ServiceKey(out.Services[b]) })
	return out
}
