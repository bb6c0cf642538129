package controlplane

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/internal/config"
)

// The config sources: the watched domain file and the admin API (PUT /v1/config). Both
// validate as `strait validate` does and keep the configuration in force on error.

func (c *Server) watchFile(ctx context.Context, w *fsnotify.Watcher) {
	defer w.Close()
	var timer *time.Timer
	fire := make(chan struct{}, 1)
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) != filepath.Clean(c.file) || ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) == 0 {
				continue
			}
			// Editors write in several steps: settle for a moment.
			if timer != nil {
				timer.Stop()
			}
			timer = time.AfterFunc(50*time.Millisecond, func() {
				select {
				case fire <- struct{}{}:
				default:
				}
			})
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			c.log.Warn("watching the domain file", "err", err)
		case <-fire:
			d, err := config.Load(c.file)
			if err != nil {
				c.log.Error("domain file refused; the configuration in force stays", "file", c.file, "err", err)
				continue
			}
			v, err := c.cp.SetDomain(d)
			if err != nil {
				c.log.Error("domain file refused; the configuration in force stays", "file", c.file, "err", err)
				continue
			}
			c.log.Info("domain file applied", "file", c.file, "version", v)
		}
	}
}

// serveConfig is the admin API: GET returns the domain document in force, PUT replaces it
// after the same validation as `strait validate`.
func (c *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		b, err := yaml.Marshal(c.cp.Domain())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Strait-Config-Version", c.cp.Version())
		_, _ = w.Write(b)
	case http.MethodPut:
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
		if err != nil {
			http.Error(w, "config: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		d, err := config.Parse(b)
		if err == nil {
			var v string
			if v, err = c.cp.SetDomain(d); err == nil {
				w.Header().Set("Strait-Config-Version", v)
				_, _ = fmt.Fprintf(w, "applied %s\n", v)
				return
			}
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}
