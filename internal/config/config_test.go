package config

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
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
		`exports[1].protocol: "soap" is not one of grpc, triple, dubbo, http`,
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
		`exports[2].protocol: "soap" is not one of grpc, triple, dubbo, http`,
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

func TestDecodeErrorsHavePathsAndLines(t *testing.T) {
	doc := `domain: beta
trustDomain: beta.local
registry:
  kind: etcd
  endpoint: ["127.0.0.1:2379"]
peers:
  - domain: alpha
    trustDomain: alpha.local
    trustBundle: a.pem
  - domain: gamma
    trustdomain: gamma.local
    ingress: "10.0.0.1:15443"
limits:
  maxConcurrentStreams: -1
  callTimeout: 5
controlplane: "127.0.0.1:1"
`
	_, err := Parse([]byte(doc))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		`registry.endpoint (line 5): unknown field; did you mean "addresses"?`,
		`peers[1].trustdomain (line 11): unknown field; did you mean "trustDomain"?`,
		`peers[1].ingress (line 12): expected a list, got "10.0.0.1:15443"; write ["10.0.0.1:15443"]`,
		`limits.maxConcurrentStreams (line 14): expected an integer from 0 to 4294967295, got -1`,
		`limits.callTimeout (line 15): expected a duration like 1.5s, got 5`,
		`controlplane (line 16): expected a mapping, got "127.0.0.1:1"`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func TestRegistryAddresses(t *testing.T) {
	const head = "domain: beta\ntrustDomain: beta.local\nregistry:\n  kind: etcd\n"
	d, warnings, err := ParseWithWarnings([]byte(head + "  addresses: [\"h:1\", \"h:2\"]\n"))
	if err != nil || len(warnings) != 0 {
		t.Fatalf("addresses: %v, warnings %v", err, warnings)
	}
	if strings.Join(d.Registry.Addresses, ",") != "h:1,h:2" {
		t.Fatalf("addresses %v", d.Registry.Addresses)
	}

	// The old name: the same value, and a warning with its path and line.
	old, warnings, err := ParseWithWarnings([]byte(head + "  endpoints: [\"h:1\", \"h:2\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(old.Registry.Addresses, ",") != "h:1,h:2" {
		t.Fatalf("endpoints read as %v", old.Registry.Addresses)
	}
	if len(warnings) != 1 || warnings[0].Error() != "registry.endpoints (line 5): deprecated: renamed to registry.addresses" {
		t.Fatalf("warnings %v", warnings)
	}
	// Written back, it has the current name only.
	out, err := yaml.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("endpoints")) || !bytes.Contains(out, []byte("addresses:")) {
		t.Fatalf("marshalled:\n%s", out)
	}

	// Both names at once.
	_, _, err = ParseWithWarnings([]byte(head + "  endpoints: [\"h:1\"]\n  addresses: [\"h:1\"]\n"))
	if err == nil || err.Error() != "registry.endpoints (line 5): endpoints is the deprecated name of addresses (line 6); keep addresses only" {
		t.Fatalf("both: %v", err)
	}

	// Validation speaks of addresses.
	for doc, want := range map[string]string{
		head:                           "registry.addresses: required for kind etcd",
		head + "  addresses: [\"\"]\n": "registry.addresses[0]: empty",
		"domain: a\ntrustDomain: a\nregistry: {endpoints: [\"h:1\"]}\n": "registry.addresses: not for an embedded registry",
	} {
		if _, err := Parse([]byte(doc)); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
	}
}

func TestLoadLogsWarnings(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(prev)
	file := filepath.Join(t.TempDir(), "beta.yaml")
	if err := os.WriteFile(file, []byte("domain: beta\ntrustDomain: beta.local\nregistry: {kind: etcd, endpoints: [\"h:1\"]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "registry.endpoints (line 3): deprecated: renamed to registry.addresses") {
		t.Fatalf("log: %s", buf.String())
	}
}

func TestGatewayControlplane(t *testing.T) {
	dir := t.TempDir()
	const head = "domain: alpha\nrole: egress\ninstance: egress-1\nlisten: 127.0.0.1:1\nidentity: {cert: c.pem, key: k.pem}\n"
	load := func(doc string) (*Gateway, Errors, error) {
		t.Helper()
		file := filepath.Join(dir, "gw.yaml")
		if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadGatewayWithWarnings(file)
	}
	g, warnings, err := load(head + "controlplane: {xds: 127.0.0.1:2}\n")
	if err != nil || len(warnings) != 0 || g.Controlplane.XDS != "127.0.0.1:2" {
		t.Fatalf("current form: %+v, %v, warnings %v", g, err, warnings)
	}
	g, warnings, err = load(head + "controlplane: 127.0.0.1:2\n")
	if err != nil || g.Controlplane.XDS != "127.0.0.1:2" {
		t.Fatalf("old form: %+v, %v", g, err)
	}
	if len(warnings) != 1 || warnings[0].Error() != "controlplane (line 6): deprecated form; write controlplane: {xds: \"127.0.0.1:2\"}" {
		t.Fatalf("warnings %v", warnings)
	}
	_, _, err = load(head + "controlplane: {xds: nope, admin: 127.0.0.1:3}\n")
	if err == nil || !strings.Contains(err.Error(), `controlplane.admin (line 6): unknown field; known fields: xds`) {
		t.Fatalf("unknown key: %v", err)
	}
	_, _, err = load(head + "controlplane: nope\n")
	if err == nil || !strings.Contains(err.Error(), `controlplane.xds: "nope" is not host:port`) {
		t.Fatalf("bad address: %v", err)
	}
}
