//go:build unix

package tokens

import (
	"fmt"
	"os"
	"syscall"
)

// lockDir holds an exclusive flock on dir until the returned func runs; the
// kernel drops it if the process dies, so no lock outlives its holder.
func lockDir(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock key dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock key dir: %w", err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
