package worker

import (
	"testing"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// The public constant is spelled out (an internal name in the public API
// would tie other modules to internal/); it must still be the store's.
func TestDefaultPoolIsTheStores(t *testing.T) {
	if DefaultPool != jobs.DefaultPool {
		t.Fatalf("worker.DefaultPool = %q, jobs.DefaultPool = %q", DefaultPool, jobs.DefaultPool)
	}
	if q := jobs.QueueName(DefaultPool, "default"); q != "default" {
		t.Fatalf("the default pool's normal queue is %q, want the bare name", q)
	}
}
