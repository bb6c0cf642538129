package dubbourl_test

import (
	"testing"

	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

func TestURLRoundTrip(t *testing.T) {
	in := mesh.Instance{
		Service:  mesh.ServiceKey{Name: "org.apache.Greeter", Version: "1.0.0", Group: "g1"},
		Protocol: mesh.ProtocolTriple, Address: "10.0.0.1:20000",
		Metadata: map[string]string{"application": "demo", "strait.origin": "beta"},
	}
	out, err := dubbourl.Parse(dubbourl.Format(in))
	if err != nil {
		t.Fatal(err)
	}
	if out.Service != in.Service || out.Protocol != in.Protocol || out.Address != in.Address || out.Metadata["strait.origin"] != "beta" {
		t.Fatalf("round trip: %+v → %s → %+v", in, dubbourl.Format(in), out)
	}
	// A classic Dubbo provider is read (registries and sync jobs carry it).
	if d, err := dubbourl.Parse("dubbo://1.2.3.4:20880/org.Legacy?interface=org.Legacy&side=provider"); err != nil || d.Protocol != mesh.ProtocolDubbo || d.Service.Name != "org.Legacy" {
		t.Errorf("dubbo:// provider: %+v, %v", d, err)
	}
	for _, bad := range []string{"rest://1.2.3.4:1/x", "tri://nohost/x", "tri://1.2.3.4:5/", "%zz"} {
		if _, err := dubbourl.Parse(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestServiceParam(t *testing.T) {
	for key, want := range map[string]bool{
		"methods": true, "release": true, "timestamp": true, "prefer.serialization": true, "dubbo": true,
		"echo.timeout": true, "echo.retries": true,
		"pid": false, "token": false, "application": false, "bind.ip": false, "bind.port": false,
		"qos.port": false, "owner": false, "echo.timeout.x": false, ".timeout": false, "strait.origin": false,
	} {
		if got := dubbourl.ServiceParam(key); got != want {
			t.Errorf("ServiceParam(%q) = %t, want %t", key, got, want)
		}
	}
}

// TestFormatValuesAsDubbo: parameter values are written as Dubbo writes them (a comma
// stays a comma: Dubbo never decodes a value), sorted by key; only what would split or
// decode differently is escaped.
func TestFormatValuesAsDubbo(t *testing.T) {
	i := mesh.Instance{Service: mesh.ServiceKey{Name: "org.Echo", Version: "1.0.0"}, Protocol: mesh.ProtocolDubbo, Address: "10.0.0.1:20880",
		Metadata: map[string]string{"methods": "echo,whoami", "prefer.serialization": "hessian2,fastjson2", "odd": "a&b=c%d e+f;g#h"}}
	got := dubbourl.Format(i)
	want := "dubbo://10.0.0.1:20880/org.Echo?interface=org.Echo&methods=echo,whoami&odd=a%26b%3Dc%25d%20e%2Bf%3Bg%23h&prefer.serialization=hessian2,fastjson2&side=provider&version=1.0.0"
	if got != want {
		t.Fatalf("Format:\n got %s\nwant %s", got, want)
	}
	back, err := dubbourl.Parse(got)
	if err != nil || back.Metadata["odd"] != i.Metadata["odd"] || back.Metadata["methods"] != "echo,whoami" {
		t.Fatalf("Parse(%s) = %+v, %v", got, back, err)
	}
}
