package zookeeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubboapp"
)

// curatorInstance is an application instance node as Dubbo writes it: Apache Curator's
// service-discovery JSON with a ZookeeperInstance payload.
type curatorInstance struct {
	Name                string         `json:"name"`
	ID                  string         `json:"id"`
	Address             string         `json:"address"`
	Port                int            `json:"port"`
	SSLPort             *int           `json:"sslPort"`
	Payload             curatorPayload `json:"payload"`
	RegistrationTimeUTC int64          `json:"registrationTimeUTC"`
	ServiceType         string         `json:"serviceType"`
	URISpec             *string        `json:"uriSpec"`
}

type curatorPayload struct {
	Class    string         `json:"@class"`
	ID       string         `json:"id"`
	Name     string         `json:"name"`
	Metadata map[string]any `json:"metadata"`
}

// appNode is an application instance as read from its node.
type appNode struct {
	data string // the node's data, to tell changes
	host string
	port int
	md   map[string]string
}

func (n appNode) revision() string { return n.md[dubboapp.MetaRevision] }

// AppPath returns the node of an application instance: /services/<app>/<host:port>.
func AppPath(app, address string) string { return services + "/" + app + "/" + address }

// MetadataPaths returns where the MetadataInfo of an application's revision is kept:
// Java Dubbo reads /dubbo/metadata/<app>/<revision>, dubbo-go 3.3 /dubbo/<app>/<revision>.
func MetadataPaths(app, revision string) []string {
	return []string{root + "/metadata/" + app + "/" + revision, root + "/" + app + "/" + revision}
}

// MappingPath returns the interface → applications mapping node of iface.
func MappingPath(iface string) string { return root + "/" + dubboapp.MappingGroup + "/" + iface }

// RegisterApp publishes an application instance: its revision's MetadataInfo and the
// mapping of each of its interfaces (persistent), then its ephemeral instance node,
// replaced when it is registered again with other services.
func (r *Registry) RegisterApp(ctx context.Context, a registrysync.AppInstance) error {
	rd, err := dubboapp.Render(a)
	if err != nil {
		return fmt.Errorf("zookeeper registry: register application: %w", err)
	}
	for _, s := range a.Services {
		if err := checkName(s.Service.Name); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	info, err := json.Marshal(rd.Info)
	if err != nil {
		return fmt.Errorf("zookeeper registry: register application %s: %w", a.App, err)
	}
	for _, p := range MetadataPaths(a.App, rd.Info.Revision) {
		if err := r.putPersistent(p, info); err != nil {
			return fmt.Errorf("zookeeper registry: register application %s: metadata %s: %w", a.App, p, err)
		}
	}
	for _, iface := range dubboapp.Interfaces(rd.Info) {
		if err := r.mapApp(iface, a.App); err != nil {
			return fmt.Errorf("zookeeper registry: register application %s: mapping of %s: %w", a.App, iface, err)
		}
	}
	md := make(map[string]any, len(rd.Metadata))
	for k, v := range rd.Metadata {
		md[k] = v
	}
	doc, err := json.Marshal(curatorInstance{
		Name: a.App, ID: a.Address, Address: rd.Host, Port: rd.Port,
		Payload: curatorPayload{
			Class: "org.apache.dubbo.registry.zookeeper.ZookeeperInstance",
			ID:    a.Address, Name: a.App, Metadata: md,
		},
		ServiceType: "DYNAMIC",
	})
	if err != nil {
		return fmt.Errorf("zookeeper registry: register application %s: %w", a.App, err)
	}
	path := AppPath(a.App, a.Address)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.createOrSet(path, doc); err != nil {
		return fmt.Errorf("zookeeper registry: register application %s at %s: %w", a.App, a.Address, err)
	}
	r.mine[path] = doc
	return nil
}

// DeregisterApp deletes the application instance node if this session owns it. The
// MetadataInfo and the mapping stay, as Dubbo leaves them: without instances, a consumer
// that follows the mapping finds no provider there.
func (r *Registry) DeregisterApp(ctx context.Context, app, address string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	path := AppPath(app, address)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.mine, path)
	if err := r.deleteOwn(path); err != nil {
		return fmt.Errorf("zookeeper registry: deregister application %s at %s: %w", app, address, err)
	}
	return nil
}

func (r *Registry) deleteOwn(path string) error {
	ok, st, err := r.conn.Exists(path)
	if err != nil {
		return err
	}
	if !ok || st.EphemeralOwner != r.conn.SessionID() {
		return nil
	}
	if err := r.conn.Delete(path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return err
	}
	return nil
}

// createOrSet makes path an ephemeral node of this session holding data.
func (r *Registry) createOrSet(path string, data []byte) error {
	ok, st, err := r.conn.Exists(path)
	if err != nil {
		return err
	}
	if ok && st.EphemeralOwner == r.conn.SessionID() {
		if _, err := r.conn.Set(path, data, -1); err == nil || !errors.Is(err, zk.ErrNoNode) {
			return err
		}
	}
	return r.create(path, data)
}

// putPersistent creates or overwrites a persistent node.
func (r *Registry) putPersistent(path string, data []byte) error {
	for range 3 {
		_, err := r.conn.Create(path, data, zk.FlagPersistent, acl)
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
		old, _, err := r.conn.Get(path)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return err
		}
		if string(old) == string(data) {
			return nil
		}
		if _, err := r.conn.Set(path, data, -1); !errors.Is(err, zk.ErrNoNode) {
			return err
		}
	}
	return fmt.Errorf("%s: created and deleted concurrently by another client", path)
}

// mapApp adds app to the mapping of iface, with compare-and-set against concurrent writers.
func (r *Registry) mapApp(iface, app string) error {
	path := MappingPath(iface)
	for range 10 {
		old, st, err := r.conn.Get(path)
		if errors.Is(err, zk.ErrNoNode) {
			_, err = r.conn.Create(path, []byte(app), zk.FlagPersistent, acl)
			if errors.Is(err, zk.ErrNoNode) {
				if err := r.createParents(path); err != nil {
					return err
				}
				continue
			}
			if errors.Is(err, zk.ErrNodeExists) {
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		merged, changed := dubboapp.MergeApps(string(old), app)
		if !changed {
			return nil
		}
		if _, err := r.conn.Set(path, []byte(merged), st.Version); errors.Is(err, zk.ErrBadVersion) || errors.Is(err, zk.ErrNoNode) {
			continue
		} else if err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("%s: too many concurrent updates", path)
}

// parseAppNode reads an application instance node.
func parseAppNode(data []byte) (appNode, error) {
	var c struct {
		Address string `json:"address"`
		Port    int    `json:"port"`
		Payload struct {
			Metadata map[string]any `json:"metadata"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return appNode{}, fmt.Errorf("instance node: %w", err)
	}
	if c.Address == "" || c.Port <= 0 || c.Port > 65535 {
		return appNode{}, fmt.Errorf("instance node: address %q port %d", c.Address, c.Port)
	}
	md := make(map[string]string, len(c.Payload.Metadata))
	for k, v := range c.Payload.Metadata {
		if s, ok := v.(string); ok {
			md[k] = s
		} else {
			md[k] = fmt.Sprint(v)
		}
	}
	return appNode{data: string(data), host: c.Address, port: c.Port, md: md}, nil
}

// readable reports whether n's MetadataInfo can be read: from the metadata report
// (storage type remote) or from the instance's MetadataService (local). Others are logged
// once per revision.
func (r *Registry) readable(app string, n appNode) bool {
	if n.revision() == "" || n.revision() == "0" {
		return false
	}
	switch n.md[dubboapp.MetaStorage] {
	case dubboapp.StorageRemote, dubboapp.StorageLocal, "":
		return true
	}
	if _, seen := r.skipped.LoadOrStore(app+"/"+n.revision(), true); !seen {
		r.log.Info("zookeeper registry: skipping application instances of an unknown metadata storage type",
			"service", app, "instance", net.JoinHostPort(n.host, strconv.Itoa(n.port)), "storage_type", n.md[dubboapp.MetaStorage])
	}
	return false
}

// local reports whether n keeps its MetadataInfo in its own MetadataService (Dubbo's
// default when the storage type is absent).
func (n appNode) local() bool { return n.md[dubboapp.MetaStorage] != dubboapp.StorageRemote }

// fetchLocal asks n's MetadataService for its revision's MetadataInfo (at most
// localTimeout) and caches it; failures are logged once per revision and retried at the
// instance's next change.
func (r *Registry) fetchLocal(app string, n appNode) {
	if r.cachedInfo(app, n.revision()) != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), localTimeout)
	defer cancel()
	mi, err := dubboapp.FetchLocal(ctx, app, n.host, n.md, n.revision())
	if err != nil {
		if _, seen := r.skipped.LoadOrStore(app+"/"+n.revision(), true); !seen {
			r.log.Warn("zookeeper registry: cannot read the metadata of application instances with local metadata storage; skipping them",
				"service", app, "instance", net.JoinHostPort(n.host, strconv.Itoa(n.port)), "err", err)
		}
		return
	}
	r.infoMu.Lock()
	r.infos[app+"/"+n.revision()] = mi
	r.infoMu.Unlock()
}

// localTimeout bounds a call to an instance's MetadataService.
const localTimeout = 3 * time.Second

// cachedInfo returns the MetadataInfo of app's revision if it was read before.
func (r *Registry) cachedInfo(app, rev string) *dubboapp.MetadataInfo {
	r.infoMu.Lock()
	defer r.infoMu.Unlock()
	return r.infos[app+"/"+rev]
}

// info reads the MetadataInfo of app's revision (nil if it is in neither path yet).
func (r *Registry) info(app, rev string) (*dubboapp.MetadataInfo, error) {
	if mi := r.cachedInfo(app, rev); mi != nil {
		return mi, nil
	}
	for _, p := range MetadataPaths(app, rev) {
		data, _, err := r.conn.Get(p)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("zookeeper registry: metadata %s: %w", p, err)
		}
		mi, err := dubboapp.ParseInfo(data)
		if err != nil {
			r.log.Warn("zookeeper registry: unreadable metadata", "service", app, "path", p, "err", err)
			continue
		}
		r.infoMu.Lock()
		r.infos[app+"/"+rev] = mi
		r.infoMu.Unlock()
		return mi, nil
	}
	return nil, nil
}

func (r *Registry) instancesOf(app string, n appNode) []mesh.Instance {
	mi := r.cachedInfo(app, n.revision())
	if mi == nil {
		return nil
	}
	return dubboapp.Instances(app, n.host, n.port, n.md, mi)
}

// listApps reads every application instance under /services and their services.
func (r *Registry) listApps(ctx context.Context) ([]mesh.Instance, error) {
	apps, _, err := r.conn.Children(services)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("zookeeper registry: list applications: %w", err)
	}
	var out []mesh.Instance
	for _, app := range apps {
		ids, _, err := r.conn.Children(services + "/" + app)
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("zookeeper registry: list application %s: %w", app, err)
		}
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			data, _, err := r.conn.Get(services + "/" + app + "/" + id)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("zookeeper registry: list application %s: %w", app, err)
			}
			n, err := parseAppNode(data)
			if err != nil {
				r.log.Debug("skipping application instance", "service", app, "instance", id, "err", err)
				continue
			}
			if !r.readable(app, n) {
				continue
			}
			if n.local() {
				r.fetchLocal(app, n)
			} else if _, err := r.info(app, n.revision()); err != nil {
				return nil, err
			}
			out = append(out, r.instancesOf(app, n)...)
		}
	}
	return out, nil
}

// values is every provider the watcher knows: interface-level and application-level.
func (w *watcher) values() []mesh.Instance {
	var apps []mesh.Instance
	for app, nodes := range w.apps {
		for _, n := range nodes {
			apps = append(apps, w.r.instancesOf(app, n)...)
		}
	}
	return dubboapp.Dedupe(values(w.providers), apps)
}

// refreshApps reads /services' children, follows new applications and forgets gone ones.
func (w *watcher) refreshApps() (bool, error) {
	kids, err := w.children(services)
	if err != nil {
		return false, err
	}
	changed := false
	seen := make(map[string]bool, len(kids))
	for _, app := range kids {
		seen[app] = true
		if _, ok := w.apps[app]; ok {
			continue
		}
		w.apps[app] = map[string]appNode{}
		c, err := w.refreshApp(app)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	for app, nodes := range w.apps {
		if !seen[app] {
			delete(w.apps, app)
			changed = changed || len(nodes) > 0
		}
	}
	return changed, nil
}

// refreshApp reads an application's instance ids, reading new instances and forgetting gone ones.
func (w *watcher) refreshApp(app string) (bool, error) {
	nodes, ok := w.apps[app]
	if !ok {
		return false, nil // the application went away: let its watch lapse
	}
	ids, err := w.children(services + "/" + app)
	if err != nil {
		return false, err
	}
	changed := false
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
		if _, ok := nodes[id]; ok {
			continue
		}
		c, err := w.refreshNode(app, id)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	for id := range nodes {
		if !seen[id] {
			delete(nodes, id)
			changed = true
		}
	}
	return changed, nil
}

// refreshNode reads an instance node (arming a data watch on it) and, if its revision's
// MetadataInfo is not there yet, arms exists watches where it will appear.
func (w *watcher) refreshNode(app, id string) (bool, error) {
	nodes, ok := w.apps[app]
	if !ok {
		return false, nil
	}
	path := services + "/" + app + "/" + id
	data, ok, err := w.data(path)
	if err != nil {
		return false, err
	}
	old, had := nodes[id]
	if !ok {
		delete(nodes, id)
		return had, nil
	}
	if had && old.data == string(data) {
		return false, nil
	}
	n, err := parseAppNode(data)
	if err != nil || !w.r.readable(app, n) {
		if err != nil {
			w.r.log.Debug("skipping application instance", "service", app, "instance", id, "err", err)
		}
		delete(nodes, id)
		return had, nil
	}
	nodes[id] = n
	if n.local() {
		w.r.fetchLocal(app, n)
		return true, nil
	}
	if err := w.resolve(app, n.revision()); err != nil {
		return false, err
	}
	return true, nil
}

// resolve reads the MetadataInfo of app's revision, or arms exists watches on its paths.
func (w *watcher) resolve(app, rev string) error {
	mi, err := w.r.info(app, rev)
	if err != nil || mi != nil {
		return err
	}
	for _, p := range MetadataPaths(app, rev) {
		if w.armed[p] {
			w.waiting[p] = app + "/" + rev
			continue
		}
		ok, _, ch, err := w.r.conn.ExistsW(p)
		if err != nil {
			return fmt.Errorf("zookeeper registry: watch %s: %w", p, err)
		}
		w.forward(p, ch)
		w.waiting[p] = app + "/" + rev
		if ok { // created in between: read it now
			mi, err := w.r.info(app, rev)
			if err != nil || mi != nil {
				return err
			}
		}
	}
	return nil
}

// metadataArrived handles the exists watch of a MetadataInfo path.
func (w *watcher) metadataArrived(appRev, path string) (bool, error) {
	app, rev, _ := strings.Cut(appRev, "/")
	if w.r.cachedInfo(app, rev) != nil {
		return false, nil
	}
	if err := w.resolve(app, rev); err != nil {
		return false, err
	}
	return w.r.cachedInfo(app, rev) != nil, nil
}

// data returns path's data and arms a data watch on it; ok is false if it does not exist
// (its parent's child watch reports its creation).
func (w *watcher) data(path string) (data []byte, ok bool, err error) {
	conn := w.r.conn
	if w.armed[path] {
		data, _, err = conn.Get(path)
	} else {
		var ch <-chan zk.Event
		data, _, ch, err = conn.GetW(path)
		if err == nil {
			w.forward(path, ch)
		}
	}
	if errors.Is(err, zk.ErrNoNode) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("zookeeper registry: watch %s: %w", path, err)
	}
	return data, true, nil
}

var _ registrysync.AppRegistry = (*Registry)(nil)
