package syncjob

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/configerr"
	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestExamplesAreValid(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/examples/sync/jobs/*.yaml")
	if len(files) < 2 {
		t.Fatalf("examples not found: %v", files)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	j, err := Parse([]byte(`
name: m
source: {kind: nacos, addresses: ["127.0.0.1:8848"]}
target: {kind: zookeeper, addresses: ["127.0.0.1:2181"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if j.Direction != OneWay || j.Leader.On != "target" || j.Leader.TTL.D().String() != "10s" || j.Owner() != "sync/m" {
		t.Errorf("defaults: %+v", j)
	}
	j, err = Parse([]byte(`
name: m
source: {kind: nacos, addresses: ["127.0.0.1:8848"]}
target: {kind: nacos, addresses: ["127.0.0.1:9848"], namespace: prod}
`))
	if err != nil {
		t.Fatal(err)
	}
	if j.Leader.On != "none" {
		t.Errorf("two Nacos sides: leader.on %q, want none", j.Leader.On)
	}
}

func TestErrorsHavePaths(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{``, "empty document"},
		{`name: x
source: {kind: zookeeper, addresses: ["a:1"]}
target: {kind: nacos, addresses: ["b:2"]}
surprise: true`, "surprise (line 4): unknown field"},
		{`name: x
source: {kind: zookeeper, adresses: ["a:1"]}
target: {kind: nacos, addresses: "b:2"}`, "source.adresses (line 2): unknown field; did you mean \"addresses\"?\n" +
			"target.addresses (line 3): expected a list, got \"b:2\"; write [\"b:2\"]"},
		{`name: x
leader: {ttl: soon}`, "leader.ttl (line 2): expected a duration like 1.5s, got \"soon\""},
		{`name: x
source: {kind: zookeeper, addresses: ["a:1"]}
target: {kind: zookeeper, addresses: ["a:1"]}`, "target: is the same registry as the source"},
		{`name: x
source: {kind: etcd, addresses: ["a:1"], namespace: n}
target: {kind: nacos, addresses: ["b:0"]}
services: [""]
leader: {on: sideways}`, "source.namespace: only for nacos"},
	} {
		_, err := Parse([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.doc, err, c.want)
		}
	}
	_, err := Parse([]byte(`
source: {kind: etcd, addresses: ["a:1"], namespace: n}
target: {kind: nacos, addresses: ["b:0"]}
services: [""]
leader: {on: sideways}`))
	var es configerr.Errors
	if !errors.As(err, &es) {
		t.Fatalf("%v is not configerr.Errors", err)
	}
	var paths []string
	for _, e := range es {
		paths = append(paths, e.Path)
	}
	if got := strings.Join(paths, ","); got != "name,source.namespace,target.addresses[0],services[0],leader.on" {
		t.Errorf("paths %s", got)
	}
}

func TestDesiredSkipsManagedAndFilters(t *testing.T) {
	j := &Job{Name: "j", Services: []string{"org.a.*"}}
	r := &Runner{job: j}
	from := &endpoint{label: "zookeeper://z:1"}
	src := []mesh.Instance{
		{Service: mesh.ServiceKey{Name: "org.a.One"}, Protocol: mesh.ProtocolTriple, Address: "1.1.1.1:1", Metadata: map[string]string{"k": "v"}},
		{Service: mesh.ServiceKey{Name: "org.a.Two"}, Protocol: mesh.ProtocolTriple, Address: "1.1.1.1:2",
			Metadata: map[string]string{registrysync.MetaManaged: "true", registrysync.MetaOwner: "sync/other"}},
		{Service: mesh.ServiceKey{Name: "org.b.Three"}, Protocol: mesh.ProtocolTriple, Address: "1.1.1.1:3"},
	}
	src = append(src, mesh.Instance{Service: mesh.ServiceKey{Name: "org.a.Dual"}, Protocol: mesh.ProtocolTriple, Address: "1.1.1.1:4"})
	tl := newTally()
	got := r.desired(direction{from: from}, src, map[string]bool{key(src[3]): true}, tl)
	if len(tl.native) != 1 || tl.native[key(src[3])] != "org.a.Dual" {
		t.Errorf("native %v, want org.a.Dual", tl.native)
	}
	if len(got) != 1 {
		t.Fatalf("desired %v, want org.a.One only", got)
	}
	for _, i := range got {
		if i.Service.Name != "org.a.One" || i.Metadata["k"] != "v" || !registrysync.Managed(i) ||
			i.Metadata[registrysync.MetaOwner] != "sync/j" || i.Metadata[registrysync.MetaOrigin] != "zookeeper://z:1" {
			t.Errorf("copy %+v", i)
		}
	}
	if src[0].Metadata[registrysync.MetaManaged] != "" {
		t.Error("desired changed the source instance's metadata")
	}
	a := mesh.Instance{Metadata: map[string]string{"k": "v", "category": "providers", "side": "provider"}}
	b := mesh.Instance{Metadata: map[string]string{"k": "v", "protocol": "tri"}}
	if !sameMeta(a, b) {
		t.Error("layout keys compared")
	}
	b.Metadata["k"] = "w"
	if sameMeta(a, b) {
		t.Error("a changed value is the same")
	}
}
