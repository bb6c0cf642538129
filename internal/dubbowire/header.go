package dubbowire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Magic is the first two bytes of every frame.
const Magic uint16 = 0xdabb

// HeaderLen is the length of a frame header.
const HeaderLen = 16

// DefaultMaxBody is Dubbo's default payload limit (8 MiB), the limit Call applies.
const DefaultMaxBody = 8 << 20

// Bits of the flags byte (header[2]).
const (
	FlagRequest       byte = 0x80 // a request; a response when clear
	FlagTwoWay        byte = 0x40 // a request that expects a response
	FlagEvent         byte = 0x20 // an event: a heartbeat (body null) or a read-only notice
	SerializationMask byte = 0x1f // the serialization id of the body
)

// Status is the status byte of a response (header[3]; 0 in requests).
type Status byte

// Response statuses, as Dubbo Java's org.apache.dubbo.remoting.exchange.Response names
// them. Only StatusOK carries a result; the body of every other status is one string, the
// error message.
const (
	StatusOK                        Status = 20
	StatusSerializationError        Status = 25 // Java: a payload over the limit
	StatusClientTimeout             Status = 30
	StatusServerTimeout             Status = 31
	StatusChannelInactive           Status = 35
	StatusBadRequest                Status = 40 // Java: the request could not be decoded
	StatusBadResponse               Status = 50 // Java: the response could not be encoded
	StatusServiceNotFound           Status = 60 // defined, but Java 3.3 and dubbo-go never send it
	StatusServiceError              Status = 70 // Java: the handler failed (unknown service too)
	StatusServerError               Status = 80
	StatusClientError               Status = 90 // Java: set by a consumer that cannot decode a response
	StatusServerThreadpoolExhausted Status = 100
)

// String returns the Java name of the status (SERVICE_NOT_FOUND), or its number.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusSerializationError:
		return "SERIALIZATION_ERROR"
	case StatusClientTimeout:
		return "CLIENT_TIMEOUT"
	case StatusServerTimeout:
		return "SERVER_TIMEOUT"
	case StatusChannelInactive:
		return "CHANNEL_INACTIVE"
	case StatusBadRequest:
		return "BAD_REQUEST"
	case StatusBadResponse:
		return "BAD_RESPONSE"
	case StatusServiceNotFound:
		return "SERVICE_NOT_FOUND"
	case StatusServiceError:
		return "SERVICE_ERROR"
	case StatusServerError:
		return "SERVER_ERROR"
	case StatusClientError:
		return "CLIENT_ERROR"
	case StatusServerThreadpoolExhausted:
		return "SERVER_THREADPOOL_EXHAUSTED_ERROR"
	}
	return "STATUS_" + strconv.Itoa(int(s))
}

// Serialization is the serialization id of a frame's body (the low 5 bits of the flags).
type Serialization byte

// Serialization ids, from Dubbo Java's org.apache.dubbo.common.serialize.Constants. Only
// hessian2 is parsed here. Dubbo Java 3.3 itself ships hessian2 and fastjson2; the others
// come from extensions. dubbo-go sends hessian2 on the dubbo protocol, or 21 for protobuf,
// which Java calls protobuf-json (Java's protobuf is 22).
const (
	SerializationHessian2      Serialization = 2
	SerializationJava          Serialization = 3
	SerializationCompactedJava Serialization = 4
	SerializationFastjson      Serialization = 6
	SerializationNativeJava    Serialization = 7
	SerializationKryo          Serialization = 8
	SerializationFST           Serialization = 9
	SerializationNativeHessian Serialization = 10
	SerializationAvro          Serialization = 11
	SerializationProtostuff    Serialization = 12
	SerializationGson          Serialization = 16
	SerializationJackson       Serialization = 18
	SerializationProtobufJSON  Serialization = 21
	SerializationProtobuf      Serialization = 22
	SerializationFastjson2     Serialization = 23
	SerializationKryo2         Serialization = 25
	SerializationMsgpack       Serialization = 27
	SerializationFury          Serialization = 28
)

// String returns the serialization's Dubbo name (hessian2, fastjson2), or its number.
func (s Serialization) String() string {
	switch s {
	case SerializationHessian2:
		return "hessian2"
	case SerializationJava:
		return "java"
	case SerializationCompactedJava:
		return "compactedjava"
	case SerializationFastjson:
		return "fastjson"
	case SerializationNativeJava:
		return "nativejava"
	case SerializationKryo:
		return "kryo"
	case SerializationFST:
		return "fst"
	case SerializationNativeHessian:
		return "native-hessian"
	case SerializationAvro:
		return "avro"
	case SerializationProtostuff:
		return "protostuff"
	case SerializationGson:
		return "gson"
	case SerializationJackson:
		return "jackson"
	case SerializationProtobufJSON:
		return "protobuf-json"
	case SerializationProtobuf:
		return "protobuf"
	case SerializationFastjson2:
		return "fastjson2"
	case SerializationKryo2:
		return "kryo2"
	case SerializationMsgpack:
		return "msgpack"
	case SerializationFury:
		return "fury"
	}
	return "serialization-" + strconv.Itoa(int(s))
}

// Header is a frame header, as it is on the wire.
type Header [HeaderLen]byte

// IsRequest reports whether the frame is a request (else a response).
func (h Header) IsRequest() bool { return h[2]&FlagRequest != 0 }

// TwoWay reports whether a request expects a response.
func (h Header) TwoWay() bool { return h[2]&FlagTwoWay != 0 }

// Event reports whether the frame is an event: a heartbeat request or response.
func (h Header) Event() bool { return h[2]&FlagEvent != 0 }

// Serialization is the serialization id of the body.
func (h Header) Serialization() Serialization { return Serialization(h[2] & SerializationMask) }

// Status is the status of a response (0 in a request).
func (h Header) Status() Status { return Status(h[3]) }

// ID is the request ID, which a response repeats.
func (h Header) ID() uint64 { return binary.BigEndian.Uint64(h[4:12]) }

// BodyLen is the length of the body that follows the header.
func (h Header) BodyLen() int { return int(binary.BigEndian.Uint32(h[12:16])) }

// String describes the header for logs.
func (h Header) String() string {
	kind := "response " + h.Status().String()
	if h.IsRequest() {
		kind = "request"
		if !h.TwoWay() {
			kind = "oneway request"
		}
	}
	if h.Event() {
		kind += " event"
	}
	return fmt.Sprintf("%s id=%d %s body=%d", kind, h.ID(), h.Serialization(), h.BodyLen())
}

// Errors of the framing.
var (
	// ErrBadMagic is returned for a frame that does not start with Magic: not Dubbo, or
	// a stream out of step. Dubbo Java hands such bytes to its telnet/QoS handler; a
	// gateway closes the connection.
	ErrBadMagic = errors.New("dubbowire: bad magic")
	// ErrTruncated is returned for a frame shorter than its header says.
	ErrTruncated = errors.New("dubbowire: truncated frame")
	// ErrBodyTooLarge matches (errors.Is) every *BodyTooLargeError.
	ErrBodyTooLarge = errors.New("dubbowire: body too large")
)

// BodyTooLargeError is returned by ReadFrame for a body over the limit. Its body is left
// unread: answer (a request) with StatusBadRequest and close the connection.
type BodyTooLargeError struct {
	Header Header // the frame's header, for its ID
	Max    int    // the limit
}

func (e *BodyTooLargeError) Error() string {
	return fmt.Sprintf("dubbowire: body of %d bytes over the limit of %d (%s)", e.Header.BodyLen(), e.Max, e.Header)
}

// Is makes errors.Is(err, ErrBodyTooLarge) true.
func (e *BodyTooLargeError) Is(target error) bool { return target == ErrBodyTooLarge }

// ParseHeader parses the first HeaderLen bytes of b. It fails with ErrTruncated if b is
// shorter and with ErrBadMagic if the magic is wrong; the other fields are not checked.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, fmt.Errorf("%w: %d header bytes, need %d", ErrTruncated, len(b), HeaderLen)
	}
	copy(h[:], b)
	if binary.BigEndian.Uint16(h[:2]) != Magic {
		return h, fmt.Errorf("%w: %#02x %#02x", ErrBadMagic, h[0], h[1])
	}
	return h, nil
}

// SetID rewrites the request ID of the frame in place (a relay's per-hop remapping). The
// frame must hold at least a header.
func SetID(frame []byte, id uint64) {
	binary.BigEndian.PutUint64(frame[4:12], id)
}

// appendHeader appends a header with a zero body length; setBodyLen fills it in.
func appendHeader(dst []byte, flags byte, status Status, id uint64) []byte {
	dst = append(dst, 0xda, 0xbb, flags, byte(status))
	dst = binary.BigEndian.AppendUint64(dst, id)
	return append(dst, 0, 0, 0, 0)
}

// setBodyLen sets the body length of the frame that starts at frame[0] and ends at the
// end of frame.
func setBodyLen(frame []byte) {
	binary.BigEndian.PutUint32(frame[12:16], uint32(len(frame)-HeaderLen))
}
