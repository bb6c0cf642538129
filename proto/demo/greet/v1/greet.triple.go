// Dubbo Triple binding for strait.demo.greet.v1.GreetService.
//
// This file is HAND-WRITTEN: dubbo-go's code generator (protoc-gen-go-triple)
// is not available in this build. It follows the shape of the generated code
// shipped with dubbo-go v3.3.2, namely
// protocol/triple/health/triple_health/health.triple.go (unary and streaming
// client/server wrappers) and
// protocol/triple/reflection/triple_reflection/reflection.triple.go (bidi
// streaming). Differences from generated code: SetConsumerService /
// SetProviderService are omitted, because they would pull in the root
// dubbo.apache.org/dubbo-go/v3 package and its global config machinery, which
// nothing here needs; and the service info uses common.ServiceInfo /
// common.MethodInfo, of which server.ServiceInfo / server.MethodInfo are
// (deprecated) aliases.
//
// Source: demo/greet/v1/greet.proto

package greetv1

import (
	"context"
	"net/http"

	"dubbo.apache.org/dubbo-go/v3/client"
	"dubbo.apache.org/dubbo-go/v3/common"
	"dubbo.apache.org/dubbo-go/v3/common/constant"
	"dubbo.apache.org/dubbo-go/v3/protocol/triple/triple_protocol"
	"dubbo.apache.org/dubbo-go/v3/server"
)

// This is a compile-time assertion to ensure that this file and the Triple
// package are compatible.
const _ = triple_protocol.IsAtLeastVersion0_1_0

const (
	// GreetServiceName is the fully-qualified name of the GreetService service.
	GreetServiceName = "strait.demo.greet.v1.GreetService"
)

// These constants are the fully-qualified names of the RPCs defined in this
// package. They're exposed at runtime as procedure and as the final two
// segments of the HTTP route.
const (
	// GreetServiceGreetProcedure is the fully-qualified name of the
	// GreetService's Greet RPC.
	GreetServiceGreetProcedure = "/strait.demo.greet.v1.GreetService/Greet"
	// GreetServiceGreetStreamProcedure is the fully-qualified name of the
	// GreetService's GreetStream RPC.
	GreetServiceGreetStreamProcedure = "/strait.demo.greet.v1.GreetService/GreetStream"
)

var (
	_ GreetService = (*GreetServiceImpl)(nil)

	_ GreetService_GreetStreamClient = (*GreetServiceGreetStreamClient)(nil)

	_ GreetService_GreetStreamServer = (*GreetServiceGreetStreamServer)(nil)
)

// GreetService is a client for the strait.demo.greet.v1.GreetService service.
type GreetService interface {
	Greet(ctx context.Context, req *GreetRequest, opts ...client.CallOption) (*GreetResponse, error)
	GreetStream(ctx context.Context, opts ...client.CallOption) (GreetService_GreetStreamClient, error)
}

// NewGreetService constructs a client for the
// strait.demo.greet.v1.GreetService service.
func NewGreetService(cli *client.Client, opts ...client.ReferenceOption) (GreetService, error) {
	conn, err := cli.DialWithInfo(GreetServiceName, &GreetService_ClientInfo, opts...)
	if err != nil {
		return nil, err
	}
	return &GreetServiceImpl{
		conn: conn,
	}, nil
}

// GreetServiceImpl implements GreetService.
type GreetServiceImpl struct {
	conn *client.Connection
}

func (c *GreetServiceImpl) Greet(ctx context.Context, req *GreetRequest, opts ...client.CallOption) (*GreetResponse, error) {
	resp := new(GreetResponse)
	if err := c.conn.CallUnary(ctx, []any{req}, resp, "Greet", opts...); err != nil {
		return nil, err
	}
	return resp, nil
}

func (c *GreetServiceImpl) GreetStream(ctx context.Context, opts ...client.CallOption) (GreetService_GreetStreamClient, error) {
	stream, err := c.conn.CallBidiStream(ctx, "GreetStream", opts...)
	if err != nil {
		return nil, err
	}
	rawStream := stream.(*triple_protocol.BidiStreamForClient)
	return &GreetServiceGreetStreamClient{rawStream}, nil
}

type GreetService_GreetStreamClient interface {
	Spec() triple_protocol.Spec
	Peer() triple_protocol.Peer
	Send(*GreetRequest) error
	RequestHeader() http.Header
	CloseRequest() error
	Recv() (*GreetResponse, error)
	ResponseHeader() http.Header
	ResponseTrailer() http.Header
	CloseResponse() error
}

type GreetServiceGreetStreamClient struct {
	*triple_protocol.BidiStreamForClient
}

func (cli *GreetServiceGreetStreamClient) Send(msg *GreetRequest) error {
	return cli.BidiStreamForClient.Send(msg)
}

func (cli *GreetServiceGreetStreamClient) Recv() (*GreetResponse, error) {
	msg := new(GreetResponse)
	if err := cli.BidiStreamForClient.Receive(msg); err != nil {
		return nil, err
	}
	return msg, nil
}

var GreetService_ClientInfo = client.ClientInfo{
	InterfaceName: GreetServiceName,
	MethodNames:   []string{"Greet", "GreetStream"},
	ConnectionInjectFunc: func(dubboCliRaw any, conn *client.Connection) {
		dubboCli := dubboCliRaw.(*GreetServiceImpl)
		dubboCli.conn = conn
	},
}

// GreetServiceHandler is an implementation of the
// strait.demo.greet.v1.GreetService service.
type GreetServiceHandler interface {
	Greet(context.Context, *GreetRequest) (*GreetResponse, error)
	GreetStream(context.Context, GreetService_GreetStreamServer) error
}

// RegisterGreetServiceHandler registers hdlr with a dubbo-go server.
func RegisterGreetServiceHandler(srv *server.Server, hdlr GreetServiceHandler, opts ...server.ServiceOption) error {
	return srv.Register(hdlr, &GreetService_ServiceInfo, opts...)
}

type GreetService_GreetStreamServer interface {
	Send(*GreetResponse) error
	Recv() (*GreetRequest, error)
	Spec() triple_protocol.Spec
	Peer() triple_protocol.Peer
	RequestHeader() http.Header
	ResponseHeader() http.Header
	ResponseTrailer() http.Header
	Conn() triple_protocol.StreamingHandlerConn
}

type GreetServiceGreetStreamServer struct {
	*triple_protocol.BidiStream
}

func (srv *GreetServiceGreetStreamServer) Send(msg *GreetResponse) error {
	return srv.BidiStream.Send(msg)
}

func (srv *GreetServiceGreetStreamServer) Recv() (*GreetRequest, error) {
	msg := new(GreetRequest)
	if err := srv.BidiStream.Receive(msg); err != nil {
		return nil, err
	}
	return msg, nil
}

var GreetService_ServiceInfo = common.ServiceInfo{
	InterfaceName: GreetServiceName,
	ServiceType:   (*GreetServiceHandler)(nil),
	Methods: []common.MethodInfo{
		{
			Name: "Greet",
			Type: constant.CallUnary,
			ReqInitFunc: func() any {
				return new(GreetRequest)
			},
			MethodFunc: func(ctx context.Context, args []any, handler any) (any, error) {
				req := args[0].(*GreetRequest)
				res, err := handler.(GreetServiceHandler).Greet(ctx, req)
				if err != nil {
					return nil, err
				}
				return triple_protocol.NewResponse(res), nil
			},
		},
		{
			Name: "GreetStream",
			Type: constant.CallBidiStream,
			StreamInitFunc: func(baseStream any) any {
				return &GreetServiceGreetStreamServer{baseStream.(*triple_protocol.BidiStream)}
			},
			MethodFunc: func(ctx context.Context, args []any, handler any) (any, error) {
				stream := args[0].(GreetService_GreetStreamServer)
				if err := handler.(GreetServiceHandler).GreetStream(ctx, stream); err != nil {
					return nil, err
				}
				return nil, nil
			},
		},
	},
}
