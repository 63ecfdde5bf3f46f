// Package syncbuf is a bytes.Buffer safe for one writer and concurrent
// readers: what a test reads of a process's output while it still runs.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes; String may be called while they go on.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
