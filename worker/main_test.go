package worker_test

import (
	"os"
	"testing"

	"github.com/claimcheck/claimcheck/internal/redistest"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(lostWorkerEnv); addr != "" {
		runLostWorker(addr) // a child process of a reconciler test
		return
	}
	redistest.Main(m)
}
