//go:build !linux

package execjob

// protectWorker is a no-op outside Linux (see protect_linux.go).
func protectWorker() {}
