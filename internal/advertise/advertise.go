// Package advertise decides the address a gateway publishes (into gossip, and from there
// into the registry and to peer domains): the one consumers and peers dial, which is not
// always the one its listener is bound to. A gateway behind a Service or a VIP, or on a
// host with several interfaces, says it with `advertise`; a listener on a wildcard
// address without it publishes the address of the interface that has the default route.
package advertise

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Split reads an advertise setting: "host", ":port" or "host:port" ("" is neither).
func Split(s string) (host, port string, err error) {
	if s == "" {
		return "", "", nil
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		if p != "" {
			if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
				return "", "", fmt.Errorf("port %q is not a number from 1 to 65535", p)
			}
		}
		return h, p, nil
	}
	h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if strings.ContainsAny(h, "[]/ ") || (strings.Contains(h, ":") && net.ParseIP(h) == nil) {
		return "", "", fmt.Errorf("%q is not a host, :port or host:port", s)
	}
	return h, "", nil
}

// IsWildcard reports whether host is a wildcard listen address ("", 0.0.0.0, ::).
func IsWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// Resolve returns the address to publish for a listener bound to bound: advertise's host
// and port where it gives them, the bound ones otherwise; a wildcard host is replaced by
// defaultIP's answer. It also says whether it had to guess (a wildcard without an
// advertised host).
func Resolve(advertise string, bound net.Addr, defaultIP func() (net.IP, error)) (addr string, guessed bool, err error) {
	host, port, err := Split(advertise)
	if err != nil {
		return "", false, fmt.Errorf("advertise: %w", err)
	}
	bh, bp, err := net.SplitHostPort(bound.String())
	if err != nil {
		return "", false, fmt.Errorf("advertise: bound address %s: %w", bound, err)
	}
	if port == "" {
		port = bp
	}
	if host == "" {
		host = bh
	}
	if IsWildcard(host) {
		ip, err := defaultIP()
		if err != nil {
			return "", true, fmt.Errorf("advertise: the listener %s is on a wildcard address and %w; set advertise", bound, err)
		}
		return net.JoinHostPort(ip.String(), port), true, nil
	}
	return net.JoinHostPort(host, port), false, nil
}

// DefaultRouteIP returns an IPv4 address of the interface that holds the default route
// (from /proc/net/route), or, where that cannot be read, of the first interface that is up
// and not loopback.
func DefaultRouteIP() (net.IP, error) {
	if name, err := defaultRouteInterface("/proc/net/route"); err == nil {
		if ifi, err := net.InterfaceByName(name); err == nil {
			if ip := firstIPv4(ifi); ip != nil {
				return ip, nil
			}
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("no interface: %w", err)
	}
	for i := range ifs {
		if ifs[i].Flags&net.FlagUp == 0 || ifs[i].Flags&net.FlagLoopback != 0 {
			continue
		}
		if ip := firstIPv4(&ifs[i]); ip != nil {
			return ip, nil
		}
	}
	return nil, errors.New("no interface but loopback has an IPv4 address")
}

func firstIPv4(ifi *net.Interface) net.IP {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.To4()
		}
	}
	return nil
}

// defaultRouteInterface reads a /proc/net/route table: the interface of the default route
// (destination and mask 0) with the lowest metric.
func defaultRouteInterface(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return parseRoutes(f)
}

func parseRoutes(f interface{ Read([]byte) (int, error) }) (string, error) {
	sc := bufio.NewScanner(f)
	best, bestMetric := "", -1
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 || fs[1] != "00000000" || fs[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(fs[3], 16, 32)
		if err != nil || flags&1 == 0 { // RTF_UP
			continue
		}
		metric, err := strconv.Atoi(fs[6])
		if err != nil {
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = fs[0], metric
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if best == "" {
		return "", errors.New("no default route")
	}
	return best, nil
}
