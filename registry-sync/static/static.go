// Package static is the registry of providers that live outside any registry: their
// endpoints are listed in a YAML file, which is watched, so an edit applies at once.
//
//	providers:
//	  - {service: com.beta.Ledger, protocol: grpc, address: "10.0.3.7:50051"}
//	  - {service: com.beta.PayService, protocol: triple, version: 1.0.0, address: "10.0.3.8:20000",
//	     metadata: {application: pay}}
//
// It is read-only: Register and Deregister return ErrReadOnly.
package static

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fsnotify/fsnotify"
	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// ErrReadOnly is returned by Register and Deregister.
var ErrReadOnly = errors.New("static registry: read-only (edit the file)")

type file struct {
	Providers []struct {
		Service  string            `yaml:"service"`
		Protocol mesh.Protocol     `yaml:"protocol"`
		Version  string            `yaml:"version"`
		Group    string            `yaml:"group"`
		Address  string            `yaml:"address"`
		Metadata map[string]string `yaml:"metadata"`
	} `yaml:"providers"`
}

// Registry is a providers file.
type Registry struct {
	path string
	log  *slog.Logger
}

// New returns the registry of the file at path, which must parse.
func New(path string, log *slog.Logger) (*Registry, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Registry{path: path, log: log.With("component", "static-registry", "file", path)}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// Parse reads a providers document; every problem is reported with its path.
func Parse(b []byte) ([]mesh.Instance, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f file
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var errs []error
	out := make([]mesh.Instance, 0, len(f.Providers))
	for i, p := range f.Providers {
		path := fmt.Sprintf("providers[%d]", i)
		if p.Service == "" {
			errs = append(errs, fmt.Errorf("%s.service: required", path))
		}
		if !p.Protocol.Valid() {
			errs = append(errs, fmt.Errorf("%s.protocol: %q is not one of grpc, triple, http", path, p.Protocol))
		}
		if h, port, err := net.SplitHostPort(p.Address); err != nil || h == "" || port == "" {
			errs = append(errs, fmt.Errorf("%s.address: %q is not host:port", path, p.Address))
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			// Not a port a client can dial (port 0 would reach the gateways, which refuse a
			// whole update for one such endpoint).
			errs = append(errs, fmt.Errorf("%s.address: %q: the port is not a number from 1 to 65535", path, p.Address))
		}
		out = append(out, mesh.Instance{
			Service:  mesh.ServiceKey{Name: p.Service, Version: p.Version, Group: p.Group},
			Protocol: p.Protocol, Address: p.Address, Metadata: p.Metadata,
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func (r *Registry) load() ([]mesh.Instance, error) {
	b, err := os.ReadFile(r.path)
	if err != nil {
		return nil, fmt.Errorf("static registry: %w", err)
	}
	is, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("static registry %s: %w", r.path, err)
	}
	return is, nil
}

// Register is refused: the file is the source of truth.
func (r *Registry) Register(context.Context, mesh.Instance) error { return ErrReadOnly }

// Deregister is refused: the file is the source of truth.
func (r *Registry) Deregister(context.Context, mesh.Instance) error { return ErrReadOnly }

// List reads the file.
func (r *Registry) List(context.Context) ([]mesh.Instance, error) { return r.load() }

// Watch reports the file's providers now and after every change to the file. A change that
// does not parse is logged and ignored: the last good list stays.
func (r *Registry) Watch(ctx context.Context, fn func([]mesh.Instance)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("static registry: %w", err)
	}
	defer w.Close()
	// The directory, since editors replace files rather than write them in place.
	if err := w.Add(filepath.Dir(r.path)); err != nil {
		return fmt.Errorf("static registry: watch: %w", err)
	}
	is, err := r.load()
	if err != nil {
		return err
	}
	fn(is)
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("static registry: watch closed")
			}
			if filepath.Clean(ev.Name) == filepath.Clean(r.path) {
				settle = time.After(20 * time.Millisecond)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("static registry: watch closed")
			}
			r.log.Warn("watch", "err", err)
		case <-settle:
			settle = nil
			is, err := r.load()
			if err != nil {
				r.log.Error("providers file refused; the last good list stays", "err", err)
				continue
			}
			fn(is)
		}
	}
}

// Close does nothing: the registry holds no connection.
func (r *Registry) Close() error { return nil }

var _ registrysync.Registry = (*Registry)(nil)
