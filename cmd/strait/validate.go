package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/strait-mesh/strait/internal/config"
)

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "domain file to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "strait validate: -c FILE is required")
		return 2
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

// printWarnings prints the deprecated spellings a file uses (they still work).
func printWarnings(w io.Writer, file string, warnings config.Errors) {
	for _, e := range warnings {
		fmt.Fprintf(w, "%s: warning: %s\n", file, e)
	}
}
