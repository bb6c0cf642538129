// Command dubbogo is a dubbo-go v3.3.2 program for the tests of package dubbowire: a
// provider that serves EchoService over the classic dubbo protocol (hessian2), or a
// consumer that calls EchoService. It is a module of its own because dubbo-go's dubbo
// protocol transport (dubbo-getty and its dependencies) is not in Strait's module graph,
// and the tests must not add it there; they build this program and run it as a child
// process.
//
//	dubbogo provider ADDR   serve EchoService on ADDR (127.0.0.1:port) with protocol dubbo
//	                        and no registry; print "ready" once ADDR accepts connections
//	                        (dubbo-go logs errors on stdout too);
//	                        exit when stdin reaches EOF (the test closed it or died)
//	dubbogo consumer ADDR   call EchoService at ADDR (dubbo://ADDR, no registry): Echo,
//	                        EchoBytes (512 KiB: dubbo-go's default limit is 1,024,000
//	                        bytes), EchoUser, Fail, and Echo of a service that does not
//	                        exist; print "result " and a JSON object with the results
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"dubbo.apache.org/dubbo-go/v3/client"
	"dubbo.apache.org/dubbo-go/v3/global"
	_ "dubbo.apache.org/dubbo-go/v3/imports"
	"dubbo.apache.org/dubbo-go/v3/protocol"
	"dubbo.apache.org/dubbo-go/v3/server"
	hessian "github.com/apache/dubbo-go-hessian2"
	"github.com/dubbogo/gost/log/logger"
)

// The service as the tests know it.
const (
	Interface = "org.apache.dubbo.strait.EchoService"
	Version   = "1.0.0"
	Group     = "strait"
	App       = "dubbowire-test"
)

// User is a registered hessian2 POJO.
type User struct {
	ID   string
	Name string
	Age  int32
}

// JavaClassName is the Java class User stands for.
func (*User) JavaClassName() string { return "org.apache.dubbo.strait.User" }

// EchoService answers every call with its argument.
type EchoService struct{}

// Reference is the name dubbo-go keeps the service under.
func (*EchoService) Reference() string { return "EchoService" }

// Echo returns s.
func (*EchoService) Echo(_ context.Context, s string) (string, error) { return s, nil }

// EchoBytes returns b.
func (*EchoService) EchoBytes(_ context.Context, b []byte) ([]byte, error) { return b, nil }

// EchoUser returns u with its age plus one.
func (*EchoService) EchoUser(_ context.Context, u *User) (*User, error) {
	if u == nil {
		return nil, nil
	}
	return &User{ID: u.ID, Name: u.Name, Age: u.Age + 1}, nil
}

// Fail always fails with a message that names s.
func (*EchoService) Fail(_ context.Context, s string) (string, error) {
	return "", errors.New("fail: " + s)
}

func main() {
	hessian.RegisterPOJO(&User{})
	logger.SetLoggerLevel("error")
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: dubbogo provider|consumer 127.0.0.1:port")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "provider":
		err = provide(os.Args[2])
	case "consumer":
		err = consume(os.Args[2])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dubbogo:", err)
		os.Exit(1)
	}
}

func provide(addr string) error {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return err
	}
	app := global.DefaultApplicationConfig()
	app.Name = App
	// Remote metadata: no MetadataService export, which dubbo-go would bind on the same
	// port under another address (all interfaces) and fail with "address already in use".
	app.MetadataType = "remote"
	srv, err := server.NewServer(
		server.SetServerApplication(app),
		server.WithServerProtocol(protocol.WithDubbo(), protocol.WithIp(host), protocol.WithPort(port)),
	)
	if err != nil {
		return err
	}
	if err := srv.Register(&EchoService{}, nil,
		server.WithInterface(Interface), server.WithVersion(Version), server.WithGroup(Group),
		server.WithSerialization("hessian2")); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	// Serve does not say when it listens: dial until it accepts, for at most 30 s.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-served:
			return fmt.Errorf("serve: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections after 30 s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // a bounded poll on a child process: no event to wait on
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the test closes stdin or goes away
	return nil
}

// Result is what consumer prints.
type Result struct {
	Echo         string `json:"echo"`
	EchoErr      string `json:"echoErr,omitempty"`
	BytesOK      bool   `json:"bytesOK"`
	BytesErr     string `json:"bytesErr,omitempty"`
	FailErr      string `json:"failErr"`
	UserAge      int32  `json:"userAge"`
	UserErr      string `json:"userErr,omitempty"`
	UnknownErr   string `json:"unknownErr"`
	UnknownValue string `json:"unknownValue,omitempty"`
}

func consume(addr string) error {
	cli, err := client.NewClient(client.WithClientProtocolDubbo(), client.WithClientURL("dubbo://"+addr))
	if err != nil {
		return err
	}
	conn, err := cli.Dial(Interface, client.WithVersion(Version), client.WithGroup(Group),
		client.WithRequestTimeout(10*time.Second), client.WithRetries(0))
	if err != nil {
		return err
	}
	ctx := context.Background()
	var r Result
	if err := conn.CallUnary(ctx, []any{"hello"}, &r.Echo, "Echo"); err != nil {
		r.EchoErr = err.Error()
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<15) // 512 KiB
	var back []byte
	if err := conn.CallUnary(ctx, []any{big}, &back, "EchoBytes"); err != nil {
		r.BytesErr = err.Error()
	}
	r.BytesOK = bytes.Equal(back, big)
	var u User
	if err := conn.CallUnary(ctx, []any{&User{ID: "u1", Name: "n", Age: 41}}, &u, "EchoUser"); err != nil {
		r.UserErr = err.Error()
	}
	r.UserAge = u.Age
	var s string
	if err := conn.CallUnary(ctx, []any{"boom"}, &s, "Fail"); err != nil {
		r.FailErr = err.Error()
	}
	other, err := cli.Dial(Interface+"Missing", client.WithVersion(Version), client.WithGroup(Group),
		client.WithRequestTimeout(10*time.Second), client.WithRetries(0))
	if err != nil {
		return err
	}
	if err := other.CallUnary(ctx, []any{"x"}, &r.UnknownValue, "Echo"); err != nil {
		r.UnknownErr = err.Error()
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	fmt.Printf("result %s\n", b) // dubbo-go logs errors to stdout too
	return nil
}
