package samples

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	dubbologger "github.com/dubbogo/gost/log/logger"
	"io"
	"net/http"
	"strings"
	"sync"

	"dubbo.apache.org/dubbo-go/v3/client"
	"dubbo.apache.org/dubbo-go/v3/graceful_shutdown"

	// Extensions the full client needs, registered by init. This is the
	// part of dubbo.apache.org/dubbo-go/v3/imports a direct-URL Triple
	// client uses (no registries, config centres, metrics, tracing...):
	//   - the "tri" protocol;
	//   - the "failfast" cluster (one attempt, errors returned as they are;
	//     the default "failover" would silently retry failed calls);
	//   - the "random" load balancer (default);
	//   - the "cshutdown" filter, the default consumer filter chain (a filter
	//     named in the chain but not registered is a nil filter that panics
	//     on the first call);
	//   - the "tag" router: without any router factory the static directory
	//     logs an ERROR with a stack trace on every refer; with no tag rules
	//     configured it routes to every invoker.
	_ "dubbo.apache.org/dubbo-go/v3/cluster/cluster/failfast"
	_ "dubbo.apache.org/dubbo-go/v3/cluster/loadbalance/random"
	_ "dubbo.apache.org/dubbo-go/v3/cluster/router/tag"
	_ "dubbo.apache.org/dubbo-go/v3/filter/graceful_shutdown"
	_ "dubbo.apache.org/dubbo-go/v3/protocol/triple"

	greetv1 "github.com/strait-mesh/strait/proto/demo/greet/v1"
)

// TripleClientGoroutines lists functions of the goroutines the dubbo-go
// client used by TripleGreet / TripleGreetStream keeps running after they
// return, as long as the endpoint they called keeps its connection open:
//
//   - the HTTP/2 read loop of the client connection. dubbo-go builds one
//     golang.org/x/net/http2.Transport per reference and never closes it
//     (its clientManager.close is a no-op and the client API exposes neither
//     the invoker nor the transport), so the connection lives until the
//     server closes it, e.g. when TripleProvider.Close or the gateway's
//     shutdown runs;
//   - the health watch dubbo-go's Triple invoker opens on
//     /grpc.health.v1.Health/Watch when it is created. It ends at once when
//     the endpoint does not serve that method (the sample provider does not),
//     and otherwise stays open like the connection.
//
// These goroutines are parked in network reads, so the top of their stacks
// is internal/poll.runtime_pollWait, not the functions below: use
// goleak.IgnoreAnyFunction (not IgnoreTopFunction) with them. To keep their
// number bounded, the helpers cache one client per address (see
// greetClientFor).
var TripleClientGoroutines = []string{
	"golang.org/x/net/http2.(*ClientConn).readLoop",
	"dubbo.apache.org/dubbo-go/v3/protocol/triple.(*TripleInvoker).startHealthWatch.func1",
}

// greetClients caches one dubbo-go GreetService client per address. A
// dubbo-go client cannot be closed: every reference adds an invoker to the
// process-wide Triple protocol and keeps its own HTTP/2 connection (and read
// goroutine) open until the server closes it. Building a client per call
// would therefore grow both with the number of calls; caching bounds them by
// the number of addresses. The HTTP/2 transport redials by itself when the
// connection has been closed, so a cached client survives server restarts.
var greetClients struct {
	sync.Mutex
	m map[string]greetv1.GreetService
}

// greetClientFor returns the cached GreetService client for addr, building it
// with newGreetClient on first use.
func greetClientFor(addr string) (greetv1.GreetService, error) {
	greetClients.Lock()
	defer greetClients.Unlock()
	if svc, ok := greetClients.m[addr]; ok {
		return svc, nil
	}
	svc, err := newGreetClient(addr)
	if err != nil {
		return nil, err
	}
	if greetClients.m == nil {
		greetClients.m = make(map[string]greetv1.GreetService)
	}
	greetClients.m[addr] = svc
	return svc, nil
}

// newGreetClient builds a dubbo-go Triple client of GreetService for a
// provider (or a gateway) at addr, using the full
// dubbo.apache.org/dubbo-go/v3/client API in direct-URL mode (no registry).
//
// The default Triple call protocol of that client is gRPC over h2c with prior
// knowledge: requests go out as HTTP/2 POST
// /strait.demo.greet.v1.GreetService/<Method> with Content-Type
// application/grpc+proto and tri-service-version 1.0.0. When the caller's
// context has no deadline, dubbo-go applies its default 3s request timeout.
func newGreetClient(addr string) (greetv1.GreetService, error) {
	// dubbo-go logs every reference at INFO on stdout; keep it to errors so that it
	// does not mix with the output of the programs that use this client.
	dubbologger.SetLoggerLevel("error")
	cli, err := client.NewClient(
		client.WithClientURL("tri://"+addr),
		client.WithClientClusterFailFast(),
		// Do not let the client install process-wide SIGINT/SIGTERM handling
		// that ends in os.Exit (dubbo-go's default graceful shutdown). Note
		// that dubbo-go applies the shutdown options of the first client or
		// server of the process only (sync.Once).
		client.WithClientShutdown(graceful_shutdown.WithoutInternalSignal()),
	)
	if err != nil {
		return nil, fmt.Errorf("triple client: %w", err)
	}
	svc, err := greetv1.NewGreetService(cli,
		client.WithVersion(TripleServiceVersion),
	)
	if err != nil {
		return nil, fmt.Errorf("triple client: %w", err)
	}
	return svc, nil
}

// TripleGreet calls GreetService.Greet on the Triple endpoint at addr
// (host:port) with a dubbo-go Triple client in gRPC-compatible mode
// (application/grpc+proto over h2c) and returns the greeting.
func TripleGreet(ctx context.Context, addr, name string) (string, error) {
	svc, err := greetClientFor(addr)
	if err != nil {
		return "", err
	}
	resp, err := svc.Greet(ctx, &greetv1.GreetRequest{Name: name})
	if err != nil {
		return "", fmt.Errorf("triple Greet: %w", err)
	}
	return resp.GetGreeting(), nil
}

// TripleGreetStream calls GreetService.GreetStream on the Triple endpoint at
// addr with a dubbo-go Triple client (gRPC over h2c): it sends one request
// per name, one at a time, reading the greeting answered to each, then
// closes the stream, and returns the greetings in order.
func TripleGreetStream(ctx context.Context, addr string, names []string) ([]string, error) {
	svc, err := greetClientFor(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := svc.GreetStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("triple GreetStream: %w", err)
	}
	defer stream.CloseResponse()

	greetings := make([]string, 0, len(names))
	for _, name := range names {
		if err := stream.Send(&greetv1.GreetRequest{Name: name}); err != nil {
			// The real cause is reported by Recv.
			if _, rerr := stream.Recv(); rerr != nil {
				err = rerr
			}
			return nil, fmt.Errorf("triple GreetStream send: %w", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("triple GreetStream recv: %w", err)
		}
		greetings = append(greetings, resp.GetGreeting())
	}
	if err := stream.CloseRequest(); err != nil {
		return nil, fmt.Errorf("triple GreetStream close: %w", err)
	}
	// The server ends the stream once it has seen our end of stream; drain
	// to get its status.
	if resp, err := stream.Recv(); err == nil {
		return nil, fmt.Errorf("triple GreetStream: unexpected extra response %q", resp.GetGreeting())
	} else if !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("triple GreetStream: %w", err)
	}
	return greetings, nil
}

// TripleGreetJSON calls GreetService.Greet in Triple's HTTP/1.1 JSON unary
// mode with a plain net/http client: POST baseURL +
// "/strait.demo.greet.v1.GreetService/Greet", Content-Type application/json,
// body {"name":...}; it decodes {"greeting":...}. baseURL is e.g.
// "http://127.0.0.1:20000". Any non-200 answer is an error carrying the status
// and the body.
func TripleGreetJSON(ctx context.Context, baseURL, name string) (string, error) {
	body, err := json.Marshal(struct {
		Name string `json:"name"`
	}{Name: name})
	if err != nil {
		return "", err
	}
	url := strings.TrimSuffix(baseURL, "/") + greetv1.GreetServiceGreetProcedure
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("triple Greet JSON: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")

	// A dedicated HTTP/1.1-only transport, closed on return, so that no
	// keep-alive connection (and its goroutines) outlives the call.
	tr := &http.Transport{Proxy: nil}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", fmt.Errorf("triple Greet JSON: %w", err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("triple Greet JSON: read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("triple Greet JSON: POST %s: status %s: %s", url, resp.Status, bytes.TrimSpace(respBody))
	}
	var out struct {
		Greeting string `json:"greeting"`
	}
	if err := json.Unmarshal(respBody, &out); err != nil {
		return "", fmt.Errorf("triple Greet JSON: decode %q: %w", respBody, err)
	}
	return out.Greeting, nil
}
