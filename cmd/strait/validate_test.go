package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestValidateLocatesAndWarns: a problem of the YAML itself is printed with its path and
// line; a deprecated spelling passes, with a warning.
func TestValidateLocatesAndWarns(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string) string {
		t.Helper()
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	const head = "domain: beta\ntrustDomain: beta.local\nregistry:\n  kind: etcd\n"
	for _, c := range []struct {
		name, doc      string
		code           int
		stdout, stderr string
	}{
		{"misspelled.yaml", head + "  endpoint: [\"h:1\"]\n", 1, "",
			"FILE: 1 error(s):\n  registry.endpoint (line 5): unknown field; did you mean \"addresses\"?\n"},
		{"type.yaml", head + "  addresses: \"h:1\"\nlimits: {maxBodyBytes: lots}\n", 1, "",
			"FILE: 2 error(s):\n  registry.addresses (line 5): expected a list, got \"h:1\"; write [\"h:1\"]\n" +
				"  limits.maxBodyBytes (line 6): expected an integer, got \"lots\"\n"},
		{"old.yaml", head + "  endpoints: [\"h:1\"]\n", 0,
			"FILE: ok (domain beta, 0 peer(s), 0 export(s), 0 route(s))\n",
			"FILE: warning: registry.endpoints (line 5): deprecated: renamed to registry.addresses\n"},
		{"old-and-invalid.yaml", head + "  endpoints: [\"\"]\n", 1, "",
			"FILE: 1 error(s):\n  registry.addresses[0]: empty\nFILE: warning: registry.endpoints (line 5): deprecated: renamed to registry.addresses\n"},
	} {
		f := write(c.name, c.doc)
		var out, errb bytes.Buffer
		code := run([]string{"validate", "-c", f}, &out, &errb)
		stdout := string(bytes.ReplaceAll(out.Bytes(), []byte(f), []byte("FILE")))
		stderr := string(bytes.ReplaceAll(errb.Bytes(), []byte(f), []byte("FILE")))
		if code != c.code || stdout != c.stdout || stderr != c.stderr {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d, %q, %q", c.name, code, stdout, stderr, c.code, c.stdout, c.stderr)
		}
	}
}

// TestValidateGatewayFile: a gateway file is recognised by its role; a wildcard listen
// without an advertised host passes with a warning, a wildcard advertise is an error.
func TestValidateGatewayFile(t *testing.T) {
	dir := t.TempDir()
	const head = "domain: alpha\nrole: egress\ninstance: e1\ncontrolplane: {xds: 127.0.0.1:17100}\nidentity: {cert: a.pem, key: k.pem}\n"
	for _, c := range []struct {
		name, doc      string
		code           int
		stdout, stderr string
	}{
		{"plain.yaml", head + "listen: 127.0.0.1:17110\n", 0, "FILE: ok (gateway alpha/egress/e1, listen 127.0.0.1:17110)\n", ""},
		{"wildcard.yaml", head + "listen: 0.0.0.0:17110\n", 0, "FILE: ok (gateway alpha/egress/e1, listen 0.0.0.0:17110)\n",
			"FILE: warning: listen: 0.0.0.0:17110 is a wildcard address and advertise names no host: the gateway publishes the address of the interface with the default route; set advertise to the address consumers and peers dial\n"},
		{"advertised.yaml", head + "listen: 0.0.0.0:17110\nadvertise: egress.alpha.example:443\n", 0, "FILE: ok (gateway alpha/egress/e1, listen 0.0.0.0:17110)\n", ""},
		{"bad-advertise.yaml", head + "listen: 0.0.0.0:17110\nadvertise: \"[::]:443\"\n", 1, "",
			"FILE: 1 error(s):\n  advertise: \"[::]:443\" is a wildcard address: advertise the address consumers and peers dial\n"},
	} {
		f := filepath.Join(dir, c.name)
		if err := os.WriteFile(f, []byte(c.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := run([]string{"validate", "-c", f}, &out, &errb)
		stdout := string(bytes.ReplaceAll(out.Bytes(), []byte(f), []byte("FILE")))
		stderr := string(bytes.ReplaceAll(errb.Bytes(), []byte(f), []byte("FILE")))
		if code != c.code || stdout != c.stdout || stderr != c.stderr {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d, %q, %q", c.name, code, stdout, stderr, c.code, c.stdout, c.stderr)
		}
	}
}
