package membership

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/strait-mesh/strait/internal/config"
)

// JoinConfigured makes this process a member of the gossip cluster "<domain>/<role>".
func JoinConfigured(g *config.Gossip, domain, role, name string, meta Meta, alone bool, log *slog.Logger) (*Cluster, error) {
	b, err := os.ReadFile(g.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("gossip: key: %w", err)
	}
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("gossip: key %s: %w", g.KeyFile, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Join(ctx, Options{
		Name: name, Cluster: domain + "/" + role, Key: key, BindAddr: g.Bind, Join: g.Join, Meta: meta, StartAlone: alone,
		Logger: log.With("component", "gossip", "cluster", domain+"/"+role),
	})
	if err != nil {
		return nil, fmt.Errorf("gossip %s/%s: %w", domain, role, err)
	}
	return c, nil
}

// View is how /debug/config shows a member.
type View struct {
	Name     string `json:"name"`
	Instance string `json:"instance"`
	Role     string `json:"role"`
	Addr     string `json:"addr,omitempty"`
	State    string `json:"state"`
}

// Views shows members for /debug/config.
func Views(ms []Member) []View {
	out := make([]View, 0, len(ms))
	for _, m := range ms {
		out = append(out, View{Name: m.Name, Instance: m.Meta.Instance, Role: string(m.Meta.Role), Addr: m.Meta.Addr, State: string(m.Meta.State)})
	}
	return out
}

// Serving returns the members that serve calls (not observers, not draining ones).
func Serving(ms []Member) []Member {
	out := ms[:0:0]
	for _, m := range ms {
		if m.Meta.State == StateServing {
			out = append(out, m)
		}
	}
	return out
}
