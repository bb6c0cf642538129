package relay

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// A fallback handler whose caller takes none of its answer (no window) is not held for
// ever: after the stall time its stream is reset, and the connection goes on.
func TestFramesStallTimeoutFallback(t *testing.T) {
	const stall = 300 * time.Millisecond
	r := ftNewRig(t, func(o *Options) { o.StallTimeout = stall })
	st := r.connect(t)
	st.handshake() // stream windows of 65535, never credited
	st.writeWindowUpdate(0, 1<<30)
	body := bytes.Repeat([]byte{'x'}, 100<<10) // the echo answers as much: more than the window
	start := time.Now()
	st.batch(func() {
		st.writeHeaders(1, false, true, ftPlainRequest("POST", "/fallback/echo")...)
		for off := 0; off < len(body); off += 16 << 10 {
			end := min(off+16<<10, len(body))
			st.writeData(1, end == len(body), body[off:end])
		}
	})
	rst := st.wantRST(1, 10*stall, http2.ErrCodeCancel)
	el := rst.at.Sub(start)
	t.Logf("fallback stream reset (%v) %v after the request, %d bytes received", rst.code, el.Round(time.Millisecond), st.dataRecv[1])
	if el < stall/2 {
		t.Errorf("reset after %v, before the stall time %v", el, stall)
	}
	if st.dataRecv[1] > 65535 {
		t.Errorf("the relay sent %d bytes on a stream whose window is 65535", st.dataRecv[1])
	}
	st.emptyCall(3)
	st.wantGRPCOK(3)
}
