package nacos

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubboapp"
)

// Dubbo's interface-level categories: Nacos services named <category>:<interface>:… .
var categories = []string{"providers:", "consumers:", "configurators:", "routers:"}

// isApp reports whether a Nacos service name is an application (of Dubbo's
// application-level discovery) rather than one of Dubbo's interface-level services.
func isApp(service string) bool {
	if service == "" {
		return false
	}
	for _, c := range categories {
		if strings.HasPrefix(service, c) {
			return false
		}
	}
	return true
}

// RegisterApp publishes an application instance: its revision's MetadataInfo (config
// dataId <app>, group <revision>) and the mapping of each of its interfaces (config dataId
// <interface>, group "mapping"), then its ephemeral instance in the service <app>,
// replacing the one at the same address.
func (r *Registry) RegisterApp(ctx context.Context, a registrysync.AppInstance) error {
	rd, err := dubboapp.Render(a)
	if err != nil {
		return fmt.Errorf("nacos registry: register application: %w", err)
	}
	if !isApp(a.App) {
		return fmt.Errorf("nacos registry: register application %q: the name is one of Dubbo's interface-level categories", a.App)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.closed() {
		return errClosed
	}
	info, err := json.Marshal(rd.Info)
	if err != nil {
		return fmt.Errorf("nacos registry: register application %s: %w", a.App, err)
	}
	if err := r.c.publishConfig(a.App, rd.Info.Revision, string(info), ""); err != nil {
		return fmt.Errorf("nacos registry: register application %s: metadata: %w", a.App, err)
	}
	for _, iface := range dubboapp.Interfaces(rd.Info) {
		if err := r.mapApp(iface, a.App); err != nil {
			return fmt.Errorf("nacos registry: register application %s: mapping of %s: %w", a.App, iface, err)
		}
	}
	md := rd.Metadata
	md["id"] = a.Address // Dubbo keeps the instance id in the metadata (Nacos has its own)
	ni := model.Instance{
		Ip: rd.Host, Port: uint64(rd.Port), Weight: 1, Enable: true, Healthy: true, Ephemeral: true,
		ClusterName: cluster, Metadata: md,
	}
	if err := r.put(a.App, a.Address, ni); err != nil {
		return fmt.Errorf("nacos registry: register application %s at %s: %w", a.App, a.Address, err)
	}
	return nil
}

// DeregisterApp withdraws an application instance this Registry registered. The
// MetadataInfo and the mapping stay, as Dubbo leaves them.
func (r *Registry) DeregisterApp(ctx context.Context, app, address string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.remove(app, address); err != nil {
		return fmt.Errorf("nacos registry: deregister application %s at %s: %w", app, address, err)
	}
	return nil
}

// mapApp adds app to the mapping of iface, with compare-and-set on the old content's MD5
// (Nacos has no create-if-absent: two first writers can still race, as with Dubbo).
func (r *Registry) mapApp(iface, app string) error {
	var err error
	for range 5 {
		old, found, gerr := r.c.getConfig(iface, dubboapp.MappingGroup)
		if gerr != nil {
			return gerr
		}
		merged, changed := dubboapp.MergeApps(old, app)
		if !changed {
			return nil
		}
		cas := ""
		if found {
			sum := md5.Sum([]byte(old)) // the checksum Nacos's compare-and-set protocol uses
			cas = hex.EncodeToString(sum[:])
		}
		if err = r.c.publishConfig(iface, dubboapp.MappingGroup, merged, cas); err == nil || !errors.Is(err, errConfigRefused) {
			return err
		}
	}
	return err
}

// info returns the MetadataInfo of app's revision (nil if it is not there yet), reading it
// once.
func (r *Registry) info(app, rev string) (*dubboapp.MetadataInfo, error) {
	key := app + "/" + rev
	r.infoMu.Lock()
	mi := r.infos[key]
	r.infoMu.Unlock()
	if mi != nil {
		return mi, nil
	}
	content, found, err := r.c.getConfig(app, rev)
	if err != nil || !found {
		return nil, err
	}
	mi, err = dubboapp.ParseInfo([]byte(content))
	if err != nil {
		return nil, err
	}
	r.infoMu.Lock()
	r.infos[key] = mi
	r.infoMu.Unlock()
	return mi, nil
}

// appInstances turns the instances of application app into the providers of its
// services. Instances whose MetadataInfo cannot be read (not in the config yet, local
// metadata storage, the server unreachable) are left out.
func (r *Registry) appInstances(app string, hosts []model.Instance) []mesh.Instance {
	var out []mesh.Instance
	for _, h := range hosts {
		if !h.Enable || !h.Healthy || h.Port == 0 || h.Port > 65535 {
			continue
		}
		rev := h.Metadata[dubboapp.MetaRevision]
		if rev == "" || rev == "0" {
			continue
		}
		addr := net.JoinHostPort(h.Ip, strconv.FormatUint(h.Port, 10))
		switch h.Metadata[dubboapp.MetaStorage] {
		case dubboapp.StorageRemote:
		case dubboapp.StorageLocal, "":
			if mi := r.fetchLocal(app, h, rev); mi != nil {
				out = append(out, dubboapp.Instances(app, h.Ip, int(h.Port), h.Metadata, mi)...)
			}
			continue
		default:
			if _, seen := r.skipped.LoadOrStore(app+"/"+rev, true); !seen {
				r.log.Info("nacos registry: skipping application instances of an unknown metadata storage type",
					"service", app, "instance", addr, "storage_type", h.Metadata[dubboapp.MetaStorage])
			}
			continue
		}
		mi, err := r.info(app, rev)
		if err != nil {
			if !r.closed() {
				r.log.Warn("nacos registry: reading application metadata failed; retrying at the next change", "service", app, "instance", addr, "err", err)
			}
			continue
		}
		if mi == nil {
			r.log.Debug("nacos registry: application metadata not published yet", "service", app, "instance", addr, "revision", rev)
			continue
		}
		out = append(out, dubboapp.Instances(app, h.Ip, int(h.Port), h.Metadata, mi)...)
	}
	return out
}

// fetchLocal returns the MetadataInfo of app's revision from the instance h's own
// MetadataService (local metadata storage), asking at most once per localRetry per
// instance after a failure (the first failure is logged).
func (r *Registry) fetchLocal(app string, h model.Instance, rev string) *dubboapp.MetadataInfo {
	key := app + "/" + rev
	r.infoMu.Lock()
	mi := r.infos[key]
	r.infoMu.Unlock()
	if mi != nil {
		return mi
	}
	addr := net.JoinHostPort(h.Ip, strconv.FormatUint(h.Port, 10))
	if t, ok := r.localFailed.Load(key + "@" + addr); ok && time.Since(t.(time.Time)) < localRetry {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), localTimeout)
	defer cancel()
	mi, err := dubboapp.FetchLocal(ctx, app, h.Ip, h.Metadata, rev)
	if err != nil {
		if _, seen := r.localFailed.Swap(key+"@"+addr, time.Now()); !seen {
			r.log.Warn("nacos registry: cannot read the metadata of an application instance with local metadata storage; skipping it",
				"service", app, "instance", addr, "err", err)
		}
		return nil
	}
	r.infoMu.Lock()
	r.infos[key] = mi
	r.infoMu.Unlock()
	return mi
}

const (
	localTimeout = 3 * time.Second  // bounds a call to an instance's MetadataService
	localRetry   = 30 * time.Second // between calls to a MetadataService that failed
)

var _ registrysync.AppRegistry = (*Registry)(nil)
