package controlplane

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/routing"
	"github.com/strait-mesh/strait/internal/xdsres"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/out")

type goldenInput struct {
	Domain    config.Domain `yaml:"domain"`
	Providers []struct {
		Service  string            `yaml:"service"`
		Protocol mesh.Protocol     `yaml:"protocol"`
		Version  string            `yaml:"version"`
		Group    string            `yaml:"group"`
		Address  string            `yaml:"address"`
		Metadata map[string]string `yaml:"metadata"`
	} `yaml:"providers"`
}

func loadInput(t *testing.T, path string) Inputs {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var gi goldenInput
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&gi); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := gi.Domain.Validate(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	in := Inputs{Domain: &gi.Domain, Bundles: map[string][]byte{}}
	for _, p := range gi.Domain.Peers {
		pem, err := os.ReadFile(filepath.Join("testdata", p.TrustBundle))
		if err != nil {
			t.Fatal(err)
		}
		in.Bundles[p.TrustDomain] = pem
	}
	for _, p := range gi.Providers {
		in.Providers = append(in.Providers, mesh.Instance{
			Service: mesh.ServiceKey{Name: p.Service, Version: p.Version, Group: p.Group}, Protocol: p.Protocol, Address: p.Address,
			Metadata: p.Metadata,
		})
	}
	return in
}

// render writes resources of one type as stable, indented JSON: name → resource.
func render(t *testing.T, rs []types.Resource) []byte {
	t.Helper()
	out := map[string]any{}
	for _, r := range rs {
		b, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		out[resourceName(r)] = v
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// goldenTypes are the resource types of the golden files, one file each.
var goldenTypes = []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, resource.SecretType}

func resourceName(r types.Resource) string {
	type named interface{ GetName() string }
	type cla interface{ GetClusterName() string }
	if n, ok := r.(named); ok {
		return n.GetName()
	}
	if c, ok := r.(cla); ok {
		return c.GetClusterName()
	}
	return fmt.Sprintf("%T", r)
}

// TestTranslateGolden: testdata/in/<name>.yaml → testdata/out/<name>/<role>.<type>.json,
// one file per gateway role and resource type (as Envoy Gateway's translator testdata).
// Run with -update to rewrite the outputs; stale outputs are removed.
func TestTranslateGolden(t *testing.T) {
	ins, _ := filepath.Glob("testdata/in/*.yaml")
	if len(ins) == 0 {
		t.Fatal("no golden inputs")
	}
	want := map[string]bool{}
	for _, path := range ins {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			in := loadInput(t, path)
			res, err := Translate(in)
			if err != nil {
				t.Logf("reported and skipped: %v", err)
			}
			dir := filepath.Join("testdata", "out", name)
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for role, rs := range map[string]map[resource.Type][]types.Resource{"egress": res.Egress, "ingress": res.Ingress} {
				for typ := range rs {
					if !slices.Contains(goldenTypes, typ) {
						t.Errorf("%s resources of type %s have no golden file", role, typ)
					}
				}
				for _, typ := range goldenTypes {
					out := filepath.Join(dir, role+"."+typ[strings.LastIndexByte(typ, '.')+1:]+".json")
					want[out] = true
					got := render(t, rs[typ])
					if *update {
						if err := os.WriteFile(out, got, 0o644); err != nil {
							t.Fatal(err)
						}
						continue
					}
					exp, err := os.ReadFile(out)
					if err != nil {
						t.Fatalf("%v (run go test ./controlplane -update)", err)
					}
					if !bytes.Equal(got, exp) {
						t.Errorf("%s differs from the translation; run go test ./controlplane -update and review the diff", out)
					}
				}
			}
		})
	}
	if *update {
		outs, _ := filepath.Glob("testdata/out/*.json")
		more, _ := filepath.Glob("testdata/out/*/*.json")
		for _, o := range append(outs, more...) {
			if !want[o] {
				os.Remove(o)
			}
		}
	}
}

func toResources(rs map[resource.Type][]types.Resource) xdsres.Resources {
	out := xdsres.Resources{}
	for typ, list := range rs {
		out[typ] = map[string]proto.Message{}
		for _, r := range list {
			out[typ][resourceName(r)] = r
		}
	}
	return out
}

// TestTranslateDecodeRoundTrip: what the gateways decode routes and authorizes exactly as
// the domain file says.
func TestTranslateDecodeRoundTrip(t *testing.T) {
	ins, _ := filepath.Glob("testdata/in/*.yaml")
	for _, path := range ins {
		in := loadInput(t, path)
		res, _ := Translate(in)
		exports := ResolveExports(in.Domain, in.Providers)
		static := RouteTable(in.Domain, exports)
		eg, err := xdsres.Decode(xdsres.RoleEgress, toResources(res.Egress))
		if err != nil {
			t.Fatalf("%s egress: %v", path, err)
		}
		ig, err := xdsres.Decode(xdsres.RoleIngress, toResources(res.Ingress))
		if err != nil {
			t.Fatalf("%s ingress: %v", path, err)
		}
		for _, r := range in.Domain.Routes {
			k := mesh.ServiceKey{Name: r.Service, Version: r.Version, Group: r.Group}
			if r.Protocol == mesh.ProtocolHTTP {
				path := r.PathPrefix + "/x"
				a, _ := static.LookupHTTP(r.Host, path)
				b, ok := eg.Table.LookupHTTP(r.Host, path)
				if !ok || a != b {
					t.Errorf("http %s%s: static %+v, xds %+v", r.Host, path, a, b)
				}
				continue
			}
			a, _ := static.LookupRPC(k)
			b, ok := eg.Table.LookupRPC(k)
			if !ok || a != b {
				t.Errorf("rpc %v: static %+v, xds %+v", k, a, b)
			}
		}
		// Every exported service, and every provider's service (exported or not), is
		// authorized as the resolved exports say.
		keys := map[mesh.ServiceKey]mesh.Protocol{}
		for _, e := range exports {
			keys[mesh.ServiceKey{Name: e.Service, Version: e.Version, Group: e.Group}] = e.Protocol
		}
		for _, p := range in.Providers {
			keys[p.Service] = p.Protocol
		}
		for k, p := range keys {
			e := config.Export{Protocol: p}
			for _, src := range []string{"alpha", "gamma", "delta"} {
				for _, m := range []string{"Greet", "Other"} {
					_, a := static.Authorize(src, e.Protocol, k, m)
					_, b := ig.Table.Authorize(src, e.Protocol, k, m)
					if a != b {
						t.Errorf("authorize %s %v %s: static %v, xds %v", src, k, m, a, b)
					}
				}
			}
		}
		for d, p := range eg.Peers {
			if len(p.Bundle) == 0 {
				t.Errorf("peer %s: no bundle", d)
			}
		}
		if strings.HasPrefix(filepath.Base(path), "two-domains-") && len(in.Providers) > 0 {
			got := ig.Endpoints(mesh.ServiceKey{Name: "grpc.testing.TestService"}, mesh.ProtocolGRPC)
			addrs := []string{}
			for _, i := range got {
				addrs = append(addrs, i.Address)
			}
			sort.Strings(addrs)
			if strings.Join(addrs, ",") != "10.0.0.1:50051,10.0.0.2:50051" {
				t.Errorf("providers: %v", addrs)
			}
		}
	}
}

// RouteTable is the test oracle: the route table the domain file means, built directly.
// The gateways' decoded xDS must route and authorize exactly as it does.
// It translates a validated domain into its route table: Routes for the egress,
// Exports for the ingress. It is a pure function.
func RouteTable(d *config.Domain, resolved []config.Export) *routing.Table {
	routes := make([]routing.Route, 0, len(d.Routes))
	for _, r := range d.Routes {
		routes = append(routes, routing.Route{
			Service:    mesh.ServiceKey{Name: r.Service, Version: r.Version, Group: r.Group},
			Protocol:   r.Protocol,
			Peer:       r.Peer,
			Host:       r.Host,
			PathPrefix: r.PathPrefix,
			Deadline:   oracleDeadline(d.Governance, config.AtEgress, r.Peer, r.Service),
		})
	}
	exports := make([]routing.Export, 0, len(resolved))
	for _, e := range resolved {
		x := routing.Export{
			Service:  mesh.ServiceKey{Name: e.Service, Version: e.Version, Group: e.Group},
			Protocol: e.Protocol,
			Peers:    make(map[string]bool, len(e.To)),
			Deadline: oracleDeadline(d.Governance, config.AtIngress, "", e.Service),
		}
		for _, to := range e.To {
			x.Peers[to] = true
		}
		if len(e.Methods) > 0 {
			x.Methods = make(map[string]bool, len(e.Methods))
			for _, m := range e.Methods {
				x.Methods[m] = true
			}
		}
		exports = append(exports, x)
	}
	return routing.NewTable(routes, exports)
}

// oracleDeadline is the deadline of a route of service (to peer, at the egress): the first
// deadline policy of the gateway kind that matches.
func oracleDeadline(g config.Governance, at, peer, service string) routing.Deadline {
	for _, d := range g.Deadlines {
		if d.WithDefaults().Gateway == at && d.Match.Matches(peer, service, "", "") {
			return routing.Deadline{Default: d.Default.D(), Max: d.Max.D()}
		}
	}
	return routing.Deadline{}
}

// TestGovernanceRoundTrip: the policies each gateway kind decodes are the domain file's
// for that kind, with defaults filled in; so are the retry budget and outlier detection.
func TestGovernanceRoundTrip(t *testing.T) {
	in := loadInput(t, "testdata/in/governance-beta.yaml")
	res, err := Translate(in)
	if err != nil {
		t.Fatal(err)
	}
	g := in.Domain.Governance
	for role, rs := range map[string]map[resource.Type][]types.Resource{xdsres.RoleEgress: res.Egress, xdsres.RoleIngress: res.Ingress} {
		c, err := xdsres.Decode(role, toResources(rs))
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		var want config.Governance
		for _, r := range g.RateLimits {
			if r = r.WithDefaults(); r.Gateway == role {
				want.RateLimits = append(want.RateLimits, r)
			}
		}
		for _, x := range g.Concurrency {
			if x = x.WithDefaults(); x.Gateway == role {
				want.Concurrency = append(want.Concurrency, x)
			}
		}
		for _, b := range g.Breakers {
			if b = b.WithDefaults(); b.Gateway == role {
				want.Breakers = append(want.Breakers, b)
			}
		}
		want.Retries = g.Retries.WithDefaults()
		if role == xdsres.RoleIngress {
			want.OutlierDetection = g.OutlierDetection.WithDefaults()
		}
		got := c.Governance
		// A fractional rate travels as a fill interval in nanoseconds.
		for i := range got.RateLimits {
			if i < len(want.RateLimits) && math.Abs(got.RateLimits[i].Rate-want.RateLimits[i].Rate) < 1e-6 {
				got.RateLimits[i].Rate = want.RateLimits[i].Rate
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s decodes\n%+v\nwant\n%+v", role, got, want)
		}
	}
}
