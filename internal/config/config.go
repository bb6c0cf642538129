// Package config is the domain configuration model: its YAML form, its defaults and its
// validation. Validation is pure and reports every problem with its path in the document,
// for example "peers[0].trustDomain: required".
package config

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/internal/advertise"
	"github.com/strait-mesh/strait/internal/configerr"
	"github.com/strait-mesh/strait/internal/mesh"
)

// Domain is one business domain's configuration: who it is, which registry it uses, which
// peer domains it talks to, what it exports to them and what it calls in them.
type Domain struct {
	// Domain is the domain's name, a DNS label such as "alpha".
	Domain string `yaml:"domain"`
	// TrustDomain is the SPIFFE trust domain of the domain's gateways.
	TrustDomain string   `yaml:"trustDomain"`
	Registry    Registry `yaml:"registry"`
	Peers       []Peer   `yaml:"peers"`
	// Exports are the local services peers may call through this domain's ingress.
	Exports []Export `yaml:"exports"`
	// Routes are the peer services local consumers call through this domain's egress.
	Routes []Route `yaml:"routes"`
	Limits Limits  `yaml:"limits"`
	// Governance holds the policies that protect this domain and its peers from each
	// other: rate limits, concurrency limits, breakers, deadlines, retries, outlier
	// detection.
	Governance Governance `yaml:"governance"`
	// Controlplane says where `strait controlplane` listens.
	Controlplane Listeners `yaml:"controlplane"`
	// Gossip is how the controlplane observes its gateway clusters: it joins each as a
	// member that serves nothing.
	Gossip struct {
		Egress  *Gossip `yaml:"egress"`
		Ingress *Gossip `yaml:"ingress"`
	} `yaml:"gossip"`
}

// Gossip places a process in a gateway cluster's gossip (memberlist): the cluster of a
// domain's egress instances, or of its ingress instances. Gossip never crosses domains.
type Gossip struct {
	// Bind is the IP:port for gossip (TCP and UDP).
	Bind string `yaml:"bind"`
	// Join lists members to join through (the controlplane's gossip address, say).
	Join []string `yaml:"join"`
	// KeyFile holds the cluster's AES key, base64 (16, 24 or 32 bytes). Members with
	// another key cannot join.
	KeyFile string `yaml:"keyFile"`
}

func (g *Gossip) validate(add func(string, string, ...any), path string) {
	if g == nil {
		return
	}
	if err := checkHostPort(g.Bind); err != nil {
		add(path+".bind", "%v", err)
	}
	for i, j := range g.Join {
		if err := checkHostPort(j); err != nil {
			add(fmt.Sprintf("%s.join[%d]", path, i), "%v", err)
		}
	}
	if g.KeyFile == "" {
		add(path+".keyFile", "required: gossip is always encrypted")
	}
}

func (g *Gossip) resolve(dir string) {
	if g != nil && g.KeyFile != "" && !filepath.IsAbs(g.KeyFile) {
		g.KeyFile = filepath.Join(dir, g.KeyFile)
	}
}

// Listeners are a process' listen addresses.
type Listeners struct {
	// XDS is the address gateways fetch their configuration from.
	XDS string `yaml:"xds"`
	// Admin serves /healthz, /readyz, /metrics, /debug/config (and the controlplane's
	// /v1/config). Default 127.0.0.1:0.
	Admin string `yaml:"admin"`
	// Identity, if set, serves xDS over mutual TLS: the controlplane presents this SVID
	// and admits only egress and ingress SVIDs of its own trust domain (Bundle).
	Identity *Identity `yaml:"identity"`
}

// Identity names a process' SVID files and the CA bundle of its own trust domain.
type Identity struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Bundle is the PEM bundle of the process' own trust domain: it verifies the other
	// end of the link to the controlplane (or, on the controlplane, its gateways).
	Bundle string `yaml:"bundle"`
}

func (i *Identity) resolve(dir string) {
	if i == nil {
		return
	}
	for _, p := range []*string{&i.Cert, &i.Key, &i.Bundle} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// Gateway is one gateway instance's own file: who it is and where it listens. Everything
// else reaches it from the controlplane.
type Gateway struct {
	Domain   string `yaml:"domain"`
	Role     string `yaml:"role"`
	Instance string `yaml:"instance"`
	// Listen is the consumer listener (egress) or the tunnel listener (ingress).
	Listen string `yaml:"listen"`
	// Advertise is the address published for this instance, the one consumers (egress)
	// or peer egress instances (ingress) dial: "host", ":port" or "host:port", the rest
	// taken from Listen. Without an advertised host, a wildcard Listen (0.0.0.0, [::])
	// publishes the address of the interface with the default route.
	Advertise string `yaml:"advertise"`
	Admin     string `yaml:"admin"`
	// Controlplane is where the gateway finds its controlplane. The old form, the xDS
	// address as a string (controlplane: HOST:PORT), is accepted with a deprecation warning.
	Controlplane ControlplaneLink `yaml:"controlplane"`
	// Identity is the gateway's SVID; with Bundle set, xDS runs over mutual TLS and the
	// controlplane must present spiffe://<trust domain>/controlplane/….
	Identity Identity `yaml:"identity"`
	// Limits of the listener, fixed at start.
	Limits Limits `yaml:"limits"`
	// DrainTimeout bounds how long SIGTERM waits for calls in flight. Default 15s.
	DrainTimeout Duration `yaml:"drainTimeout"`
	// DrainDelay is how long a gateway told to stop keeps serving, new connections too,
	// after it has announced that it drains (its controlplane withdraws it from the
	// registry, Dubbo consumers get the readonly event), before it stops accepting. Dubbo
	// consumers hear of registry changes up to 5 s late: 5s to 10s suits them. Default 0.
	DrainDelay Duration `yaml:"drainDelay"`
	// Gossip, if set, makes the instance a member of its cluster's gossip.
	Gossip *Gossip `yaml:"gossip"`
	// DataPath is "relay" (the default: gRPC-style calls over HTTP/2 take the relay, the
	// fast path) or "http" (every call takes the general net/http path).
	DataPath string `yaml:"dataPath"`
}

// ControlplaneLink is a gateway's way to its controlplane. In a domain file the same
// key, controlplane, says where the controlplane listens; xds is the same address in both.
type ControlplaneLink struct {
	// XDS is the controlplane's xDS address (its controlplane.xds).
	XDS string `yaml:"xds"`
}

// gatewaySpellings are the old spellings a gateway file may still use.
var gatewaySpellings = []configerr.Option{
	configerr.Shorthand("controlplane", "xds"), // controlplane: HOST:PORT
}

// LoadGateway reads and validates a gateway file. Deprecated spellings are logged (with
// slog's default logger); LoadGatewayWithWarnings returns them instead.
func LoadGateway(path string) (*Gateway, error) {
	g, warnings, err := LoadGatewayWithWarnings(path)
	logWarnings(path, warnings)
	return g, err
}

// LoadGatewayWithWarnings reads and validates a gateway file, and returns the deprecation
// warnings of the spellings it uses that still work (also with an error).
func LoadGatewayWithWarnings(path string) (*Gateway, Errors, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	var g Gateway
	warnings, err := configerr.Decode(b, &g, gatewaySpellings...)
	if err != nil {
		return nil, warnings, fmt.Errorf("config %s: %w", path, err)
	}
	if err := g.Validate(); err != nil {
		return nil, warnings, fmt.Errorf("config %s: %w", path, err)
	}
	if w := g.AdvertiseWarning(); w != "" {
		warnings.Add("listen", "%s", w)
	}
	// Relative paths are relative to the file.
	g.Identity.resolve(filepath.Dir(path))
	g.Gossip.resolve(filepath.Dir(path))
	return &g, warnings, nil
}

// logWarnings logs a file's deprecation warnings.
func logWarnings(file string, warnings Errors) {
	for _, w := range warnings {
		slog.Warn("config: deprecated spelling; it still works, but update the file", "file", file, "warning", w.Error())
	}
}

// AdvertiseWarning says, for a wildcard listen address without an advertised host, what
// the gateway will publish instead; "" otherwise.
func (g *Gateway) AdvertiseWarning() string {
	lh, _, err := net.SplitHostPort(g.Listen)
	if err != nil || !advertise.IsWildcard(lh) {
		return ""
	}
	if ah, _, err := advertise.Split(g.Advertise); err == nil && ah != "" {
		return ""
	}
	return fmt.Sprintf("%s is a wildcard address and advertise names no host: the gateway publishes the address of the interface with the default route; set advertise to the address consumers and peers dial", g.Listen)
}

// Validate checks a gateway file.
func (g *Gateway) Validate() error {
	var es Errors
	add := es.Add
	if g.Domain == "" {
		add("domain", "required")
	} else if !labelRE.MatchString(g.Domain) {
		add("domain", "%q is not a DNS label", g.Domain)
	}
	if g.Role != "egress" && g.Role != "ingress" {
		add("role", "%q is not egress or ingress", g.Role)
	}
	if g.DataPath != "" && g.DataPath != "relay" && g.DataPath != "http" {
		add("dataPath", "%q is not relay or http", g.DataPath)
	}
	if g.Instance == "" {
		add("instance", "required")
	} else if !labelRE.MatchString(g.Instance) {
		add("instance", "%q is not a DNS label", g.Instance)
	}
	for _, f := range []struct{ path, v string }{{"listen", g.Listen}, {"controlplane.xds", g.Controlplane.XDS}} {
		if err := checkHostPort(f.v); err != nil {
			add(f.path, "%v", err)
		}
	}
	if g.Admin != "" {
		if err := checkHostPort(g.Admin); err != nil {
			add("admin", "%v", err)
		}
	}
	if h, _, err := advertise.Split(g.Advertise); err != nil {
		add("advertise", "%v", err)
	} else if g.Advertise != "" && h != "" && advertise.IsWildcard(h) {
		add("advertise", "%q is a wildcard address: advertise the address consumers and peers dial", g.Advertise)
	}
	if g.Identity.Cert == "" {
		add("identity.cert", "required")
	}
	if g.Identity.Key == "" {
		add("identity.key", "required")
	}
	g.Limits.validate(add)
	if g.DrainTimeout < 0 {
		add("drainTimeout", "must not be negative")
	}
	if g.DrainDelay < 0 {
		add("drainDelay", "must not be negative")
	}
	g.Gossip.validate(add, "gossip")
	return es.Err()
}

// Registry says where the domain's service registry is.
type Registry struct {
	// Kind is "embedded" (an etcd inside the controlplane, the default), "etcd",
	// "zookeeper" or "nacos".
	Kind string `yaml:"kind"`
	// Addresses are the servers' host:port (Nacos: the HTTP port; the SDK uses it + 1000
	// for gRPC), as in a sync job's source and target. The old name, endpoints, is
	// accepted with a deprecation warning.
	Addresses []string `yaml:"addresses"`
	// Namespace is the Nacos namespace; empty is the public one.
	Namespace string `yaml:"namespace"`
}

// Peer is another domain this one talks to.
type Peer struct {
	Domain      string `yaml:"domain"`
	TrustDomain string `yaml:"trustDomain"`
	// TrustBundle is the PEM file of the peer trust domain's CA certificates. It is bound to
	// TrustDomain: certificates it signs are accepted for that trust domain only.
	TrustBundle string `yaml:"trustBundle"`
	// Ingress lists host:port of the peer's ingress tunnel listeners.
	Ingress []string `yaml:"ingress"`
	// Transport is the tunnel transport: "h2" (HTTP/2 over TLS 1.3, the default) or "quic"
	// (HTTP/3 over QUIC, UDP on the same port number as the peer's TCP listener).
	Transport string `yaml:"transport"`
	// Quota bounds what the peer may import into this domain.
	Quota Quota `yaml:"quota"`
}

// Export lets peers call one local service, or every local service whose name matches a
// pattern.
type Export struct {
	// Service is a service name, or a pattern (path.Match syntax: '*', '?', '[…]') that
	// exports every service of the registry whose name matches, as if each had an export of
	// its own with this export's other fields; services registering later are exported as
	// they appear. An export naming the service exactly wins over a pattern; among patterns
	// the first in the document wins. Services Strait registered for another domain
	// (managed) never match.
	Service  string        `yaml:"service"`
	Protocol mesh.Protocol `yaml:"protocol"`
	// Version and Group, when set, export only the providers of that version or group;
	// unset, every version and group the providers registered is exported, each as a
	// service of its own.
	Version string `yaml:"version"`
	Group   string `yaml:"group"`
	// To lists the peer domains allowed to call the service.
	To []string `yaml:"to"`
	// Methods, if set, is the allow-list of methods; empty allows all.
	Methods []string `yaml:"methods"`
	// Metadata lists further provider metadata keys that may cross to the peers. Dubbo's
	// service parameters (dubbourl.ServiceParam: methods, release, timeout, …) always
	// cross; other keys only when listed here.
	Metadata []string `yaml:"metadata"`
}

// IsPattern reports whether the export names its services by a pattern.
func (e Export) IsPattern() bool { return IsPattern(e.Service) }

// IsPattern reports whether a service name in an export is a pattern (has '*', '?' or '[').
func IsPattern(service string) bool { return strings.ContainsAny(service, "*?[") }

// MatchService reports whether the service name matches the export's name or pattern.
func (e Export) MatchService(name string) bool {
	if !e.IsPattern() {
		return e.Service == name
	}
	ok, err := path.Match(e.Service, name)
	return ok && err == nil
}

// Route sends local consumer calls of a service to a peer domain.
type Route struct {
	Service  string        `yaml:"service"`
	Protocol mesh.Protocol `yaml:"protocol"`
	Version  string        `yaml:"version"`
	Group    string        `yaml:"group"`
	Peer     string        `yaml:"peer"`
	// Host and PathPrefix match plain HTTP requests (protocol http only); at least one is set.
	Host       string `yaml:"host"`
	PathPrefix string `yaml:"pathPrefix"`
}

// Limits bound what one call may cost a gateway.
type Limits struct {
	MaxHeaderBytes       int      `yaml:"maxHeaderBytes"`
	MaxBodyBytes         int64    `yaml:"maxBodyBytes"`
	MaxConcurrentStreams uint32   `yaml:"maxConcurrentStreams"`
	ReadHeaderTimeout    Duration `yaml:"readHeaderTimeout"`
	IdleTimeout          Duration `yaml:"idleTimeout"`
	DialTimeout          Duration `yaml:"dialTimeout"`
	// CallTimeout bounds a call that carries no deadline of its own (no grpc-timeout).
	CallTimeout Duration `yaml:"callTimeout"`
	// StallTimeout resets a stream whose receiver (a consumer, a peer, a provider) has
	// taken none of its data for that long; gateway file only (fixed at start).
	StallTimeout Duration `yaml:"stallTimeout"`
	// MaxQueuedBytes bounds the data a gateway holds for receivers that do not read
	// (beyond it, new calls are refused with RESOURCE_EXHAUSTED / 503); gateway file
	// only (fixed at start).
	MaxQueuedBytes int64 `yaml:"maxQueuedBytes"`
}

// validate checks limits, at path "limits".
func (l Limits) validate(add func(string, string, ...any)) {
	if l.MaxHeaderBytes < 0 {
		add("limits.maxHeaderBytes", "must not be negative")
	}
	if l.MaxBodyBytes < 0 {
		add("limits.maxBodyBytes", "must not be negative")
	}
	if l.MaxQueuedBytes < 0 {
		add("limits.maxQueuedBytes", "must not be negative")
	}
	for _, t := range []struct {
		path string
		d    Duration
	}{
		{"limits.readHeaderTimeout", l.ReadHeaderTimeout},
		{"limits.idleTimeout", l.IdleTimeout},
		{"limits.dialTimeout", l.DialTimeout},
		{"limits.callTimeout", l.CallTimeout},
		{"limits.stallTimeout", l.StallTimeout},
	} {
		if t.d < 0 {
			add(t.path, "must not be negative")
		}
	}
}

// Default limits.
const (
	DefaultMaxHeaderBytes       = 64 << 10
	DefaultMaxBodyBytes         = 64 << 20
	DefaultMaxConcurrentStreams = 1000
	DefaultReadHeaderTimeout    = 10 * time.Second
	DefaultIdleTimeout          = 5 * time.Minute
	DefaultDialTimeout          = 2 * time.Second
	DefaultCallTimeout          = 5 * time.Minute
	DefaultStallTimeout         = 30 * time.Second
	DefaultMaxQueuedBytes       = 256 << 20
)

// WithDefaults returns l with every unset field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if l.ReadHeaderTimeout == 0 {
		l.ReadHeaderTimeout = Duration(DefaultReadHeaderTimeout)
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if l.DialTimeout == 0 {
		l.DialTimeout = Duration(DefaultDialTimeout)
	}
	if l.CallTimeout == 0 {
		l.CallTimeout = Duration(DefaultCallTimeout)
	}
	if l.StallTimeout == 0 {
		l.StallTimeout = Duration(DefaultStallTimeout)
	}
	if l.MaxQueuedBytes == 0 {
		l.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	return l
}

// Duration is a time.Duration written as "1.5s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if n.Kind != yaml.ScalarNode || n.Decode(&s) != nil {
		return fmt.Errorf("expected a duration like 1.5s, got %s", configerr.Got(n))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("expected a duration like 1.5s, got %s", configerr.Got(n))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Load reads and validates a domain file. Deprecated spellings are logged (with slog's
// default logger); LoadWithWarnings returns them instead.
func Load(path string) (*Domain, error) {
	d, warnings, err := LoadWithWarnings(path)
	logWarnings(path, warnings)
	return d, err
}

// LoadWithWarnings reads and validates a domain file, and returns the deprecation
// warnings of the spellings it uses that still work (also with an error).
func LoadWithWarnings(path string) (*Domain, Errors, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	d, warnings, err := ParseWithWarnings(b)
	if err != nil {
		return nil, warnings, fmt.Errorf("config %s: %w", path, err)
	}
	d.Gossip.Egress.resolve(filepath.Dir(path))
	d.Gossip.Ingress.resolve(filepath.Dir(path))
	d.Controlplane.Identity.resolve(filepath.Dir(path))
	return d, warnings, nil
}

// domainSpellings are the old spellings a domain document may still use.
var domainSpellings = []configerr.Option{
	configerr.Renamed("registry", "endpoints", "addresses"),
}

// Parse decodes a domain document (unknown keys are errors) and validates it. Deprecated
// spellings are logged (with slog's default logger); ParseWithWarnings returns them.
func Parse(b []byte) (*Domain, error) {
	d, warnings, err := ParseWithWarnings(b)
	logWarnings("", warnings)
	return d, err
}

// ParseWithWarnings decodes a domain document (unknown keys are errors) and validates it.
// Decode errors are Errors with the path and line of each problem; validation errors are
// Errors with paths. The warnings are the deprecated spellings the document uses, which
// still work; they come with or without an error.
func ParseWithWarnings(b []byte) (*Domain, Errors, error) {
	var d Domain
	warnings, err := configerr.Decode(b, &d, domainSpellings...)
	if err != nil {
		return nil, warnings, err
	}
	if err := d.Validate(); err != nil {
		return nil, warnings, err
	}
	return &d, warnings, nil
}

// FieldError is one problem at one path (and line) of a document.
type FieldError = configerr.FieldError

// Errors is every problem found in a document.
type Errors = configerr.Errors

var (
	labelRE       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]+$`)
	serviceRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.$-]*$`)
	methodRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	patternRE     = regexp.MustCompile(`^[][A-Za-z0-9_.$*?^!\\-]+$`)
)

// Validate checks d and returns Errors listing every problem, or nil.
func (d *Domain) Validate() error {
	var es Errors
	add := es.Add
	checkLabel := func(path, v string) {
		switch {
		case v == "":
			add(path, "required")
		case !labelRE.MatchString(v):
			add(path, "%q is not a DNS label (lower-case letters, digits, '-')", v)
		}
	}
	checkTD := func(path, v string) {
		switch {
		case v == "":
			add(path, "required")
		case !trustDomainRE.MatchString(v):
			add(path, "%q is not a SPIFFE trust domain name (lower-case letters, digits, '.', '-', '_')", v)
		}
	}

	checkLabel("domain", d.Domain)
	checkTD("trustDomain", d.TrustDomain)

	switch d.Registry.Kind {
	case "", "embedded":
		if len(d.Registry.Addresses) > 0 {
			add("registry.addresses", "not for an embedded registry")
		}
	case "etcd", "zookeeper", "nacos":
		if len(d.Registry.Addresses) == 0 {
			add("registry.addresses", "required for kind %s", d.Registry.Kind)
		}
		for i, a := range d.Registry.Addresses {
			if a == "" {
				add(fmt.Sprintf("registry.addresses[%d]", i), "empty")
			}
		}
	default:
		add("registry.kind", "%q is not one of embedded, etcd, zookeeper, nacos", d.Registry.Kind)
	}

	peers := map[string]bool{}
	tds := map[string]string{d.TrustDomain: "domain " + d.Domain}
	for i, p := range d.Peers {
		path := fmt.Sprintf("peers[%d]", i)
		checkLabel(path+".domain", p.Domain)
		if p.Domain != "" {
			if p.Domain == d.Domain {
				add(path+".domain", "%q is this domain itself", p.Domain)
			}
			if peers[p.Domain] {
				add(path+".domain", "%q is listed twice", p.Domain)
			}
			peers[p.Domain] = true
		}
		checkTD(path+".trustDomain", p.TrustDomain)
		if p.TrustDomain != "" {
			if other, dup := tds[p.TrustDomain]; dup {
				add(path+".trustDomain", "%q is already the trust domain of %s; each trust domain belongs to one domain", p.TrustDomain, other)
			}
			tds[p.TrustDomain] = "peer " + p.Domain
		}
		if p.TrustBundle == "" {
			add(path+".trustBundle", "required")
		}
		for j, a := range p.Ingress {
			if err := checkHostPort(a); err != nil {
				add(fmt.Sprintf("%s.ingress[%d]", path, j), "%v", err)
			}
		}
		switch p.Transport {
		case "", "h2", "quic":
		default:
			add(path+".transport", "%q is not a supported transport (h2, quic)", p.Transport)
		}
		p.Quota.validate(add, path+".quota")
	}

	type skey struct {
		p mesh.Protocol
		k mesh.ServiceKey
	}
	exported := map[skey]bool{}
	for i, e := range d.Exports {
		path := fmt.Sprintf("exports[%d]", i)
		if e.IsPattern() {
			checkPattern(add, path, e.Service, e.Protocol)
		} else {
			checkService(add, path, e.Service, e.Protocol)
		}
		k := skey{e.Protocol, mesh.ServiceKey{Name: e.Service, Version: e.Version, Group: e.Group}}
		if e.Service != "" && exported[k] {
			add(path+".service", "%q is exported twice", k.k)
		}
		exported[k] = true
		if len(e.To) == 0 {
			add(path+".to", "required: name the peer domains allowed to call (nothing crosses by default)")
		}
		for j, to := range e.To {
			if !peers[to] {
				add(fmt.Sprintf("%s.to[%d]", path, j), "%q is not a configured peer", to)
			}
		}
		for j, m := range e.Methods {
			if !methodRE.MatchString(m) {
				add(fmt.Sprintf("%s.methods[%d]", path, j), "%q is not a method name", m)
			}
		}
		if e.Protocol == mesh.ProtocolHTTP && len(e.Methods) > 0 {
			add(path+".methods", "only for protocols grpc and triple")
		}
	}

	routed := map[skey]bool{}
	httpMatch := map[[2]string]bool{}
	for i, r := range d.Routes {
		path := fmt.Sprintf("routes[%d]", i)
		checkService(add, path, r.Service, r.Protocol)
		if r.Peer == "" {
			add(path+".peer", "required")
		} else if !peers[r.Peer] {
			add(path+".peer", "%q is not a configured peer", r.Peer)
		}
		if r.Protocol == mesh.ProtocolHTTP {
			if r.Host == "" && r.PathPrefix == "" {
				add(path, "an http route needs host or pathPrefix")
			}
			if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
				add(path+".pathPrefix", "%q does not start with '/'", r.PathPrefix)
			}
			m := [2]string{strings.ToLower(r.Host), r.PathPrefix}
			if httpMatch[m] {
				add(path, "host %q with pathPrefix %q is routed twice", r.Host, r.PathPrefix)
			}
			httpMatch[m] = true
			if r.Version != "" || r.Group != "" {
				add(path, "version and group are only for protocols grpc and triple")
			}
			continue
		}
		if r.Host != "" || r.PathPrefix != "" {
			add(path, "host and pathPrefix are only for protocol http")
		}
		k := skey{r.Protocol, mesh.ServiceKey{Name: r.Service, Version: r.Version, Group: r.Group}}
		if r.Service != "" && routed[k] {
			add(path+".service", "%q is routed twice", k.k)
		}
		routed[k] = true
	}

	if a := d.Controlplane.XDS; a != "" {
		if err := checkHostPort(a); err != nil {
			add("controlplane.xds", "%v", err)
		}
	}
	if a := d.Controlplane.Admin; a != "" {
		if err := checkHostPort(a); err != nil {
			add("controlplane.admin", "%v", err)
		}
	}
	if id := d.Controlplane.Identity; id != nil {
		for _, f := range []struct{ path, v string }{{"cert", id.Cert}, {"key", id.Key}, {"bundle", id.Bundle}} {
			if f.v == "" {
				add("controlplane.identity."+f.path, "required")
			}
		}
	}

	d.Gossip.Egress.validate(add, "gossip.egress")
	d.Gossip.Ingress.validate(add, "gossip.ingress")

	d.Limits.validate(add)
	d.Governance.validate(add, peers)

	return es.Err()
}

func checkService(add func(string, string, ...any), path, name string, p mesh.Protocol) {
	switch {
	case name == "":
		add(path+".service", "required")
	case !serviceRE.MatchString(name):
		add(path+".service", "%q is not a service name", name)
	}
	switch {
	case p == "":
		add(path+".protocol", "required (grpc, triple, dubbo or http)")
	case !p.Valid():
		add(path+".protocol", "%q is not one of grpc, triple, dubbo, http", p)
	}
}

// checkPattern checks a pattern export's service: path.Match syntax over the characters
// of service names.
func checkPattern(add func(string, string, ...any), at, pattern string, p mesh.Protocol) {
	if _, err := path.Match(pattern, ""); err != nil {
		add(at+".service", "%q is not a valid pattern (path.Match syntax: '*', '?', '[a-z]'): %v", pattern, err)
	} else if !patternRE.MatchString(pattern) {
		add(at+".service", "%q is not a service name pattern (letters, digits, '_', '.', '$', '-', and '*', '?', '[…]')", pattern)
	}
	checkService(add, at, "x", p)
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port", a)
	}
	if host == "" || port == "" {
		return fmt.Errorf("%q is not host:port", a)
	}
	return nil
}

// Peer returns the peer named domain.
func (d *Domain) Peer(domain string) (Peer, bool) {
	for _, p := range d.Peers {
		if p.Domain == domain {
			return p, true
		}
	}
	return Peer{}, false
}
