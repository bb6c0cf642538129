package dubbowire

import (
	"context"
	"fmt"
	"net"
	"time"
)

// maxCallFrames bounds the frames Call reads before its response (heartbeats, stray
// answers).
const maxCallFrames = 64

// Call sends one two-way request with ID id on conn (see AppendRequest) and returns the
// response with that ID (see ParseResponse; a failure it reports is in Response.Err).
// While waiting it answers the peer's heartbeats and skips other responses.
//
// Call gives up when ctx is done or after timeout (if > 0), whichever is first, by setting
// conn's deadline; the deadline is cleared when Call returns. A response body is limited
// to DefaultMaxBody. Call reads no byte past its response, so conn can carry the next
// call; but after an error the stream is in an unknown state: close conn.
func Call(ctx context.Context, conn net.Conn, id uint64, req Request, args []any, timeout time.Duration) (Response, error) {
	what := req.Path + "." + req.Method
	frame, err := AppendRequest(nil, id, req, args, true)
	if err != nil {
		return Response{}, fmt.Errorf("dubbowire: call %s: %w", what, err)
	}
	deadline, ok := ctx.Deadline()
	if timeout > 0 {
		if d := time.Now().Add(timeout); !ok || d.Before(deadline) {
			deadline, ok = d, true
		}
	}
	if ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return Response{}, fmt.Errorf("dubbowire: call %s: %w", what, err)
		}
	}
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(cancelled)
		_ = conn.SetDeadline(time.Unix(1, 0)) // unblock the reads and writes below
	})
	defer func() {
		if !stop() {
			<-cancelled
		}
		_ = conn.SetDeadline(time.Time{})
	}()
	fail := func(err error) (Response, error) {
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("dubbowire: call %s: %w (%v)", what, ctx.Err(), err)
		}
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// The connection's deadline (ctx's) fired before ctx's own timer did.
			return Response{}, fmt.Errorf("dubbowire: call %s: %w (%v)", what, context.DeadlineExceeded, err)
		}
		return Response{}, fmt.Errorf("dubbowire: call %s: %w", what, err)
	}

	if _, err := conn.Write(frame); err != nil {
		return fail(err)
	}
	buf := frame[:0]
	for range maxCallFrames {
		f, h, err := readFrame(conn, DefaultMaxBody, buf)
		if err != nil {
			return fail(err)
		}
		buf = f[:0]
		switch {
		case h.IsRequest() && h.Event():
			if h.TwoWay() {
				if _, err := conn.Write(AppendHeartbeatResponse(nil, h.ID())); err != nil {
					return fail(err)
				}
			}
			continue
		case h.IsRequest():
			return fail(fmt.Errorf("the peer sent a request (%s)", h))
		case h.ID() != id:
			continue
		}
		resp, err := ParseResponse(f)
		if err != nil {
			return fail(err)
		}
		return resp, nil
	}
	return fail(fmt.Errorf("no response with ID %d in %d frames", id, maxCallFrames))
}
