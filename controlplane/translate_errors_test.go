package controlplane

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/xdsres"
	federationv1 "github.com/strait-mesh/strait/proto/federation/v1"
)

// An error case is testdata/errors/<case>.yaml: a domain file as a user writes it, and,
// after a "---" line, optionally the live inputs of the translation (providers from the
// registry, imports from peers). testdata/errors/<case>.err is the exact error the domain
// file's parsing and validation (config.Parse), or else the translation, reports. Run
// with -update (the flag of translate_test.go) to rewrite the .err files; review the diff.

// liveInputs is an error case's second document.
type liveInputs struct {
	Providers []struct {
		Service  string            `yaml:"service"`
		Protocol mesh.Protocol     `yaml:"protocol"`
		Version  string            `yaml:"version"`
		Group    string            `yaml:"group"`
		Address  string            `yaml:"address"`
		Metadata map[string]string `yaml:"metadata"`
	} `yaml:"providers"`
	Imports map[string]struct {
		Ingress  []string `yaml:"ingress"`
		Services []struct {
			Name     string `yaml:"name"`
			Protocol string `yaml:"protocol"`
			Version  string `yaml:"version"`
			Group    string `yaml:"group"`
		} `yaml:"services"`
	} `yaml:"imports"`
}

// errorCase parses a case file: the domain document's error, or the translation's inputs.
func errorCase(t *testing.T, path string) (Inputs, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	domainDoc, liveDoc, _ := bytes.Cut(b, []byte("\n---\n"))
	d, err := config.Parse(domainDoc)
	if err != nil {
		return Inputs{}, err
	}
	var live liveInputs
	dec := yaml.NewDecoder(bytes.NewReader(liveDoc))
	dec.KnownFields(true)
	if err := dec.Decode(&live); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("%s: live inputs: %v", path, err)
	}
	in := Inputs{Domain: d, Bundles: map[string][]byte{}, Imports: map[string]Import{}}
	for _, p := range d.Peers {
		// A bundle file that is not in testdata is a bundle the controlplane does not have.
		if pem, err := os.ReadFile(filepath.Join("testdata", p.TrustBundle)); err == nil {
			in.Bundles[p.TrustDomain] = pem
		}
	}
	for _, p := range live.Providers {
		in.Providers = append(in.Providers, mesh.Instance{
			Service:  mesh.ServiceKey{Name: p.Service, Version: p.Version, Group: p.Group},
			Protocol: p.Protocol, Address: p.Address, Metadata: p.Metadata,
		})
	}
	for peer, imp := range live.Imports {
		i := Import{Peer: peer, Ingress: imp.Ingress}
		for _, s := range imp.Services {
			i.Services = append(i.Services, &federationv1.Service{Name: s.Name, Protocol: s.Protocol, Version: s.Version, Group: s.Group})
		}
		in.Imports[peer] = i
	}
	return in, nil
}

// TestTranslateErrors: every domain file and every live input that must be refused is
// refused with the exact error of its .err file. When the translation reports (and skips)
// a bad input, what it returns is still complete and consistent: the gateways decode it.
func TestTranslateErrors(t *testing.T) {
	cases, _ := filepath.Glob("testdata/errors/*.yaml")
	if len(cases) < 10 {
		t.Fatalf("%d error cases in testdata/errors", len(cases))
	}
	for _, path := range cases {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			in, err := errorCase(t, path)
			stage := "validation"
			if err == nil {
				stage = "translation"
				var res *Resources
				res, err = Translate(in)
				for _, r := range gatewaysRefuse(res) {
					t.Errorf("the resources translated beside the error do not decode: %s", r)
				}
			}
			if err == nil {
				t.Fatal("accepted: validation and translation reported nothing")
			}
			got := err.Error() + "\n"
			errFile := strings.TrimSuffix(path, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(errFile, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, rerr := os.ReadFile(errFile)
			if rerr != nil {
				t.Fatalf("%v (run go test ./controlplane -run TestTranslateErrors -update)", rerr)
			}
			if got != string(want) {
				t.Errorf("%s error:\n%s\nwant (%s):\n%s", stage, got, errFile, want)
			}
		})
	}
	if *update { // no .err without its case
		errs, _ := filepath.Glob("testdata/errors/*.err")
		for _, e := range errs {
			if _, err := os.Stat(strings.TrimSuffix(e, ".err") + ".yaml"); err != nil {
				os.Remove(e)
			}
		}
	}
}

// gatewaysRefuse decodes res as the gateways of each role do, and returns their refusals.
func gatewaysRefuse(res *Resources) []string {
	if res == nil {
		return nil
	}
	var out []string
	for _, r := range []struct {
		role string
		rs   map[resource.Type][]types.Resource
	}{{xdsres.RoleEgress, res.Egress}, {xdsres.RoleIngress, res.Ingress}} {
		if _, err := xdsres.Decode(r.role, toResources(r.rs)); err != nil {
			out = append(out, r.role+": "+err.Error())
		}
	}
	return out
}

// TestTranslateGoldenDecodes: every valid golden input translates without error into
// resources that the gateways decode, so a golden output never records a configuration
// the gateways would refuse.
func TestTranslateGoldenDecodes(t *testing.T) {
	ins, _ := filepath.Glob("testdata/in/*.yaml")
	for _, path := range ins {
		res, _ := Translate(loadInput(t, path)) // what it reports, it skipped
		for _, r := range gatewaysRefuse(res) {
			t.Errorf("%s: %s", path, r)
		}
	}
}

// TestNothingGatewaysRefuse: inputs that every gateway of the domain would refuse
// (xdsres.Decode), so that the domain's gateways would NACK every later update until the
// input goes away, are refused by validation or reported and skipped by the translation.
func TestNothingGatewaysRefuse(t *testing.T) {
	domain := func(ingress string) string {
		return "domain: beta\ntrustDomain: beta.strait.local\n" +
			"peers:\n  - {domain: alpha, trustDomain: alpha.strait.local, trustBundle: alpha.strait.local.pem, ingress: [\"" + ingress + "\"]}\n" +
			"exports:\n  - {service: a.B, protocol: grpc, to: [alpha]}\n"
	}
	provider := func(addr string) []mesh.Instance {
		return []mesh.Instance{{Service: mesh.ServiceKey{Name: "a.B"}, Protocol: mesh.ProtocolGRPC, Address: addr}}
	}
	alphaPEM, err := os.ReadFile("testdata/alpha.strait.local.pem")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, domain string
		bundle       []byte
		providers    []mesh.Instance
		gap          string
	}{
		{"provider on port 0", domain("10.0.0.1:15443"), alphaPEM, provider("10.0.0.9:0"),
			"lbEndpoint accepts port 0; the ingress gateways refuse the endpoint (bad address)"},
		{"provider without host", domain("10.0.0.1:15443"), alphaPEM, provider(":50051"),
			"lbEndpoint accepts an empty host; the ingress gateways refuse the endpoint (bad address)"},
		{"peer ingress on port 0", domain("10.0.0.1:0"), alphaPEM, nil,
			"config.Validate's checkHostPort accepts port 0 in peers[].ingress; the egress gateways refuse the endpoint"},
		{"trust bundle that is not PEM", domain("10.0.0.1:15443"), []byte("not a certificate\n"), nil,
			"neither SetDomain nor Translate parses a peer's bundle; every gateway refuses the secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := config.Parse([]byte(tc.domain))
			if err != nil {
				return // refused by validation: the gap is closed
			}
			res, err := Translate(Inputs{Domain: d, Bundles: map[string][]byte{"alpha.strait.local": tc.bundle}, Providers: tc.providers})
			if err != nil {
				return // reported by the translation
			}
			refused := gatewaysRefuse(res)
			if len(refused) == 0 {
				return
			}
			t.Errorf("the gateways refuse the translation: %s (%s)", tc.gap, strings.Join(refused, "; "))
		})
	}
}
