package controlplane

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/routing"
	"github.com/strait-mesh/strait/internal/xdsres"
	federationv1 "github.com/strait-mesh/strait/proto/federation/v1"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/test/ports"
	"github.com/strait-mesh/strait/test/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func betaDomain(exports ...config.Export) *config.Domain {
	return &config.Domain{
		Domain: "beta", TrustDomain: "beta.local",
		Peers: []config.Peer{
			{Domain: "alpha", TrustDomain: "alpha.local", TrustBundle: "a.pem"},
			{Domain: "gamma", TrustDomain: "gamma.local", TrustBundle: "g.pem"},
		},
		Exports: exports,
	}
}

var providers = []mesh.Instance{
	{Service: mesh.ServiceKey{Name: "com.beta.Pay", Version: "1.0.0"}, Protocol: mesh.ProtocolTriple, Address: "10.0.0.1:1",
		Metadata: map[string]string{"application": "pay", "secret": "x"}},
	// Registered by Strait for another domain: never exported again.
	{Service: mesh.ServiceKey{Name: "com.alpha.Loop"}, Protocol: mesh.ProtocolGRPC, Address: "10.0.0.9:1",
		Metadata: map[string]string{registrysync.MetaManaged: "true", registrysync.MetaOrigin: "alpha"}},
}

func TestExportsFor(t *testing.T) {
	d := betaDomain(
		config.Export{Service: "com.beta.Pay", Protocol: mesh.ProtocolTriple, Version: "1.0.0", To: []string{"alpha"}, Methods: []string{"Charge"}, Metadata: []string{"application"}},
		config.Export{Service: "com.beta.Other", Protocol: mesh.ProtocolGRPC, To: []string{"gamma"}},
	)
	got := ExportsFor(d, "alpha", providers)
	if len(got) != 1 {
		t.Fatalf("exports to alpha: %v", got)
	}
	s := got["triple/com.beta.Pay:1.0.0@"]
	if s == nil || s.Metadata["application"] != "pay" || s.Metadata["secret"] != "" || s.Methods[0] != "Charge" {
		t.Fatalf("export: %v", s)
	}
	if len(ExportsFor(d, "delta", providers)) != 0 {
		t.Fatal("exported to a domain that is not named")
	}
	// Exporting back what was imported (only managed providers here) would loop: left out.
	loop := betaDomain(config.Export{Service: "com.alpha.Loop", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}},
		config.Export{Service: "com.beta.NoProviderYet", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
	got = ExportsFor(loop, "alpha", providers)
	if len(got) != 1 || got["grpc/com.beta.NoProviderYet:@"] == nil {
		t.Fatalf("loop export: %v", got)
	}
}

type fedServer struct {
	ln  net.Listener
	srv *grpc.Server
}

// serveFederation serves f on a loopback port of its own (test/ports).
func serveFederation(t *testing.T, f *Federation) *fedServer {
	t.Helper()
	ln := ports.Listen(t)
	s := grpc.NewServer()
	federationv1.RegisterFederationServer(s, f)
	go s.Serve(ln)
	return &fedServer{ln: ln, srv: s}
}

var claimed = "alpha"

func TestFederationStream(t *testing.T) {
	d := betaDomain(config.Export{Service: "com.beta.Pay", Protocol: mesh.ProtocolTriple, Version: "1.0.0", To: []string{"alpha"}})
	fed := NewFederation(d, nil)
	fed.Update(d, providers, []string{"10.1.0.1:15443"})
	fs := serveFederation(t, fed)
	// The peer's address, as the importer knows it: the server behind it changes when the
	// peer restarts (each server has a port of its own, no port is bound twice).
	var peer atomic.Value
	peer.Store(fs.ln.Addr().String())
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", peer.Load().(string))
	}

	// Calls arrive through this domain's ingress, which names the authenticated peer.
	cc, err := grpc.NewClient("passthrough:///beta", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, PeerDomainHeader, claimed), desc, cc, method, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := federationv1.NewFederationClient(cc)

	// A domain that is not a peer is refused, and so is a claim the ingress did not vouch for.
	for _, c := range []struct{ claim, domain string }{{"mallory", "mallory"}, {"gamma", "alpha"}} {
		claimed = c.claim
		st, err := client.Catalog(context.Background(), &federationv1.CatalogRequest{Domain: c.domain})
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("claim %s as %s: %v", c.claim, c.domain, err)
		}
	}
	claimed = "alpha"

	changes := make(chan struct{}, 100)
	im := NewImporter("alpha", "beta", client, func() { changes <- struct{}{} }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); im.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitImport := func(what string, ok func(Import) bool) Import {
		t.Helper()
		var got Import
		wait.ForNil(t, 30*time.Second, what, func() error {
			if got = im.Import(); !ok(got) {
				return fmt.Errorf("%+v", got)
			}
			return nil
		})
		return got
	}
	first := waitImport("snapshot", func(i Import) bool {
		return !i.Stale && len(i.Services) == 1 && i.Services[0].Name == "com.beta.Pay" && len(i.Ingress) == 1
	})

	// A change: one export withdrawn, another added, an ingress instance more.
	d2 := betaDomain(config.Export{Service: "com.beta.Ledger", Protocol: mesh.ProtocolGRPC, To: []string{"alpha", "gamma"}})
	fed.Update(d2, providers, []string{"10.1.0.1:15443", "10.1.0.2:15443"})
	second := waitImport("delta", func(i Import) bool {
		return len(i.Services) == 1 && i.Services[0].Name == "com.beta.Ledger" && len(i.Ingress) == 2
	})
	if second.Revision <= first.Revision || second.Epoch != first.Epoch {
		t.Fatalf("revisions: %d then %d", first.Revision, second.Revision)
	}

	// The peer goes away: the catalog stays, marked stale.
	fs.srv.Stop()
	stale := waitImport("stale", func(i Import) bool { return i.Stale })
	if len(stale.Services) != 1 || len(stale.Ingress) != 2 {
		t.Fatalf("stale catalog lost: %+v", stale)
	}
	// It comes back (a restart: new epoch) without the export: withdrawn means removed.
	fed2 := NewFederation(betaDomain(), nil)
	fed2.Update(betaDomain(), providers, []string{"10.1.0.3:15443"})
	fs2 := serveFederation(t, fed2)
	peer.Store(fs2.ln.Addr().String())
	defer fs2.srv.Stop()
	back := waitImport("after restart", func(i Import) bool { return !i.Stale && len(i.Ingress) == 1 && i.Ingress[0] == "10.1.0.3:15443" })
	if len(back.Services) != 0 || back.Epoch == first.Epoch {
		t.Fatalf("after restart: %+v", back)
	}
	if stale.LastErr == "" {
		t.Fatal("a stale import does not say why")
	}
}

func TestImportedRoutes(t *testing.T) {
	d := &config.Domain{Domain: "alpha", Peers: []config.Peer{{Domain: "beta"}}, Routes: []config.Route{{Service: "com.beta.Pay", Protocol: mesh.ProtocolTriple, Peer: "beta"}}}
	imports := map[string]Import{"beta": {Peer: "beta", Services: []*federationv1.Service{
		{Name: "com.beta.Pay", Protocol: "triple"},                // routed by the domain file already
		{Name: "com.beta.Ledger", Protocol: "grpc", Version: "2"}, // imported
		{Name: "com.alpha.Native", Protocol: "grpc"},              // exists here: refused
		{Name: "web", Protocol: "http"},                           // needs a host or path
	}}, "gamma": {Peer: "gamma", Services: []*federationv1.Service{
		{Name: "com.gamma.Old", Protocol: "grpc"}, // gamma is no longer a peer: not routed
	}}}
	native := []mesh.Instance{{Service: mesh.ServiceKey{Name: "com.alpha.Native"}, Protocol: mesh.ProtocolGRPC, Address: "10.0.0.1:1"}}
	routes, errs := ImportedRoutes(d, imports, native)
	// Ledger's version 2, and Ledger for calls that name no version.
	if len(routes) != 3 || routes[1].Service != "com.beta.Ledger" || routes[1].Version != "2" || routes[1].Peer != "beta" ||
		routes[2].Service != "com.beta.Ledger" || routes[2].Version != "" || routes[2].Peer != "beta" {
		t.Fatalf("routes: %+v", routes)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "exists natively") {
		t.Fatalf("errs: %v", errs)
	}
}

// TestPatternExports: a pattern export exports every native service it matches, with its
// own methods and metadata allow-list; managed (imported) services never match; a service
// that registers later is exported by the next update with no config change, and one
// whose last provider leaves is withdrawn.
func TestPatternExports(t *testing.T) {
	d := betaDomain(
		config.Export{Service: "com.beta.*", Protocol: mesh.ProtocolTriple, To: []string{"alpha"}, Methods: []string{"Get"}, Metadata: []string{"application"}},
		config.Export{Service: "*", Protocol: mesh.ProtocolGRPC, To: []string{"gamma"}},
	)
	managed := map[string]string{registrysync.MetaManaged: "true", registrysync.MetaOrigin: "alpha"}
	provs := append([]mesh.Instance{
		{Service: mesh.ServiceKey{Name: "com.beta.Ledger"}, Protocol: mesh.ProtocolGRPC, Address: "10.0.0.2:1", Metadata: map[string]string{"application": "ledger"}},
		// An import from alpha whose name matches both patterns.
		{Service: mesh.ServiceKey{Name: "com.beta.Mirror"}, Protocol: mesh.ProtocolTriple, Address: "10.0.0.9:2", Metadata: managed},
	}, providers...)
	keys := func(m map[string]*federationv1.Service) string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return strings.Join(ks, " ")
	}
	alpha := ExportsFor(d, "alpha", provs)
	// Pay's provider registered version 1.0.0: the export carries it.
	if got, want := keys(alpha), "grpc/com.beta.Ledger:@ triple/com.beta.Pay:1.0.0@"; got != want {
		t.Fatalf("to alpha: %s, want %s", got, want)
	}
	if s := alpha["grpc/com.beta.Ledger:@"]; s.Metadata["application"] != "ledger" || len(s.Methods) != 1 || s.Methods[0] != "Get" {
		t.Fatalf("ledger: %v", s)
	}
	if s := alpha["triple/com.beta.Pay:1.0.0@"]; s.Metadata["application"] != "pay" || s.Metadata["secret"] != "" {
		t.Fatalf("pay: %v", s)
	}
	// gamma: "*" takes what "com.beta.*" (alpha's) did not claim; managed never.
	if got := keys(ExportsFor(d, "gamma", provs)); got != "" {
		t.Fatalf("to gamma: %s", got)
	}
	other := append([]mesh.Instance{{Service: mesh.ServiceKey{Name: "org.Other"}, Protocol: mesh.ProtocolGRPC, Address: "10.0.0.3:1"}}, provs...)
	if got := keys(ExportsFor(d, "gamma", other)); got != "grpc/org.Other:@" {
		t.Fatalf("to gamma: %s", got)
	}

	// Live: the federation re-evaluates on every update of the providers.
	fed := NewFederation(d, nil)
	fed.Update(d, provs, nil)
	rev := fed.peers["alpha"].rev
	grown := append([]mesh.Instance{{Service: mesh.ServiceKey{Name: "com.beta.New"}, Protocol: mesh.ProtocolTriple, Address: "10.0.0.4:1"}}, provs...)
	fed.Update(d, grown, nil)
	l := fed.peers["alpha"]
	if l.rev != rev+1 || len(l.history[len(l.history)-1].upserted) != 1 || l.history[len(l.history)-1].upserted[0].GetName() != "com.beta.New" {
		t.Fatalf("new service not exported as a delta: rev %d→%d %+v", rev, l.rev, l.history[len(l.history)-1])
	}
	fed.Update(d, provs, nil)
	if last := l.history[len(l.history)-1]; len(last.removed) != 1 || last.removed[0] != "triple/com.beta.New:@" {
		t.Fatalf("gone service not withdrawn: %+v", last)
	}
}

// TestPatternExportsTranslated: the ingress authorizes calls to pattern-exported services
// as resolved, refuses the rest, and never sends a call to a managed provider.
func TestPatternExportsTranslated(t *testing.T) {
	in := loadInput(t, "testdata/in/patterns-beta.yaml")
	res, err := Translate(in)
	if err != nil {
		t.Fatal(err)
	}
	ig, err := xdsres.Decode(xdsres.RoleIngress, toResources(res.Ingress))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src, svc, version, method string
		p                         mesh.Protocol
		want                      routing.Decision
	}{
		{"alpha", "com.beta.orders.OrderService", "", "Get", mesh.ProtocolGRPC, routing.Allowed},
		{"alpha", "com.beta.orders.OrderService", "", "Delete", mesh.ProtocolTriple, routing.Forbidden},
		{"gamma", "com.beta.orders.OrderService", "", "Get", mesh.ProtocolTriple, routing.Forbidden},
		{"gamma", "com.beta.orders.Special", "", "Any", mesh.ProtocolGRPC, routing.Allowed},
		{"alpha", "com.beta.orders.Special", "", "Get", mesh.ProtocolGRPC, routing.Forbidden},
		{"alpha", "com.beta.v2.Catalog", "2.0.0", "Any", mesh.ProtocolGRPC, routing.Allowed},
		{"gamma", "com.beta.v1.Catalog", "", "Any", mesh.ProtocolGRPC, routing.Allowed},
		{"gamma", "other.Thing", "", "Any", mesh.ProtocolGRPC, routing.Allowed},
		{"alpha", "web-shop", "", "", mesh.ProtocolHTTP, routing.Allowed},
		{"alpha", "plain", "", "", mesh.ProtocolHTTP, routing.UnknownService},
		{"gamma", "com.alpha.Loop", "", "Any", mesh.ProtocolGRPC, routing.UnknownService},
		{"alpha", "com.beta.orders.Imported", "", "Get", mesh.ProtocolTriple, routing.UnknownService},
		{"alpha", "com.beta.orders.NotRegistered", "", "Get", mesh.ProtocolTriple, routing.UnknownService},
	} {
		_, got := ig.Table.Authorize(c.src, c.p, mesh.ServiceKey{Name: c.svc, Version: c.version}, c.method)
		if got != c.want {
			t.Errorf("%s → %s %s/%s: %v, want %v", c.src, c.p, c.svc, c.method, got, c.want)
		}
	}
	if eps := ig.Endpoints(mesh.ServiceKey{Name: "com.beta.orders.Mixed"}, mesh.ProtocolGRPC); len(eps) != 2 {
		t.Errorf("Mixed endpoints: %v", eps)
	}
}

// TestRemovedPeerWithdrawn: a peer removed from the domain hears every service it was
// exported withdrawn, then its stream ends (refused while it is not a peer); added back, it
// gets its services again.
func TestRemovedPeerWithdrawn(t *testing.T) {
	d := betaDomain(config.Export{Service: "com.beta.Pay", Protocol: mesh.ProtocolTriple, Version: "1.0.0", To: []string{"alpha"}})
	fed := NewFederation(d, nil)
	fed.Update(d, providers, []string{"10.1.0.1:15443"})
	fs := serveFederation(t, fed)
	defer fs.srv.Stop()
	cc, err := grpc.NewClient(fs.ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, PeerDomainHeader, "alpha"), desc, cc, method, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	im := NewImporter("alpha", "beta", federationv1.NewFederationClient(cc), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); im.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitImport := func(what string, ok func(Import) bool) {
		t.Helper()
		wait.ForNil(t, 30*time.Second, what, func() error {
			if got := im.Import(); !ok(got) {
				return fmt.Errorf("%+v", got)
			}
			return nil
		})
	}
	waitImport("snapshot", func(i Import) bool { return !i.Stale && len(i.Services) == 1 })

	without := &config.Domain{Domain: "beta", TrustDomain: "beta.local", Peers: d.Peers[1:]}
	fed.Update(without, providers, []string{"10.1.0.1:15443"})
	waitImport("withdrawn, then refused", func(i Import) bool {
		return len(i.Services) == 0 && i.Withdrawn == 1 && i.Stale && strings.Contains(i.LastErr, "peer of beta")
	})

	fed.Update(d, providers, []string{"10.1.0.1:15443"})
	waitImport("back", func(i Import) bool { return !i.Stale && len(i.Services) == 1 && i.Services[0].Name == "com.beta.Pay" })
}

// TestExportsCarryVersions: an export that names no version or group carries each version
// and group its native providers registered as a service of its own, with the Dubbo
// service parameters of one of them (not the host's or process's own, nor other metadata
// the allow-list does not name); an export naming a version carries only that one.
func TestExportsCarryVersions(t *testing.T) {
	java := func(version, group, addr, release string) mesh.Instance {
		return mesh.Instance{Service: mesh.ServiceKey{Name: "org.Echo", Version: version, Group: group}, Protocol: mesh.ProtocolTriple, Address: addr,
			Metadata: map[string]string{
				"application": "echo-provider", "pid": "4242", "token": "s3cret", "release": release, "dubbo": "2.0.2",
				"methods": "echo,whoami", "timestamp": "1765000000000", "prefer.serialization": "hessian2,fastjson2",
				"echo.timeout": "300", "owner": "team-a", "bind.ip": "10.0.0.1",
			}}
	}
	provs := []mesh.Instance{
		java("1.0.0", "g1", "10.0.0.2:1", "3.3.6"),
		java("1.0.0", "g1", "10.0.0.1:1", "3.3.5"), // the first by address gives the parameters
		java("2.0.0", "g1", "10.0.0.3:1", "3.3.6"),
		java("2.0.0", "", "10.0.0.4:1", "3.3.6"),
		{Service: mesh.ServiceKey{Name: "org.Echo", Version: "3.0.0"}, Protocol: mesh.ProtocolTriple, Address: "10.0.0.9:1",
			Metadata: map[string]string{registrysync.MetaManaged: "true", registrysync.MetaOrigin: "alpha"}},
	}
	keys := func(m map[string]*federationv1.Service) string {
		ks := make([]string, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return strings.Join(ks, " ")
	}
	all := ExportsFor(betaDomain(config.Export{Service: "org.Echo", Protocol: mesh.ProtocolTriple, To: []string{"alpha"}, Metadata: []string{"owner"}}), "alpha", provs)
	if got, want := keys(all), "triple/org.Echo:1.0.0@g1 triple/org.Echo:2.0.0@ triple/org.Echo:2.0.0@g1"; got != want {
		t.Fatalf("exports: %s, want %s", got, want)
	}
	s := all["triple/org.Echo:1.0.0@g1"]
	want := map[string]string{
		"release": "3.3.5", "dubbo": "2.0.2", "methods": "echo,whoami", "timestamp": "1765000000000",
		"prefer.serialization": "hessian2,fastjson2", "echo.timeout": "300", "owner": "team-a",
	}
	if fmt.Sprint(s.Metadata) != fmt.Sprint(want) {
		t.Fatalf("parameters carried:\n got %v\nwant %v", s.Metadata, want)
	}
	one := ExportsFor(betaDomain(config.Export{Service: "org.Echo", Protocol: mesh.ProtocolTriple, Version: "2.0.0", To: []string{"alpha"}}), "alpha", provs)
	if got, want := keys(one), "triple/org.Echo:2.0.0@ triple/org.Echo:2.0.0@g1"; got != want {
		t.Fatalf("export of version 2.0.0: %s, want %s", got, want)
	}
	grp := ExportsFor(betaDomain(config.Export{Service: "org.Echo", Protocol: mesh.ProtocolTriple, Version: "2.0.0", Group: "g1", To: []string{"alpha"}}), "alpha", provs)
	if got, want := keys(grp), "triple/org.Echo:2.0.0@g1"; got != want {
		t.Fatalf("export of 2.0.0@g1: %s, want %s", got, want)
	}
	none := ExportsFor(betaDomain(config.Export{Service: "org.Echo", Protocol: mesh.ProtocolTriple, Version: "9", To: []string{"alpha"}}), "alpha", provs)
	if got, want := keys(none), "triple/org.Echo:9@"; got != want {
		t.Fatalf("export of a version with no provider yet: %s, want %s", got, want)
	}
}

// TestImportQuota: beta exports 50,000 services (a pattern export) to alpha, whose quota
// of beta is 10,000 services and 2 ingress instances. Over a real Federation stream,
// alpha's importer keeps 10,000 (the first by key), refuses the other 40,000 and says so
// (a count and a sample of names), and keeps 2 of beta's 3 ingress instances. After beta
// withdraws one kept service and adds one, the kept services stay and the refused count
// follows; memory holds only what is kept.
func TestImportQuota(t *testing.T) {
	const total, quota = 50000, 10000
	provs := make([]mesh.Instance, 0, total)
	for i := range total {
		provs = append(provs, mesh.Instance{Service: mesh.ServiceKey{Name: fmt.Sprintf("com.flood.S%05d", i)}, Protocol: mesh.ProtocolGRPC,
			Address: "10.0.0.1:1", Metadata: map[string]string{"application": "flood"}})
	}
	d := betaDomain(config.Export{Service: "com.flood.*", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
	fed := NewFederation(d, nil)
	fed.Update(d, provs, []string{"10.1.0.1:15443", "10.1.0.2:15443", "10.1.0.3:15443"})
	fs := serveFederation(t, fed)
	defer fs.srv.Stop()
	cc, err := grpc.NewClient("passthrough:///beta", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", fs.ln.Addr().String())
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, PeerDomainHeader, "alpha"), desc, cc, method, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	im := NewImporter("alpha", "beta", federationv1.NewFederationClient(cc), nil, nil)
	im.SetQuota(config.Quota{Services: quota, Instances: 2, UpdatesPerSecond: 1000})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); im.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var got Import
	wait.ForNil(t, 60*time.Second, "the catalog, within the quota", func() error {
		if got = im.Import(); got.Stale || len(got.Services) == 0 {
			return fmt.Errorf("stale %v, %d services", got.Stale, len(got.Services))
		}
		return nil
	})
	if len(got.Services) != quota || got.Refused.Services != total-quota || len(got.Refused.Sample) == 0 {
		t.Fatalf("kept %d, refused %d (sample %v): want %d and %d", len(got.Services), got.Refused.Services, got.Refused.Sample, quota, total-quota)
	}
	if got.Services[0].GetName() != "com.flood.S00000" || got.Services[quota-1].GetName() != fmt.Sprintf("com.flood.S%05d", quota-1) {
		t.Fatalf("kept %s … %s, want the first by key", got.Services[0].GetName(), got.Services[quota-1].GetName())
	}
	if len(got.Ingress) != 2 || got.Refused.Ingress != 1 {
		t.Fatalf("ingress %v, refused %d: want 2 kept, 1 refused", got.Ingress, got.Refused.Ingress)
	}
	im.mu.Lock()
	held, tracked := len(im.services), len(im.refusedKeys)
	im.mu.Unlock()
	if held != quota || tracked > maxRefusedTracked {
		t.Fatalf("the importer holds %d services and %d refused keys", held, tracked)
	}

	// Beta withdraws a kept service and adds a new one (sorting first): the other kept
	// ones stay, and the quota has room for one, which the new one takes only if it comes
	// while there is room — the refused count follows.
	provs = append(provs[1:], mesh.Instance{Service: mesh.ServiceKey{Name: "com.flood.A0"}, Protocol: mesh.ProtocolGRPC, Address: "10.0.0.1:1"})
	fed.Update(d, provs, []string{"10.1.0.1:15443"})
	wait.ForNil(t, 30*time.Second, "the change", func() error {
		got = im.Import()
		if len(got.Ingress) != 1 {
			return fmt.Errorf("ingress %v", got.Ingress)
		}
		return nil
	})
	names := map[string]bool{}
	for _, s := range got.Services {
		names[s.GetName()] = true
	}
	if names["com.flood.S00000"] || !names["com.flood.S00001"] || !names[fmt.Sprintf("com.flood.S%05d", quota-1)] || len(got.Services) > quota {
		t.Fatalf("after the change: %d kept (S00000 %v, S00001 %v)", len(got.Services), names["com.flood.S00000"], names["com.flood.S00001"])
	}
	if got.Refused.Services+len(got.Services) != total {
		t.Fatalf("kept %d + refused %d, want %d", len(got.Services), got.Refused.Services, total)
	}
}
