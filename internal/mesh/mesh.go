// Package mesh holds the plain types that every Strait component shares: protocols,
// service keys, classified calls, routes and instances. It does no I/O.
package mesh

import (
	"fmt"
	"strings"
)

// Protocol is the application protocol a service speaks to its consumers.
type Protocol string

// The protocols Strait proxies.
const (
	ProtocolGRPC   Protocol = "grpc"
	ProtocolTriple Protocol = "triple"
	ProtocolHTTP   Protocol = "http"
	// ProtocolDubbo is the classic Dubbo protocol (dubbo://: Dubbo's own TCP framing,
	// hessian2 bodies).
	ProtocolDubbo Protocol = "dubbo"
)

// Registered reports whether registries carry p (every protocol Strait proxies).
func (p Protocol) Registered() bool { return p.Valid() }

// Valid reports whether p is one of the protocols Strait proxies.
func (p Protocol) Valid() bool {
	switch p {
	case ProtocolGRPC, ProtocolTriple, ProtocolHTTP, ProtocolDubbo:
		return true
	}
	return false
}

// RPC reports whether p frames messages the gRPC way (gRPC and Triple).
func (p Protocol) RPC() bool { return p == ProtocolGRPC || p == ProtocolTriple }

// Family is the protocol family of p: providers of one family serve each other's callers.
// gRPC and Triple are the "rpc" family (they frame messages alike), Dubbo is "dubbo",
// plain HTTP is "http".
func (p Protocol) Family() string {
	switch p {
	case ProtocolGRPC, ProtocolTriple:
		return "rpc"
	case ProtocolDubbo:
		return "dubbo"
	}
	return "http"
}

// Routed reports whether calls of p are routed by service name, version and group (gRPC,
// Triple and Dubbo), rather than by host and path (plain HTTP).
func (p Protocol) Routed() bool { return p != ProtocolHTTP }

// ServiceKey names a service the way Dubbo does: interface, version and group.
// For gRPC the version and group are empty; for HTTP the name is the route's service name.
type ServiceKey struct {
	Name    string
	Version string
	Group   string
}

func (k ServiceKey) String() string {
	var b strings.Builder
	if k.Group != "" {
		b.WriteString(k.Group)
		b.WriteByte('/')
	}
	b.WriteString(k.Name)
	if k.Version != "" {
		b.WriteByte(':')
		b.WriteString(k.Version)
	}
	return b.String()
}

// Instance is one provider endpoint of a service as a registry knows it.
type Instance struct {
	Service  ServiceKey
	Protocol Protocol
	// Address is host:port.
	Address  string
	Metadata map[string]string
}

func (i Instance) String() string {
	return fmt.Sprintf("%s %s://%s", i.Service, i.Protocol, i.Address)
}

// Serves reports whether i can answer a call of service k over protocol p: same protocol
// family (gRPC and Triple providers serve each other's callers), and the version and group
// of k unless they are empty (any).
func (i Instance) Serves(k ServiceKey, p Protocol) bool {
	return i.Protocol.Family() == p.Family() &&
		(k.Version == "" || i.Service.Version == k.Version) &&
		(k.Group == "" || i.Service.Group == k.Group)
}

// Serving returns the instances of all that serve k over p. It returns all itself, not a
// copy, when every instance qualifies; the result must not be modified.
func Serving(all []Instance, k ServiceKey, p Protocol) []Instance {
	n := 0
	for _, i := range all {
		if i.Serves(k, p) {
			n++
		}
	}
	if n == len(all) {
		return all
	}
	out := make([]Instance, 0, n)
	for _, i := range all {
		if i.Serves(k, p) {
			out = append(out, i)
		}
	}
	return out
}
