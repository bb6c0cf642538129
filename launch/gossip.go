package launch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/membership"
)

// joinGossip makes this process a member of the gossip cluster "<domain>/<role>".
func joinGossip(g *config.Gossip, domain, role, name string, meta membership.Meta, alone bool, log *slog.Logger) (*membership.Cluster, error) {
	b, err := os.ReadFile(g.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("gossip: key: %w", err)
	}
	key, err := membership.ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("gossip: key %s: %w", g.KeyFile, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := membership.Join(ctx, membership.Options{
		Name: name, Cluster: domain + "/" + role, Key: key, BindAddr: g.Bind, Join: g.Join, Meta: meta, StartAlone: alone,
		Logger: log.With("component", "gossip", "cluster", domain+"/"+role),
	})
	if err != nil {
		return nil, fmt.Errorf("gossip %s/%s: %w", domain, role, err)
	}
	return c, nil
}

// memberView is how /debug/config shows a member.
type memberView struct {
	Name     string `json:"name"`
	Instance string `json:"instance"`
	Role     string `json:"role"`
	Addr     string `json:"addr,omitempty"`
	State    string `json:"state"`
}

func viewMembers(ms []membership.Member) []memberView {
	out := make([]memberView, 0, len(ms))
	for _, m := range ms {
		out = append(out, memberView{Name: m.Name, Instance: m.Meta.Instance, Role: string(m.Meta.Role), Addr: m.Meta.Addr, State: string(m.Meta.State)})
	}
	return out
}
