package static

import (
	"strings"
	"testing"
)

// TestParseAddresses: a provider's address is host:port with a port a client can dial;
// anything else is refused with the provider's path, not passed on to the gateways (which
// refuse a whole update for one endpoint on port 0).
func TestParseAddresses(t *testing.T) {
	for _, tc := range []struct {
		addr, want string
	}{
		{"10.0.0.1:50051", ""},
		{"[fd00::1]:50051", ""},
		{"provider.beta.internal:1", ""},
		{"10.0.0.1:65535", ""},
		{"10.0.0.1:0", `providers[0].address: "10.0.0.1:0": the port is not a number from 1 to 65535`},
		{"10.0.0.1:65536", `providers[0].address: "10.0.0.1:65536": the port is not a number from 1 to 65535`},
		{"10.0.0.1:grpc", `providers[0].address: "10.0.0.1:grpc": the port is not a number from 1 to 65535`},
		{"10.0.0.1:-1", `providers[0].address: "10.0.0.1:-1": the port is not a number from 1 to 65535`},
		{":50051", `providers[0].address: ":50051" is not host:port`},
		{"10.0.0.1:", `providers[0].address: "10.0.0.1:" is not host:port`},
		{"10.0.0.1", `providers[0].address: "10.0.0.1" is not host:port`},
		{"", `providers[0].address: "" is not host:port`},
	} {
		is, err := Parse([]byte("providers:\n  - {service: a.B, protocol: grpc, address: '" + tc.addr + "'}\n"))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q refused: %v", tc.addr, err)
		case tc.want == "" && (len(is) != 1 || is[0].Address != tc.addr):
			t.Errorf("%q read as %v", tc.addr, is)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("%q: %v, want %s", tc.addr, err, tc.want)
		case tc.want != "" && is != nil:
			t.Errorf("%q: providers came with the error: %v", tc.addr, is)
		}
	}
	// Every problem of the file, each at its path.
	_, err := Parse([]byte("providers:\n  - {service: a.B, protocol: grpc, address: '10.0.0.1:0'}\n  - {service: a.C, protocol: http, address: 'x:1'}\n  - {service: a.D, protocol: grpc, address: 'y:99999'}\n"))
	if err == nil || !strings.Contains(err.Error(), "providers[0].address") || !strings.Contains(err.Error(), "providers[2].address") || strings.Contains(err.Error(), "providers[1]") {
		t.Errorf("errors of the file: %v", err)
	}
}
