package dubbopool_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/dubbopool"
	"github.com/strait-mesh/strait/internal/dubbowire"
	"github.com/strait-mesh/strait/internal/proxy"
	"github.com/strait-mesh/strait/test/dubbogo"
	"github.com/strait-mesh/strait/test/ports"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dubbogo.Remove()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// provider runs the dubbo-go provider until the test ends.
func provider(t *testing.T) string { return dubbogo.Provider(t) }

func echo(t testing.TB, id uint64, s string, twoWay bool) []byte {
	t.Helper()
	f, err := dubbowire.AppendRequest(nil, id, dubbowire.Request{
		DubboVersion: "2.0.2", Path: dubbogo.Interface, Version: dubbogo.Version, Method: "Echo", ParamTypes: "Ljava/lang/String;",
		Attachments: map[string]string{"interface": dubbogo.Interface, "version": dubbogo.Version, "group": dubbogo.Group},
	}, []any{s}, twoWay)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestConcurrentCallersShareOneConnection: callers whose requests carry the same IDs (as
// requests from different consumers do) each get their own answer, with their own ID,
// over the one connection the pool keeps to the provider.
func TestConcurrentCallersShareOneConnection(t *testing.T) {
	addr := provider(t)
	p := dubbopool.New(dubbopool.Options{})
	defer p.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				want := fmt.Sprintf("caller %d call %d", c, i)
				resp, err := p.RoundTrip(context.Background(), addr, echo(t, 7, want, true)) // every caller uses ID 7
				if err != nil {
					errs <- err
					return
				}
				r, err := dubbowire.ParseResponse(resp)
				if err != nil || r.Header.ID() != 7 || r.Value != want {
					errs <- fmt.Errorf("answer to %q: %+v, %v", want, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestOnewayAndUnreachable: a oneway request returns once written, with no answer; a
// provider that cannot be reached is a *tunnel.DialError (the request was not sent).
func TestOnewayAndUnreachable(t *testing.T) {
	addr := provider(t)
	p := dubbopool.New(dubbopool.Options{DialTimeout: time.Second})
	defer p.Close()
	resp, err := p.RoundTrip(context.Background(), addr, echo(t, 1, "fire and forget", false))
	if err != nil || resp != nil {
		t.Fatalf("oneway: %v, %v", resp, err)
	}
	// The connection still serves two-way calls after it.
	if _, err := p.RoundTrip(context.Background(), addr, echo(t, 2, "after", true)); err != nil {
		t.Fatal(err)
	}
	r := ports.Reserve(t, 1)[0]
	closed := r.Addr()
	r.Release()
	_, err = p.RoundTrip(context.Background(), closed, echo(t, 3, "nobody", true))
	if !proxy.NotSent(err) {
		t.Fatalf("unreachable provider: %v, want a dial error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.RoundTrip(ctx, addr, echo(t, 4, "cancelled", true)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	p.Close()
	if _, err := p.RoundTrip(context.Background(), addr, echo(t, 5, "closed", true)); !errors.Is(err, dubbopool.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestIdleConnectionCloses: a connection that carried nothing for Idle is closed, and the
// next call opens another.
func TestIdleConnectionCloses(t *testing.T) {
	addr := provider(t)
	p := dubbopool.New(dubbopool.Options{Idle: 200 * time.Millisecond})
	defer p.Close()
	for i := range 2 {
		if _, err := p.RoundTrip(context.Background(), addr, echo(t, uint64(i), "x", true)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for p.Conns() > 0 {
			if time.Now().After(deadline) {
				t.Fatal("an idle connection stays open")
			}
			time.Sleep(20 * time.Millisecond) // a bounded poll on the pool's own timer
		}
	}
}
