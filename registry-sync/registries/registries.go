// Package registries opens a registry adapter by its kind, as configuration names it
// (`registry.kind` in a domain file, `source.kind`/`target.kind` in a sync job). The
// adapters are wired here explicitly: no adapter registers itself, and no adapter imports
// another.
package registries

import (
	"fmt"
	"log/slog"

	registrysync "github.com/strait-mesh/strait/registry-sync"
	etcdreg "github.com/strait-mesh/strait/registry-sync/etcd"
	"github.com/strait-mesh/strait/registry-sync/nacos"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
)

// Kinds are the registry kinds Open accepts ("embedded" is an etcd server the controlplane
// runs itself; to its clients it is etcd).
var Kinds = []string{"embedded", "etcd", "zookeeper", "nacos"}

// Params say where a registry is.
type Params struct {
	// Addresses are the servers' host:port (Nacos: its HTTP port).
	Addresses []string
	// Namespace is Nacos' namespace ("" is Nacos' public one); other kinds ignore it.
	Namespace string
	Logger    *slog.Logger
}

// Open connects to a registry of the given kind ("" is embedded).
func Open(kind string, p Params) (registrysync.Registry, error) {
	switch kind {
	case "", "embedded", "etcd":
		return etcdreg.New(p.Addresses, etcdreg.Options{Logger: p.Logger})
	case "zookeeper":
		return zookeeper.New(p.Addresses, zookeeper.Options{Logger: p.Logger})
	case "nacos":
		return nacos.New(p.Addresses, nacos.Options{Namespace: p.Namespace, Logger: p.Logger})
	}
	return nil, fmt.Errorf("registry kind %q is not one of embedded, etcd, zookeeper, nacos", kind)
}
