package main

import (
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/membership"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// runCerts is `strait certs`: a CA for one trust domain and SVIDs for its gateways, as
// files. The controlplane's built-in CA will replace it.
func runCerts(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output directory")
	td := fs.String("trust-domain", "", "SPIFFE trust domain, e.g. alpha.strait.local")
	ttl := fs.Duration("ttl", 30*24*time.Hour, "validity of the CA and the SVIDs")
	var svids, gossipKeys multiFlag
	fs.Var(&svids, "svid", "ROLE/NAME of an SVID to issue (repeatable), e.g. egress/egress-1")
	fs.Var(&gossipKeys, "gossip-key", "NAME of a new gossip cluster key to write as DIR/NAME.key (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || *td == "" {
		fmt.Fprintln(stderr, "strait certs: -o DIR and -trust-domain TD are required")
		return 2
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		fmt.Fprintln(stderr, "strait certs:", err)
		return 1
	}
	ca, err := identity.NewCA(*td, *ttl)
	if err != nil {
		fmt.Fprintln(stderr, "strait certs:", err)
		return 1
	}
	if err := ca.WriteBundle(filepath.Join(*out, "bundle.pem")); err != nil {
		fmt.Fprintln(stderr, "strait certs:", err)
		return 1
	}
	for _, name := range gossipKeys {
		k, err := membership.GenerateKey()
		if err != nil {
			fmt.Fprintln(stderr, "strait certs:", err)
			return 1
		}
		path := filepath.Join(*out, name+".key")
		if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
			fmt.Fprintln(stderr, "strait certs:", err)
			return 1
		}
		fmt.Fprintf(stdout, "gossip key → %s\n", path)
	}
	for _, s := range svids {
		role, name, ok := strings.Cut(s, "/")
		if !ok {
			fmt.Fprintf(stderr, "strait certs: -svid %q is not ROLE/NAME\n", s)
			return 2
		}
		id, err := identity.ID(*td, role, name)
		if err != nil {
			fmt.Fprintln(stderr, "strait certs:", err)
			return 2
		}
		if _, err := ca.WriteSVID(*out, name, id, identity.IssueOptions{NotAfter: time.Now().Add(*ttl)}); err != nil {
			fmt.Fprintln(stderr, "strait certs:", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s → %s\n", id, filepath.Join(*out, name+".pem"))
	}
	return 0
}
