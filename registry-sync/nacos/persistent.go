package nacos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// PersistentWriter registers persistent Nacos instances: in Nacos 2.x those go through the
// HTTP open API (POST/DELETE /nacos/v1/ns/instance with ephemeral=false), exactly the
// request nacos-sdk-go's NamingClient sends for an instance with Ephemeral false (its
// NamingHttpProxy), without the SDK's HTTP half and its goroutines. Persistent instances
// are kept by the server (Raft) whatever happens to this process, and the server checks
// their health itself (TCP to the address, by default).
//
// It is for copies a sync job leaves behind (strait sync --once), which carry ownership
// marks in their metadata and are removed by the job's next run once their source is gone.
// Nacos 2.x refuses a persistent instance in a service that already holds ephemeral ones
// (and the reverse): such a service has to be migrated by the job's ephemeral copies.
type PersistentWriter struct {
	servers []string // base URLs, http://host:port/nacos
	o       Options
	hc      *http.Client

	mu    sync.Mutex
	token string
}

// NewPersistentWriter returns a writer for the Nacos servers at addrs (host:port of their
// HTTP port), using o's Namespace, Username, Password and Timeout.
func NewPersistentWriter(addrs []string, o Options) (*PersistentWriter, error) {
	if len(addrs) == 0 {
		return nil, errors.New("nacos registry: no server address")
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	w := &PersistentWriter{o: o, hc: &http.Client{Timeout: o.Timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}}
	for _, a := range addrs {
		if _, _, err := splitAddr(a); err != nil {
			return nil, fmt.Errorf("nacos registry: server %q: %w", a, err)
		}
		w.servers = append(w.servers, "http://"+a+"/nacos")
	}
	return w, nil
}

// Register registers inst as a persistent instance (again: a second call updates its
// metadata).
func (w *PersistentWriter) Register(ctx context.Context, inst mesh.Instance) error {
	ni, err := Instance(inst)
	if err != nil {
		return fmt.Errorf("nacos registry: register %s: %w", inst, err)
	}
	md, err := json.Marshal(ni.Metadata)
	if err != nil {
		return fmt.Errorf("nacos registry: register %s: %w", inst, err)
	}
	q := w.params(inst.Service, ni.ClusterName, ni.Ip, ni.Port)
	q.Set("weight", "1")
	q.Set("enabled", "true")
	q.Set("healthy", "true")
	q.Set("metadata", string(md))
	if err := w.do(ctx, http.MethodPost, q); err != nil {
		return fmt.Errorf("nacos registry: register %s: %w", inst, err)
	}
	return nil
}

// Deregister removes inst's persistent instance; a missing one is not an error.
func (w *PersistentWriter) Deregister(ctx context.Context, inst mesh.Instance) error {
	ni, err := Instance(inst)
	if err != nil {
		return fmt.Errorf("nacos registry: deregister %s: %w", inst, err)
	}
	if err := w.do(ctx, http.MethodDelete, w.params(inst.Service, ni.ClusterName, ni.Ip, ni.Port)); err != nil {
		return fmt.Errorf("nacos registry: deregister %s: %w", inst, err)
	}
	return nil
}

func (w *PersistentWriter) params(k mesh.ServiceKey, clusterName, ip string, port uint64) url.Values {
	q := url.Values{}
	q.Set("namespaceId", w.o.Namespace)
	q.Set("serviceName", ServiceName(k))
	q.Set("groupName", Group)
	q.Set("clusterName", clusterName)
	q.Set("ip", ip)
	q.Set("port", strconv.FormatUint(port, 10))
	q.Set("ephemeral", "false")
	return q
}

// do sends the request to each server in turn until one answers 200.
func (w *PersistentWriter) do(ctx context.Context, method string, q url.Values) error {
	var errs []error
	for _, base := range w.servers {
		if w.o.Username != "" {
			tok, err := w.login(ctx, base)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			q.Set("accessToken", tok)
		}
		err := w.send(ctx, method, base+"/v1/ns/instance", q)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

func (w *PersistentWriter) send(ctx context.Context, method, u string, q url.Values) error {
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(q.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := w.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// login gets an access token (servers with authentication).
func (w *PersistentWriter) login(ctx context.Context, base string) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.token != "" {
		return w.token, nil
	}
	q := url.Values{"username": {w.o.Username}, "password": {w.o.Password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/auth/login", strings.NewReader(q.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := w.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"accessToken"`
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("login: %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&v); err != nil || v.AccessToken == "" {
		return "", fmt.Errorf("login: no access token in the answer (%v)", err)
	}
	w.token = v.AccessToken
	return w.token, nil
}

// Close releases idle connections.
func (w *PersistentWriter) Close() error {
	w.hc.CloseIdleConnections()
	return nil
}

// RegisterPersistent registers inst as a persistent instance (see PersistentWriter).
func (r *Registry) RegisterPersistent(ctx context.Context, inst mesh.Instance) error {
	if r.closed() {
		return errors.New("nacos registry: closed")
	}
	return r.pw.Register(ctx, inst)
}

// DeregisterPersistent removes a persistent instance.
func (r *Registry) DeregisterPersistent(ctx context.Context, inst mesh.Instance) error {
	if r.closed() {
		return errors.New("nacos registry: closed")
	}
	return r.pw.Deregister(ctx, inst)
}

var (
	_ registrysync.PersistentRegistry = (*Registry)(nil)
	_ registrysync.FullLister         = (*Registry)(nil)
)

// ListAll is List including the instances the server reports unhealthy or disabled (a
// persistent copy whose address Nacos' own health check cannot reach is still there, and
// its owner must see it to keep or remove it).
func (r *Registry) ListAll(ctx context.Context) ([]mesh.Instance, error) {
	names, err := r.serviceNames(ctx)
	if err != nil {
		return nil, err
	}
	var out []mesh.Instance
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hosts, err := r.c.query(n)
		if err != nil {
			return nil, fmt.Errorf("nacos registry: query %s: %w", n, err)
		}
		for _, h := range hosts {
			h.Healthy, h.Enable = true, true
			if i, ok := FromInstance(n, h); ok {
				out = append(out, i)
			}
		}
	}
	sortInstances(out)
	return out, nil
}
