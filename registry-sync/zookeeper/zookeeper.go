// Package zookeeper is the ZooKeeper registry adapter, in Dubbo's interface-level layout:
// one ephemeral znode per provider, /dubbo/<interface>/providers/<url-encoded provider URL>,
// under persistent parents created as needed. The provider URL is the one the etcd adapter
// renders (dubbourl.Format, e.g. tri://10.0.0.1:20000/org.Greeter?interface=org.Greeter&side=provider&version=1.0.0),
// so Dubbo (Java and Go) consumers find Strait's providers and Strait reads theirs.
//
// Liveness is the session's: the registering process's ephemeral nodes go when its session
// closes (Close) or expires (a crash, a partition longer than Options.SessionTimeout).
//
// Session loss. The client reconnects by itself: across a short disconnection the session,
// its nodes and its watches survive. When the session expires the server has deleted this
// process's nodes; the Registry then opens a new session and registers them again by itself,
// as Dubbo does. A Watch, however, returns an error wrapping ErrSessionExpired (its watches
// are gone and changes may have been missed) and the caller subscribes again, which
// registrysync.Catalog.Run does.
//
// Application level. The Registry also speaks Dubbo 3's application-level service
// discovery (see package dubboapp): RegisterApp writes an application instance as Dubbo
// does, an ephemeral Curator JSON node /services/<app>/<host:port> whose metadata carry
// the revision of its services, the MetadataInfo of that revision (persistent, at
// /dubbo/metadata/<app>/<revision> for Java Dubbo and /dubbo/<app>/<revision> for dubbo-go
// 3.3, which read different paths) and the interface → application mapping
// /dubbo/mapping/<interface> (persistent, comma-separated applications, updated with
// compare-and-set). List and Watch read every application under /services and report the
// services of its instances as providers, alongside the interface-level ones (one
// provider registered both ways is reported once). Watch follows /services and each
// application with child watches, each instance node with a data watch, and a revision's
// MetadataInfo that is not there yet with an exists watch. Reading the application list
// directly makes the mapping unnecessary for reading it. An instance with local metadata
// storage has its MetadataInfo asked from its own MetadataService (dubboapp.FetchLocal)
// when it appears or changes; one that cannot answer is skipped until it changes.
package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubboapp"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

const (
	root      = "/dubbo"
	providers = "/providers"
	// services is the root of application-level instances (Curator service discovery).
	services = "/services"
)

// ErrSessionExpired is wrapped by the error a Watch returns when the ZooKeeper session
// expired under it.
var ErrSessionExpired = zk.ErrSessionExpired

var acl = zk.WorldACL(zk.PermAll)

// Options tune a Registry.
type Options struct {
	// SessionTimeout is how long a crashed or cut-off process's providers outlive it. The
	// server clamps it to its own bounds (2 to 20 ticks by default). Default 10s.
	SessionTimeout time.Duration
	// DialTimeout bounds how long New waits for the first session. Default 10s.
	DialTimeout time.Duration
	// Dialer, if set, opens the connections to the servers (proxies, tests).
	Dialer func(network, address string, timeout time.Duration) (net.Conn, error)
	// Logger receives the adapter's and the ZooKeeper client's messages. Default: discarded.
	Logger *slog.Logger
}

// Registry is a registry in ZooKeeper. It is safe for concurrent use, Watch included.
//
// ZooKeeper requests cannot be cancelled: a ctx is checked before a call starts, and a
// request in flight while the server is unreachable fails within the client's timeouts
// (about a second per connection attempt, two thirds of the session timeout for a
// request already sent).
type Registry struct {
	conn   *zk.Conn
	events <-chan zk.Event // closed once the client's connection goroutine has stopped
	log    *slog.Logger

	signal    chan struct{} // a session state changed (coalesced)
	quit      chan struct{} // closed by Close: stops keep
	kept      chan struct{} // closed when keep has returned
	closeOnce sync.Once

	// mu serializes Register, Deregister and the re-registration after a new session.
	mu   sync.Mutex
	mine map[string][]byte // path → data of the nodes this process registered

	infoMu  sync.Mutex
	infos   map[string]*dubboapp.MetadataInfo // app/revision → its MetadataInfo (revisions never change)
	skipped sync.Map                          // app/revision of local-storage instances already logged
}

// New connects to the ZooKeeper ensemble at servers (host:port) and waits up to
// o.DialTimeout for a session.
func New(servers []string, o Options) (*Registry, error) {
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 10 * time.Second
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{
		log:    o.Logger,
		signal: make(chan struct{}, 1),
		quit:   make(chan struct{}),
		kept:   make(chan struct{}),
		mine:   map[string][]byte{},
		infos:  map[string]*dubboapp.MetadataInfo{},
	}
	dial := o.Dialer
	if dial == nil {
		dial = net.DialTimeout
	}
	conn, events, err := zk.Connect(servers, o.SessionTimeout,
		zk.WithLogger(zkLogger{o.Logger}),
		zk.WithLogInfo(false),
		zk.WithEventCallback(r.onEvent),
		zk.WithDialer(dial))
	if err != nil {
		return nil, fmt.Errorf("zookeeper registry: %w", err)
	}
	r.conn, r.events = conn, events
	ready := make(chan struct{})
	go r.keep(ready)
	t := time.NewTimer(o.DialTimeout)
	defer t.Stop()
	select {
	case <-ready:
		return r, nil
	case <-t.C:
		r.Close()
		return nil, fmt.Errorf("zookeeper registry: no session with %v within %v", servers, o.DialTimeout)
	}
}

// onEvent is the client's event callback: it runs on the client's goroutine and must not block.
func (r *Registry) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// keep follows the session: it reports the first one on ready and, after an expiry,
// registers this process's nodes again in the new session. It returns when Close is called.
func (r *Registry) keep(ready chan struct{}) {
	defer close(r.kept)
	var session int64
	var retry <-chan time.Time
	for {
		select {
		case <-r.quit:
			return
		case <-r.signal:
		case <-retry:
			retry = nil
		}
		if r.conn.State() != zk.StateHasSession {
			continue
		}
		id := r.conn.SessionID()
		if id == session {
			continue
		}
		if session == 0 {
			r.log.Debug("zookeeper session established", "session", fmt.Sprintf("%#x", id))
			close(ready)
			session = id
			continue
		}
		r.log.Warn("zookeeper session expired; registering this process's providers again",
			"old_session", fmt.Sprintf("%#x", session), "session", fmt.Sprintf("%#x", id))
		if err := r.restore(); err != nil {
			r.log.Warn("zookeeper registry: re-registration failed; retrying", "err", err)
			t := time.NewTimer(time.Second)
			retry = t.C
			continue
		}
		session = id
	}
}

func (r *Registry) restore() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for path, data := range r.mine {
		if err := r.create(path, data); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}

// Path returns the znode path of an instance.
func Path(i mesh.Instance) string {
	return providersPath(i.Service.Name) + "/" + Node(i)
}

// Node returns the znode name of an instance: its URL-encoded provider URL (dubbourl.Format).
func Node(i mesh.Instance) string { return url.QueryEscape(dubbourl.Format(i)) }

// ParseNode reads a provider znode name back into an instance.
func ParseNode(name string) (mesh.Instance, error) {
	raw, err := url.QueryUnescape(name)
	if err != nil {
		return mesh.Instance{}, fmt.Errorf("provider node %q: %w", name, err)
	}
	return dubbourl.Parse(raw)
}

func providersPath(iface string) string { return root + "/" + iface + providers }

// Register creates the instance's ephemeral node (and its persistent parents). A node of the
// same URL left by another session (a previous run of this process whose session has not
// expired yet) is replaced, as Dubbo does, or it would vanish with that session.
func (r *Registry) Register(ctx context.Context, inst mesh.Instance) error {
	if err := checkName(inst.Service.Name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	path, data := Path(inst), []byte(dubbourl.Format(inst))
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.create(path, data); err != nil {
		return fmt.Errorf("zookeeper registry: register %s: %w", inst, err)
	}
	r.mine[path] = data
	return nil
}

func checkName(iface string) error {
	if iface == "" || strings.Contains(iface, "/") || iface == "." || iface == ".." {
		return fmt.Errorf("zookeeper registry: interface name %q cannot be a znode name", iface)
	}
	return nil
}

// create makes path an ephemeral node of this session.
func (r *Registry) create(path string, data []byte) error {
	for range 3 {
		_, err := r.conn.Create(path, data, zk.FlagEphemeral, acl)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, zk.ErrNoNode):
			if err := r.createParents(path); err != nil {
				return err
			}
			continue
		case !errors.Is(err, zk.ErrNodeExists):
			return err
		}
		ok, st, err := r.conn.Exists(path)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if st.EphemeralOwner == r.conn.SessionID() {
			return nil
		}
		r.log.Info("replacing a provider node of another session", "path", path, "owner", fmt.Sprintf("%#x", st.EphemeralOwner))
		if err := r.conn.Delete(path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) && !errors.Is(err, zk.ErrBadVersion) {
			return err
		}
	}
	return fmt.Errorf("%s: created and deleted concurrently by another client", path)
}

// createParents creates the persistent ancestors of path.
func (r *Registry) createParents(path string) error {
	for i := 1; i < len(path); i++ {
		if path[i] != '/' {
			continue
		}
		if _, err := r.conn.Create(path[:i], nil, zk.FlagPersistent, acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return err
		}
	}
	return nil
}

// Deregister deletes the instance's node if this session owns it (a node another process
// registered with the same URL is left alone).
func (r *Registry) Deregister(ctx context.Context, inst mesh.Instance) error {
	if err := checkName(inst.Service.Name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	path := Path(inst)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.mine, path)
	ok, st, err := r.conn.Exists(path)
	if err != nil {
		return fmt.Errorf("zookeeper registry: deregister %s: %w", inst, err)
	}
	if !ok || st.EphemeralOwner != r.conn.SessionID() {
		return nil
	}
	if err := r.conn.Delete(path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("zookeeper registry: deregister %s: %w", inst, err)
	}
	return nil
}

// List returns every provider under /dubbo. Nodes that are not Strait-readable providers
// (dubbo:// URLs, malformed names) are skipped.
func (r *Registry) List(ctx context.Context) ([]mesh.Instance, error) {
	ifaces, _, err := r.conn.Children(root)
	if errors.Is(err, zk.ErrNoNode) {
		return []mesh.Instance{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("zookeeper registry: list: %w", err)
	}
	all := map[string]map[string]mesh.Instance{}
	for _, iface := range ifaces {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		nodes, _, err := r.conn.Children(providersPath(iface))
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("zookeeper registry: list %s: %w", iface, err)
		}
		all[iface] = r.parse(iface, nodes, nil)
	}
	apps, err := r.listApps(ctx)
	if err != nil {
		return nil, err
	}
	return dubboapp.Dedupe(values(all), apps), nil
}

// parse reads provider node names, reusing the instances of known.
func (r *Registry) parse(iface string, nodes []string, known map[string]mesh.Instance) map[string]mesh.Instance {
	out := make(map[string]mesh.Instance, len(nodes))
	for _, n := range nodes {
		if i, ok := known[n]; ok {
			out[n] = i
			continue
		}
		i, err := ParseNode(n)
		if err != nil {
			// dubbo:// and other protocols Strait does not speak are normal in a shared registry.
			r.log.Debug("skipping provider node", "interface", iface, "node", n, "err", err)
			continue
		}
		out[n] = i
	}
	return out
}

func values(all map[string]map[string]mesh.Instance) []mesh.Instance {
	var keys []string
	n := 0
	for iface, nodes := range all {
		for node := range nodes {
			keys = append(keys, iface+"/"+node)
		}
		n += len(nodes)
	}
	sort.Strings(keys)
	out := make([]mesh.Instance, 0, n)
	for _, k := range keys {
		iface, node, _ := strings.Cut(k, "/")
		out = append(out, all[iface][node])
	}
	return out
}

// Watch subscribes with ZooKeeper child watches on /dubbo and on every
// /dubbo/<interface>/providers (exists watches where such a node is missing), re-armed after
// each event, and calls fn with every provider at the start and after each change. It
// survives disconnections shorter than the session; it returns an error wrapping
// ErrSessionExpired when the session expires, another error when a request fails or the
// Registry is closed, and ctx.Err() when ctx ends.
func (r *Registry) Watch(ctx context.Context, fn func([]mesh.Instance)) error {
	w := &watcher{
		r:         r,
		fired:     make(chan firing),
		stop:      make(chan struct{}),
		armed:     map[string]bool{},
		ifaces:    map[string]bool{},
		providers: map[string]map[string]mesh.Instance{},
		apps:      map[string]map[string]appNode{},
		waiting:   map[string]string{},
	}
	defer w.close()
	if _, err := w.refreshRoot(); err != nil {
		return err
	}
	if _, err := w.refreshApps(); err != nil {
		return err
	}
	fn(w.values())
	for {
		var f firing
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f = <-w.fired:
		}
		changed := false
		for more := true; more; {
			c, err := w.handle(f)
			if err != nil {
				return err
			}
			changed = changed || c
			select { // coalesce a burst into one call of fn
			case f = <-w.fired:
			default:
				more = false
			}
		}
		if changed {
			fn(w.values())
		}
	}
}

// firing is a watch event on path.
type firing struct {
	path string
	ev   zk.Event
}

// watcher is the state of one Watch call; only Watch's goroutine touches it.
type watcher struct {
	r     *Registry
	fired chan firing   // from the forwarders
	stop  chan struct{} // closed when Watch returns: stops the forwarders
	wg    sync.WaitGroup

	armed     map[string]bool // paths with a watch this watcher has not yet seen fire
	ifaces    map[string]bool // children of /dubbo
	providers map[string]map[string]mesh.Instance

	apps    map[string]map[string]appNode // application → instance id → instance
	waiting map[string]string             // MetadataInfo path with an exists watch → application
}

func (w *watcher) close() {
	close(w.stop)
	w.wg.Wait()
}

func (w *watcher) handle(f firing) (bool, error) {
	if f.ev.Type == zk.EventNotWatching { // the session expired, or the Registry was closed
		return false, fmt.Errorf("zookeeper registry: watch lost: %w", f.ev.Err)
	}
	delete(w.armed, f.path)
	if f.path == root {
		return w.refreshRoot()
	}
	if f.path == services {
		return w.refreshApps()
	}
	if rest, ok := strings.CutPrefix(f.path, services+"/"); ok {
		app, id, node := strings.Cut(rest, "/")
		if !node {
			return w.refreshApp(app)
		}
		return w.refreshNode(app, id)
	}
	if app, ok := w.waiting[f.path]; ok {
		delete(w.waiting, f.path)
		return w.metadataArrived(app, f.path)
	}
	iface := strings.TrimSuffix(strings.TrimPrefix(f.path, root+"/"), providers)
	if !w.ifaces[iface] {
		return false, nil // the interface went away: let its watch lapse
	}
	return w.refreshIface(iface)
}

// refreshRoot reads /dubbo's children, starts following new interfaces and forgets gone ones.
func (w *watcher) refreshRoot() (bool, error) {
	kids, err := w.children(root)
	if err != nil {
		return false, err
	}
	changed := false
	seen := make(map[string]bool, len(kids))
	for _, iface := range kids {
		seen[iface] = true
		if w.ifaces[iface] {
			continue
		}
		w.ifaces[iface] = true
		c, err := w.refreshIface(iface)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	for iface := range w.ifaces {
		if !seen[iface] {
			delete(w.ifaces, iface)
			changed = changed || len(w.providers[iface]) > 0
			delete(w.providers, iface)
		}
	}
	return changed, nil
}

func (w *watcher) refreshIface(iface string) (bool, error) {
	nodes, err := w.children(providersPath(iface))
	if err != nil {
		return false, err
	}
	old := w.providers[iface]
	next := w.r.parse(iface, nodes, old)
	changed := len(next) != len(old)
	for n := range next {
		if _, ok := old[n]; !ok {
			changed = true
		}
	}
	if len(next) == 0 {
		delete(w.providers, iface)
	} else {
		w.providers[iface] = next
	}
	return changed, nil
}

// children returns path's children (none if it does not exist) and makes sure a watch on
// path is armed: a child watch, or an exists watch while the node is missing.
func (w *watcher) children(path string) ([]string, error) {
	conn := w.r.conn
	if w.armed[path] {
		// The armed watch fires on the next change; a read is enough.
		kids, _, err := conn.Children(path)
		if errors.Is(err, zk.ErrNoNode) {
			return nil, nil
		}
		return kids, err
	}
	for range 3 {
		kids, _, ch, err := conn.ChildrenW(path)
		if err == nil {
			w.forward(path, ch)
			return kids, nil
		}
		if !errors.Is(err, zk.ErrNoNode) {
			return nil, fmt.Errorf("zookeeper registry: watch %s: %w", path, err)
		}
		ok, _, ch, err := conn.ExistsW(path)
		if err != nil {
			return nil, fmt.Errorf("zookeeper registry: watch %s: %w", path, err)
		}
		if !ok {
			w.forward(path, ch)
			return nil, nil
		}
		// Created in between: the data watch just set on it is left to lapse; try the
		// child watch again.
	}
	return nil, fmt.Errorf("zookeeper registry: watch %s: created and deleted concurrently", path)
}

// forward hands the one event of ch to Watch's loop.
func (w *watcher) forward(path string, ch <-chan zk.Event) {
	w.armed[path] = true
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		select {
		case ev := <-ch:
			select {
			case w.fired <- firing{path, ev}:
			case <-w.stop:
			}
		case <-w.stop:
		}
	}()
}

// Close ends the session, which deletes this process's nodes at once, and waits for the
// client's goroutines to stop.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		r.conn.Close()
		// The client closes its event channel when its connection goroutine returns.
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
	drain:
		for {
			select {
			case _, ok := <-r.events:
				if !ok {
					break drain
				}
			case <-t.C:
				r.log.Warn("zookeeper client did not stop within 10s")
				break drain
			}
		}
		close(r.quit)
		<-r.kept
	})
	return nil
}

// zkLogger routes the ZooKeeper client's messages (errors only: WithLogInfo(false)) to slog.
type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Warn("zookeeper client: " + fmt.Sprintf(format, args...))
}

var _ registrysync.Registry = (*Registry)(nil)
