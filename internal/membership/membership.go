// Package membership runs one gossip cluster (hashicorp/memberlist) per gateway cluster:
// the egress instances of a domain form one cluster, its ingress instances another, and
// the controlplane joins each as a non-serving observer to learn the live set.
//
// A cluster is closed to outsiders twice over: every packet and stream carries the
// cluster label (Options.Cluster) and members with another label are refused, and all
// gossip is encrypted and authenticated with the cluster's AES key (Options.Key). As a
// last guard, members whose metadata names another domain are ignored.
package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Timing. Tuned for a LAN and for tests on loopback: a killed member of a small cluster
// is declared dead after about 1-1.5 s (it is probed within one probe round, the probe
// fails within ProbeInterval, and the suspicion lasts SuspicionMult probe intervals);
// a member that leaves is dropped as soon as its leave message is gossiped (~0.1 s).
const (
	probeInterval  = 200 * time.Millisecond
	probeTimeout   = 100 * time.Millisecond
	suspicionMult  = 4 // suspect for 4 × max(1, log10(n)) probe intervals: 800 ms below 10 members
	suspicionMaxX  = 3 // without peer confirmations the suspicion lasts up to 3× longer
	gossipInterval = 50 * time.Millisecond
	gossipNodes    = 3
	retransmitMult = 3
	pushPull       = 10 * time.Second // full state sync; repairs whatever gossip missed
	tcpTimeout     = 2 * time.Second  // join and push/pull streams
	toTheDead      = 10 * time.Second // keep gossiping to a dead member so it can refute a false death
	reclaimDead    = 5 * time.Second  // a dead member may come back with the same name at a new address
	rejoinInterval = time.Second      // how often seeds that are not members are tried again

	leaveTimeout  = 500 * time.Millisecond // Close's leave; the broadcast takes ~2-3 gossip rounds
	updateTimeout = 2 * time.Second        // UpdateMeta waits this long for the broadcast to go out
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("membership: cluster closed")

// Options configure a cluster member. Name, Cluster, Key, BindAddr and Meta (Domain,
// Role) are required.
type Options struct {
	Name     string   // unique node name, e.g. "beta-ingress-1"
	Cluster  string   // cluster label, e.g. "beta/ingress"; members with another label are refused
	Key      []byte   // 16, 24 or 32 byte AES key shared by the cluster; a member with another key cannot join
	BindAddr string   // IP:port to bind TCP and UDP to; port 0 picks a free port (see Cluster.Addr); an empty IP binds all interfaces
	Join     []string // seeds host:port; empty for the first member
	Meta     Meta     // an empty State defaults to serving (gateways) or observer (controlplane)
	// StartAlone lets Join succeed when no seed can be joined yet (the controlplane,
	// which starts before its gateways); the seeds are tried again in the background.
	StartAlone bool
	Logger     *slog.Logger
}

// Cluster is this process's membership in one gossip cluster. All methods are safe for
// concurrent use.
type Cluster struct {
	log     *slog.Logger
	name    string
	cluster string
	domain  string
	ml      *memberlist.Memberlist
	addr    string

	metaMu sync.Mutex
	meta   Meta
	enc    []byte // meta encoded, as gossiped

	// life serialises Leave, UpdateMeta and Close: memberlist panics on Leave after
	// Shutdown and would revive us on an update after Leave.
	life   sync.Mutex
	left   bool // Leave was called (or the member was killed in a test); Close skips the leave
	closed bool

	mu       sync.Mutex
	members  map[string]Member // the live set, maintained from memberlist's events
	addrs    map[string]string // gossip address per live member (memberlist's Nodes are not safe to read)
	version  uint64            // bumped on every change of members
	watchers map[*watcher]struct{}
	wg       sync.WaitGroup // watcher goroutines

	stopRejoin, rejoinDone chan struct{} // the rejoin loop, if there are seeds
}

// Join creates a member bound to o.BindAddr and joins the seeds in o.Join. It fails if
// no seed could be joined: unreachable, or refused because of another label, key or
// domain. ctx is checked between seeds; each seed takes at most a couple of seconds.
func Join(ctx context.Context, o Options) (*Cluster, error) {
	if o.Name == "" {
		return nil, errors.New("membership: empty node name")
	}
	if o.Cluster == "" {
		return nil, errors.New("membership: empty cluster label")
	}
	if len(o.Cluster) > memberlist.LabelMaxSize {
		return nil, fmt.Errorf("membership: cluster label longer than %d bytes", memberlist.LabelMaxSize)
	}
	if err := checkKey(o.Key); err != nil {
		return nil, err
	}
	host, port, err := parseBindAddr(o.BindAddr)
	if err != nil {
		return nil, err
	}
	meta := o.Meta.withDefaults()
	enc, err := meta.validate()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("cluster", o.Cluster, "node", o.Name)

	c := &Cluster{
		log:      lg,
		name:     o.Name,
		cluster:  o.Cluster,
		domain:   meta.Domain,
		meta:     meta,
		enc:      enc,
		members:  make(map[string]Member),
		addrs:    make(map[string]string),
		watchers: make(map[*watcher]struct{}),
	}
	h := &hooks{c: c}

	conf := memberlist.DefaultLANConfig()
	conf.Name = o.Name
	conf.BindAddr = host
	conf.BindPort = port // 0: memberlist binds TCP and UDP to one free port itself
	conf.AdvertisePort = port
	conf.Label = o.Cluster
	conf.SecretKey = slices.Clone(o.Key)
	conf.GossipVerifyIncoming = true
	conf.GossipVerifyOutgoing = true
	conf.Delegate = h
	conf.Events = h
	conf.Alive = h
	conf.Merge = h
	conf.Logger = log.New(logWriter{lg}, "", 0)
	conf.ProbeInterval = probeInterval
	conf.ProbeTimeout = probeTimeout
	conf.SuspicionMult = suspicionMult
	conf.SuspicionMaxTimeoutMult = suspicionMaxX
	conf.GossipInterval = gossipInterval
	conf.GossipNodes = gossipNodes
	conf.RetransmitMult = retransmitMult
	conf.PushPullInterval = pushPull
	conf.TCPTimeout = tcpTimeout
	conf.GossipToTheDeadTime = toTheDead
	conf.DeadNodeReclaimTime = reclaimDead

	ml, err := memberlist.Create(conf)
	if err != nil {
		return nil, fmt.Errorf("membership: %s: %w", o.Cluster, err)
	}
	c.ml = ml
	self := ml.LocalNode()
	c.addr = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))

	if len(o.Join) > 0 {
		var (
			joined int
			errs   []error
		)
		// One seed at a time, so that a cancelled ctx is noticed between seeds.
		for _, seed := range o.Join {
			if err := ctx.Err(); err != nil {
				errs = append(errs, err)
				break
			}
			n, err := ml.Join([]string{seed})
			joined += n
			if err != nil {
				errs = append(errs, err)
			}
		}
		if joined == 0 && o.StartAlone {
			lg.Info("no seed joined yet; starting alone and retrying", "err", errors.Join(errs...))
		} else if joined == 0 {
			_ = ml.Shutdown()
			return nil, fmt.Errorf("membership: %s: join %s: no seed joined: %w", o.Cluster, strings.Join(o.Join, ","), errors.Join(errs...))
		}
		if len(errs) > 0 {
			lg.Warn("some seeds could not be joined", "err", errors.Join(errs...))
		}
	}
	lg.Info("joined gossip cluster", "addr", c.addr, "members", ml.NumMembers())
	if len(o.Join) > 0 {
		c.stopRejoin, c.rejoinDone = make(chan struct{}), make(chan struct{})
		go c.rejoin(slices.Clone(o.Join))
	}
	return c, nil
}

// rejoin keeps trying the seeds that are not members: a seed that restarted (a
// controlplane, say) comes back into the cluster, and two halves of a split merge again.
func (c *Cluster) rejoin(seeds []string) {
	defer close(c.rejoinDone)
	t := time.NewTicker(rejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stopRejoin:
			return
		case <-t.C:
		}
		c.life.Lock()
		if c.closed || c.left {
			c.life.Unlock()
			return
		}
		c.life.Unlock()
		have := map[string]bool{}
		c.mu.Lock()
		for _, a := range c.addrs {
			have[a] = true
		}
		c.mu.Unlock()
		for _, seed := range seeds {
			if have[seed] || seed == c.addr {
				continue
			}
			select {
			case <-c.stopRejoin:
				return
			default:
			}
			if _, err := c.ml.Join([]string{seed}); err != nil {
				c.log.Debug("rejoin seed", "seed", seed, "err", err)
			}
		}
	}
}

// Addr returns the gossip address others join: the advertised host and the bound port.
func (c *Cluster) Addr() string { return c.addr }

// Members returns the live members (alive or suspected, not dead or left) sorted by
// name, including this one until it leaves.
func (c *Cluster) Members() []Member {
	ms, _ := c.snapshot()
	return ms
}

func (c *Cluster) snapshot() ([]Member, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ms := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return ms, c.version
}

// Watch calls fn with the live set (as Members returns it) once right away and then
// after every change: a member joins, leaves, dies or updates its metadata. fn is
// called from one goroutine, one call at a time, in order; a burst of changes that
// arrives while fn runs is coalesced into one call with the latest set. fn owns the
// slice it is given.
//
// stop ends the watch and waits for a running fn to return; after it returns fn is
// not called again. stop must not be called from fn. Close stops all watches. On a
// closed cluster Watch does nothing.
func (c *Cluster) Watch(fn func([]Member)) (stop func()) {
	w := &watcher{fn: fn, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	c.mu.Lock()
	if c.watchers == nil { // closed
		c.mu.Unlock()
		return func() {}
	}
	c.watchers[w] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	go c.runWatcher(w)
	return func() {
		c.mu.Lock()
		delete(c.watchers, w)
		c.mu.Unlock()
		w.quit()
		<-w.done
	}
}

type watcher struct {
	fn       func([]Member)
	wake     chan struct{} // capacity 1: a pending change
	stop     chan struct{} // closed by quit
	stopOnce sync.Once
	done     chan struct{} // closed when the goroutine ends
}

func (w *watcher) quit() { w.stopOnce.Do(func() { close(w.stop) }) }

func (c *Cluster) runWatcher(w *watcher) {
	defer c.wg.Done()
	defer close(w.done)
	var last uint64
	first := true
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		ms, v := c.snapshot()
		if first || v != last {
			first, last = false, v
			w.fn(ms)
		}
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
	}
}

// changed records a change of the live set and wakes the watchers. The caller holds c.mu.
func (c *Cluster) changed() {
	c.version++
	for w := range c.watchers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// UpdateMeta replaces this member's metadata and gossips it, waiting a moment for the
// broadcast to go out. Domain and Role cannot change. An empty State is defaulted as
// in Join. If the broadcast does not go out in time an error is returned, but the new
// metadata is in effect and spreads with the next state sync.
func (c *Cluster) UpdateMeta(m Meta) error {
	m = m.withDefaults()
	enc, err := m.validate()
	if err != nil {
		return err
	}
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.left {
		return errors.New("membership: update after leave")
	}
	c.metaMu.Lock()
	if m.Domain != c.meta.Domain || m.Role != c.meta.Role {
		c.metaMu.Unlock()
		return fmt.Errorf("membership: update may not change domain or role (%s %s → %s %s)", c.meta.Domain, c.meta.Role, m.Domain, m.Role)
	}
	c.meta, c.enc = m, enc
	c.metaMu.Unlock()
	if err := c.ml.UpdateNode(updateTimeout); err != nil {
		return fmt.Errorf("membership: update meta: %w", err)
	}
	return nil
}

// Leave leaves the cluster gracefully: the others drop this member as soon as they hear
// of it, without waiting for failure detection. It waits up to timeout (> 0) for the
// leave message to go out. The member keeps running (and can be Closed) but cannot
// rejoin; leaving twice is a no-op.
func (c *Cluster) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		return errors.New("membership: leave: timeout must be positive")
	}
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.left = true
	if err := c.ml.Leave(timeout); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Abandon stops gossiping at once without leaving, as a crash would: the others find out
// by failure detection. Close still releases what is left. For failure drills and tests.
func (c *Cluster) Abandon() error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed || c.left {
		return nil
	}
	c.left = true // Close must not leave a shut-down memberlist
	if c.stopRejoin != nil {
		// The rejoin loop only joins; it stops with Close.
		_ = c.ml.Shutdown()
		return nil
	}
	return c.ml.Shutdown()
}

// Close leaves the cluster (waiting at most half a second), shuts memberlist down and stops
// all watches. It returns once every goroutine of this package has ended; memberlist's
// own goroutines end shortly after. Closing twice is a no-op. Close must not be called
// from a Watch callback.
func (c *Cluster) Close() error {
	c.life.Lock()
	if c.closed {
		c.life.Unlock()
		return nil
	}
	c.closed = true
	if c.stopRejoin != nil {
		// Stop rejoining before leaving: memberlist must not be joined after Shutdown.
		close(c.stopRejoin)
		c.life.Unlock()
		<-c.rejoinDone
		c.life.Lock()
	}
	var errs []error
	if !c.left {
		c.left = true
		if err := c.ml.Leave(leaveTimeout); err != nil {
			c.log.Warn("leave on close", "err", err)
		}
	}
	if err := c.ml.Shutdown(); err != nil {
		errs = append(errs, err)
	}
	c.life.Unlock()

	c.mu.Lock()
	ws := c.watchers
	c.watchers = nil
	c.mu.Unlock()
	for w := range ws {
		w.quit()
	}
	c.wg.Wait()
	c.log.Info("closed gossip membership")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("membership: close: %w", err)
	}
	return nil
}

// hooks receives memberlist's callbacks. Memberlist calls the event and alive hooks
// with its node lock held, so they must not call back into memberlist.
type hooks struct{ c *Cluster }

// NodeMeta implements memberlist.Delegate.
func (h *hooks) NodeMeta(limit int) []byte {
	h.c.metaMu.Lock()
	defer h.c.metaMu.Unlock()
	if len(h.c.enc) > limit { // cannot happen: validate checks MetaMaxSize
		return nil
	}
	return slices.Clone(h.c.enc)
}

// NotifyMsg implements memberlist.Delegate. No user messages are sent.
func (h *hooks) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate.
func (h *hooks) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (h *hooks) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (h *hooks) MergeRemoteState(buf []byte, join bool) {}

// NotifyAlive implements memberlist.AliveDelegate: members of another domain, or with
// undecodable metadata, are ignored.
func (h *hooks) NotifyAlive(n *memberlist.Node) error {
	_, err := h.check(n)
	return err
}

// NotifyMerge implements memberlist.MergeDelegate: a state sync (such as a join) with a
// cluster that holds members of another domain is refused.
func (h *hooks) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if _, err := h.check(n); err != nil {
			return fmt.Errorf("member %s: %w", n.Name, err)
		}
	}
	return nil
}

func (h *hooks) check(n *memberlist.Node) (Meta, error) {
	m, err := decodeMeta(n.Meta)
	if err != nil {
		return Meta{}, err
	}
	if m.Domain != h.c.domain {
		return Meta{}, fmt.Errorf("domain %q is not %q", m.Domain, h.c.domain)
	}
	return m, nil
}

// NotifyJoin implements memberlist.EventDelegate.
func (h *hooks) NotifyJoin(n *memberlist.Node) { h.put(n) }

// NotifyUpdate implements memberlist.EventDelegate.
func (h *hooks) NotifyUpdate(n *memberlist.Node) { h.put(n) }

// NotifyLeave implements memberlist.EventDelegate; memberlist calls it for members that
// left and for members declared dead.
func (h *hooks) NotifyLeave(n *memberlist.Node) {
	c := h.c
	c.log.Debug("member gone", "member", n.Name)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.addrs, n.Name)
	if _, ok := c.members[n.Name]; ok {
		delete(c.members, n.Name)
		c.changed()
	}
}

func (h *hooks) put(n *memberlist.Node) {
	c := h.c
	m, err := h.check(n) // NotifyAlive has let only good members through
	if err != nil {
		c.log.Warn("member with bad metadata", "member", n.Name, "err", err)
	}
	c.log.Debug("member alive", "member", n.Name, "meta", m)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addrs[n.Name] = n.Address()
	if old, ok := c.members[n.Name]; ok && old.Meta == m {
		return
	}
	c.members[n.Name] = Member{Name: n.Name, Meta: m}
	c.changed()
}

// parseBindAddr splits "IP:port" for memberlist, which wants an IP literal: it would
// silently bind all interfaces for a host name.
func parseBindAddr(s string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("membership: bind address %q: %w", s, err)
	}
	pn, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("membership: bind address %q: bad port", s)
	}
	if h == "" {
		return "0.0.0.0", int(pn), nil
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		return "", 0, fmt.Errorf("membership: bind address %q: host must be an IP address", s)
	}
	return ip.Unmap().String(), int(pn), nil
}

// logWriter turns memberlist's log lines ("[LEVEL] memberlist: message") into slog
// records: ERR and WARN at warn level, INFO at info, the rest at debug.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	level := slog.LevelDebug
	for _, l := range []struct {
		prefix string
		level  slog.Level
	}{{"[ERR] ", slog.LevelWarn}, {"[WARN] ", slog.LevelWarn}, {"[INFO] ", slog.LevelInfo}, {"[DEBUG] ", slog.LevelDebug}} {
		if rest, ok := strings.CutPrefix(line, l.prefix); ok {
			line, level = rest, l.level
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.log.Log(context.Background(), level, line, "component", "memberlist")
	return len(p), nil
}

var (
	_ memberlist.Delegate      = (*hooks)(nil)
	_ memberlist.EventDelegate = (*hooks)(nil)
	_ memberlist.AliveDelegate = (*hooks)(nil)
	_ memberlist.MergeDelegate = (*hooks)(nil)
)
