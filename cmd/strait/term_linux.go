package main

import "golang.org/x/sys/unix"

// terminalFD is golang.org/x/term's IsTerminal on Linux.
func terminalFD(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}
