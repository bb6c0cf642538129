//go:build nodemo

package main

import (
	"fmt"
	"io"
)

// Built with -tags nodemo, the binary leaves out the demo topology and its sample
// providers (dubbo-go and its dependencies): a production gateway or controlplane needs
// neither.

func runDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "strait demo: this binary was built without the demo (-tags nodemo)")
	return 2
}

func runSamples(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "strait samples: this binary was built without the demo (-tags nodemo)")
	return 2
}
