package e2e

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/controlplane"
)

// TestFederationThroughTunnel: alpha's controlplane follows what beta exports to it, and
// beta's live ingress instances, over the Federation API riding beta's ingress tunnel port.
func TestFederationThroughTunnel(t *testing.T) {
	want := append([]string(nil), topo.Ingress...)
	sort.Strings(want)
	deadline := time.Now().Add(15 * time.Second)
	for {
		im, ok := topo.AlphaCP.Imports()["beta"]
		if ok && !im.Stale && len(im.Services) == len(topo.BetaCP.Core().Domain().Exports) &&
			strings.Join(im.Ingress, ",") == strings.Join(want, ",") {
			var keys []string
			for _, s := range im.Services {
				keys = append(keys, controlplane.ServiceKey(s))
			}
			t.Logf("alpha imports from beta (revision %d): %v, ingress %v", im.Revision, keys, im.Ingress)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alpha's import of beta: %+v", im)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
