package worker

import (
	"testing"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/jobs"
)

// Public constants are spelled out rather than defined by internal ones;
// they must still agree with them.
func TestDefaultsMatchConfig(t *testing.T) {
	if DefaultMaxRunningJobs != config.DefaultMaxRunningJobs {
		t.Fatalf("worker.DefaultMaxRunningJobs = %d, config's = %d", DefaultMaxRunningJobs, config.DefaultMaxRunningJobs)
	}
}

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

func TestMaxCheckpointIsTheStores(t *testing.T) {
	if MaxCheckpointBytes != jobs.MaxCheckpointBytes {
		t.Fatalf("worker.MaxCheckpointBytes = %d, jobs.MaxCheckpointBytes = %d", MaxCheckpointBytes, jobs.MaxCheckpointBytes)
	}
}
