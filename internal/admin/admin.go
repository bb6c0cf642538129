// Package admin is the admin listener every Strait process (controlplane, egress, ingress)
// runs: liveness and readiness probes, Prometheus metrics, the effective config and pprof,
// on an address of its own, apart from the data path.
//
// Built-in endpoints:
//
//	/healthz        200 "ok" while the process runs
//	/readyz         200 "ready", or 503 with the reason set by SetReady
//	/metrics        Prometheus exposition of Registry()
//	/debug/config   indented JSON of the config source (SetConfigSource), {} if unset
//	/debug/pprof/   net/http/pprof, mounted on this server's mux only
//
// They answer GET and HEAD; other methods get 405 (except POST on /debug/pprof/symbol,
// which `go tool pprof` uses). Components add their own endpoints with Handle.
//
// The endpoints expose internals (config, profiles, command line): bind the admin address
// to loopback or a management network, never to the data-path network.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is the address New listens on when Options.Addr is empty: loopback, any port.
const DefaultAddr = "127.0.0.1:0"

// Limits of the admin HTTP server. pprof's CPU profile, trace and delta profiles extend the
// write deadline of their own request by their duration, at most MaxProfileSeconds.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 60 * time.Second
	MaxHeaderBytes    = 64 << 10
	MaxProfileSeconds = 60
)

// Options configure a Server.
type Options struct {
	// Addr is the host:port to listen on; empty means DefaultAddr.
	Addr string
	// Logger receives the server's logs, with component=admin added; nil discards them.
	Logger *slog.Logger
	// Registry is served on /metrics. Nil: New creates one with the Go and process
	// collectors. A registry passed in is served as is (add those collectors yourself).
	Registry *prometheus.Registry
}

// Server is the admin HTTP server. All its methods may be called concurrently.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	mux    *http.ServeMux
	reg    *prometheus.Registry
	log    *slog.Logger
	cancel context.CancelFunc // cancels every request's context, at Shutdown

	ready     atomic.Pointer[readiness]
	readyMu   sync.Mutex // orders SetReady's store and log
	config    atomic.Pointer[func() any]
	serving   atomic.Bool
	closeOnce sync.Once
}

type readiness struct {
	ready  bool
	reason string
}

// New listens on o.Addr and prepares the endpoints; Serve starts answering.
func New(o Options) (*Server, error) {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		ln:     ln,
		mux:    http.NewServeMux(),
		reg:    reg,
		log:    o.Logger.With("component", "admin"),
		cancel: cancel,
	}
	s.ready.Store(&readiness{reason: "starting"})
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}

	s.mux.Handle("/healthz", getOnly(http.HandlerFunc(s.healthz)))
	s.mux.Handle("/readyz", getOnly(http.HandlerFunc(s.readyz)))
	s.mux.Handle("/metrics", getOnly(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      errLog,
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg, // counts scrape errors in promhttp_metric_handler_errors_total
	})))
	s.mux.Handle("/debug/config", getOnly(http.HandlerFunc(s.debugConfig)))
	mountPprof(s.mux)
	return s, nil
}

// Addr is the bound host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Registry is where components register their metrics; /metrics serves it.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// SetReady sets what /readyz answers: 200 "ready" when ready (reason ignored), else 503
// with reason ("not ready" if empty). A Server starts not ready, with reason "starting";
// Shutdown sets "shutting down". Changes are logged.
func (s *Server) SetReady(ready bool, reason string) {
	if ready {
		reason = ""
	} else if reason == "" {
		reason = "not ready"
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if old := s.ready.Swap(&readiness{ready: ready, reason: reason}); *old != (readiness{ready, reason}) {
		s.log.Info("readiness changed", "ready", ready, "reason", reason)
	}
}

// SetConfigSource sets the function whose result /debug/config serves as JSON. It is called
// once per request, concurrently with anything else: it must return a snapshot that is safe
// to marshal, with secrets already redacted. Nil unsets it.
func (s *Server) SetConfigSource(f func() any) {
	if f == nil {
		s.config.Store(nil)
		return
	}
	s.config.Store(&f)
}

// Handle adds an endpoint, with http.ServeMux pattern syntax ("GET /v1/config"). Like
// http.ServeMux.Handle, it panics if the pattern is invalid or conflicts with a registered
// one, including the built-in endpoints. It may be called before or after Serve.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.log.Debug("endpoint added", "pattern", pattern)
}

// Serve answers on the listener until Shutdown, then returns nil. It may be called once.
func (s *Server) Serve() error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("admin: Serve called twice")
	}
	s.log.Info("serving", "addr", s.Addr())
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve: %w", err)
	}
	return nil
}

// Shutdown marks the server not ready, stops accepting, cancels the requests in flight
// (a running CPU profile ends early) and waits for them to finish. If ctx ends first, it
// closes the remaining connections and returns ctx's error. It is safe to call more than once,
// and without Serve.
func (s *Server) Shutdown(ctx context.Context) error {
	s.SetReady(false, "shutting down")
	s.cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.closeOnce.Do(func() {
		// Serve closes the listener, but it may never have been called.
		if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
		s.log.Info("stopped")
	})
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	r := s.ready.Load()
	if r.ready {
		writeText(w, http.StatusOK, "ready")
		return
	}
	writeText(w, http.StatusServiceUnavailable, r.reason)
}

func (s *Server) debugConfig(w http.ResponseWriter, _ *http.Request) {
	var v any = struct{}{}
	if f := s.config.Load(); f != nil {
		v = (*f)()
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		s.log.Warn("config source not serializable", "err", err)
		writeText(w, http.StatusInternalServerError, "config not serializable: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

func writeText(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write([]byte(body))
}

// getOnly answers 405 to methods other than GET and HEAD.
func getOnly(h http.Handler) http.Handler {
	return allowMethods(h, "GET, HEAD", http.MethodGet, http.MethodHead)
}

func allowMethods(h http.Handler, allow string, methods ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Allow", allow)
		writeText(w, http.StatusMethodNotAllowed, "method not allowed")
	})
}
