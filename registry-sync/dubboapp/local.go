package dubboapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"

	tripleapi "dubbo.apache.org/dubbo-go/v3/metadata/triple_api/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Instance metadata keys of an instance whose MetadataInfo stays with the provider
// (storage type "local"): where its MetadataService listens, and which version it is.
const (
	MetaServiceParams = "dubbo.metadata-service.url-params" // {"protocol":"tri","port":"…",…}
	MetaServiceV      = "meta-v"                            // "2.0.0": MetadataServiceV2 (Triple, protobuf)
	StorageLocal      = "local"
)

// ErrUnsupportedMetadataService is wrapped by FetchLocal's error when the instance's
// MetadataService is not one Strait calls: only MetadataServiceV2 over Triple (dubbo-go
// 3.3, Java Dubbo 3.3 with meta-v 2.0.0) is, not the hessian2 MetadataService of older
// providers.
var ErrUnsupportedMetadataService = errors.New("metadata service is not MetadataServiceV2 over Triple")

// FetchLocal asks an application instance's own MetadataService for the MetadataInfo of
// revision, as a Dubbo consumer does for instances with local metadata storage: a unary
// Triple (gRPC-compatible) call of org.apache.dubbo.metadata.MetadataServiceV2/GetMetadataInfo
// at the instance's host and the port of its dubbo.metadata-service.url-params, service
// group app and version 2.0.0. The call ends with ctx.
func FetchLocal(ctx context.Context, app, host string, md map[string]string, revision string) (*MetadataInfo, error) {
	var ps map[string]string
	if err := json.Unmarshal([]byte(md[MetaServiceParams]), &ps); err != nil {
		return nil, fmt.Errorf("metadata service of %s at %s: %s: %w", app, host, MetaServiceParams, err)
	}
	if ps["protocol"] != "tri" || md[MetaServiceV] != "2.0.0" {
		return nil, fmt.Errorf("metadata service of %s at %s (protocol %q, meta-v %q): %w", app, host, ps["protocol"], md[MetaServiceV], ErrUnsupportedMetadataService)
	}
	port, err := strconv.Atoi(ps["port"])
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("metadata service of %s at %s: port %q", app, host, ps["port"])
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("metadata service %s: %w", addr, err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "tri-service-group", app, "tri-service-version", "2.0.0")
	var out tripleapi.MetadataInfoV2
	if err := conn.Invoke(ctx, "/org.apache.dubbo.metadata.MetadataServiceV2/GetMetadataInfo",
		&tripleapi.MetadataRequest{Revision: revision}, &out); err != nil {
		return nil, fmt.Errorf("metadata service %s: GetMetadataInfo %s: %w", addr, revision, err)
	}
	mi := &MetadataInfo{App: out.App, Revision: revision, Tag: out.Tag, Services: map[string]*ServiceInfo{}}
	for k, s := range out.Services {
		if s == nil {
			continue
		}
		mi.Services[k] = &ServiceInfo{
			Name: s.Name, Group: s.Group, Version: s.Version, Protocol: s.Protocol,
			Port: int(s.Port), Path: s.Path, Params: s.Params,
		}
	}
	return mi, nil
}
