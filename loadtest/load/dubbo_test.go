package main

import (
	"context"
	"encoding/binary"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/strait-mesh/strait/internal/dubbowire"
	"github.com/strait-mesh/strait/test/dubbogo"
)

func TestMain(m *testing.M) {
	code := m.Run()
	dubbogo.Remove()
	os.Exit(code)
}

// TestDubboEchoThroughDubbogo: the dubbo protocol's client against the real dubbo-go
// provider of test/dubbogo: concurrent calls on two multiplexed connections all come back
// right, at 1 KiB and 64 KiB, and every answer is recognised by its bytes (no decode).
func TestDubboEchoThroughDubbogo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a dubbo-go process")
	}
	addr := startDubbogo(t)
	for _, payload := range []int{1024, 64 << 10} {
		d, err := newDubboClient(addr, payload, 2, 8)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				for range 40 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := d.call(ctx)
					cancel()
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("payload %d: %v", payload, err)
		}
		for i, c := range d.conns {
			if n := c.slow.Load(); n != 0 {
				t.Errorf("payload %d: connection %d decoded %d answers instead of matching their bytes", payload, i, n)
			}
		}
		d.close()
	}
}

// TestDubboCheck: what the client accepts as Echo's answer.
func TestDubboCheck(t *testing.T) {
	c := &dubboConn{str: "hello"}
	c.want = encode(t, "hello")
	ok := func(flag byte, value []byte, rest ...byte) []byte {
		body := append(append([]byte{0x90 + flag}, value...), rest...)
		return frame(dubbowire.StatusOK, body)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		err   string // "" for accepted
	}{
		{"value", ok(byte(dubbowire.ResultValue), c.want), ""},
		{"value and attachments", ok(byte(dubbowire.ResultValueWithAttachments), c.want, encode(t, map[string]string{"dubbo": "2.0.2"})...), ""},
		{"another string", ok(byte(dubbowire.ResultValue), encode(t, "hellO")), "wrong answer"},
		{"a longer string", ok(byte(dubbowire.ResultValue), encode(t, "hello!")), "wrong answer"},
		{"not a string", ok(byte(dubbowire.ResultValue), encode(t, int32(5))), "wrong answer"},
		{"null", ok(byte(dubbowire.ResultNullValue), nil), "wrong answer"},
		{"an error status", dubbowire.AppendErrorResponse(nil, 1, dubbowire.StatusServiceError, "boom"), "SERVICE_ERROR"},
		{"a truncated body", ok(byte(dubbowire.ResultValue), c.want)[:dubbowire.HeaderLen+3], "truncated"},
	} {
		h, err := dubbowire.ParseHeader(tc.frame)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = c.check(tc.frame, h)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.err)
		}
	}
}

func encode(t *testing.T, v any) []byte {
	t.Helper()
	enc := hessian.NewEncoder()
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return enc.Buffer()
}

// frame is a hessian2 response frame with ID 1.
func frame(st dubbowire.Status, body []byte) []byte {
	f := []byte{0xda, 0xbb, byte(dubbowire.SerializationHessian2), byte(st), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(f[12:], uint32(len(body)))
	return append(f, body...)
}

// startDubbogo runs the dubbo-go provider until the test ends and returns its address.
func startDubbogo(t *testing.T) string { return dubbogo.Provider(t) }
