package e2e

import (
	"testing"

	"github.com/strait-mesh/strait/test/scenarios"
)

// TestScenarios runs the cross-domain suite test/local runs on separate processes.
func TestScenarios(t *testing.T) {
	scenarios.Run(t, scenarios.Topology{Egress: topo.Egress})
}
