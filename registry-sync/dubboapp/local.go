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
	// MetaServiceV is the MetadataService version: "2.0.0" is MetadataServiceV2 (Triple,
	// protobuf), "1.0.0" (or none, before Dubbo 3.3) the hessian2 MetadataService.
	MetaServiceV = "meta-v"
	StorageLocal = "local"
)

// ErrUnsupportedMetadataService is wrapped by FetchLocal's error when the instance's
// MetadataService is not one Strait calls: MetadataServiceV2 over Triple and the
// MetadataService over the dubbo protocol (hessian2) are; MetadataService (V1) over
// Triple, which Java Dubbo exports when protobuf is not on its class path, is not.
var ErrUnsupportedMetadataService = errors.New("metadata service is neither MetadataServiceV2 over Triple nor MetadataService over dubbo")

// FetchLocal asks an application instance's own MetadataService for the MetadataInfo of
// revision, as a Dubbo consumer does for instances with local metadata storage. Where it
// listens is the instance's host and the port of its dubbo.metadata-service.url-params;
// what it speaks, that document's protocol and the instance's meta-v:
//
//   - protocol "tri", meta-v "2.0.0" (dubbo-go 3.3 with metadata-service protocol "tri",
//     Java Dubbo 3.3 serving Triple): a unary Triple (gRPC-compatible) call of
//     org.apache.dubbo.metadata.MetadataServiceV2/GetMetadataInfo, service group app,
//     version 2.0.0;
//   - protocol "dubbo" (Java Dubbo serving only dubbo://, dubbo-go's default metadata-service
//     protocol): a hessian2 call of org.apache.dubbo.metadata.MetadataService
//     getMetadataInfo(String), group app, the version of url-params (1.0.0), see fetchDubbo;
//   - anything else: an error wrapping ErrUnsupportedMetadataService.
//
// The dial and the call end with ctx.
func FetchLocal(ctx context.Context, app, host string, md map[string]string, revision string) (*MetadataInfo, error) {
	var ps map[string]string
	if err := json.Unmarshal([]byte(md[MetaServiceParams]), &ps); err != nil {
		return nil, fmt.Errorf("metadata service of %s at %s: %s: %w", app, host, MetaServiceParams, err)
	}
	dubbo := ps["protocol"] == "dubbo"
	if !dubbo && (ps["protocol"] != "tri" || md[MetaServiceV] != "2.0.0") {
		return nil, fmt.Errorf("metadata service of %s at %s (protocol %q, meta-v %q): %w", app, host, ps["protocol"], md[MetaServiceV], ErrUnsupportedMetadataService)
	}
	port, err := strconv.Atoi(ps["port"])
	if err != nil || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("metadata service of %s at %s: port %q", app, host, ps["port"])
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	if dubbo {
		return fetchDubbo(ctx, app, addr, ps["version"], revision)
	}
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
