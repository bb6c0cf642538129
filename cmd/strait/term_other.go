//go:build !linux

package main

// terminalFD: the progress is printed as plain lines outside Linux.
func terminalFD(uintptr) bool { return false }
