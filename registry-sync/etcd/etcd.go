// Package etcd is the etcd registry adapter. It uses dubbo-go's etcdv3 layout: one key
// per provider, /dubbo/<interface>/providers/<url-encoded provider URL>, attached to a
// lease that the registering process keeps alive, so a dead process's providers expire.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

const root = "/dubbo/"

// Options tune a Registry.
type Options struct {
	// LeaseTTL is how long providers outlive their process. Default 10s.
	LeaseTTL    time.Duration
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Registry is a registry in etcd.
type Registry struct {
	cli *clientv3.Client
	o   Options
	log *slog.Logger

	mu        sync.Mutex
	lease     clientv3.LeaseID
	stopAlive context.CancelFunc
	mine      map[string]bool
}

// New connects to etcd at endpoints.
func New(endpoints []string, o Options) (*Registry, error) {
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: o.DialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd registry: %w", err)
	}
	return &Registry{cli: cli, o: o, log: o.Logger, mine: map[string]bool{}}, nil
}

// Key returns the etcd key of an instance.
func Key(i mesh.Instance) string {
	return root + i.Service.Name + "/providers/" + url.QueryEscape(dubbourl.Format(i))
}

// Register puts the instance under this process's lease.
func (r *Registry) Register(ctx context.Context, inst mesh.Instance) error {
	lease, err := r.ensureLease(ctx)
	if err != nil {
		return err
	}
	k := Key(inst)
	if _, err := r.cli.Put(ctx, k, dubbourl.Format(inst), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("etcd registry: register %s: %w", inst, err)
	}
	r.mu.Lock()
	r.mine[k] = true
	r.mu.Unlock()
	return nil
}

func (r *Registry) ensureLease(ctx context.Context) (clientv3.LeaseID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lease != 0 {
		return r.lease, nil
	}
	g, err := r.cli.Grant(ctx, int64(r.o.LeaseTTL/time.Second))
	if err != nil {
		return 0, fmt.Errorf("etcd registry: lease: %w", err)
	}
	kctx, cancel := context.WithCancel(context.Background())
	ch, err := r.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		cancel()
		return 0, fmt.Errorf("etcd registry: keepalive: %w", err)
	}
	go func() {
		for range ch { // drained until kctx ends or the lease is lost
		}
	}()
	r.lease, r.stopAlive = g.ID, cancel
	return g.ID, nil
}

// Deregister deletes the instance's key.
func (r *Registry) Deregister(ctx context.Context, inst mesh.Instance) error {
	k := Key(inst)
	if _, err := r.cli.Delete(ctx, k); err != nil {
		return fmt.Errorf("etcd registry: deregister %s: %w", inst, err)
	}
	r.mu.Lock()
	delete(r.mine, k)
	r.mu.Unlock()
	return nil
}

// List returns every provider under /dubbo/.
func (r *Registry) List(ctx context.Context) ([]mesh.Instance, error) {
	all, _, err := r.load(ctx)
	if err != nil {
		return nil, err
	}
	return values(all), nil
}

func (r *Registry) load(ctx context.Context) (map[string]mesh.Instance, int64, error) {
	resp, err := r.cli.Get(ctx, root, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("etcd registry: list: %w", err)
	}
	all := make(map[string]mesh.Instance, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r.add(all, string(kv.Key))
	}
	return all, resp.Header.Revision, nil
}

// add parses a provider key into all; keys of other shapes (consumers, configurators) are skipped.
func (r *Registry) add(all map[string]mesh.Instance, key string) {
	i := strings.Index(key, "/providers/")
	if i < 0 {
		return
	}
	raw, err := url.QueryUnescape(key[i+len("/providers/"):])
	if err != nil {
		r.log.Warn("skipping provider key", "key", key, "err", err)
		return
	}
	inst, err := dubbourl.Parse(raw)
	if err != nil {
		r.log.Warn("skipping provider key", "key", key, "err", err)
		return
	}
	all[key] = inst
}

func values(m map[string]mesh.Instance) []mesh.Instance {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]mesh.Instance, 0, len(m))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// Watch subscribes to /dubbo/ and reports the full provider set after every change.
func (r *Registry) Watch(ctx context.Context, fn func([]mesh.Instance)) error {
	all, rev, err := r.load(ctx)
	if err != nil {
		return err
	}
	// A burst of changes is reported as one: a change is reported at once unless the last
	// report was less than a window ago, and the window is twice what the last report
	// took (at least minCoalesce), so that reporting a large registry never takes most of
	// the CPU while it changes fast.
	var (
		last, window = time.Time{}, minCoalesce
		dirty        bool
		timer        *time.Timer
		timerC       <-chan time.Time
	)
	report := func() {
		start := time.Now()
		fn(values(all))
		last, dirty = time.Now(), false
		window = max(minCoalesce, 2*last.Sub(start))
	}
	report()
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := r.cli.Watch(wctx, root, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return errors.New("etcd registry: watch closed")
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("etcd registry: watch: %w", err)
			}
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					delete(all, k)
				} else {
					r.add(all, k)
				}
			}
			dirty = true
			if wait := window - time.Since(last); wait <= 0 {
				report()
			} else if timerC == nil {
				timer = time.NewTimer(wait)
				timerC = timer.C
			}
		case <-timerC:
			timerC, timer = nil, nil
			if dirty {
				report()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// minCoalesce is the shortest window in which registry changes are reported as one.
const minCoalesce = 5 * time.Millisecond

// Close revokes the lease (removing this process's providers at once) and disconnects.
func (r *Registry) Close() error {
	r.mu.Lock()
	lease, stop := r.lease, r.stopAlive
	r.lease, r.stopAlive = 0, nil
	r.mu.Unlock()
	if stop != nil {
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = r.cli.Revoke(ctx, lease)
		cancel()
	}
	return r.cli.Close()
}

var _ registrysync.Registry = (*Registry)(nil)
