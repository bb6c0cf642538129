package relay

import (
	"errors"

	"golang.org/x/net/http2/hpack"
)

// headerBlock decodes a connection's header blocks (HEADERS and CONTINUATION frames) into
// a field slice that is reused from block to block: a block's fields are valid until the
// next block is read.
type headerBlock struct {
	StreamID  uint32
	Fields    []hpack.HeaderField
	Truncated bool // the block was over the size limit; Fields is incomplete
	end       bool
	open      bool
	size, max int
	dec       *hpack.Decoder
	// err is a decoding error: the connection's HPACK state is lost, so it must end.
	err error
}

func (h *headerBlock) init(maxHeaderBytes int) {
	h.max = maxHeaderBytes
	h.dec = hpack.NewDecoder(4096, h.emit)
	h.dec.SetMaxStringLength(maxHeaderBytes)
}

func (h *headerBlock) emit(f hpack.HeaderField) {
	// The size of a header list counts 32 bytes per field (RFC 9113 §6.5.2).
	h.size += len(f.Name) + len(f.Value) + 32
	if h.size > h.max {
		h.Truncated = true
		return
	}
	h.Fields = append(h.Fields, f)
}

// StreamEnded reports whether the HEADERS frame carried END_STREAM.
func (h *headerBlock) StreamEnded() bool { return h.end }

// start begins a block with a HEADERS frame; it reports whether the block is complete.
func (h *headerBlock) start(id uint32, end bool, frag []byte, last bool) bool {
	for i := range h.Fields {
		h.Fields[i] = hpack.HeaderField{}
	}
	h.Fields = h.Fields[:0]
	h.StreamID, h.end, h.Truncated, h.size, h.open = id, end, false, 0, true
	return h.more(frag, last)
}

// more adds a CONTINUATION frame's fragment.
func (h *headerBlock) more(frag []byte, last bool) bool {
	if !h.open {
		h.err = errors.New("relay: CONTINUATION without HEADERS")
		return false
	}
	if _, err := h.dec.Write(frag); err != nil {
		h.err = err
		return false
	}
	if !last {
		return false
	}
	h.open = false
	if err := h.dec.Close(); err != nil {
		h.err = err
		return false
	}
	return true
}
