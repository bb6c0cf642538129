package dubboapp_test

import (
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubboapp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRenderRoundTrip renders an application instance and reads it back (through the
// JSON a metadata report stores) into the same providers.
func TestRenderRoundTrip(t *testing.T) {
	a := registrysync.AppInstance{
		App: "strait-beta", Address: "10.0.0.1:17110",
		Metadata: map[string]string{registrysync.MetaManaged: "true", registrysync.MetaOrigin: "beta"},
		Services: []mesh.Instance{
			{Service: mesh.ServiceKey{Name: "com.beta.Pay", Version: "1.0.0", Group: "g"}, Protocol: mesh.ProtocolTriple, Address: "10.0.0.1:17110"},
			{Service: mesh.ServiceKey{Name: "grpc.testing.TestService"}, Protocol: mesh.ProtocolGRPC, Address: "10.0.0.1:17110",
				Metadata: map[string]string{"zone": "z1"}},
		},
	}
	rd, err := dubboapp.Render(a)
	if err != nil {
		t.Fatal(err)
	}
	if rd.Metadata[dubboapp.MetaStorage] != "remote" || rd.Metadata[dubboapp.MetaRevision] != rd.Info.Revision ||
		rd.Metadata[dubboapp.MetaEndpoints] != `[{"port":17110,"protocol":"grpc"},{"port":17110,"protocol":"tri"}]` {
		t.Fatalf("instance metadata %v", rd.Metadata)
	}
	if _, ok := rd.Info.Services["g/com.beta.Pay:1.0.0:tri"]; !ok {
		t.Fatalf("match keys %v", rd.Info.Services)
	}
	data, err := json.Marshal(rd.Info)
	if err != nil {
		t.Fatal(err)
	}
	mi, err := dubboapp.ParseInfo(data)
	if err != nil {
		t.Fatal(err)
	}
	got := dubboapp.Instances(a.App, rd.Host, rd.Port, rd.Metadata, mi)
	if len(got) != 2 {
		t.Fatalf("read back %v", got)
	}
	for _, i := range got {
		if i.Address != a.Address || i.Metadata["application"] != "strait-beta" || !registrysync.Managed(i) {
			t.Fatalf("read back %+v", i)
		}
		for k := range i.Metadata {
			if strings.HasPrefix(k, "dubbo.") || k == "interface" || k == "version" {
				t.Fatalf("read back %+v", i)
			}
		}
	}
	if got[0].Service != a.Services[0].Service || got[0].Protocol != mesh.ProtocolTriple ||
		got[1].Service != a.Services[1].Service || got[1].Metadata["zone"] != "z1" {
		t.Fatalf("read back %+v", got)
	}
	// Equal services, equal revision; another service, another revision.
	again, _ := dubboapp.Render(a)
	a.Services = a.Services[:1]
	fewer, _ := dubboapp.Render(a)
	if again.Info.Revision != rd.Info.Revision || fewer.Info.Revision == rd.Info.Revision {
		t.Fatal("revision is not a digest of the services")
	}
}

// TestInstancesEndpoints: a service is at the port of its protocol's endpoint; protocols
// Strait does not speak are left out.
func TestInstancesEndpoints(t *testing.T) {
	mi := &dubboapp.MetadataInfo{App: "shop", Services: map[string]*dubboapp.ServiceInfo{
		"a.A:tri":   {Name: "a.A", Protocol: "tri"},
		"b.B:dubbo": {Name: "b.B", Protocol: "dubbo"},
		"c.C:rmi":   {Name: "c.C", Protocol: "rmi"},
	}}
	md := map[string]string{dubboapp.MetaEndpoints: `[{"port":20000,"protocol":"dubbo"},{"port":50051,"protocol":"tri"}]`, "id": "x"}
	got := dubboapp.Instances("shop", "10.0.0.2", 20000, md, mi)
	if len(got) != 2 || got[0].Address != "10.0.0.2:50051" || got[0].Service.Name != "a.A" ||
		got[1].Address != "10.0.0.2:20000" || got[1].Service.Name != "b.B" || got[1].Protocol != mesh.ProtocolDubbo {
		t.Fatalf("%+v", got)
	}
	if _, ok := got[0].Metadata["id"]; ok {
		t.Fatalf("%+v", got[0].Metadata)
	}
}

func TestRenderRefuses(t *testing.T) {
	good := mesh.Instance{Service: mesh.ServiceKey{Name: "a.A"}, Protocol: mesh.ProtocolTriple, Address: "10.0.0.1:1"}
	for _, a := range []registrysync.AppInstance{
		{App: "", Address: "10.0.0.1:1", Services: []mesh.Instance{good}},
		{App: "a/b", Address: "10.0.0.1:1", Services: []mesh.Instance{good}},
		{App: "x", Address: "10.0.0.1", Services: []mesh.Instance{good}},
		{App: "x", Address: "10.0.0.1:1"},
		{App: "x", Address: "10.0.0.2:1", Services: []mesh.Instance{good}},
	} {
		if _, err := dubboapp.Render(a); err == nil {
			t.Errorf("Render(%+v) accepted", a)
		}
	}
}

func TestMergeApps(t *testing.T) {
	if v, ch := dubboapp.MergeApps("", "a"); v != "a" || !ch {
		t.Fatal(v)
	}
	if v, ch := dubboapp.MergeApps("a,b", "b"); v != "a,b" || ch {
		t.Fatal(v)
	}
	if v, ch := dubboapp.MergeApps("a, b", "c"); v != "a,b,c" || !ch {
		t.Fatal(v)
	}
}
