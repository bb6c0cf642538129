// Package embedded runs an etcd server inside the process: the registry of the embedded
// default. It is a real etcd (go.etcd.io/etcd/server/v3/embed) on loopback; a user swaps
// it for an etcd cluster by pointing the domain's registry at that cluster instead.
package embedded

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Server is a running embedded etcd.
type Server struct {
	e        *embed.Etcd
	endpoint string
}

// Start runs a single-member etcd with its data in dir, listening on loopback ports
// chosen by the system.
func Start(name, dir string) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"/dev/null"}
	lc, _ := url.Parse("http://127.0.0.1:0")
	lp, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls = []url.URL{*lc}
	cfg.AdvertiseClientUrls = []url.URL{*lc}
	cfg.ListenPeerUrls = []url.URL{*lp}
	cfg.AdvertisePeerUrls = []url.URL{*lp}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd: not ready after 30s")
	}
	return &Server{e: e, endpoint: e.Clients[0].Addr().String()}, nil
}

// Endpoint is the host:port clients dial.
func (s *Server) Endpoint() string { return s.endpoint }

// Close stops the server.
func (s *Server) Close() { s.e.Close() }
