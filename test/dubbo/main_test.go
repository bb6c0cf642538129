package dubbo

import (
	"fmt"
	"os"
	"testing"
)

// nacosDir holds the Nacos SDK's logs and caches of this process's dubbo-go clients and
// providers. It is the process's own: the SDK loads what its cache directory holds at
// start, and another test run at the same time must not read this one's services.
var nacosDir string

func TestMain(m *testing.M) {
	var err error
	if nacosDir, err = os.MkdirTemp("", "strait-dubbo-nacos-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(nacosDir)
	os.Exit(code)
}
