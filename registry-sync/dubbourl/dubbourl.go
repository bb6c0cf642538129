// Package dubbourl is the codec of Dubbo provider URLs, the form every Dubbo registry layout
// stores a provider in (ZooKeeper and etcd node names, Nacos metadata):
// tri://10.0.0.1:20000/org.Greeter?interface=org.Greeter&side=provider&version=1.0.0.
package dubbourl

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/strait-mesh/strait/internal/mesh"
)

// Format renders an instance as a Dubbo provider URL, e.g.
// tri://127.0.0.1:20000/org.Greeter?interface=org.Greeter&side=provider&version=1.0.0
func Format(i mesh.Instance) string {
	q := url.Values{}
	for k, v := range i.Metadata {
		switch k {
		case "interface", "version", "group", "side":
			// The service key's own parameters, set below: metadata never overrides them
			// (a "version" in the metadata of an instance without one would change its key).
		default:
			q.Set(k, v)
		}
	}
	q.Set("interface", i.Service.Name)
	q.Set("side", "provider")
	if i.Service.Version != "" {
		q.Set("version", i.Service.Version)
	}
	if i.Service.Group != "" {
		q.Set("group", i.Service.Group)
	}
	u := url.URL{Scheme: Scheme(i.Protocol), Host: i.Address, Path: "/" + i.Service.Name, RawQuery: encodeQuery(q)}
	return u.String()
}

// encodeQuery writes the parameters sorted by key, as Dubbo does, escaping only the bytes
// that would change how the query splits or decodes ('%', '&', '=', '#', ';', '+', space,
// control bytes). Dubbo never decodes a parameter value, so a value must stay as it is
// ("methods=a,b", not "methods=a%2Cb"); the registry layouts that encode a whole URL
// (ZooKeeper and etcd node names) do so once, as Dubbo does.
func encodeQuery(q url.Values) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(q)) {
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			escapeTo(&b, k)
			b.WriteByte('=')
			escapeTo(&b, v)
		}
	}
	return b.String()
}

func escapeTo(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c <= ' ' || c == 0x7f || c == '%' || c == '&' || c == '=' || c == '#' || c == ';' || c == '+':
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		default:
			b.WriteByte(c)
		}
	}
}

// Scheme is the URL scheme (and the protocol parameter) Dubbo writes for p: "tri" for
// Triple, the protocol's name otherwise.
func Scheme(p mesh.Protocol) string {
	if p == mesh.ProtocolTriple {
		return "tri"
	}
	return string(p)
}

// Protocol reads a scheme or protocol parameter as Dubbo writes it ("tri" or "triple",
// "grpc", "http", "dubbo"); ok is false for the protocols Strait does not carry.
func Protocol(s string) (p mesh.Protocol, ok bool) {
	switch s {
	case "tri", "triple":
		return mesh.ProtocolTriple, true
	case "grpc":
		return mesh.ProtocolGRPC, true
	case "http":
		return mesh.ProtocolHTTP, true
	case "dubbo":
		return mesh.ProtocolDubbo, true
	}
	return "", false
}

// Parse reads a Dubbo provider URL back into an instance.
func Parse(s string) (mesh.Instance, error) {
	u, err := url.Parse(s)
	if err != nil {
		return mesh.Instance{}, fmt.Errorf("provider url %q: %w", s, err)
	}
	p, ok := Protocol(u.Scheme)
	if !ok {
		return mesh.Instance{}, fmt.Errorf("provider url %q: protocol %q is not tri, grpc, http or dubbo", s, u.Scheme)
	}
	if err := checkAddress(u.Host); err != nil {
		return mesh.Instance{}, fmt.Errorf("provider url %q: address: %w", s, err)
	}
	q := u.Query()
	name := q.Get("interface")
	if name == "" {
		name = strings.TrimPrefix(u.Path, "/")
	}
	if name == "" {
		return mesh.Instance{}, fmt.Errorf("provider url %q: no interface", s)
	}
	i := mesh.Instance{
		Service:  mesh.ServiceKey{Name: name, Version: q.Get("version"), Group: q.Get("group")},
		Protocol: p,
		Address:  u.Host,
		Metadata: map[string]string{},
	}
	for k := range q {
		switch k {
		case "interface", "version", "group", "side":
		default:
			i.Metadata[k] = q.Get(k)
		}
	}
	return i, nil
}

// checkAddress accepts host:port with a host (printable ASCII: an IP address or a DNS
// name) and a port in 1-65535. A provider without a port cannot be called, and a host with
// other bytes (an IPv6 zone of raw non-ASCII bytes, say) does not survive Format → Parse.
func checkAddress(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("no host")
	}
	for i := 0; i < len(host); i++ {
		if host[i] <= ' ' || host[i] > '~' {
			return fmt.Errorf("host %q", host)
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q", port)
	}
	return nil
}

// serviceParams are the parameters Dubbo's providers write that describe the service
// rather than one host or process: what a Java Dubbo 3.3 provider registers by default,
// and the service-level settings a consumer merges into its own (timeout, retries, …).
// The host's and process's own (pid, bind.ip, qos.*), secrets (token) and the
// application, which a gateway replaces, are not among them.
var serviceParams = map[string]bool{
	"anyhost": true, "background": true, "category": true, "cluster": true, "connections": true,
	"deprecated": true, "dubbo": true, "dynamic": true, "executor-management-mode": true,
	"file-cache": true, "generic": true, "loadbalance": true, "methods": true,
	"metadata-type": true, "payload": true, "prefer.serialization": true, "register-mode": true,
	"release": true, "retries": true, "revision": true, "serialization": true, "service-name-mapping": true,
	"timeout": true, "timestamp": true, "warmup": true, "weight": true,
}

// methodParams are the per-method settings Dubbo writes as <method>.<setting>.
var methodParams = map[string]bool{
	"timeout": true, "retries": true, "loadbalance": true, "async": true, "return": true,
	"sticky": true, "actives": true,
}

// ServiceParam reports whether a provider URL parameter describes the service (the same
// for all its providers, and meaningful to a consumer in another domain): Dubbo's own
// service parameters (methods, release, dubbo, timestamp, prefer.serialization, timeout,
// …) and per-method settings (<method>.timeout). These cross domains with an export by
// default; other metadata crosses only when the export lists it.
func ServiceParam(key string) bool {
	if serviceParams[key] {
		return true
	}
	method, setting, ok := strings.Cut(key, ".")
	return ok && method != "" && !strings.Contains(setting, ".") && methodParams[setting]
}
