package jobs_test

import (
	"maps"
	"testing"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

func TestQueueNames(t *testing.T) {
	for _, tc := range []struct{ pool, class, want string }{
		{"default", "critical", "critical"}, {"", "default", "default"}, {"default", "low", "low"},
		{"gpu", "critical", "gpu-critical"}, {"gpu", "default", "gpu-default"}, {"a-low", "low", "a-low-low"},
	} {
		if got := jobs.QueueName(tc.pool, tc.class); got != tc.want {
			t.Errorf("QueueName(%q, %q) = %q, want %q", tc.pool, tc.class, got, tc.want)
		}
	}
	if got, want := jobs.PoolQueues("gpu"), map[string]int{"gpu-critical": 6, "gpu-default": 3, "gpu-low": 1}; !maps.Equal(got, want) {
		t.Errorf("PoolQueues(gpu) = %v", got)
	}
	if got, want := jobs.Queues(), map[string]int{"critical": 6, "default": 3, "low": 1}; !maps.Equal(got, want) {
		t.Errorf("Queues() = %v: tasks queued before pools must keep their queues", got)
	}
	// No two pools share a queue.
	seen := map[string]string{}
	for _, p := range []string{"default", "a", "a-low", "a-critical", "low", "critical", "x-default", "x"} {
		for q := range jobs.PoolQueues(p) {
			if other, dup := seen[q]; dup {
				t.Errorf("queue %s is pool %s's and %s's", q, p, other)
			}
			seen[q] = p
		}
	}
	for _, bad := range []string{"", "GPU", "-gpu", "gpu pool", "gpu:1", "a{b}", "abcdefghijklmnopqrstuvwxyz0123456"} {
		if jobs.ValidPool(bad) == nil {
			t.Errorf("pool %q accepted", bad)
		}
	}
	for _, good := range []string{"default", "gpu", "a_b-c", "0", "abcdefghijklmnopqrstuvwxyz012345"} {
		if err := jobs.ValidPool(good); err != nil {
			t.Errorf("pool %q: %v", good, err)
		}
	}
}
