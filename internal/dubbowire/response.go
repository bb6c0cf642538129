package dubbowire

import (
	"fmt"
	"strconv"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// ResultFlag is the first value of an OK response's body: what follows it.
type ResultFlag int

// Result flags, as Dubbo's DubboCodec names them. The *WithAttachments flags (Dubbo 2.0.2
// and later) are followed by the response attachments.
const (
	ResultWithException                ResultFlag = 0
	ResultValue                        ResultFlag = 1
	ResultNullValue                    ResultFlag = 2
	ResultWithExceptionWithAttachments ResultFlag = 3
	ResultValueWithAttachments         ResultFlag = 4
	ResultNullValueWithAttachments     ResultFlag = 5
)

// String returns the Java name of the flag.
func (f ResultFlag) String() string {
	switch f {
	case ResultWithException:
		return "RESPONSE_WITH_EXCEPTION"
	case ResultValue:
		return "RESPONSE_VALUE"
	case ResultNullValue:
		return "RESPONSE_NULL_VALUE"
	case ResultWithExceptionWithAttachments:
		return "RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS"
	case ResultValueWithAttachments:
		return "RESPONSE_VALUE_WITH_ATTACHMENTS"
	case ResultNullValueWithAttachments:
		return "RESPONSE_NULL_VALUE_WITH_ATTACHMENTS"
	}
	return "RESPONSE_" + strconv.Itoa(int(f))
}

// HasException reports whether an exception follows the flag.
func (f ResultFlag) HasException() bool {
	return f == ResultWithException || f == ResultWithExceptionWithAttachments
}

// HasValue reports whether a value follows the flag.
func (f ResultFlag) HasValue() bool {
	return f == ResultValue || f == ResultValueWithAttachments
}

// HasAttachments reports whether attachments end the body.
func (f ResultFlag) HasAttachments() bool { return f >= ResultWithExceptionWithAttachments }

// Response is a decoded response.
type Response struct {
	Header Header // ID, status, event, serialization

	// Of an OK response that is not an event (a heartbeat answer has none of these):
	Flag        ResultFlag
	Value       any            // the result, decoded by dubbo-go-hessian2 (nil for a null value)
	Exception   any            // the exception as dubbo-go-hessian2 decodes it (a java_exception type, a map for unknown classes)
	Attachments map[string]any // the response attachments ("dubbo": "2.0.2", ...), entries with string keys

	// Of a response with another status:
	ErrorMessage string
}

// Err returns a *RemoteError if the response reports a failure (a status other than OK, or
// an exception), nil otherwise.
func (r *Response) Err() error {
	if st := r.Header.Status(); st != StatusOK {
		return &RemoteError{Status: st, Message: r.ErrorMessage}
	}
	if !r.Header.Event() && r.Flag.HasException() {
		return &RemoteError{Status: StatusOK, Exception: r.Exception}
	}
	return nil
}

// RemoteError is a failure reported by the peer: a status, or an exception.
type RemoteError struct {
	Status    Status
	Message   string // the error message of a status other than OK
	Exception any    // the exception of an OK response
}

func (e *RemoteError) Error() string {
	if e.Status != StatusOK {
		return fmt.Sprintf("dubbowire: remote %s: %s", e.Status, e.Message)
	}
	if err, ok := e.Exception.(error); ok {
		return "dubbowire: remote exception: " + err.Error()
	}
	return fmt.Sprintf("dubbowire: remote exception: %v", e.Exception)
}

// ParseResponse decodes a response frame: for an OK response the result flag, value or
// exception and attachments (decoded by dubbo-go-hessian2 after the body was checked as in
// ParseRequest); for another status the error message; for an event (a heartbeat answer)
// nothing. A decoded response that reports a failure is not an error here: see
// Response.Err. Like DecodeArgs, it is for Strait's own calls, not a relay's hot path.
func ParseResponse(frame []byte) (Response, error) {
	h, body, err := splitFrame(frame)
	if err != nil {
		return Response{}, err
	}
	r := Response{Header: h}
	if h.IsRequest() {
		return r, fmt.Errorf("%w: a request (%s)", ErrNotResponse, h)
	}
	if h.Event() {
		return r, nil // a heartbeat answer: null (dubbo-go writes it twice)
	}
	if h.Serialization() != SerializationHessian2 {
		return r, &UnsupportedSerializationError{Serialization: h.Serialization()}
	}
	s := scanner{b: body, base: HeaderLen}
	if h.Status() != StatusOK {
		c, err := s.next("the error message")
		if err != nil {
			return r, inPart(err, "error message")
		}
		b, _, err := s.readString(c)
		if err != nil {
			return r, inPart(err, "error message")
		}
		r.ErrorMessage = string(b)
		return r, nil
	}

	// Check the whole body before the decoder sees it.
	flag, err := s.readInt("the result flag")
	if err != nil {
		return r, inPart(err, "result flag")
	}
	r.Flag = ResultFlag(flag)
	if flag < 0 || flag > int64(ResultNullValueWithAttachments) {
		return r, &FormatError{Part: "result flag", Offset: HeaderLen, Reason: "unknown result flag " + strconv.FormatInt(flag, 10)}
	}
	if r.Flag.HasValue() || r.Flag.HasException() {
		if err := s.skipValue(0); err != nil {
			return r, inPart(err, "result")
		}
	}
	if r.Flag.HasAttachments() {
		c, ok := s.peek()
		if ok && c != 'H' && c != 'M' && c != 'N' {
			return r, inPart(s.fail("tag %#02x is not a map", c), "attachments")
		}
		if err := s.skipValue(0); err != nil {
			return r, inPart(err, "attachments")
		}
	}
	if err := r.decode(body); err != nil {
		return r, err
	}
	return r, nil
}

// decode decodes a checked OK body with dubbo-go-hessian2.
func (r *Response) decode(body []byte) (err error) {
	what := "the result flag"
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w panicked on %s: %v", ErrUndecodable, what, p)
		}
	}()
	dec := hessian.NewDecoder(body)
	if _, err := dec.Decode(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUndecodable, what, err)
	}
	if r.Flag.HasValue() || r.Flag.HasException() {
		what = "the result"
		v, err := dec.Decode()
		if err != nil {
			return fmt.Errorf("%w cannot decode %s: %w", ErrUndecodable, what, err)
		}
		if r.Flag.HasValue() {
			r.Value = v
		} else {
			r.Exception = v
		}
	}
	if r.Flag.HasAttachments() {
		what = "the attachments"
		v, err := dec.Decode()
		if err != nil {
			return fmt.Errorf("%w cannot decode %s: %w", ErrUndecodable, what, err)
		}
		if m, ok := v.(map[any]any); ok {
			r.Attachments = make(map[string]any, len(m))
			for k, v := range m {
				if k, ok := k.(string); ok {
					r.Attachments[k] = v
				}
			}
		} else if v != nil {
			return fmt.Errorf("%w: the attachments decode to %T, not a map", ErrUndecodable, v)
		}
	}
	return nil
}
