package progress_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoIdentityImports proves the progress service cannot look up a user:
// nothing it links, directly or transitively, is identity code.
func TestNoIdentityImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/claimcheck/claimcheck/api/progress").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 20 {
		t.Fatalf("go list -deps returned only %d packages; the check would prove nothing", len(deps))
	}
	var sawTokens bool
	for _, d := range deps {
		switch {
		case strings.HasPrefix(d, "github.com/claimcheck/claimcheck/internal/identity"),
			strings.HasPrefix(d, "github.com/claimcheck/claimcheck/api/enqueue"),
			strings.HasPrefix(d, "github.com/claimcheck/claimcheck/app"):
			t.Errorf("progress service depends on %s", d)
		case d == "github.com/claimcheck/claimcheck/tokens":
			sawTokens = true
		}
	}
	if !sawTokens {
		t.Error("progress does not depend on tokens; is this the right package?")
	}
}
