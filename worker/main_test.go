package worker_test

import (
	"os"
	"testing"

	"github.com/claimcheck/claimcheck/internal/redistest"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(lostWorkerEnv); url != "" {
		runLostWorker(url) // a child process of a reconciler test
		return
	}
	redistest.Main(m)
}
