package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/internal/config"
)

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "domain file or gateway file to check (a gateway file has a role)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "strait validate: -c FILE is required")
		return 2
	}
	if isGatewayFile(*file) {
		return validateGateway(*file, stdout, stderr)
	}
	d, warnings, err := config.LoadWithWarnings(*file)
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			fmt.Fprintf(stderr, "%s: %d error(s):\n", *file, len(es))
			for _, e := range es {
				fmt.Fprintf(stderr, "  %s\n", e)
			}
		} else {
			fmt.Fprintf(stderr, "strait validate: %v\n", err)
		}
		printWarnings(stderr, *file, warnings)
		return 1
	}
	printWarnings(stderr, *file, warnings)
	fmt.Fprintf(stdout, "%s: ok (domain %s, %d peer(s), %d export(s), %d route(s))\n", *file, d.Domain, len(d.Peers), len(d.Exports), len(d.Routes))
	return 0
}

// isGatewayFile tells a gateway file (it says which role the instance has) from a domain
// file; a file that cannot be read is left to the domain file's loader to report.
func isGatewayFile(file string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	var top map[string]yaml.Node
	if yaml.Unmarshal(b, &top) != nil {
		return false
	}
	_, ok := top["role"]
	return ok
}

// validateGateway checks a gateway file as `strait egress|ingress -c FILE` would read it.
func validateGateway(file string, stdout, stderr io.Writer) int {
	g, warnings, err := config.LoadGatewayWithWarnings(file)
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			fmt.Fprintf(stderr, "%s: %d error(s):\n", file, len(es))
			for _, e := range es {
				fmt.Fprintf(stderr, "  %s\n", e)
			}
		} else {
			fmt.Fprintf(stderr, "strait validate: %v\n", err)
		}
		printWarnings(stderr, file, warnings)
		return 1
	}
	printWarnings(stderr, file, warnings)
	fmt.Fprintf(stdout, "%s: ok (gateway %s/%s/%s, listen %s)\n", file, g.Domain, g.Role, g.Instance, g.Listen)
	return 0
}

// printWarnings prints the deprecated spellings a file uses (they still work).
func printWarnings(w io.Writer, file string, warnings config.Errors) {
	for _, e := range warnings {
		fmt.Fprintf(w, "%s: warning: %s\n", file, e)
	}
}
