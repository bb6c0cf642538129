// Command strait is the one binary of Strait, the sidecar-free east-west RPC interconnect.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `strait links business domains whose networks cannot reach each other.

Usage:
  strait demo [--json] [--duration D] [--hold] [-v]
        run two domains (alpha calls beta) on loopback and call across them
  strait controlplane -c DOMAIN.yaml [--xds ADDR] [--admin ADDR] [--data-dir DIR]
        run a domain's controlplane: serves xDS to its gateways, watches the file and
        the registry, admin API GET/PUT /v1/config
  strait egress -c GATEWAY.yaml
  strait ingress -c GATEWAY.yaml
        run one gateway instance; its configuration comes from the controlplane
  strait sync -c JOB.yaml [--once [--timeout D] [--json]]
        copy services between two registries (ZooKeeper, Nacos, etcd), one way or both
  strait validate -c FILE
        check a domain file or a gateway file; every error is printed with its path
  strait certs -o DIR -trust-domain TD [-svid ROLE/NAME]...
        write a CA bundle and SVIDs for one trust domain
  strait samples -registry HOST:PORT [-kind etcd|zookeeper|nacos]
        run the demo's sample providers, registered in a registry
  strait version
        print the version

Run "strait COMMAND -h" for the flags of a command.
`

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "egress" || os.Args[1] == "ingress") {
		keepSysmonAwake()
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "controlplane":
		return runControlplane(args[1:], stdout, stderr)
	case "egress", "ingress":
		return runGateway(args[0], args[1:], stdout, stderr)
	case "certs":
		return runCerts(args[1:], stdout, stderr)
	case "samples":
		return runSamples(args[1:], stdout, stderr)
	case "validate":
		return runValidate(args[1:], stdout, stderr)
	case "sync":
		return runSync(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "strait", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "strait: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
