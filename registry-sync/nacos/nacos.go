// Package nacos is the Nacos 2.x registry adapter. It uses Dubbo's interface-level layout:
// one Nacos service per Dubbo service key, named providers:<interface>:<version>:<group>
// (empty parts stay empty: providers:com.Foo::) in group DEFAULT_GROUP, with one ephemeral
// instance per provider address whose metadata are the provider URL's parameters: interface,
// path, version, group, side=provider, category=providers, protocol (tri, grpc or http) and
// the instance's own metadata. Dubbo and dubbo-go consumers read these instances as they
// read their own providers.
//
// The adapter talks to Nacos over nacos-sdk-go v2's gRPC channel, so its instances live as
// long as its connection: closing the Registry, or the process dying, removes them.
//
// Nacos keeps one registration per service per connection, so the addresses this Registry
// provides for one service go together in one BatchRegisterInstance, re-sent whole after
// each change; removing the last address deregisters the service.
//
// Watch subscribes to every provider service, and Nacos pushes each change of a subscribed
// service to it. Nacos has no watch on the list of services, though: Watch finds services
// that appear by listing them every Options.Discovery (default 2 s), and at once when this
// Registry registers a service new to it. Changes of services it already knows arrive by push.
//
// Application level. The Registry also speaks Dubbo 3's application-level service
// discovery (see package dubboapp). RegisterApp registers an application instance as
// Dubbo does: an ephemeral instance of the Nacos service <app> (group DEFAULT_GROUP) whose
// metadata carry the revision of its services, the MetadataInfo of that revision as the
// config dataId <app>, group <revision>, and the interface → application mapping as the
// config dataId <interface>, group "mapping" (comma-separated applications, updated with
// the server's compare-and-set on MD5). Configs go over a second gRPC connection of the
// config module, opened on first use. List and Watch treat every service of the group
// that is not one of Dubbo's interface-level categories (providers:, consumers:,
// configurators:, routers:) as an application: Watch subscribes to it like to the
// providers: services, and reports the services of its instances as providers, alongside
// the interface-level ones (one provider registered both ways is reported once). A
// revision's MetadataInfo is read once (revisions never change); one that is not there
// yet is read again at the next change or listing. An instance with local metadata
// storage has its MetadataInfo asked from its own MetadataService (dubboapp.FetchLocal),
// again at most every 30 s while that fails.
package nacos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubboapp"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

// Group is the Nacos group Dubbo registers its services in.
const Group = "DEFAULT_GROUP"

const (
	category = "providers"
	prefix   = category + ":"
	cluster  = "DEFAULT"
	pageSize = 500
)

// clusterOf is the Nacos cluster of an instance of protocol p. Nacos takes ip, port and
// cluster for one instance: the classic Dubbo protocol's instances have a cluster of their
// own, so that a gateway port serving a service over Triple and over dubbo:// (Strait's
// egress does) is two instances, as Dubbo consumers expect (they read every cluster).
func clusterOf(p mesh.Protocol) string {
	if p == mesh.ProtocolDubbo {
		return "DUBBO"
	}
	return cluster
}

// Metadata keys the adapter sets itself: they describe the service and protocol, and are
// not part of an Instance's Metadata when read back.
var reserved = map[string]bool{
	"interface": true, "path": true, "version": true, "group": true,
	"side": true, "category": true, "protocol": true,
}

var errClosed = errors.New("nacos registry: closed")

// Options tune a Registry.
type Options struct {
	// Namespace is the Nacos namespace ID; empty is the public namespace.
	Namespace string
	// Username and Password, for a server with authentication enabled.
	Username, Password string
	// Timeout bounds every request to the server. Default 5s. The SDK's requests take no
	// context: a call checks its ctx before it starts and then takes at most Timeout.
	Timeout time.Duration
	// Discovery is how often Watch lists the services to find new ones (Nacos pushes the
	// changes of known services, but not the appearance of new ones). Default 2s.
	Discovery time.Duration
	// Logger receives the adapter's logs, and the nacos SDK's (see useLogger).
	Logger *slog.Logger
}

// Registry is a registry in Nacos. It holds one connection to the server.
type Registry struct {
	c    *client
	o    Options
	pw   *PersistentWriter // persistent instances go over the HTTP API
	log  *slog.Logger
	done chan struct{}
	once sync.Once

	regMu sync.Mutex                           // serializes Register, Deregister and Close
	mine  map[string]map[string]model.Instance // service name → address → what we registered

	subMu    sync.Mutex // serializes subscribe and unsubscribe requests
	mu       sync.Mutex // guards subs, watchers and what subscriptions hold
	subs     map[string]*subscription
	watchers map[*watcher]struct{}

	infoMu      sync.Mutex
	infos       map[string]*dubboapp.MetadataInfo // app/revision → its MetadataInfo
	skipped     sync.Map                          // app/revision of unreadable instances already logged
	localFailed sync.Map                          // app/revision@address → time of the last failed MetadataService call
}

// subscription is this connection's subscription to one service, shared by the watches
// that want it.
type subscription struct {
	refs  int
	seen  bool             // insts came from a push (newer than the subscribe answer)
	insts []mesh.Instance  // a providers: service's providers
	hosts []model.Instance // an application's instances, as the server sent them
	cb    func([]model.Instance, error)
}

type watcher struct {
	changed    chan struct{} // a subscribed service changed
	rediscover chan struct{} // this Registry registered a service new to it
	names      map[string]bool
}

// New connects to the Nacos servers at addrs ("host:port" of their HTTP port; the gRPC
// port is that port + 1000, as Nacos has it).
func New(addrs []string, o Options) (*Registry, error) {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Discovery == 0 {
		o.Discovery = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Namespace == "" {
		o.Namespace = constant.DEFAULT_NAMESPACE_ID
	}
	if len(addrs) == 0 {
		return nil, errors.New("nacos registry: no server address")
	}
	servers := make([]constant.ServerConfig, 0, len(addrs))
	for _, a := range addrs {
		host, port, err := splitAddr(a)
		if err != nil {
			return nil, fmt.Errorf("nacos registry: server %q: %w", a, err)
		}
		servers = append(servers, constant.ServerConfig{
			Scheme: "http", ContextPath: constant.WEB_CONTEXT, IpAddr: host, Port: port,
		})
	}
	c, err := dial(servers, constant.ClientConfig{
		NamespaceId: o.Namespace,
		TimeoutMs:   uint64(o.Timeout / time.Millisecond),
		AppName:     "strait",
		Username:    o.Username,
		Password:    o.Password,
	}, o.Logger)
	if err != nil {
		return nil, fmt.Errorf("nacos registry: %w", err)
	}
	pw, err := NewPersistentWriter(addrs, o)
	if err != nil {
		c.close()
		return nil, err
	}
	return &Registry{
		c: c, o: o, pw: pw, log: o.Logger, done: make(chan struct{}),
		mine:     map[string]map[string]model.Instance{},
		subs:     map[string]*subscription{},
		watchers: map[*watcher]struct{}{},
		infos:    map[string]*dubboapp.MetadataInfo{},
	}, nil
}

func splitAddr(a string) (string, uint64, error) {
	host, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, fmt.Errorf("bad host:port")
	}
	return host, port, nil
}

// ServiceName is the Nacos service name of a Dubbo service key:
// providers:<interface>:<version>:<group>.
func ServiceName(k mesh.ServiceKey) string {
	return prefix + k.Name + ":" + k.Version + ":" + k.Group
}

// ParseServiceName reads a Nacos service name of Dubbo's providers layout. The interface
// is everything up to the last two colons.
func ParseServiceName(s string) (mesh.ServiceKey, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return mesh.ServiceKey{}, false
	}
	g := strings.LastIndexByte(rest, ':')
	if g < 0 {
		return mesh.ServiceKey{}, false
	}
	v := strings.LastIndexByte(rest[:g], ':')
	if v <= 0 {
		return mesh.ServiceKey{}, false
	}
	return mesh.ServiceKey{Name: rest[:v], Version: rest[v+1 : g], Group: rest[g+1:]}, true
}

// Instance renders inst as the Nacos instance Dubbo would register for it.
func Instance(inst mesh.Instance) (model.Instance, error) {
	k := inst.Service
	if k.Name == "" || strings.Contains(k.Version, ":") || strings.Contains(k.Group, ":") {
		return model.Instance{}, fmt.Errorf("service %q: needs a name, and no ':' in version or group", k)
	}
	if !inst.Protocol.Registered() {
		return model.Instance{}, fmt.Errorf("protocol %q is not grpc, triple, http or dubbo", inst.Protocol)
	}
	host, port, err := splitAddr(inst.Address)
	if err != nil {
		return model.Instance{}, fmt.Errorf("address %q: %w", inst.Address, err)
	}
	md := make(map[string]string, len(inst.Metadata)+7)
	maps.Copy(md, inst.Metadata)
	md["interface"] = k.Name
	md["path"] = k.Name
	md["side"] = "provider"
	md["category"] = category
	md["protocol"] = dubbourl.Scheme(inst.Protocol)
	delete(md, "version")
	delete(md, "group")
	if k.Version != "" {
		md["version"] = k.Version
	}
	if k.Group != "" {
		md["group"] = k.Group
	}
	return model.Instance{
		Ip: host, Port: port, Weight: 1, Enable: true, Healthy: true, Ephemeral: true,
		ClusterName: clusterOf(inst.Protocol), Metadata: md,
	}, nil
}

// FromInstance reads a Nacos instance of service (a providers: service name) back. ok is
// false for instances a consumer would not call (disabled, unhealthy) and for protocols
// registries here do not carry (rest, …).
func FromInstance(service string, h model.Instance) (inst mesh.Instance, ok bool) {
	k, ok := ParseServiceName(service)
	if !ok || !h.Enable || !h.Healthy || h.Port == 0 || h.Port > 65535 {
		return mesh.Instance{}, false
	}
	p, ok := dubbourl.Protocol(h.Metadata["protocol"])
	if !ok {
		return mesh.Instance{}, false
	}
	md := make(map[string]string, len(h.Metadata))
	for key, v := range h.Metadata {
		if !reserved[key] {
			md[key] = v
		}
	}
	return mesh.Instance{
		Service: k, Protocol: p, Address: net.JoinHostPort(h.Ip, strconv.FormatUint(h.Port, 10)), Metadata: md,
	}, true
}

func fromInstances(service string, hosts []model.Instance) []mesh.Instance {
	out := make([]mesh.Instance, 0, len(hosts))
	for _, h := range hosts {
		if i, ok := FromInstance(service, h); ok {
			out = append(out, i)
		}
	}
	return out
}

func (r *Registry) closed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Register adds inst to the addresses this Registry provides for its service and sends
// that service's whole set. Registering an address again replaces it.
func (r *Registry) Register(ctx context.Context, inst mesh.Instance) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ni, err := Instance(inst)
	if err != nil {
		return fmt.Errorf("nacos registry: register %s: %w", inst, err)
	}
	if err := r.put(ServiceName(inst.Service), setKey(inst), ni); err != nil {
		return fmt.Errorf("nacos registry: register %s: %w", inst, err)
	}
	return nil
}

// setKey names an instance in the set of its service: its address, and its protocol when
// that has a cluster of its own (one address may serve Triple and dubbo://).
func setKey(inst mesh.Instance) string {
	if c := clusterOf(inst.Protocol); c != cluster {
		return c + "|" + inst.Address
	}
	return inst.Address
}

// put adds (or replaces) address in the set this Registry provides for service, and sends
// the whole set.
func (r *Registry) put(svc, address string, ni model.Instance) error {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	if r.closed() {
		return errClosed
	}
	old := r.mine[svc]
	set := maps.Clone(old)
	if set == nil {
		set = map[string]model.Instance{}
	}
	set[address] = ni
	if err := r.c.batchRegister(svc, sorted(set)); err != nil {
		return err
	}
	r.mine[svc] = set
	if old == nil {
		r.poke()
	}
	return nil
}

// Deregister removes inst's address from its service's set and sends the rest, or
// deregisters the service from this connection when inst was its last address.
func (r *Registry) Deregister(ctx context.Context, inst mesh.Instance) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.remove(ServiceName(inst.Service), setKey(inst)); err != nil {
		return fmt.Errorf("nacos registry: deregister %s: %w", inst, err)
	}
	return nil
}

// remove takes address out of the set this Registry provides for service.
func (r *Registry) remove(svc, address string) error {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	if r.closed() {
		return errClosed
	}
	set := r.mine[svc]
	gone, ok := set[address]
	if !ok {
		return nil
	}
	rest := maps.Clone(set)
	delete(rest, address)
	if len(rest) == 0 {
		if err := r.c.deregister(svc, gone); err != nil {
			return err
		}
		delete(r.mine, svc)
		return nil
	}
	if err := r.c.batchRegister(svc, sorted(rest)); err != nil {
		return err
	}
	r.mine[svc] = rest
	return nil
}

func sorted(set map[string]model.Instance) []model.Instance {
	out := make([]model.Instance, 0, len(set))
	for _, a := range slices.Sorted(maps.Keys(set)) {
		out = append(out, set[a])
	}
	return out
}

// serviceNames lists the providers: services and the applications of Group, page by page.
func (r *Registry) serviceNames(ctx context.Context) ([]string, error) {
	var names []string
	seen := 0
	for page := uint32(1); ; page++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l, err := r.c.services(page, pageSize, r.o.Namespace)
		if err != nil {
			return nil, fmt.Errorf("nacos registry: list services: %w", err)
		}
		for _, n := range l.Doms {
			if strings.HasPrefix(n, prefix) || isApp(n) {
				names = append(names, n)
			}
		}
		seen += len(l.Doms)
		if len(l.Doms) == 0 || int64(seen) >= l.Count {
			return names, nil
		}
	}
}

// List returns the providers of every providers: service and of every application,
// asking the server for each (without subscribing).
func (r *Registry) List(ctx context.Context) ([]mesh.Instance, error) {
	names, err := r.serviceNames(ctx)
	if err != nil {
		return nil, err
	}
	var out, apps []mesh.Instance
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hosts, err := r.c.query(n)
		if err != nil {
			return nil, fmt.Errorf("nacos registry: query %s: %w", n, err)
		}
		if isApp(n) {
			apps = append(apps, r.appInstances(n, hosts)...)
			continue
		}
		out = append(out, fromInstances(n, hosts)...)
	}
	return dubboapp.Dedupe(out, apps), nil
}

// Watch subscribes to every providers: service and calls fn with all their providers at
// the start and after each change, until ctx ends or the Registry is closed. New services
// are found by listing the services every Options.Discovery: Nacos has no watch on the
// service list. Failing to list them later is logged and retried; the SDK re-subscribes by
// itself after a reconnect.
func (r *Registry) Watch(ctx context.Context, fn func([]mesh.Instance)) error {
	w := &watcher{changed: make(chan struct{}, 1), rediscover: make(chan struct{}, 1), names: map[string]bool{}}
	r.mu.Lock()
	if r.closed() {
		r.mu.Unlock()
		return errClosed
	}
	r.watchers[w] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.watchers, w)
		r.mu.Unlock()
		for n := range w.names {
			r.release(n)
		}
	}()

	if err := r.discover(ctx, w); err != nil {
		return err
	}
	last := r.view(w)
	fn(last)
	t := time.NewTicker(r.o.Discovery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return errClosed
		case <-t.C:
			r.rediscover(ctx, w)
		case <-w.rediscover:
			r.rediscover(ctx, w)
		case <-w.changed:
		}
		if v := r.view(w); !equal(v, last) {
			last = v
			fn(v)
		}
	}
}

func (r *Registry) rediscover(ctx context.Context, w *watcher) {
	if err := r.discover(ctx, w); err != nil && ctx.Err() == nil && !r.closed() {
		r.log.Warn("nacos registry: listing services failed; keeping the known ones", "err", err)
	}
}

// discover lists the services and brings w's subscriptions in line: subscribe to the new
// ones, drop those that are gone (Nacos removes services left empty).
func (r *Registry) discover(ctx context.Context, w *watcher) error {
	names, err := r.serviceNames(ctx)
	if err != nil {
		return err
	}
	now := make(map[string]bool, len(names))
	for _, n := range names {
		now[n] = true
		if w.names[n] {
			continue
		}
		if err := r.acquire(n); err != nil {
			if r.closed() {
				return errClosed
			}
			r.log.Warn("nacos registry: subscribe failed; retrying at the next listing", "service", n, "err", err)
			continue
		}
		w.names[n] = true
	}
	for n := range w.names {
		if !now[n] {
			delete(w.names, n)
			r.release(n)
		}
	}
	return nil
}

// acquire takes a reference on this connection's subscription to service, subscribing
// when it is the first.
func (r *Registry) acquire(service string) error {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.mu.Lock()
	if s := r.subs[service]; s != nil {
		s.refs++
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	s := &subscription{refs: 1}
	app := isApp(service)
	s.cb = func(hosts []model.Instance, _ error) {
		var insts []mesh.Instance
		if !app {
			insts = fromInstances(service, hosts)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		s.insts, s.seen = insts, true
		if app {
			s.hosts = hosts
		}
		for w := range r.watchers {
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	}
	hosts, err := r.c.subscribe(service, &s.cb)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if !s.seen { // no push was newer than the answer
		s.seen = true
		if app {
			s.hosts = hosts
		} else {
			s.insts = fromInstances(service, hosts)
		}
	}
	r.subs[service] = s
	r.mu.Unlock()
	return nil
}

// release drops a reference taken by acquire, unsubscribing with the last.
func (r *Registry) release(service string) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.mu.Lock()
	s := r.subs[service]
	if s == nil {
		r.mu.Unlock()
		return
	}
	if s.refs--; s.refs > 0 {
		r.mu.Unlock()
		return
	}
	delete(r.subs, service)
	r.mu.Unlock()
	if r.closed() {
		return
	}
	if err := r.c.unsubscribe(service, &s.cb); err != nil {
		r.log.Debug("nacos registry: unsubscribe failed", "service", service, "err", err)
	}
}

// poke makes the watches list the services now.
func (r *Registry) poke() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for w := range r.watchers {
		select {
		case w.rediscover <- struct{}{}:
		default:
		}
	}
}

// view is the providers of the services w subscribes to.
func (r *Registry) view(w *watcher) []mesh.Instance {
	var out []mesh.Instance
	apps := map[string][]model.Instance{}
	r.mu.Lock()
	for n := range w.names {
		if s := r.subs[n]; s != nil {
			out = append(out, s.insts...)
			if s.hosts != nil {
				apps[n] = s.hosts
			}
		}
	}
	r.mu.Unlock()
	var ai []mesh.Instance
	for n, hosts := range apps { // MetadataInfo reads, outside r.mu
		ai = append(ai, r.appInstances(n, hosts)...)
	}
	return dubboapp.Dedupe(out, ai)
}

func sortInstances(is []mesh.Instance) {
	sort.Slice(is, func(a, b int) bool {
		x, y := is[a], is[b]
		if x.Service != y.Service {
			if x.Service.Name != y.Service.Name {
				return x.Service.Name < y.Service.Name
			}
			if x.Service.Version != y.Service.Version {
				return x.Service.Version < y.Service.Version
			}
			return x.Service.Group < y.Service.Group
		}
		if x.Address != y.Address {
			return x.Address < y.Address
		}
		return x.Protocol < y.Protocol
	})
}

func equal(a, b []mesh.Instance) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Service != b[i].Service || a[i].Protocol != b[i].Protocol || a[i].Address != b[i].Address ||
			!maps.Equal(a[i].Metadata, b[i].Metadata) {
			return false
		}
	}
	return true
}

// Close disconnects. Nacos drops a connection's ephemeral instances when it closes, so
// what this Registry registered disappears at once; running watches return an error.
func (r *Registry) Close() error {
	r.once.Do(func() {
		r.regMu.Lock()
		close(r.done)
		r.mine = map[string]map[string]model.Instance{}
		r.regMu.Unlock()
		r.c.close()
		r.pw.Close()
	})
	return nil
}

var _ registrysync.Registry = (*Registry)(nil)
