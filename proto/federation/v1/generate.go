// Package federationv1 is the federation API between controlplanes of peer domains.
package federationv1

//go:generate protoc --proto_path=../../.. --go_out=../../.. --go_opt=paths=source_relative --go-grpc_out=../../.. --go-grpc_opt=paths=source_relative proto/federation/v1/federation.proto
