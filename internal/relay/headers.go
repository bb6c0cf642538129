package relay

import (
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock decodes a connection's header blocks (HEADERS and CONTINUATION frames) into
// a field slice that is reused from block to block: a block's fields are valid until the
// next block is read.
type headerBlock struct {
	StreamID  uint32
	Fields    []hpack.HeaderField
	Truncated bool // the block was over the size limit; Fields is incomplete
	// reject: the block's stream is to be reset (a self-dependency); it is decoded all
	// the same, to keep the connection's HPACK state.
	reject    bool
	end       bool
	size, max int
	raw       int // the block's encoded bytes so far
	frames    int // its CONTINUATION frames so far
	dec       *hpack.Decoder
}

var errCompression = http2.ConnectionError(http2.ErrCodeCompression)

func (h *headerBlock) init(maxHeaderBytes int) {
	h.max = maxHeaderBytes
	h.dec = hpack.NewDecoder(4096, h.emit)
	h.dec.SetMaxStringLength(maxHeaderBytes)
}

func (h *headerBlock) emit(f hpack.HeaderField) {
	// The size of a header list counts 32 bytes per field (RFC 9113 §6.5.2).
	h.size += len(f.Name) + len(f.Value) + 32
	if h.size > h.max {
		if !h.Truncated {
			// Decoding goes on (the HPACK state must follow the block), but nothing
			// is kept: the block is answered 431.
			h.Truncated = true
			h.dec.SetEmitEnabled(false)
		}
		return
	}
	h.Fields = append(h.Fields, f)
}

// StreamEnded reports whether the HEADERS frame carried END_STREAM.
func (h *headerBlock) StreamEnded() bool { return h.end }

// start begins a block with a HEADERS frame; it reports whether the block is complete.
func (h *headerBlock) start(id uint32, end bool, frag []byte, last bool) (bool, error) {
	for i := range h.Fields {
		h.Fields[i] = hpack.HeaderField{}
	}
	h.Fields = h.Fields[:0]
	h.StreamID, h.end, h.Truncated, h.size, h.raw, h.frames = id, end, false, 0, 0, 0
	h.dec.SetEmitEnabled(true)
	return h.more(frag, last)
}

// more adds a fragment (of the HEADERS frame, then of CONTINUATION frames; the framer
// checks their order). A block whose encoded bytes pass twice the header limit, or that
// takes too many frames, ends the connection: it is a flood, not a request.
func (h *headerBlock) more(frag []byte, last bool) (bool, error) {
	h.raw += len(frag)
	if h.frames++; h.frames > maxContinuations+1 || h.raw > 2*h.max+16<<10 {
		return false, abuseError{"continuation", ""}
	}
	if _, err := h.dec.Write(frag); err != nil {
		return false, errCompression
	}
	if !last {
		return false, nil
	}
	if err := h.dec.Close(); err != nil {
		return false, errCompression
	}
	return true, nil
}
