package blob_test

import (
	"os"
	"testing"

	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/s3test"
)

func TestMain(m *testing.M) {
	code := redistest.Run(m)
	s3test.StopWeed()
	os.Exit(code)
}
