// Package dubboapp renders and reads Dubbo's application-level service discovery, the
// part every registry shares: an application instance's metadata (revision, metadata
// storage type, endpoints), the MetadataInfo that describes the services of one revision,
// and the interface → applications mapping. The registry adapters (zookeeper, nacos) store
// these in their own layout:
//
//   - instance: ZooKeeper /services/<app>/<host:port> (a Curator JSON document);
//     Nacos service <app> in DEFAULT_GROUP;
//   - MetadataInfo: ZooKeeper /dubbo/metadata/<app>/<revision> (Java Dubbo) and
//     /dubbo/<app>/<revision> (dubbo-go 3.3); Nacos config dataId <app>, group <revision>;
//   - mapping: ZooKeeper /dubbo/mapping/<interface>; Nacos config dataId <interface>,
//     group "mapping"; the value is a comma-separated list of applications.
//
// The JSON shapes are those of dubbo-go v3.3.2 (metadata/info.MetadataInfo,
// registry.Endpoint), which are Java Dubbo 3's.
//
// Reading needs the MetadataInfo of an instance's revision. With remote metadata storage
// (dubbo.metadata.storage-type=remote) it is in the metadata report; with local storage
// (Dubbo's default) only the instance's own MetadataService has it, and FetchLocal asks it:
// MetadataServiceV2 over Triple (dubbo-go 3.3 with metadata-service protocol "tri", Java
// Dubbo 3.3 with meta-v 2.0.0) or the hessian2 MetadataService over the dubbo protocol
// (Java Dubbo serving only dubbo://, meta-v 1.0.0). Instances whose MetadataService speaks
// neither are skipped, and logged.
package dubboapp

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

// Instance metadata keys of Dubbo's application-level discovery.
const (
	MetaRevision  = "dubbo.metadata.revision"
	MetaStorage   = "dubbo.metadata.storage-type"
	MetaEndpoints = "dubbo.endpoints"
	// StorageRemote is the storage type whose MetadataInfo is in the metadata report.
	StorageRemote = "remote"
	// MappingGroup is the group (ZooKeeper: the /dubbo child) of the interface → app mapping.
	MappingGroup = "mapping"
)

// ServiceInfo describes one service of a revision (Dubbo's MetadataInfo.ServiceInfo).
type ServiceInfo struct {
	Name     string            `json:"name,omitempty"`
	Group    string            `json:"group,omitempty"`
	Version  string            `json:"version,omitempty"`
	Protocol string            `json:"protocol,omitempty"`
	Port     int               `json:"port,omitempty"`
	Path     string            `json:"path,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
}

// MetadataInfo is the description of an application's services at one revision.
type MetadataInfo struct {
	App      string                  `json:"app,omitempty"`
	Revision string                  `json:"revision,omitempty"`
	Tag      string                  `json:"tag,omitempty"`
	Services map[string]*ServiceInfo `json:"services,omitempty"`
}

// Endpoint is one protocol an instance serves, on its port (metadata dubbo.endpoints).
type Endpoint struct {
	Port     int    `json:"port,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

// MatchKey is Dubbo's key of a service in MetadataInfo.Services: [group/]name[:version]:protocol.
func MatchKey(name, group, version, protocol string) string {
	k := name
	if group != "" {
		k = group + "/" + k
	}
	if version != "" && version != "0.0.0" {
		k += ":" + version
	}
	return k + ":" + protocol
}

// protocol reads a service's protocol (Triple, gRPC, Dubbo or HTTP).
func protocol(s string) (mesh.Protocol, bool) { return dubbourl.Protocol(s) }

// Rendered is an application instance as a registry stores it.
type Rendered struct {
	Host     string
	Port     int
	Metadata map[string]string // the instance's metadata (revision, storage type, endpoints, marks)
	Info     MetadataInfo      // what the revision's metadata report entry holds
}

// Render turns an application instance into the instance metadata and MetadataInfo Dubbo
// consumers read. Its services must all be at a.Address.
func Render(a registrysync.AppInstance) (Rendered, error) {
	if a.App == "" || strings.ContainsAny(a.App, "/:,") {
		return Rendered{}, fmt.Errorf("application %q: needs a name without '/', ':' or ','", a.App)
	}
	host, p, err := net.SplitHostPort(a.Address)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil || host == "" || port <= 0 || port > 65535 {
		return Rendered{}, fmt.Errorf("application %s: address %q is not host:port", a.App, a.Address)
	}
	if len(a.Services) == 0 {
		return Rendered{}, fmt.Errorf("application %s at %s: no services", a.App, a.Address)
	}
	info := MetadataInfo{App: a.App, Services: map[string]*ServiceInfo{}}
	protos := map[string]bool{}
	for _, s := range a.Services {
		if s.Address != a.Address {
			return Rendered{}, fmt.Errorf("application %s at %s: service %s is at %s", a.App, a.Address, s.Service, s.Address)
		}
		if s.Service.Name == "" || !s.Protocol.Valid() {
			return Rendered{}, fmt.Errorf("application %s: service %q protocol %q: needs a name and grpc, triple, dubbo or http", a.App, s.Service.Name, s.Protocol)
		}
		params := maps.Clone(s.Metadata)
		if params == nil {
			params = map[string]string{}
		}
		// As Java Dubbo 3.3 writes a service's parameters into MetadataInfo: the path is
		// the ServiceInfo's own field, and the provider's start time (timestamp) is the
		// instance's, not the revision's (equal services, equal revision, across restarts).
		delete(params, "version")
		delete(params, "group")
		delete(params, "path")
		delete(params, "timestamp")
		params["application"] = a.App
		params["interface"] = s.Service.Name
		params["side"] = "provider"
		if s.Service.Version != "" {
			params["version"] = s.Service.Version
		}
		if s.Service.Group != "" {
			params["group"] = s.Service.Group
		}
		sc := dubbourl.Scheme(s.Protocol)
		protos[sc] = true
		info.Services[MatchKey(s.Service.Name, s.Service.Group, s.Service.Version, sc)] = &ServiceInfo{
			Name: s.Service.Name, Group: s.Service.Group, Version: s.Service.Version,
			Protocol: sc, Port: port, Path: s.Service.Name, Params: params,
		}
	}
	info.Revision = Revision(info)
	var eps []Endpoint
	for _, sc := range slices.Sorted(maps.Keys(protos)) {
		eps = append(eps, Endpoint{Port: port, Protocol: sc})
	}
	epj, err := json.Marshal(eps)
	if err != nil {
		return Rendered{}, fmt.Errorf("application %s: endpoints: %w", a.App, err)
	}
	md := maps.Clone(a.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	md[MetaRevision] = info.Revision
	md[MetaStorage] = StorageRemote
	md[MetaEndpoints] = string(epj)
	return Rendered{Host: host, Port: port, Metadata: md, Info: info}, nil
}

// Revision is a digest of an application's services: equal services, equal revision.
func Revision(info MetadataInfo) string {
	h := sha256.New()
	h.Write([]byte(info.App))
	for _, k := range slices.Sorted(maps.Keys(info.Services)) {
		s := info.Services[k]
		fmt.Fprintf(h, "\n%s|%s|%s|%s|%d|%s|", s.Name, s.Group, s.Version, s.Protocol, s.Port, s.Path)
		for _, pk := range slices.Sorted(maps.Keys(s.Params)) {
			fmt.Fprintf(h, "%s=%s&", pk, s.Params[pk])
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// ParseInfo reads a MetadataInfo document.
func ParseInfo(data []byte) (*MetadataInfo, error) {
	var mi MetadataInfo
	if err := json.Unmarshal(data, &mi); err != nil {
		return nil, fmt.Errorf("metadata info: %w", err)
	}
	return &mi, nil
}

// Instances turns an application instance (its host, port and metadata) and the
// MetadataInfo of its revision into the provider instances of its services, as a
// consumer would call them: a service of protocol P is at the port of the instance's
// endpoint for P, or at the instance's port when it lists no endpoints. Services of
// protocols Strait does not speak (rest, …) are left out. Each instance's metadata
// are the service's parameters (without interface, path, version, group and side) and the
// instance's metadata (without Dubbo's own dubbo.* keys and id), with "application" set to
// app. A host that does not make a host:port address (empty, or "[" say) gives none.
func Instances(app, host string, port int, md map[string]string, info *MetadataInfo) []mesh.Instance {
	if info == nil || host == "" {
		return nil
	}
	if h, _, err := net.SplitHostPort(net.JoinHostPort(host, "1")); err != nil || h != host {
		return nil
	}
	var eps []Endpoint
	if raw := md[MetaEndpoints]; raw != "" {
		_ = json.Unmarshal([]byte(raw), &eps) // unreadable endpoints: use the instance's port, as dubbo-go does
	}
	var out []mesh.Instance
	for _, k := range slices.Sorted(maps.Keys(info.Services)) {
		s := info.Services[k]
		if s == nil || s.Name == "" {
			continue
		}
		p, ok := protocol(s.Protocol)
		if !ok {
			continue
		}
		ports := []int{port}
		if len(eps) > 0 {
			ports = ports[:0]
			for _, e := range eps {
				if e.Protocol == s.Protocol && e.Port > 0 && e.Port <= 65535 {
					ports = append(ports, e.Port)
				}
			}
		}
		for _, pt := range ports {
			if pt <= 0 || pt > 65535 {
				continue
			}
			m := map[string]string{}
			for k, v := range s.Params {
				switch k {
				case "interface", "path", "version", "group", "side":
				default:
					m[k] = v
				}
			}
			for k, v := range md {
				if k != "id" && !strings.HasPrefix(k, "dubbo.") {
					m[k] = v
				}
			}
			m["application"] = app
			out = append(out, mesh.Instance{
				Service:  mesh.ServiceKey{Name: s.Name, Version: s.Version, Group: s.Group},
				Protocol: p, Address: net.JoinHostPort(host, strconv.Itoa(pt)), Metadata: m,
			})
		}
	}
	return out
}

// MergeApps adds app to a mapping value (comma-separated applications); changed is false
// when it was there already.
func MergeApps(old, app string) (merged string, changed bool) {
	apps := ParseApps(old)
	if slices.Contains(apps, app) {
		return old, false
	}
	return strings.Join(append(apps, app), ","), true
}

// ParseApps reads a mapping value.
func ParseApps(v string) []string {
	var out []string
	for a := range strings.SplitSeq(v, ",") {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// Interfaces lists the interfaces of a MetadataInfo (the mapping keys it needs).
func Interfaces(info MetadataInfo) []string {
	seen := map[string]bool{}
	for _, s := range info.Services {
		seen[s.Name] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

// Dedupe keeps the first of the instances that share protocol, service key and address
// (a provider registered at both interface and application level is one provider) and
// sorts the result.
func Dedupe(lists ...[]mesh.Instance) []mesh.Instance {
	seen := map[string]bool{}
	var out []mesh.Instance
	for _, l := range lists {
		for _, i := range l {
			k := fmt.Sprintf("%s|%s|%s|%s|%s", i.Protocol, i.Service.Name, i.Service.Version, i.Service.Group, i.Address)
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, i)
		}
	}
	sort.SliceStable(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.Service.Name != y.Service.Name {
			return x.Service.Name < y.Service.Name
		}
		if x.Service.Version != y.Service.Version {
			return x.Service.Version < y.Service.Version
		}
		if x.Service.Group != y.Service.Group {
			return x.Service.Group < y.Service.Group
		}
		if x.Address != y.Address {
			return x.Address < y.Address
		}
		return x.Protocol < y.Protocol
	})
	return out
}
