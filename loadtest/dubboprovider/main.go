// Command dubboprovider runs the classic-Dubbo provider of `make bench`: the real dubbo-go
// v3.3.2 program of test/dubbogo (built by loadtest/bench.sh), serving
// org.apache.dubbo.strait.EchoService version 1.0.0 group strait over dubbo:// (hessian2),
// registered in beta's registry as up.sh's sample providers are, so that beta's ingress
// finds it once beta's domain file exports the service with protocol dubbo.
//
//	dubboprovider -prog DUBBOGO -addr 127.0.0.1:PORT -registry HOST:PORT [-kind etcd] [-via EGRESS]
//
// It starts `DUBBOGO provider ADDR`, waits for it to accept connections, registers it and,
// with -via, calls EchoService.Echo through that address (alpha's egress) until the call
// comes back, i.e. until the whole cross-domain path routes it. Then it prints one line
// {"event":"ready","addr":ADDR,"pid":PROVIDER_PID} and serves until SIGTERM or SIGINT,
// when it deregisters the provider and stops it. The provider's lifetime is tied to this
// process: it exits when its stdin, a pipe from here, reaches EOF, so it goes too if this
// process is killed; the registration is on a lease that ends with this process.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/strait-mesh/strait/internal/dubbowire"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/registry-sync/registries"
)

// The service the dubbo-go program provides (test/dubbogo).
const (
	Interface = "org.apache.dubbo.strait.EchoService"
	Version   = "1.0.0"
	Group     = "strait"
)

func main() {
	prog := flag.String("prog", "", "the built test/dubbogo/prog binary")
	addr := flag.String("addr", "", "host:port the provider listens on (loopback)")
	reg := flag.String("registry", "", "beta's registry (host:port)")
	kind := flag.String("kind", "etcd", "registry kind: etcd, zookeeper or nacos")
	via := flag.String("via", "", "if set, wait until Echo called through this address (alpha's egress) comes back")
	waitFor := flag.Duration("wait", 60*time.Second, "how long the provider and -via may take to be ready")
	flag.Parse()
	if *prog == "" || *addr == "" || *reg == "" {
		fmt.Fprintln(os.Stderr, "dubboprovider: -prog, -addr and -registry are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *prog, *addr, *reg, *kind, *via, *waitFor); err != nil {
		fmt.Fprintln(os.Stderr, "dubboprovider:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, prog, addr, reg, kind, via string, waitFor time.Duration) error {
	p, err := startProvider(prog, addr, waitFor)
	if err != nil {
		return err
	}
	defer p.stop()

	r, err := registries.Open(kind, registries.Params{Addresses: []string{reg}})
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	defer r.Close()
	inst := mesh.Instance{
		Service:  mesh.ServiceKey{Name: Interface, Version: Version, Group: Group},
		Protocol: mesh.ProtocolDubbo, Address: addr,
		Metadata: map[string]string{"application": "strait-bench-dubbo", "methods": "Echo,EchoBytes,EchoUser,Fail"},
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = r.Register(rctx, inst)
	cancel()
	if err != nil {
		return fmt.Errorf("register %s: %w", inst, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.Deregister(dctx, inst)
	}()

	if via != "" {
		if err := waitCallable(ctx, via, waitFor); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(map[string]any{"event": "ready", "addr": addr, "pid": p.cmd.Process.Pid})
	fmt.Printf("%s\n", b)

	select {
	case <-ctx.Done():
		return nil
	case <-p.exited:
		return fmt.Errorf("the dubbo-go provider exited: %v", p.waitErr)
	}
}

// provider is the running dubbo-go program.
type provider struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	exited  chan struct{} // closed once cmd.Wait returned
	waitErr error
}

// startProvider runs `prog provider addr` and waits (at most waitFor) for its "ready" line.
func startProvider(prog, addr string, waitFor time.Duration) (*provider, error) {
	cmd := exec.Command(prog, "provider", addr)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", prog, err)
	}
	p := &provider{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() { // ends with the provider (EOF on its stdout), then reaps it
		sc := bufio.NewScanner(stdout)
		seen := false
		for sc.Scan() {
			if !seen && sc.Text() == "ready" {
				seen = true
				close(ready)
			} else {
				fmt.Fprintln(os.Stderr, "dubbo-go:", sc.Text()) // dubbo-go logs on stdout too
			}
		}
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case <-ready:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("the dubbo-go provider exited before it was ready: %v", p.waitErr)
	case <-timer.C:
		p.stop()
		return nil, fmt.Errorf("the dubbo-go provider was not ready within %s", waitFor)
	}
}

// stop closes the provider's stdin (it exits at EOF) and kills it if it is still running
// 10 s later.
func (p *provider) stop() {
	_ = p.stdin.Close()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-p.exited:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitCallable calls Echo through via until one call comes back with its argument, for at
// most d: the export, the import, the routes and the ingress's endpoints are all in place.
func waitCallable(ctx context.Context, via string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for id := uint64(1); ; id++ {
		if last = echoOnce(ctx, via, id); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no Echo call through %s came back within %s: %w", via, d, last)
		case <-tick.C:
		}
	}
}

// echoOnce makes one Echo call on a new connection to addr.
func echoOnce(ctx context.Context, addr string, id uint64) error {
	var dialer net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nc, err := dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	req := dubbowire.Request{Path: Interface, Version: Version, Method: "Echo", ParamTypes: "Ljava/lang/String;",
		Attachments: map[string]string{"group": Group}}
	resp, err := dubbowire.Call(dctx, nc, id, req, []any{"ready"}, 2*time.Second)
	if err != nil {
		return err
	}
	if err := resp.Err(); err != nil {
		return err
	}
	if resp.Value != "ready" {
		return fmt.Errorf("echo came back with %v", resp.Value)
	}
	return nil
}
