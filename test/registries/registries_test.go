package registries

import (
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOffsets(t *testing.T) {
	for kind, want := range map[string][]int{"etcd": {0, 1}, "nacos": {-1000, 0, 1000, 1001}, "zookeeper": {0}} {
		got, err := Offsets(kind)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Offsets(%s) = %v, %v; want %v", kind, got, err, want)
		}
	}
	if _, err := Offsets("consul"); err == nil {
		t.Error("Offsets of an unknown kind")
	}
}

// TestStartStop starts an etcd server and a ZooKeeper (Nacos, slower, is started by the
// packages that test against it): each serves on its port, and Stop leaves nothing.
func TestStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	for _, kind := range []string{"etcd", "zookeeper"} {
		t.Run(kind, func(t *testing.T) {
			s, err := Start(kind)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s on %s in %v", kind, s.Addr, s.Took.Round(time.Millisecond))
			c, err := net.Dial("tcp", s.Addr)
			if err != nil {
				s.Stop()
				t.Fatalf("%s does not serve on %s: %v", kind, s.Addr, err)
			}
			c.Close()
			pid, err := os.ReadFile(s.Dir + "/pid")
			if err != nil {
				s.Stop()
				t.Fatal(err)
			}
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
				t.Errorf("%s left behind", s.Dir)
			}
			// Gone, or a zombie its adoptive parent has not reaped yet.
			if p, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil {
				if b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status"); err == nil && !strings.Contains(string(b), "State:\tZ") {
					t.Errorf("%s (pid %d) still running after Stop", kind, p)
				}
			}
		})
	}
}
