package membership

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Role is what a member does in its domain.
type Role string

// The roles of cluster members.
const (
	RoleEgress       Role = "egress"
	RoleIngress      Role = "ingress"
	RoleControlplane Role = "controlplane"
)

// State is a member's serving state.
type State string

// The states of cluster members. Gateways (egress, ingress) are serving or draining;
// the controlplane is always an observer.
const (
	StateServing  State = "serving"
	StateDraining State = "draining"
	StateObserver State = "observer"
)

// Meta is gossiped as a member's metadata. Encoded as JSON it must fit in
// memberlist.MetaMaxSize (512) bytes; Join and UpdateMeta check this.
type Meta struct {
	Domain   string `json:"d"`
	Role     Role   `json:"r"`
	Instance string `json:"i"`
	Addr     string `json:"a"` // the member's serving address (e.g. the ingress tunnel listener host:port); empty for the controlplane
	Zone     string `json:"z,omitempty"`
	State    State  `json:"s"` // serving, draining or observer
	Load     int64  `json:"l"` // calls in flight, updated occasionally
}

// Member is a live member of a cluster.
type Member struct {
	Name string
	Meta Meta
}

// withDefaults fills in State when it is empty: observer for the controlplane,
// serving for gateways.
func (m Meta) withDefaults() Meta {
	if m.State == "" {
		if m.Role == RoleControlplane {
			m.State = StateObserver
		} else {
			m.State = StateServing
		}
	}
	return m
}

// validate checks m and returns its encoding.
func (m Meta) validate() ([]byte, error) {
	if m.Domain == "" {
		return nil, errors.New("membership: meta: empty domain")
	}
	switch m.Role {
	case RoleEgress, RoleIngress:
		if m.State != StateServing && m.State != StateDraining {
			return nil, fmt.Errorf("membership: meta: role %s needs state %s or %s, not %q", m.Role, StateServing, StateDraining, m.State)
		}
	case RoleControlplane:
		if m.State != StateObserver {
			return nil, fmt.Errorf("membership: meta: role %s needs state %s, not %q", m.Role, StateObserver, m.State)
		}
	default:
		return nil, fmt.Errorf("membership: meta: unknown role %q", m.Role)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("membership: meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("membership: meta: %d bytes encoded, more than the limit of %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("undecodable metadata: %w", err)
	}
	return m, nil
}
