package relay

import "time"

// Flood limits of a caller's connection. They are counted on the connection's read loop
// (no lock) and end an abusive connection with GOAWAY ENHANCE_YOUR_CALM. They are far
// above what grpc-go, x/net, curl or h2spec do, and far below what costs the gateway
// anything.
const (
	// A reset of a stream the caller opened, before its answer ended, spends a token;
	// tokens come back at resetRate per second up to resetBurst (CVE-2023-44487).
	resetBurst = 1000
	resetRate  = 200
	// A PING that comes less than pingInterval after the previous one is a strike; a
	// connection that gets more than maxPingStrikes without anything sent to it between
	// is ended with "too_many_pings" (grpc-go's keepalive.EnforcementPolicy does the
	// same, with a five-minute interval).
	pingInterval   = time.Second
	maxPingStrikes = 10
	// SETTINGS frames: settingsBurst, then settingsRate per second.
	settingsBurst = 100
	settingsRate  = 10
	// WINDOW_UPDATE frames: windowBurst, then two for every DATA frame sent on the
	// connection (a receiver updates the stream and the connection window at most once
	// per frame it receives), and windowRate per second.
	windowBurst = 10000
	windowRate  = 1000
	// maxContinuations bounds the CONTINUATION frames of one header block; the block's
	// bytes are bounded by maxHeaderBytes (decoding stops beyond).
	maxContinuations = 64
	// maxEmptyFrames bounds DATA frames without payload or END_STREAM, and other frames
	// that carry nothing, in a row.
	maxEmptyFrames = 1000
)

// bucket is a token bucket, refilled lazily from the time of its last use.
type bucket struct {
	tokens float64
	last   int64
}

func (b *bucket) init(burst float64) { b.tokens = burst }

// take spends one token; it reports false once the bucket is empty.
func (b *bucket) take(now int64, rate, burst float64) bool {
	if b.last != 0 {
		b.tokens = min(burst, b.tokens+float64(now-b.last)/1e9*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// guard is a connection's flood accounting, touched by its read loop only.
type guard struct {
	resets   bucket
	settings bucket
	windows  bucket
	lastPing int64
	strikes  int
	empty    int
}

func (g *guard) init() {
	g.resets.init(resetBurst)
	g.settings.init(settingsBurst)
	g.windows.init(windowBurst)
}

// abused counts an abuse of kind and, when the server observes abuse, reports it.
func (c *conn) abused(kind string) {
	if c.onAbuse != nil {
		c.onAbuse(kind)
	}
}

// AbuseFunc returns o's Abuse method if it has one (a gateway's metrics do), for
// Options.Abuse and PoolOptions.Abuse; nil otherwise.
func AbuseFunc(o any) func(kind string) {
	if a, ok := o.(interface{ Abuse(kind string) }); ok {
		return a.Abuse
	}
	return nil
}
