package advertise

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in, host, port string
		bad            bool
	}{
		{"", "", "", false},
		{"gw.example.com", "gw.example.com", "", false},
		{"10.0.0.7", "10.0.0.7", "", false},
		{":17110", "", "17110", false},
		{"10.0.0.7:17110", "10.0.0.7", "17110", false},
		{"[fd00::7]:17110", "fd00::7", "17110", false},
		{"[fd00::7]", "fd00::7", "", false},
		{"fd00::7", "fd00::7", "", false},
		{"10.0.0.7:0", "", "", true},
		{"10.0.0.7:http", "", "", true},
		{"a b", "", "", true},
		{"10.0.0.7:99999", "", "", true},
	} {
		h, p, err := Split(tc.in)
		if (err != nil) != tc.bad || h != tc.host || p != tc.port {
			t.Errorf("Split(%q) = %q, %q, %v; want %q, %q, bad %v", tc.in, h, p, err, tc.host, tc.port, tc.bad)
		}
	}
}

func TestResolve(t *testing.T) {
	def := func() (net.IP, error) { return net.IPv4(192, 0, 2, 2), nil }
	none := func() (net.IP, error) { return nil, errors.New("no default route") }
	bound := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	for _, tc := range []struct {
		advertise, bound string
		ip               func() (net.IP, error)
		want             string
		guessed, bad     bool
	}{
		{"", "127.0.0.1:17110", def, "127.0.0.1:17110", false, false},
		{"", "0.0.0.0:17110", def, "192.0.2.2:17110", true, false},
		{"", "[::]:17110", def, "192.0.2.2:17110", true, false},
		{"", "0.0.0.0:17110", none, "", true, true},
		{"egress.alpha.svc", "0.0.0.0:17110", none, "egress.alpha.svc:17110", false, false},
		{":443", "0.0.0.0:17110", def, "192.0.2.2:443", true, false},
		{"10.1.2.3:443", "0.0.0.0:17110", none, "10.1.2.3:443", false, false},
		{"10.1.2.3", "127.0.0.1:17110", def, "10.1.2.3:17110", false, false},
	} {
		got, guessed, err := Resolve(tc.advertise, bound(tc.bound), tc.ip)
		if got != tc.want || guessed != tc.guessed || (err != nil) != tc.bad {
			t.Errorf("Resolve(%q, %s) = %q, %v, %v; want %q, %v, bad %v", tc.advertise, tc.bound, got, guessed, err, tc.want, tc.guessed, tc.bad)
		}
		if err != nil && !strings.Contains(err.Error(), "set advertise") {
			t.Errorf("error %q does not say what to do", err)
		}
	}
}

func TestParseRoutes(t *testing.T) {
	const table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
		"eth9\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n" + // not up
		"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	got, err := parseRoutes(strings.NewReader(table))
	if err != nil || got != "eth0" {
		t.Fatalf("parseRoutes = %q, %v; want eth0 (the lowest metric)", got, err)
	}
	if _, err := parseRoutes(strings.NewReader("Iface\tDestination\n")); err == nil {
		t.Fatal("no default route: no error")
	}
}

// TestDefaultRouteIP: on this machine, the answer is an IPv4 address of an interface that
// is up (or an error saying there is none).
func TestDefaultRouteIP(t *testing.T) {
	ip, err := DefaultRouteIP()
	if err != nil {
		t.Skipf("no address besides loopback here: %v", err)
	}
	if ip.To4() == nil || ip.IsLoopback() {
		t.Fatalf("DefaultRouteIP = %v", ip)
	}
	t.Logf("default route address: %v", ip)
}
