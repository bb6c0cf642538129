// Package dubbowire reads and writes the frames of the classic Apache Dubbo protocol
// (dubbo://): a 16-byte header (magic 0xdabb, flags, status, request ID, body length)
// followed by a body, here in hessian2, the serialization every Dubbo implementation
// speaks (id 2).
//
// It is the codec of Strait's Dubbo gateways, which relay calls without re-encoding them:
// the egress reads a consumer's frames, routes each call by its service, version, group
// and method, and sends the frame's bytes on; the ingress writes them to a pooled provider
// connection with the request ID rewritten in place (SetID) and does the same with the
// answer. So the package decodes only what routing needs:
//
//   - the header (ParseHeader, ReadFrame), for every frame;
//   - of a request (ParseRequest), the five strings at the front of the body (Dubbo
//     version, service path, service version, method, parameter type descriptor) and the
//     string-valued attachments at its end (group, interface, timeout, ...). The
//     arguments between them are skipped, not decoded: a validating hessian2 scanner
//     walks over them without building values, so a call costs the same whatever its
//     arguments are (a 1 MiB byte[] or an unknown Java class) and ParseRequest does not
//     depend on which Go types are registered with hessian2. The scanner also bounds what
//     a peer can make a decoder do: every length must fit in the bytes that remain and
//     nesting is limited to MaxDepth. dubbo-go-hessian2 checks neither: the 6-byte value
//     58 49 7f ff ff ff (a list of 2^31-1 items) makes it allocate 32 GiB, and a few
//     million nested lists overflow its stack, both fatal to the whole process;
//   - of a response, only the header: the gateway forwards answers as bytes.
//
// What a gateway answers itself is encoded here too: errors (AppendErrorResponse),
// heartbeats (AppendHeartbeatRequest, AppendHeartbeatResponse). The rest of the API is
// for Strait's own small Dubbo client (Call, e.g. MetadataService.getMetadataInfo) and the
// tests: AppendRequest, ParseResponse and DecodeArgs decode and encode values with
// github.com/apache/dubbo-go-hessian2, after the same validation.
//
// Other serializations (fastjson2, id 23, which Dubbo Java 3.2 prefers; protobuf; ...)
// are refused with an *UnsupportedSerializationError: their bodies are not parsed. See
// the Serialization constants.
//
// The wire format follows Apache Dubbo's ExchangeCodec and DubboCodec (Java, 3.3) and
// dubbo-go v3.3.2's protocol/dubbo/impl.
package dubbowire
