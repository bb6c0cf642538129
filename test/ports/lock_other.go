//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package ports

// Without fcntl locks, claims hold within this process only.

func lockPort(int) bool { return true }

func unlockPort(int) {}
