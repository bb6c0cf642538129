package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
	etcdreg "github.com/strait-mesh/strait/registry-sync/etcd"
)

// runScaleProcesses is the catalog-scale run on the local topology of processes
// (deploy/local/up.sh --registry etcd: each domain on its own etcd server, each
// controlplane and gateway its own process), so that each controlplane's memory is its
// own. services×perService gRPC providers are written into beta's etcd; once beta's
// controlplane has them (its strait_registry_instances), beta exports them all to alpha
// with one pattern export ("*") through PUT /v1/config. It prints
//
//	catalog-scale services=… instances=… initial_sync_s=… imported_s=… published_s=… controlplane_rss_mb=…
//
// imported_s: from beta accepting the export to alpha's controlplane importing every
// service (strait_federation_imported_services); initial_sync_s: to both of alpha's egress
// instances routing every one (their /debug/config); published_s: to alpha's registry
// holding them at both egress instances (alpha's strait_registry_instances);
// controlplane_rss_mb: the larger peak resident set (VmHWM) of the two controlplane
// processes, each printed too.
func runScaleProcesses(services, perService int) error {
	dir, err := os.MkdirTemp("", "strait-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	env := append(os.Environ(), "STRAIT_STATE="+filepath.Join(dir, "state"))
	up := exec.Command("bash", "deploy/local/up.sh", "--registry", "etcd")
	up.Env, up.Stderr = env, os.Stderr
	out, err := up.Output()
	down := func() {
		d := exec.Command("bash", "deploy/local/down.sh")
		d.Env, d.Stdout, d.Stderr = env, io.Discard, os.Stderr
		_ = d.Run()
	}
	defer down()
	if err != nil {
		return fmt.Errorf("up.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var ready struct {
		Registries map[string]string `json:"registries"`
		Admin      map[string]string `json:"admin"`
		PIDs       map[string]int    `json:"pids"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ready); err != nil {
		return fmt.Errorf("up.sh ready line: %w", err)
	}
	betaAdmin, alphaAdmin := ready.Admin["beta-controlplane-1"], ready.Admin["alpha-controlplane-1"]
	betaBase, err := metric(betaAdmin, "strait_registry_instances")
	if err != nil {
		return err
	}
	alphaBase, err := metric(alphaAdmin, "strait_registry_instances")
	if err != nil {
		return err
	}
	importedBase, err := metric(alphaAdmin, `strait_federation_imported_services{peer="beta"}`)
	if err != nil {
		return err
	}

	ctx := context.Background()
	total := services * perService
	start := time.Now()
	if err := writeScale(ctx, strings.TrimPrefix(ready.Registries["beta"], "etcd://"), services, perService); err != nil {
		return err
	}
	registered := time.Since(start)
	if err := waitUntil(5*time.Minute, "beta's controlplane loads the providers", func() bool {
		n, err := metric(betaAdmin, "strait_registry_instances")
		return err == nil && n >= betaBase+float64(total)
	}); err != nil {
		return err
	}
	loaded := time.Since(start)

	// The export: beta's domain as in force, plus one pattern export to alpha.
	b, err := get("http://" + betaAdmin + "/v1/config")
	if err != nil {
		return err
	}
	d, err := config.Parse(b)
	if err != nil {
		return fmt.Errorf("beta's config: %w", err)
	}
	d.Exports = append(d.Exports, config.Export{Service: "*", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}, Metadata: []string{"application"}})
	nb, err := yaml.Marshal(d)
	if err != nil {
		return err
	}
	t0 := time.Now()
	req, _ := http.NewRequest(http.MethodPut, "http://"+betaAdmin+"/v1/config", bytes.NewReader(nb))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT beta's config: %d %s", resp.StatusCode, msg)
	}

	if err := waitUntil(2*time.Minute, "alpha imports every service", func() bool {
		n, err := metric(alphaAdmin, `strait_federation_imported_services{peer="beta"}`)
		return err == nil && n >= importedBase+float64(services)
	}); err != nil {
		return err
	}
	imported := time.Since(t0)
	for _, eg := range []string{"alpha-egress-1", "alpha-egress-2"} {
		if err := waitUntil(2*time.Minute, eg+" routes every service", func() bool {
			b, err := get("http://" + ready.Admin[eg] + "/debug/config")
			return err == nil && bytes.Count(b, []byte(`"scale.bench.Service`)) >= services
		}); err != nil {
			return err
		}
	}
	synced := time.Since(t0)
	published := -1.0
	if err := waitUntil(2*time.Minute, "alpha's registry lists every service at both egress instances", func() bool {
		n, err := metric(alphaAdmin, "strait_registry_instances")
		return err == nil && n >= alphaBase+float64(2*services)
	}); err == nil {
		published = time.Since(t0).Seconds()
	}
	rss := map[string]float64{}
	for _, name := range []string{"alpha-controlplane-1", "beta-controlplane-1"} {
		rss[name] = procHWM(ready.PIDs[name])
	}
	fmt.Printf("catalog-scale services=%d instances=%d initial_sync_s=%.2f imported_s=%.2f published_s=%.2f controlplane_rss_mb=%.0f\n",
		services, total, synced.Seconds(), imported.Seconds(), published, max(rss["alpha-controlplane-1"], rss["beta-controlplane-1"]))
	fmt.Fprintf(os.Stderr, "catalog-scale: registered %d instances in %.1f s; beta's controlplane had them after %.1f s; peak RSS alpha-controlplane-1 %.0f MiB, beta-controlplane-1 %.0f MiB\n",
		total, registered.Seconds(), loaded.Seconds(), rss["alpha-controlplane-1"], rss["beta-controlplane-1"])
	return nil
}

// writeScale writes the providers into an etcd server in dubbo-go's layout, 128 puts per
// transaction, under one lease.
func writeScale(ctx context.Context, endpoint string, services, perService int) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		return err
	}
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for s := range services {
		for i := range perService {
			inst := mesh.Instance{
				Service: mesh.ServiceKey{Name: scaleSvc(s)}, Protocol: mesh.ProtocolGRPC,
				Address:  fmt.Sprintf("127.%d.%d.%d:%d", 1+i, s/256%256, s%256, 20000+s/65536),
				Metadata: map[string]string{"application": "bench", "zone": "z" + strconv.Itoa(i%3)},
			}
			ops = append(ops, clientv3.OpPut(etcdreg.Key(inst), dubbourl.Format(inst), clientv3.WithLease(lease.ID)))
			if len(ops) == 128 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

func get(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return b, err
}

// metric reads one sample (name with its labels, as exposed) from an admin /metrics.
func metric(admin, name string) (float64, error) {
	b, err := get("http://" + admin + "/metrics")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", admin, name)
}

// procHWM is a process' peak resident set in MiB (VmHWM), -1 if unknown.
func procHWM(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}
