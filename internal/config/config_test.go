package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExamplesAreValid(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/examples/*.yaml")
	more, _ := filepath.Glob("../../deploy/examples/*/*.yaml")
	files = append(files, more...)
	if len(files) < 8 {
		t.Fatalf("examples not found: %v", files)
	}
	for _, f := range files {
		var err error
		if strings.Contains(filepath.Base(f), "-egress-") || strings.Contains(filepath.Base(f), "-ingress-") {
			_, err = LoadGateway(f)
		} else {
			_, err = Load(f)
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestErrorsHavePaths(t *testing.T) {
	doc := `
domain: Alpha
trustDomain: ""
registry: {kind: consul}
peers:
  - domain: beta
    trustBundle: b.pem
    ingress: ["nohostport"]
    transport: carrier-pigeon
  - domain: beta
    trustDomain: beta.local
exports:
  - service: a.B
    protocol: grpc
  - service: a.B
    protocol: soap
    to: [gamma]
routes:
  - service: x.Y
    protocol: grpc
    peer: gamma
  - service: web
    protocol: http
    peer: beta
limits:
  dialTimeout: -1s
`
	_, err := Parse([]byte(doc))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		`domain: "Alpha" is not a DNS label`,
		`trustDomain: required`,
		`registry.kind: "consul" is not one of embedded, etcd, zookeeper, nacos`,
		`peers[0].trustDomain: required`,
		`peers[0].ingress[0]: "nohostport" is not host:port`,
		`peers[0].transport: "carrier-pigeon" is not a supported transport (h2, quic)`,
		`peers[1].domain: "beta" is listed twice`,
		`peers[1].trustBundle: required`,
		`exports[0].to: required`,
		`exports[1].protocol: "soap" is not one of grpc, triple, http`,
		`exports[1].to[0]: "gamma" is not a configured peer`,
		`routes[0].peer: "gamma" is not a configured peer`,
		`routes[1]: an http route needs host or pathPrefix`,
		`limits.dialTimeout: must not be negative`,
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if len(es) != len(want) {
		t.Errorf("got %d errors, want %d:\n%s", len(es), len(want), got)
	}
}

func TestUnknownKeyAndBadYAML(t *testing.T) {
	for _, doc := range []string{"domain: a\nbogus: 1\n", "domain: [", "", "limits: {idleTimeout: soon}"} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%q: no error", doc)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want not-exist error, got %v", err)
	}
}

func TestDefaults(t *testing.T) {
	l := Limits{}.WithDefaults()
	if l.MaxConcurrentStreams != DefaultMaxConcurrentStreams || l.DialTimeout.D() != DefaultDialTimeout || l.MaxBodyBytes != DefaultMaxBodyBytes {
		t.Fatalf("defaults not applied: %+v", l)
	}
}

func TestExportPatterns(t *testing.T) {
	head := `
domain: beta
trustDomain: beta.local
peers:
  - {domain: alpha, trustDomain: alpha.local, trustBundle: a.pem}
exports:
`
	good := head + `
  - {service: "com.example.orders.*", protocol: triple, to: [alpha], methods: [Get], metadata: [zone]}
  - {service: "*", protocol: grpc, to: [alpha]}
  - {service: "svc.v[0-9]", protocol: http, to: [alpha]}
  - {service: com.example.orders.Special, protocol: triple, to: [alpha]}
`
	d, err := Parse([]byte(good))
	if err != nil {
		t.Fatalf("good patterns refused: %v", err)
	}
	for _, c := range []struct {
		i    int
		name string
		want bool
	}{
		{0, "com.example.orders.OrderService", true},
		{0, "com.example.orders", false},
		{0, "com.example.payments.PayService", false},
		{1, "anything.At.All", true},
		{2, "svc.v2", true},
		{2, "svc.v10", false},
		{3, "com.example.orders.Special", true},
		{3, "com.example.orders.Specials", false},
	} {
		if got := d.Exports[c.i].MatchService(c.name); got != c.want {
			t.Errorf("exports[%d] %q matches %q: %v, want %v", c.i, d.Exports[c.i].Service, c.name, got, c.want)
		}
	}
	bad := head + `
  - {service: "com.example.[orders", protocol: grpc, to: [alpha]}
  - {service: "com/example/*", protocol: grpc, to: [alpha]}
  - {service: "*", protocol: soap, to: [alpha]}
  - {service: "*", protocol: triple}
  - {service: "*", protocol: grpc, to: [alpha]}
  - {service: "*", protocol: grpc, to: [alpha]}
`
	_, err = Parse([]byte(bad))
	want := []string{
		`exports[0].service: "com.example.[orders" is not a valid pattern`,
		`exports[1].service: "com/example/*" is not a service name pattern`,
		`exports[2].protocol: "soap" is not one of grpc, triple, http`,
		`exports[3].to: required`,
		`exports[5].service: "*" is exported twice`,
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want Errors, got %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%s", w, err)
		}
	}
	if len(es) != len(want) {
		t.Errorf("got %d errors, want %d:\n%s", len(es), len(want), err)
	}
}
