package delivery_test

import (
	"testing"

	"github.com/claimcheck/claimcheck/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }
