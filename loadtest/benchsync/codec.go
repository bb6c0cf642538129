package main

import "google.golang.org/grpc/mem"

// emptyMsg and rawCodec send an empty message without a generated type.
type emptyMsg struct{}

type rawCodec struct{}

func (rawCodec) Marshal(any) (mem.BufferSlice, error) { return mem.BufferSlice{}, nil }
func (rawCodec) Unmarshal(mem.BufferSlice, any) error { return nil }
func (rawCodec) Name() string                         { return "proto" }
