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

// A caller that opens many streaming calls at once and reads none of them holds at most
// maxConnPend queued for it (plus a stream window and its write queue): the stream that
// goes over is reset, and the others' queues stay.
func TestFramesConnQueueBound(t *testing.T) {
	budget := NewBudget(1 << 30)
	r := ftNewRig(t, func(o *Options) { o.Budget = budget })
	const streams = 200 // 200 × 256 KiB = 50 MiB of windows, over maxConnPend's 16 MiB
	st := r.connect(t, ftRcvBuf(4<<10))
	st.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: ftMaxWindow},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000})
	st.writeWindowUpdate(0, ftMaxWindow-65535)
	st.batch(func() {
		for i := uint32(0); i < streams; i++ {
			st.writeHeaders(2*i+1, false, true, ftGRPCRequest(ftForever)...)
			st.writeData(2*i+1, true, ftEmptyMsg)
		}
	})
	sent := ftWaitStalled(t, &r.be.sent, maxConnPend)
	used := budget.Used()
	t.Logf("the backend stalled after %d MiB for %d streams of a caller that does not read; %d MiB queued in streams for it",
		sent>>20, streams, used>>20)
	if limit := int64(maxConnPend + streamWindow); used > limit {
		t.Errorf("%d MiB queued for a caller that reads nothing (bound %d MiB)", used>>20, limit>>20)
	}
	if used < maxConnPend/2 {
		t.Errorf("only %d MiB queued: the test did not fill the caller's queues", used>>20)
	}
}
