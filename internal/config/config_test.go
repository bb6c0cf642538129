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
