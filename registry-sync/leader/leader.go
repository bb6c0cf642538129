// Package leader elects one active writer among the processes running the same job, on a
// registry they share: a ZooKeeper ephemeral sequential node (the lowest one leads) or an
// etcd lease (go.etcd.io/etcd/client/v3/concurrency's Election).
//
// Campaign returns a context that ends the moment this process stops leading, as far as it
// can tell: its ZooKeeper session is disconnected or expired, its node was deleted, or its
// etcd lease is lost. A writer derives every write from that context and checks it before
// each write. A write already sent when leadership is lost cannot be called back (the
// registries have no fencing tokens); the next leader reconciles over it.
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Elector campaigns for the leadership of one election.
type Elector interface {
	// Campaign blocks until this process leads, or ctx ends (it then returns ctx.Err()).
	// The returned context ends when the leadership is lost, Resign is called, or ctx ends.
	Campaign(ctx context.Context) (context.Context, error)
	// Resign gives the leadership up, if held; another process may take it at once.
	Resign() error
	// Close resigns and releases the connection.
	Close() error
}

// ID returns an identity for this process: host, pid and a random suffix.
func ID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// ZooKeeper is an election under a znode path, by ephemeral sequential nodes.
type ZooKeeper struct {
	conn   *zk.Conn
	events <-chan zk.Event
	path   string
	id     string
	log    *slog.Logger

	mu      sync.Mutex
	node    string             // our current node's name, "" if none
	lose    context.CancelFunc // ends the current leadership
	session chan struct{}      // a session state change (coalesced)
	once    sync.Once
	wg      sync.WaitGroup // the leadership's node watch
}

// NewZooKeeper connects to servers and prepares an election under path (e.g.
// /strait/sync/<job>/leader). id names this process in the nodes (ID() if empty).
func NewZooKeeper(servers []string, path, id string, sessionTimeout time.Duration, log *slog.Logger) (*ZooKeeper, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if id == "" {
		id = ID()
	}
	if !strings.HasPrefix(path, "/") || strings.HasSuffix(path, "/") {
		return nil, fmt.Errorf("leader: election path %q must start and not end with '/'", path)
	}
	if sessionTimeout == 0 {
		sessionTimeout = 10 * time.Second
	}
	z := &ZooKeeper{path: path, id: strings.ReplaceAll(id, "/", "_"), log: log, session: make(chan struct{}, 1)}
	conn, events, err := zk.Connect(servers, sessionTimeout, zk.WithLogInfo(false),
		zk.WithLogger(zkLogger{log}), zk.WithEventCallback(z.onEvent))
	if err != nil {
		return nil, fmt.Errorf("leader: zookeeper: %w", err)
	}
	z.conn, z.events = conn, events
	deadline := time.Now().Add(10 * time.Second)
	for conn.State() != zk.StateHasSession {
		if time.Now().After(deadline) {
			z.Close()
			return nil, fmt.Errorf("leader: zookeeper: no session with %v within 10s", servers)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return z, nil
}

// onEvent runs on the client's goroutine: a session that is not connected ends the
// leadership at once.
func (z *ZooKeeper) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	if ev.State != zk.StateHasSession && ev.State != zk.StateConnected {
		z.mu.Lock()
		if z.lose != nil {
			z.lose()
		}
		z.mu.Unlock()
	}
	select {
	case z.session <- struct{}{}:
	default:
	}
}

const seqLen = 10 // ZooKeeper's sequence suffix

func (z *ZooKeeper) prefix() string { return "n-" + z.id + "-" }

// Campaign creates this process's node and waits until it is the lowest.
func (z *ZooKeeper) Campaign(ctx context.Context) (context.Context, error) {
	if err := z.createParents(); err != nil {
		return nil, err
	}
	if err := z.cleanup(); err != nil {
		return nil, err
	}
	for {
		if err := ctx.Err(); err != nil {
			_ = z.Resign()
			return nil, err
		}
		z.mu.Lock()
		node := z.node
		z.mu.Unlock()
		if node == "" {
			created, err := z.conn.Create(z.path+"/"+z.prefix(), []byte(z.id), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
			if err != nil {
				if werr := z.wait(ctx, nil); werr != nil {
					return nil, werr
				}
				z.log.Warn("leader election: creating the node failed; retrying", "err", err)
				continue
			}
			node = created[strings.LastIndexByte(created, '/')+1:]
			z.mu.Lock()
			z.node = node
			z.mu.Unlock()
		}
		kids, _, err := z.conn.Children(z.path)
		if err != nil {
			if werr := z.wait(ctx, nil); werr != nil {
				return nil, werr
			}
			continue
		}
		sort.Slice(kids, func(a, b int) bool { return seq(kids[a]) < seq(kids[b]) })
		at := -1
		for i, k := range kids {
			if k == node {
				at = i
			}
		}
		if at < 0 { // our node is gone (session expired): make a new one
			z.mu.Lock()
			z.node = ""
			z.mu.Unlock()
			continue
		}
		if at == 0 {
			lead, ok, err := z.lead(ctx, node)
			if err != nil || !ok {
				continue
			}
			return lead, nil
		}
		ok, _, ch, err := z.conn.ExistsW(z.path + "/" + kids[at-1])
		if err != nil || !ok {
			continue
		}
		if err := z.wait(ctx, ch); err != nil {
			return nil, err
		}
	}
}

// lead starts a leadership on node, which must still exist under a live session.
func (z *ZooKeeper) lead(ctx context.Context, node string) (context.Context, bool, error) {
	ok, _, ch, err := z.conn.ExistsW(z.path + "/" + node)
	if err != nil || !ok || z.conn.State() != zk.StateHasSession {
		return nil, false, err
	}
	lead, cancel := context.WithCancel(ctx)
	z.mu.Lock()
	z.lose = cancel
	z.mu.Unlock()
	z.wg.Add(1)
	go func() { // ends with the leadership
		defer z.wg.Done()
		select {
		case <-ch: // our node changed or went: not leading any more
			cancel()
		case <-lead.Done():
		}
	}()
	z.log.Info("leader election: leading", "path", z.path, "node", node)
	return lead, true, nil
}

// wait waits for ch (if any), a session change, a short pause when ch is nil, or ctx.
func (z *ZooKeeper) wait(ctx context.Context, ch <-chan zk.Event) error {
	var pause <-chan time.Time
	if ch == nil {
		t := time.NewTimer(200 * time.Millisecond)
		defer t.Stop()
		pause = t.C
	}
	select {
	case <-ctx.Done():
		_ = z.Resign()
		return ctx.Err()
	case <-ch:
	case <-z.session:
	case <-pause:
	}
	return nil
}

func seq(name string) string {
	if len(name) < seqLen {
		return name
	}
	return name[len(name)-seqLen:]
}

// cleanup deletes nodes this process left in an earlier campaign.
func (z *ZooKeeper) cleanup() error {
	kids, _, err := z.conn.Children(z.path)
	if err != nil {
		return fmt.Errorf("leader: zookeeper %s: %w", z.path, err)
	}
	z.mu.Lock()
	mine := z.node
	z.mu.Unlock()
	for _, k := range kids {
		if strings.HasPrefix(k, z.prefix()) && k != mine {
			if err := z.conn.Delete(z.path+"/"+k, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
				return fmt.Errorf("leader: zookeeper %s: %w", z.path, err)
			}
		}
	}
	return nil
}

func (z *ZooKeeper) createParents() error {
	for i := 1; i <= len(z.path); i++ {
		if i < len(z.path) && z.path[i] != '/' {
			continue
		}
		if _, err := z.conn.Create(z.path[:i], nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("leader: zookeeper %s: %w", z.path[:i], err)
		}
	}
	return nil
}

// Resign ends the leadership and deletes this process's node.
func (z *ZooKeeper) Resign() error {
	z.mu.Lock()
	node, lose := z.node, z.lose
	z.node, z.lose = "", nil
	z.mu.Unlock()
	if lose != nil {
		lose()
	}
	if node == "" {
		return nil
	}
	if err := z.conn.Delete(z.path+"/"+node, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("leader: zookeeper resign: %w", err)
	}
	return nil
}

// Close resigns, ends the session and waits for the client's goroutines to stop.
func (z *ZooKeeper) Close() error {
	z.once.Do(func() {
		if z.conn.State() == zk.StateHasSession {
			_ = z.Resign()
		} else {
			z.mu.Lock()
			if z.lose != nil {
				z.lose()
			}
			z.mu.Unlock()
		}
		z.wg.Wait()
		z.conn.Close()
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case _, ok := <-z.events:
				if !ok {
					return
				}
			case <-t.C:
				z.log.Warn("leader: zookeeper client did not stop within 10s")
				return
			}
		}
	})
	return nil
}

type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Warn("zookeeper client: " + fmt.Sprintf(format, args...))
}

// Etcd is an election on an etcd key prefix, held by a lease.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	id     string
	ttl    int
	log    *slog.Logger

	mu   sync.Mutex
	sess *concurrency.Session
	el   *concurrency.Election
	lose context.CancelFunc
	wg   sync.WaitGroup
}

// NewEtcd connects to endpoints and prepares an election on prefix (e.g.
// /strait/sync/<job>/leader). The leader's lease lives ttl after it was last renewed.
func NewEtcd(endpoints []string, prefix, id string, ttl time.Duration, log *slog.Logger) (*Etcd, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if id == "" {
		id = ID()
	}
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("leader: etcd: %w", err)
	}
	return &Etcd{cli: cli, prefix: prefix, id: id, ttl: max(1, int(ttl/time.Second)), log: log}, nil
}

// Campaign waits until this process holds the election's lowest key.
func (e *Etcd) Campaign(ctx context.Context) (context.Context, error) {
	e.mu.Lock()
	sess := e.sess
	e.mu.Unlock()
	if sess != nil {
		select {
		case <-sess.Done():
			sess = nil
		default:
		}
	}
	if sess == nil {
		// The lease is granted under ctx, so that a campaign against an etcd that does not
		// answer ends with ctx (NewSession would grant it under the session's own context,
		// which never ends); the session's keep-alive then outlives the campaign.
		lease, err := e.cli.Grant(ctx, int64(e.ttl))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("leader: etcd lease: %w", err)
		}
		sess, err = concurrency.NewSession(e.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(e.ttl), concurrency.WithContext(context.Background()))
		if err != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, _ = e.cli.Revoke(rctx, lease.ID)
			cancel()
			return nil, fmt.Errorf("leader: etcd session: %w", err)
		}
		e.mu.Lock()
		e.sess = sess
		e.mu.Unlock()
	}
	el := concurrency.NewElection(sess, e.prefix)
	if err := el.Campaign(ctx, e.id); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("leader: etcd campaign: %w", err)
	}
	lead, cancel := context.WithCancel(ctx)
	e.mu.Lock()
	e.el, e.lose = el, cancel
	e.mu.Unlock()
	e.wg.Add(1)
	go func() { // ends with the leadership
		defer e.wg.Done()
		select {
		case <-sess.Done(): // the lease is gone
			cancel()
		case <-lead.Done():
		}
	}()
	e.log.Info("leader election: leading", "prefix", e.prefix, "key", el.Key())
	return lead, nil
}

// Resign ends the leadership and deletes this process's key.
func (e *Etcd) Resign() error {
	e.mu.Lock()
	el, lose := e.el, e.lose
	e.el, e.lose = nil, nil
	e.mu.Unlock()
	if lose != nil {
		lose()
	}
	e.wg.Wait()
	if el == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := el.Resign(ctx); err != nil {
		return fmt.Errorf("leader: etcd resign: %w", err)
	}
	return nil
}

// Close resigns, revokes the lease and disconnects.
func (e *Etcd) Close() error {
	_ = e.Resign()
	e.mu.Lock()
	sess := e.sess
	e.sess = nil
	e.mu.Unlock()
	if sess != nil {
		_ = sess.Close()
	}
	return e.cli.Close()
}

// Abandon drops the connection without resigning or revoking: the leadership ends only when
// the lease expires, as if this process had crashed. For crash drills in tests.
func (e *Etcd) Abandon() error {
	e.mu.Lock()
	lose := e.lose
	e.mu.Unlock()
	if lose != nil {
		lose()
	}
	e.wg.Wait()
	return e.cli.Close()
}
