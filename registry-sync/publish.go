package registrysync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/strait-mesh/strait/internal/mesh"
)

// Metadata keys that mark an instance Strait registered on behalf of another domain.
// Managed instances are never exported again (no loops, even when two domains export to
// each other) and never changed by anyone but their owner.
const (
	MetaManaged = "strait.managed" // "true"
	MetaOrigin  = "strait.origin"  // the domain that exported the service
	MetaOwner   = "strait.owner"   // the process that registered it, e.g. "alpha/egress-1"
)

// Managed reports whether i was registered by Strait for another domain.
func Managed(i mesh.Instance) bool { return i.Metadata[MetaManaged] == "true" }

func instanceKey(i mesh.Instance) string {
	return fmt.Sprintf("%s|%s|%s|%s|%s", i.Protocol, i.Service.Name, i.Service.Version, i.Service.Group, i.Address)
}

// Publisher keeps a desired set of instances registered by this process in a registry:
// Set registers what is new or changed and deregisters what is gone. It is the reconcile
// step of imports. Safe for concurrent use; calls are serialized.
type Publisher struct {
	reg Registry
	log *slog.Logger

	mu   sync.Mutex
	have map[string]mesh.Instance
}

// NewPublisher returns a publisher writing to reg.
func NewPublisher(reg Registry, log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Publisher{reg: reg, log: log, have: map[string]mesh.Instance{}}
}

// Set makes the published set equal to desired. Failures are returned joined; what failed
// is tried again by the next Set.
func (p *Publisher) Set(ctx context.Context, desired []mesh.Instance) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := make(map[string]mesh.Instance, len(desired))
	for _, i := range desired {
		want[instanceKey(i)] = i
	}
	var errs []error
	for k, i := range p.have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := p.reg.Deregister(ctx, i); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(p.have, k)
		p.log.Info("withdrawn", "service", i.Service.Name, "instance", i.Address)
	}
	for k, i := range want {
		if old, ok := p.have[k]; ok && sameMeta(old, i) {
			continue
		}
		if err := p.reg.Register(ctx, i); err != nil {
			errs = append(errs, err)
			continue
		}
		p.have[k] = i
		p.log.Info("published", "service", i.Service.Name, "instance", i.Address)
	}
	return errors.Join(errs...)
}

// Published returns what is registered now.
func (p *Publisher) Published() []mesh.Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]mesh.Instance, 0, len(p.have))
	for _, i := range p.have {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return instanceKey(out[a]) < instanceKey(out[b]) })
	return out
}

func sameMeta(a, b mesh.Instance) bool {
	if len(a.Metadata) != len(b.Metadata) {
		return false
	}
	for k, v := range a.Metadata {
		if b.Metadata[k] != v {
			return false
		}
	}
	return true
}
