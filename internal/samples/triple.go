package samples

// Design note: why the provider is not built on dubbo-go's server package.
//
// dubbo-go's full server API (server.NewServer + RegisterGreetServiceHandler
// + Serve/ServeContext, v3.3.2) is process-global: services are exported
// through the Triple protocol singleton (protocol/triple.GetProtocol), which
// keys listeners by the configured "host:port", so it cannot be handed a
// listener, "127.0.0.1:0" cannot be used and the bound port cannot be
// learned; Serve also exports internal services (metadata, health,
// reflection) and flips the k8s probe state; and it only returns through
// graceful_shutdown.Shutdown, which runs once per process - afterwards no
// dubbo-go server can start again ("server cannot be started after graceful
// shutdown completed"), while tests start and stop several providers.
// Underneath, triple_protocol.Server serves h2c through
// golang.org/x/net/http2/h2c, which hijacks prior-knowledge connections, so
// http.Server.Close/Shutdown do not close them and a stopped server can leave
// connection goroutines behind.
//
// So the provider uses dubbo-go's Triple *handlers* (triple_protocol
// NewUnaryHandler / NewBidiStreamHandler: the handlers dubbo-go's server
// mounts, implementing the Triple, gRPC and gRPC-Web wire protocols with the
// proto/JSON codecs), built from the GreetService_ServiceInfo of the
// hand-written binding the way protocol/triple.Server wires a service. They
// are mounted on an http.ServeMux served by our own net/http server, which
// speaks HTTP/1.1 and h2c (prior knowledge) natively through
// http.Server.Protocols (Go >= 1.24), so connections stay tracked. The
// lifecycle is fully ours: StartTripleProvider binds the listener, Close shuts
// the server down and waits for its goroutines, and no global state is
// touched. Unlike dubbo-go's own route mux, http.ServeMux matches paths case
// sensitively, and grpc.health.v1.Health is not served.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"dubbo.apache.org/dubbo-go/v3/common"
	"dubbo.apache.org/dubbo-go/v3/common/constant"
	"dubbo.apache.org/dubbo-go/v3/protocol/triple/triple_protocol"

	greetv1 "github.com/strait-mesh/strait/proto/demo/greet/v1"
)

const (
	// TripleServiceVersion is the Dubbo service version the sample provider
	// serves. Calls may carry it in the tri-service-version header, or carry
	// no version at all (plain gRPC clients, curl): both are accepted.
	TripleServiceVersion = "1.0.0"
	// TripleServiceGroup is the Dubbo service group the sample provider
	// serves: none. A call with a non-empty tri-service-group header is
	// answered with Unimplemented.
	TripleServiceGroup = ""

	// tripleServiceVersionHeader is the header Triple clients use to select
	// the service version (triple_protocol keeps its constant unexported).
	tripleServiceVersionHeader = "tri-service-version"
)

// TripleProvider is a running Dubbo Triple provider of
// strait.demo.greet.v1.GreetService (see greeter for the behaviour).
type TripleProvider struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{} // closed when Serve has returned

	// conns counts connections whose serving goroutine is running (from
	// http.StateNew to StateClosed/StateHijacked); handlers counts running
	// handler calls (HTTP/2 runs each stream's handler on its own goroutine,
	// which may outlive the connection's). Close waits for both. handlers is
	// not a WaitGroup because a handler goroutine spawned just before its
	// connection closed may only start counting after Close began waiting.
	conns    sync.WaitGroup
	handlers activeCounter

	closeOnce sync.Once
	closeErr  error
}

// StartTripleProvider starts a Triple provider of GreetService listening on
// addr (for example "127.0.0.1:0"). It speaks, on the same port, h2c with
// prior knowledge (gRPC application/grpc+proto and Triple unary/streaming)
// and HTTP/1.1 (Triple unary, e.g. POST /strait.demo.greet.v1.GreetService/Greet
// with Content-Type application/json). Stop it with Close.
func StartTripleProvider(addr string) (*TripleProvider, error) {
	return startTripleProvider(addr, nil)
}

// startTripleProvider is StartTripleProvider with an optional observer called
// with every incoming request before it is dispatched (used by the tests to
// check what goes over the wire).
func startTripleProvider(addr string, observe func(*http.Request)) (*TripleProvider, error) {
	mux, err := newGreetServiceMux(greeter{})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("triple provider: listen %s: %w", addr, err)
	}

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	// h2c with prior knowledge, handled by net/http itself (no h2c.NewHandler
	// hijacking), so Shutdown/Close also close HTTP/2 connections.
	protocols.SetUnencryptedHTTP2(true)

	p := &TripleProvider{ln: ln, done: make(chan struct{})}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.handlers.add(1)
			defer p.handlers.add(-1)
			if observe != nil {
				observe(r)
			}
			mux.ServeHTTP(w, r)
		}),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				p.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				p.conns.Done()
			}
		},
	}
	go func() {
		defer close(p.done)
		// Serve always returns a non-nil error; after Shutdown/Close it is
		// http.ErrServerClosed, anything else means the listener broke and
		// subsequent calls fail, which is what callers will observe.
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// Addr returns the host:port the provider is actually bound to.
func (p *TripleProvider) Addr() string {
	return p.ln.Addr().String()
}

// Close stops the provider. It first shuts down gracefully (in-flight calls
// may finish, HTTP/2 clients get a GOAWAY) until ctx is done, then closes
// every remaining connection, and returns once the accept loop, every
// connection's serving goroutine and every handler call have returned. The
// error is ctx's if the graceful phase was cut short (e.g. by a GreetStream
// the client keeps open). It is safe to call more than once; later calls
// return the first result.
func (p *TripleProvider) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		err := p.srv.Shutdown(ctx)
		if err != nil {
			// Graceful shutdown did not complete in time: force-close
			// what is left. Handlers blocked on the network then fail.
			err = errors.Join(err, p.srv.Close())
		}
		<-p.done // no more accepted connections
		// Every connection is closed; wait for their goroutines, which
		// are the only ones starting handlers, then for the handlers.
		p.conns.Wait()
		p.handlers.wait()
		p.closeErr = err
	})
	return p.closeErr
}

// activeCounter counts running operations; wait blocks until none is.
type activeCounter struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    int
}

func (c *activeCounter) add(delta int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += delta
	if c.n == 0 && c.cond != nil {
		c.cond.Broadcast()
	}
}

func (c *activeCounter) wait() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cond == nil {
		c.cond = sync.NewCond(&c.mu)
	}
	for c.n > 0 {
		c.cond.Wait()
	}
}

// newGreetServiceMux mounts one Triple handler per GreetService method, built
// from greetv1.GreetService_ServiceInfo the way dubbo-go's
// protocol/triple.Server does it.
func newGreetServiceMux(impl greetv1.GreetServiceHandler) (*http.ServeMux, error) {
	info := &greetv1.GreetService_ServiceInfo
	mux := http.NewServeMux()
	for _, m := range info.Methods {
		procedure := "/" + info.InterfaceName + "/" + m.Name
		newHandler := methodHandlerFactory(procedure, m, impl)
		if newHandler == nil {
			return nil, fmt.Errorf("triple provider: %s: unsupported call type %q", procedure, m.Type)
		}
		mux.Handle(procedure, versionRouter{
			// Implementation registered for group "" / version "1.0.0".
			versioned: newHandler(
				triple_protocol.WithGroup(TripleServiceGroup),
				triple_protocol.WithVersion(TripleServiceVersion),
			),
			// Same implementation for calls carrying no version header.
			unversioned: newHandler(triple_protocol.WithGroup(TripleServiceGroup)),
		})
	}
	return mux, nil
}

// methodHandlerFactory returns a constructor of the Triple handler of one
// method. The returned constructor takes the group/version options.
func methodHandlerFactory(procedure string, m common.MethodInfo, impl greetv1.GreetServiceHandler) func(...triple_protocol.HandlerOption) http.Handler {
	switch m.Type {
	case constant.CallUnary:
		unary := func(ctx context.Context, req *triple_protocol.Request) (*triple_protocol.Response, error) {
			res, err := m.MethodFunc(ctx, []any{req.Msg}, impl)
			if err != nil {
				return nil, err
			}
			resp, ok := res.(*triple_protocol.Response)
			if !ok {
				return nil, triple_protocol.NewError(triple_protocol.CodeInternal,
					fmt.Errorf("%s returned %T, want *triple_protocol.Response", procedure, res))
			}
			return resp, nil
		}
		return func(opts ...triple_protocol.HandlerOption) http.Handler {
			return triple_protocol.NewUnaryHandler(procedure, m.ReqInitFunc, unary, opts...)
		}
	case constant.CallBidiStream:
		bidi := func(ctx context.Context, stream *triple_protocol.BidiStream) error {
			_, err := m.MethodFunc(ctx, []any{m.StreamInitFunc(stream)}, impl)
			return err
		}
		return func(opts ...triple_protocol.HandlerOption) http.Handler {
			return triple_protocol.NewBidiStreamHandler(procedure, bidi, opts...)
		}
	default:
		return nil
	}
}

// versionRouter sends calls without a tri-service-version header to the
// handler registered without version, and every other call to the handler
// registered with TripleServiceVersion (which answers Unimplemented for any
// other version, as dubbo-go does). A triple_protocol.Handler can hold
// several group/version implementations, but only triple_protocol.Server can
// add them (the method is unexported), hence two handlers and this router.
type versionRouter struct {
	versioned, unversioned http.Handler
}

func (v versionRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(tripleServiceVersionHeader) == "" {
		v.unversioned.ServeHTTP(w, r)
		return
	}
	v.versioned.ServeHTTP(w, r)
}

// greeter implements GreetService.
type greeter struct{}

var _ greetv1.GreetServiceHandler = greeter{}

func (greeter) Greet(_ context.Context, req *greetv1.GreetRequest) (*greetv1.GreetResponse, error) {
	return &greetv1.GreetResponse{Greeting: greeting(req.GetName())}, nil
}

func (greeter) GreetStream(_ context.Context, stream greetv1.GreetService_GreetStreamServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&greetv1.GreetResponse{Greeting: greeting(req.GetName())}); err != nil {
			return err
		}
	}
}

func greeting(name string) string { return "hello " + name }
