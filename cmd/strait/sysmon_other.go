//go:build !unix

package main

// keepSysmonAwake does nothing where a process cannot re-execute itself.
func keepSysmonAwake() {}
