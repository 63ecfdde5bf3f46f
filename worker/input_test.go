package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/worker"
)

// TestFinding3WorkerRefusesHostileInput runs a handler that decodes into a
// json.Number (as one feeding big.Rat or big.Float would) on inputs built to
// burn CPU (issue 10, finding 3). The API refuses them, but a task can reach
// Redis by other ways; Task.Decode applies the same input limits and fails
// the job permanently instead of handing the handler the number.
func TestFinding3WorkerRefusesHostileInput(t *testing.T) {
	var got json.Number
	h := func(_ context.Context, task *worker.Task) error {
		var in struct {
			X    json.Number `json:"x"`
			Deep any         `json:"deep"`
		}
		if err := task.Decode(&in); err != nil {
			return err
		}
		got = in.X
		return nil
	}
	for _, input := range []string{
		`{"x":1e1000000}`,
		`{"x":` + strings.Repeat("9", 5000) + `}`,
		`{"deep":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}`,
		`{"x":1,"x":2}`,
	} {
		got = ""
		_, err := worker.RunLocal(context.Background(), h, json.RawMessage(input), nil, io.Discard)
		if !errors.Is(err, worker.ErrPermanent) || got != "" || !strings.Contains(err.Error(), "/") {
			t.Errorf("%.30s: handler got %.30q, err %v; want a permanent failure naming the place", input, got, err)
		}
	}
	if _, err := worker.RunLocal(context.Background(), h, json.RawMessage(`{"x":2.5}`), nil, io.Discard); err != nil || got != "2.5" {
		t.Fatalf("ordinary input: got %q, %v", got, err)
	}
}
