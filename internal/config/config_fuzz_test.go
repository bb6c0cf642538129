package config

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// within runs fn and fails the test if it takes longer than d (a parser that hangs).
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// addExamples adds the deploy/examples files whose name matches gateway (true: the
// gateway files) as seeds.
func addExamples(f *testing.F, gateway bool) {
	files, _ := filepath.Glob("../../deploy/examples/*.yaml")
	more, _ := filepath.Glob("../../deploy/examples/two-domains/*.yaml")
	n := 0
	for _, file := range append(files, more...) {
		base := filepath.Base(file)
		isGW := bytes.Contains([]byte(base), []byte("-egress-")) || bytes.Contains([]byte(base), []byte("-ingress-"))
		if isGW != gateway {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		n++
	}
	if n == 0 {
		f.Fatal("no example files for seeds")
	}
}

// FuzzParse: a domain document gives a value or an error, never a panic or a hang; a value
// survives marshal → Parse (which validates) unchanged.
func FuzzParse(f *testing.F) {
	addExamples(f, false)
	for _, s := range []string{
		"", "---", "domain: alpha", "domain: Alpha\ntrustDomain: \"\"\nregistry: {kind: consul}\n",
		"domain: alpha\ntrustDomain: alpha.example\nlimits: {callTimeout: 1.5s, idleTimeout: -1s}\n",
		"domain: alpha\ntrustDomain: alpha.example\nlimits: {callTimeout: 5}\n",
		"domain: alpha\ntrustDomain: alpha.example\nexports: [{service: 'a.*', protocol: grpc, to: [beta]}]\npeers: [{domain: beta, trustDomain: b, trustBundle: b.pem, ingress: ['1.2.3.4:5']}]\n",
		"domain: alpha\ntrustDomain: alpha.example\nexports: [{service: '[', protocol: grpc, to: [beta]}]\n",
		"gossip: {egress: {bind: ':1', keyFile: k}}\n",
		"a: &a [*a, *a]\n", "x: !!binary AAAA\n", "unknown: 1\n", "domain: [1, 2]\n", "{{{{", "\t\x00\xff",
		"domain: a\ntrustDomain: a\nregistry: {kind: etcd, endpoints: ['h:1']}\n",
		"domain: a\ntrustDomain: a\nregistry: {kind: etcd, endpoints: ['h:1'], addresses: ['h:1']}\n",
		"domain: a\ntrustDomain: a\nregistry: &r {kind: etcd, endpoints: ['h:1']}\npeers: [{domain: b, trustDomain: *r}]\n",
		"registry: {<<, [a]}\n", "registry: {<<: {kind: etcd}, addresses: [x]}\n", "registry: {endpoint: [x]}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d *Domain
		var err error
		within(t, 2*time.Second, "Parse", func() { d, err = Parse(b) })
		if err != nil {
			if d != nil {
				t.Fatalf("value and error %v", err)
			}
			return
		}
		out, err := yaml.Marshal(d)
		if err != nil {
			t.Fatalf("marshal %+v: %v", d, err)
		}
		d2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-marshalled document does not parse: %v\n%s", err, out)
		}
		out2, err := yaml.Marshal(d2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the document:\n%s\n---\n%s", out, out2)
		}
	})
}

// FuzzLoadGateway: a gateway file gives a value or an error, never a panic or a hang; a
// value survives marshal → LoadGateway (which validates) unchanged.
func FuzzLoadGateway(f *testing.F) {
	addExamples(f, true)
	for _, s := range []string{
		"", "role: egress",
		"domain: alpha\nrole: egress\ninstance: e1\nlisten: ':1'\ncontrolplane: 'h:2'\nidentity: {cert: c, key: k}\n",
		"domain: alpha\nrole: ingress\ninstance: i1\nlisten: '[::1]:1'\ncontrolplane: 'h:2'\nidentity: {cert: c, key: k}\ndrainTimeout: -1s\ngossip: {bind: 'h:3', keyFile: ../k}\ndataPath: http\n",
		"domain: alpha\nrole: egress\ninstance: e1\nlisten: ':1'\ncontrolplane: 'h:2'\nidentity: {cert: c, key: k}\nlimits: {maxConcurrentStreams: -1}\n",
		"identity: null\ngossip: null\n", "limits: {readHeaderTimeout: 1e9}\n", "- a\n- b\n",
		"domain: alpha\nrole: egress\ninstance: e1\nlisten: ':1'\ncontrolplane: {xds: 'h:2'}\nidentity: {cert: c, key: k}\n",
		"controlplane: &c 'h:2'\nlisten: *c\n", "controlplane: [h]\n", "controlplane: {xds: {a: b}}\n", "controlplane: ''\n",
	} {
		f.Add([]byte(s))
	}
	file := filepath.Join(f.TempDir(), "gw.yaml") // one file for every iteration
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		var g *Gateway
		var err error
		within(t, 2*time.Second, "LoadGateway", func() { g, err = LoadGateway(file) })
		if err != nil {
			if g != nil {
				t.Fatalf("value and error %v", err)
			}
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("loaded gateway does not validate: %v", err)
		}
		out, err := yaml.Marshal(g)
		if err != nil {
			t.Fatalf("marshal %+v: %v", g, err)
		}
		if err := os.WriteFile(file, out, 0o600); err != nil {
			t.Fatal(err)
		}
		g2, err := LoadGateway(file)
		if err != nil {
			t.Fatalf("re-marshalled file does not load: %v\n%s", err, out)
		}
		out2, err := yaml.Marshal(g2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the file:\n%s\n---\n%s", out, out2)
		}
	})
}
