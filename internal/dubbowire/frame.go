package dubbowire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ReadFrame reads one whole frame, header and body, from r into buf and returns it with
// its header. The frame uses buf's storage when it fits (pass the previous frame[:0] to
// reuse it); otherwise buf grows as the body arrives, to at most about twice the bytes
// received, so a peer that announces a large body and sends little costs little.
//
// A clean end of the stream before the frame's first byte is io.EOF. A stream that ends
// inside a frame is ErrTruncated, a wrong magic ErrBadMagic, and a body over maxBody a
// *BodyTooLargeError (errors.Is ErrBodyTooLarge) carrying the header, with the body left
// unread; a read error is returned wrapped. After any error but io.EOF the stream is out
// of step and the connection should be closed (after answering, for BodyTooLargeError).
func ReadFrame(r *bufio.Reader, maxBody int, buf []byte) (frame []byte, h Header, err error) {
	return readFrame(r, maxBody, buf)
}

// readFrame is ReadFrame for any reader; it reads no byte past the frame.
func readFrame(r io.Reader, maxBody int, buf []byte) ([]byte, Header, error) {
	if cap(buf) < HeaderLen {
		buf = make([]byte, 0, 512)
	}
	buf = buf[:HeaderLen]
	if n, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			return nil, Header{}, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, Header{}, fmt.Errorf("%w: stream ended after %d of %d header bytes", ErrTruncated, n, HeaderLen)
		}
		return nil, Header{}, fmt.Errorf("dubbowire: read header: %w", err)
	}
	h, err := ParseHeader(buf)
	if err != nil {
		return nil, h, err
	}
	n := h.BodyLen()
	if n > maxBody {
		return nil, h, &BodyTooLargeError{Header: h, Max: maxBody}
	}
	need := HeaderLen + n
	for len(buf) < need {
		if len(buf) == cap(buf) {
			c := min(max(2*cap(buf), 4096), need)
			grown := make([]byte, len(buf), c)
			copy(grown, buf)
			buf = grown
		}
		m, err := io.ReadFull(r, buf[len(buf):min(cap(buf), need)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, h, fmt.Errorf("%w: stream ended after %d of %d body bytes (%s)", ErrTruncated, len(buf)-HeaderLen, n, h)
			}
			return nil, h, fmt.Errorf("dubbowire: read body (%s): %w", h, err)
		}
	}
	return buf, h, nil
}

// splitFrame checks the frame's header and returns it with the body.
func splitFrame(frame []byte) (Header, []byte, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return h, nil, err
	}
	end := HeaderLen + h.BodyLen()
	if len(frame) < end {
		return h, nil, fmt.Errorf("%w: %d body bytes, header says %d (%s)", ErrTruncated, len(frame)-HeaderLen, h.BodyLen(), h)
	}
	return h, frame[HeaderLen:end], nil
}
