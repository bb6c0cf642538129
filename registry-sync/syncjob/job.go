package syncjob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/strait-mesh/strait/internal/backoff"
	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/leader"
	"github.com/strait-mesh/strait/registry-sync/registries"
)

// Options tune a Runner.
type Options struct {
	Logger *slog.Logger
	// Progress receives the initial full sync's progress ("synced N/M services"): updated in
	// place when Terminal, else as plain lines. Nil: no progress.
	Progress io.Writer
	Terminal bool
	// ID names this process in the election (leader.ID() if empty).
	ID string
}

// Runner runs one job.
type Runner struct {
	job     *Job
	log     *slog.Logger
	o       Options
	source  *endpoint
	target  *endpoint
	dirs    []direction
	elector leader.Elector
}

// endpoint is one side of the job: a registry to read and its persistent writes.
type endpoint struct {
	label string
	reg   registrysync.Registry
	// listAll lists every instance, including those the server reports unhealthy (a copy
	// is there even if Nacos' health check cannot reach its address).
	listAll func(context.Context) ([]mesh.Instance, error)
	put     func(context.Context, mesh.Instance) error
	del     func(context.Context, mesh.Instance) error
	close   func() error
}

type direction struct{ from, to *endpoint }

func open(s Side, log *slog.Logger) (*endpoint, error) {
	reg, err := registries.Open(s.Kind, registries.Params{Addresses: s.Addresses, Namespace: s.Namespace, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("sync job: %s: %w", s.Label(), err)
	}
	p, ok := reg.(registrysync.PersistentRegistry)
	if !ok {
		reg.Close()
		return nil, fmt.Errorf("sync job: %s: the registry cannot hold persistent copies", s.Label())
	}
	e := &endpoint{label: s.Label(), reg: reg, listAll: reg.List, put: p.RegisterPersistent, del: p.DeregisterPersistent, close: reg.Close}
	if f, ok := reg.(registrysync.FullLister); ok {
		e.listAll = f.ListAll
	}
	return e, nil
}

// New connects to the job's registries and, if the job has one, its election.
func New(job *Job, o Options) (*Runner, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{job: job, o: o, log: o.Logger.With("job", job.Name)}
	var err error
	if r.source, err = open(job.Source, r.log); err != nil {
		return nil, err
	}
	if r.target, err = open(job.Target, r.log); err != nil {
		r.source.close()
		return nil, err
	}
	r.dirs = []direction{{r.source, r.target}}
	if job.Direction == Both {
		r.dirs = append(r.dirs, direction{r.target, r.source})
	}
	if on := job.Leader.On; on != "none" {
		side := job.Target
		if on == "source" {
			side = job.Source
		}
		p := "/strait/sync/" + job.Name + "/leader"
		if side.Kind == "zookeeper" {
			r.elector, err = leader.NewZooKeeper(side.Addresses, p, o.ID, job.Leader.TTL.D(), r.log)
		} else {
			r.elector, err = leader.NewEtcd(side.Addresses, p, o.ID, job.Leader.TTL.D(), r.log)
		}
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("sync job: election on the %s: %w", on, err)
		}
	}
	return r, nil
}

// Close resigns and disconnects; the copies stay.
func (r *Runner) Close() error {
	var errs []error
	if r.elector != nil {
		errs = append(errs, r.elector.Close())
	}
	if r.source != nil {
		errs = append(errs, r.source.close())
	}
	if r.target != nil {
		errs = append(errs, r.target.close())
	}
	return errors.Join(errs...)
}

// campaign waits for the leadership (ctx itself without an election).
func (r *Runner) campaign(ctx context.Context) (context.Context, error) {
	if r.elector == nil {
		return ctx, nil
	}
	r.log.Info("waiting for the leadership")
	return r.elector.Campaign(ctx)
}

// Report is what a run did, per direction and service.
type Report struct {
	Directions []DirectionReport `json:"directions"`
	Elapsed    time.Duration     `json:"-"`
	ElapsedMS  int64             `json:"elapsed_ms"`
}

// DirectionReport is one direction of a Report.
type DirectionReport struct {
	From     string          `json:"from"`
	To       string          `json:"to"`
	Services []ServiceReport `json:"services"`
}

// ServiceReport counts the copies of one service: added, updated (metadata changed),
// removed (source gone), unchanged; and the source instances not copied because the
// provider registers in the target itself (native).
type ServiceReport struct {
	Service   string `json:"service"`
	Added     int    `json:"added"`
	Updated   int    `json:"updated"`
	Removed   int    `json:"removed"`
	Unchanged int    `json:"unchanged"`
	Native    int    `json:"native"`
}

// Totals sums a report's services.
func (rep *Report) Totals() (t ServiceReport, services int) {
	for _, d := range rep.Directions {
		for _, s := range d.Services {
			t.Added += s.Added
			t.Updated += s.Updated
			t.Removed += s.Removed
			t.Unchanged += s.Unchanged
			t.Native += s.Native
			services++
		}
	}
	return t, services
}

// tally keeps a direction's counts by instance key, so a write retried by a later pass
// counts once.
type tally struct {
	added, updated, removed, unchanged, native map[string]string // key → service
}

func newTally() *tally {
	return &tally{added: map[string]string{}, updated: map[string]string{}, removed: map[string]string{}, unchanged: map[string]string{}, native: map[string]string{}}
}

func (t *tally) report(d direction) DirectionReport {
	by := map[string]*ServiceReport{}
	get := func(s string) *ServiceReport {
		if by[s] == nil {
			by[s] = &ServiceReport{Service: s}
		}
		return by[s]
	}
	for _, s := range t.added {
		get(s).Added++
	}
	for _, s := range t.updated {
		get(s).Updated++
	}
	for _, s := range t.removed {
		get(s).Removed++
	}
	for k, s := range t.unchanged {
		if t.added[k] == "" && t.updated[k] == "" && t.removed[k] == "" {
			get(s).Unchanged++
		}
	}
	for _, s := range t.native {
		get(s).Native++
	}
	out := DirectionReport{From: d.from.label, To: d.to.label, Services: []ServiceReport{}}
	for _, n := range slices.Sorted(maps.Keys(by)) {
		out.Services = append(out.Services, *by[n])
	}
	return out
}

// Once does a full reconcile of every direction and repeats it until a pass finds nothing
// to do (the target lists what the source has, and none of the job's copies whose source
// is gone), or ctx ends. With an election, it first waits for the leadership.
func (r *Runner) Once(ctx context.Context) (*Report, error) {
	start := time.Now()
	lead, err := r.campaign(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sync job: did not get the leadership of job %q (election on the %s; another process of the job may be running): %w",
				r.job.Name, r.job.Leader.On, err)
		}
		return nil, fmt.Errorf("sync job: leadership: %w", err)
	}
	tallies := make([]*tally, len(r.dirs))
	for i := range tallies {
		tallies[i] = newTally()
	}
	var last error
	for pass := 0; ; pass++ {
		if pass > 0 {
			t := time.NewTimer(300 * time.Millisecond)
			select {
			case <-lead.Done():
				t.Stop()
				if ctx.Err() != nil {
					return nil, fmt.Errorf("sync job: not in sync when it had to end (last problem: %v): %w", last, ctx.Err())
				}
				return nil, errors.New("sync job: lost the leadership before both sides were in sync")
			case <-t.C:
			}
		}
		var prog *progress
		if pass == 0 {
			prog = r.progress()
		}
		done := true
		var errs []error
		for i, d := range r.dirs {
			src, err := d.from.reg.List(lead)
			if err != nil {
				errs = append(errs, fmt.Errorf("list %s: %w", d.from.label, err))
				done = false
				continue
			}
			all, err := d.to.listAll(lead)
			if err != nil {
				errs = append(errs, fmt.Errorf("list %s: %w", d.to.label, err))
				done = false
				continue
			}
			want := r.desired(d, src, natives(all), tallies[i])
			acted, err := r.reconcile(lead, d, want, r.owned(all), tallies[i], prog, i)
			if err != nil {
				errs = append(errs, err)
			}
			if acted || err != nil {
				done = false
			}
		}
		prog.finish()
		if done {
			break
		}
		err := errors.Join(errs...)
		if err != nil && (last == nil || err.Error() != last.Error()) { // each new problem once
			r.log.Warn("sync pass incomplete; trying again", "err", err)
		}
		last = err
	}
	rep := &Report{Elapsed: time.Since(start)}
	rep.ElapsedMS = rep.Elapsed.Milliseconds()
	for i, d := range r.dirs {
		rep.Directions = append(rep.Directions, tallies[i].report(d))
	}
	return rep, nil
}

// Run keeps the target (both sides, with direction both) in step with the source until ctx
// ends: it subscribes to the source (the adapters' Watch) and reconciles after every
// change, while this process leads. On losing the leadership it stops writing at once and
// campaigns again.
func (r *Runner) Run(ctx context.Context) error {
	retry := backoff.New(200*time.Millisecond, 5*time.Second)
	for {
		lead, err := r.campaign(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d := retry.Next()
			r.log.Warn("campaign failed; retrying", "err", err, "retry_in", d)
			if !backoff.Sleep(ctx, d) {
				return nil
			}
			continue
		}
		retry.Reset()
		r.lead(lead)
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("lost the leadership; stopped writing")
	}
}

// lead runs every direction until lead ends.
func (r *Runner) lead(lead context.Context) {
	var wg sync.WaitGroup
	prog := r.progress()
	var progOnce sync.Once
	left := len(r.dirs)
	var mu sync.Mutex
	for i, d := range r.dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.follow(lead, d, i, prog, func() {
				mu.Lock()
				defer mu.Unlock()
				if left--; left == 0 {
					progOnce.Do(prog.finish)
				}
			})
		}()
	}
	wg.Wait()
}

// follow watches d's source and reconciles d's target after each change until lead ends.
// It watches the target too, for the providers registered there by themselves (not
// copied). initial is called once the first full reconcile is done.
func (r *Runner) follow(lead context.Context, d direction, idx int, prog *progress, initial func()) {
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	watch := func(e *endpoint) *registrysync.Catalog {
		c := registrysync.NewCatalog(e.reg, r.log.With("registry", e.label))
		c.OnChange(poke)
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(lead) }()
		return c
	}
	cat, tcat := watch(d.from), watch(d.to)

	var have map[string]mesh.Instance // the job's copies in the target, nil: to be listed
	var retry <-chan time.Time
	first := true
	again := backoff.New(200*time.Millisecond, 5*time.Second)
	for {
		select {
		case <-lead.Done():
			return
		case <-changed:
		case <-retry:
			retry = nil
		}
		if cat.Generation() == 0 || tcat.Generation() == 0 {
			continue
		}
		if have == nil {
			all, err := d.to.listAll(lead)
			if err != nil {
				if lead.Err() != nil {
					return
				}
				r.log.Warn("listing the target failed; retrying", "registry", d.to.label, "err", err)
				retry = time.After(again.Next())
				continue
			}
			have = r.owned(all)
		}
		var p *progress
		if first {
			p = prog
		}
		t := newTally()
		_, err := r.reconcile(lead, d, r.desired(d, cat.All(), natives(tcat.All()), t), have, t, p, idx)
		if lead.Err() != nil {
			return
		}
		if err != nil {
			r.log.Warn("reconcile incomplete; retrying", "from", d.from.label, "to", d.to.label, "err", err)
			have = nil // list again: what failed may have half happened
			retry = time.After(again.Next())
			continue
		}
		again.Reset()
		tot, _ := (&Report{Directions: []DirectionReport{t.report(d)}}).Totals()
		if tot.Added+tot.Updated+tot.Removed > 0 || first {
			r.log.Info("reconciled", "from", d.from.label, "to", d.to.label,
				"added", tot.Added, "updated", tot.Updated, "removed", tot.Removed, "unchanged", tot.Unchanged)
		}
		if first {
			first = false
			initial()
		}
	}
}

// owned picks the job's copies out of a target's instances.
func (r *Runner) owned(all []mesh.Instance) map[string]mesh.Instance {
	out := map[string]mesh.Instance{}
	for _, i := range all {
		if registrysync.Managed(i) && i.Metadata[registrysync.MetaOwner] == r.job.Owner() {
			out[key(i)] = i
		}
	}
	return out
}

// natives are the keys of a target's instances that are not managed: providers that
// register there themselves (a provider registered in both registries during a migration).
func natives(all []mesh.Instance) map[string]bool {
	out := map[string]bool{}
	for _, i := range all {
		if !registrysync.Managed(i) {
			out[key(i)] = true
		}
	}
	return out
}

// desired is the copies d's target should hold for the source instances src: every
// instance that is not managed, of a service the job copies, and not registered in the
// target by the provider itself (native; counted in t), with the marks.
func (r *Runner) desired(d direction, src []mesh.Instance, native map[string]bool, t *tally) map[string]mesh.Instance {
	out := map[string]mesh.Instance{}
	for _, i := range src {
		if registrysync.Managed(i) || !r.job.copies(i.Service.Name) {
			continue
		}
		if native[key(i)] {
			t.native[key(i)] = i.Service.String()
			continue
		}
		md := make(map[string]string, len(i.Metadata)+3)
		maps.Copy(md, i.Metadata)
		md[registrysync.MetaManaged] = "true"
		md[registrysync.MetaOrigin] = d.from.label
		md[registrysync.MetaOwner] = r.job.Owner()
		i.Metadata = md
		out[key(i)] = i
	}
	return out
}

func key(i mesh.Instance) string {
	return fmt.Sprintf("%s|%s|%s|%s|%s", i.Protocol, i.Service.Name, i.Service.Version, i.Service.Group, i.Address)
}

// Metadata keys that adapters set from the service and protocol themselves: not compared.
var layoutKeys = map[string]bool{
	"interface": true, "path": true, "version": true, "group": true,
	"side": true, "category": true, "protocol": true,
}

func sameMeta(a, b mesh.Instance) bool {
	n := 0
	for k, v := range a.Metadata {
		if layoutKeys[k] {
			continue
		}
		n++
		if w, ok := b.Metadata[k]; !ok || w != v {
			return false
		}
	}
	for k := range b.Metadata {
		if !layoutKeys[k] {
			n--
		}
	}
	return n == 0
}

// writers bounds the writes in flight to one target: Nacos' persistent writes are Raft
// commits of a few milliseconds each, so a sequential migration of thousands of instances
// would spend most of its time waiting.
const writers = 8

// reconcile makes d.to's copies (have, updated in place) equal to want, service by
// service (up to writers services at once), checking lead before each write. acted is
// whether it wrote anything.
func (r *Runner) reconcile(lead context.Context, d direction, want, have map[string]mesh.Instance, t *tally, prog *progress, idx int) (acted bool, err error) {
	bySvc := map[string][]string{}
	for k, i := range want {
		bySvc[i.Service.String()] = append(bySvc[i.Service.String()], k)
	}
	for k, i := range have {
		if _, ok := want[k]; !ok {
			bySvc[i.Service.String()] = append(bySvc[i.Service.String()], k)
		}
	}
	prog.add(idx, len(bySvc))

	var mu sync.Mutex // guards have, t, acted, errs
	var errs []error
	service := func(svc string, keys []string) {
		sort.Strings(keys)
		for _, k := range keys {
			if err := lead.Err(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			w, wanted := want[k]
			mu.Lock()
			h, had := have[k]
			mu.Unlock()
			switch {
			case wanted && had && sameMeta(w, h):
				mu.Lock()
				t.unchanged[k] = svc
				mu.Unlock()
			case !wanted:
				err := d.to.del(lead, h)
				mu.Lock()
				acted = true
				if err != nil {
					errs = append(errs, err)
				} else {
					delete(have, k)
					t.removed[k] = svc
				}
				mu.Unlock()
				if err == nil {
					r.log.Info("removed copy", "to", d.to.label, "service", h.Service.String(), "instance", h.Address)
				}
			default:
				err := d.to.put(lead, w)
				mu.Lock()
				acted = true
				switch {
				case err != nil:
					errs = append(errs, err)
				case had:
					have[k], t.updated[k] = w, svc
				default:
					have[k], t.added[k] = w, svc
				}
				mu.Unlock()
				if err == nil {
					r.log.Info("copied", "to", d.to.label, "service", w.Service.String(), "instance", w.Address)
				}
			}
		}
		prog.step(idx)
	}

	work := make(chan string)
	var wg sync.WaitGroup
	for range min(writers, len(bySvc)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for svc := range work {
				service(svc, bySvc[svc])
			}
		}()
	}
	for _, svc := range slices.Sorted(maps.Keys(bySvc)) {
		work <- svc
	}
	close(work)
	wg.Wait()
	if err := lead.Err(); err != nil {
		return acted, err
	}
	return acted, errors.Join(errs...)
}

func (r *Runner) progress() *progress {
	if r.o.Progress == nil {
		return nil
	}
	return &progress{w: r.o.Progress, term: r.o.Terminal, total: make([]int, len(r.dirs)), known: make([]bool, len(r.dirs))}
}
