package static_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/conformance"
	"github.com/strait-mesh/strait/registry-sync/static"
)

// The static registry is read-only by design: the providers file is the source of truth,
// and Register and Deregister return ErrReadOnly. conformance.Options has no way for an
// adapter to say so, and the suite registers through the adapter, so the bare adapter
// cannot run it (its first Register fails). The suite runs here against the static
// registry as it is used: an operator edits the file (editor below, one per client of the
// suite, all on one file) and the static registry's List and Watch, which are what the
// rest of Strait reads, must see every edit. What a client "registered" leaves the file
// when it closes, as liveness tied to the registering client asks.

// TestReadOnly: the bare adapter refuses the suite's writes; RunApp does not apply (no
// application-level registrations in a providers file).
func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := static.New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	i := mesh.Instance{Service: mesh.ServiceKey{Name: "a.B"}, Protocol: mesh.ProtocolGRPC, Address: "127.0.0.1:1"}
	if err := r.Register(context.Background(), i); !errors.Is(err, static.ErrReadOnly) {
		t.Errorf("Register: %v, want ErrReadOnly", err)
	}
	if err := r.Deregister(context.Background(), i); !errors.Is(err, static.ErrReadOnly) {
		t.Errorf("Deregister: %v, want ErrReadOnly", err)
	}
	var reg registrysync.Registry = r
	if _, ok := reg.(registrysync.AppRegistry); ok {
		t.Error("the static registry is an AppRegistry: run conformance.RunApp against it")
	}
	if is, err := r.List(context.Background()); err != nil || len(is) != 0 {
		t.Errorf("List of an empty file: %v, %v", is, err)
	}
}

// TestConformance runs the registry conformance suite: the static registry reads (List,
// Watch) what the editors write into its file.
func TestConformance(t *testing.T) {
	f := &providersFile{path: filepath.Join(t.TempDir(), "providers.yaml")}
	if err := f.write(); err != nil {
		t.Fatal(err)
	}
	conformance.Run(t, conformance.Options{
		New: func(t *testing.T) registrysync.Registry {
			r, err := static.New(f.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			return &editor{Registry: r, file: f, id: f.newID()}
		},
	})
	// Every client of the suite closed: the file is empty again.
	is, err := static.Parse(mustRead(t, f.path))
	if err != nil || len(is) != 0 {
		t.Errorf("providers left in the file after every client closed: %v %v", is, err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// providersFile is the providers file the editors share, and who wrote which entry.
type providersFile struct {
	path string

	mu      sync.Mutex
	nextID  int
	entries []entry
}

type entry struct {
	owner int
	inst  mesh.Instance
}

type fileProvider struct {
	Service  string            `yaml:"service"`
	Protocol mesh.Protocol     `yaml:"protocol"`
	Version  string            `yaml:"version,omitempty"`
	Group    string            `yaml:"group,omitempty"`
	Address  string            `yaml:"address"`
	Metadata map[string]string `yaml:"metadata,omitempty"`
}

func (f *providersFile) newID() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	return f.nextID
}

func same(a, b mesh.Instance) bool {
	return a.Service == b.Service && a.Protocol == b.Protocol && a.Address == b.Address
}

// edit changes the entries under the lock and rewrites the file as editors do: a new file
// renamed over the old one.
func (f *providersFile) edit(change func([]entry) []entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = change(f.entries)
	return f.write()
}

func (f *providersFile) write() error {
	doc := struct {
		Providers []fileProvider `yaml:"providers"`
	}{Providers: []fileProvider{}}
	for _, e := range f.entries {
		doc.Providers = append(doc.Providers, fileProvider{
			Service: e.inst.Service.Name, Protocol: e.inst.Protocol, Version: e.inst.Service.Version, Group: e.inst.Service.Group,
			Address: e.inst.Address, Metadata: e.inst.Metadata,
		})
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("providers file: %w", err)
	}
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("providers file: %w", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("providers file: %w", err)
	}
	return nil
}

// editor is one client of the suite: the static registry for reading, the file for
// writing.
type editor struct {
	*static.Registry
	file *providersFile
	id   int
}

func (e *editor) Register(_ context.Context, i mesh.Instance) error {
	return e.file.edit(func(es []entry) []entry {
		if slices.ContainsFunc(es, func(x entry) bool { return same(x.inst, i) }) {
			return es
		}
		return append(es, entry{e.id, i})
	})
}

func (e *editor) Deregister(_ context.Context, i mesh.Instance) error {
	return e.file.edit(func(es []entry) []entry {
		return slices.DeleteFunc(es, func(x entry) bool { return x.owner == e.id && same(x.inst, i) })
	})
}

func (e *editor) Close() error {
	err := e.file.edit(func(es []entry) []entry {
		return slices.DeleteFunc(es, func(x entry) bool { return x.owner == e.id })
	})
	return errors.Join(err, e.Registry.Close())
}
