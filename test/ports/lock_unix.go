//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package ports

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// The claims of every process are fcntl byte-range locks on one file, the byte at offset p
// standing for port p. The kernel drops a process's locks when it exits, however it ends,
// so a killed test leaves no stale claim. fcntl locks belong to the process (locking a
// byte it holds already succeeds), which is why claim also keeps an in-process set; and
// closing any descriptor of the file would drop them all, so the file stays open for the
// life of the process.
var (
	lockOnce sync.Once
	lockFile *os.File // nil if the file cannot be opened: claims are then in-process only
)

func lockPath() string {
	dir := "/tmp" // shared by every process of the machine, whatever TMPDIR each has
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "strait-test-ports.lock")
}

func openLockFile() *os.File {
	lockOnce.Do(func() {
		p := lockPath()
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return
		}
		_ = os.Chmod(p, 0o666) // other users' test runs lock it too; fails harmlessly if not ours
		lockFile = f
	})
	return lockFile
}

func fcntl(p int, typ int16) error {
	f := openLockFile()
	if f == nil {
		return nil
	}
	lk := syscall.Flock_t{Type: typ, Whence: 0, Start: int64(p), Len: 1}
	return syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
}

// lockPort claims p against other processes; false if another process holds it. An error
// other than "held" (a file system without locks) leaves the claim in-process only.
func lockPort(p int) bool {
	err := fcntl(p, syscall.F_WRLCK)
	return !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EACCES)
}

func unlockPort(p int) { _ = fcntl(p, syscall.F_UNLCK) }
