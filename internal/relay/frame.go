package relay

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// Frames are written by hand into a connection's output buffer: a 9-byte header and the
// payload, with no intermediate copy and no allocation once the buffer has grown.

const frameHeaderLen = 9

// minMaxFrame is the smallest SETTINGS_MAX_FRAME_SIZE a peer may set (RFC 9113 §6.5.2).
const minMaxFrame = 16384

func appendFrameHeader(b []byte, length int, t http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

// appendData appends data as DATA frames of at most maxFrame bytes; end sets END_STREAM
// on the last one (an empty frame if data is empty).
func appendData(b []byte, id uint32, data []byte, end bool, maxFrame int) []byte {
	maxFrame = max(maxFrame, minMaxFrame) // SETTINGS validation keeps it there already
	for {
		n := min(len(data), maxFrame)
		var fl http2.Flags
		if end && n == len(data) {
			fl = http2.FlagDataEndStream
		}
		b = appendFrameHeader(b, n, http2.FrameData, fl, id)
		b = append(b, data[:n]...)
		data = data[n:]
		if len(data) == 0 {
			return b
		}
	}
}

// appendHeaders appends an encoded header block as HEADERS and CONTINUATION frames.
func appendHeaders(b []byte, id uint32, block []byte, end bool, maxFrame int) []byte {
	maxFrame = max(maxFrame, minMaxFrame)
	first := true
	for {
		n := min(len(block), maxFrame)
		last := n == len(block)
		var fl http2.Flags
		t := http2.FrameContinuation
		if first {
			t = http2.FrameHeaders
			if end {
				fl |= http2.FlagHeadersEndStream
			}
		}
		if last {
			fl |= http2.FlagHeadersEndHeaders
		}
		b = appendFrameHeader(b, n, t, fl, id)
		b = append(b, block[:n]...)
		block = block[n:]
		first = false
		if last {
			return b
		}
	}
}

func appendWindowUpdate(b []byte, id uint32, incr uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return binary.BigEndian.AppendUint32(b, incr&0x7fffffff)
}

func appendRST(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendSettings(b []byte, s ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(s), http2.FrameSettings, 0, 0)
	for _, x := range s {
		b = binary.BigEndian.AppendUint16(b, uint16(x.ID))
		b = binary.BigEndian.AppendUint32(b, x.Val)
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func appendPing(b []byte, data [8]byte) []byte {
	b = appendFrameHeader(b, 8, http2.FramePing, 0, 0)
	return append(b, data[:]...)
}

func appendPingAck(b []byte, data [8]byte) []byte {
	b = appendFrameHeader(b, 8, http2.FramePing, http2.FlagPingAck, 0)
	return append(b, data[:]...)
}

func appendGoAway(b []byte, last uint32, code http2.ErrCode, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, last&0x7fffffff)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}
