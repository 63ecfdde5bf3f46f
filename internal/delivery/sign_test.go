package delivery_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/delivery"
	"github.com/claimcheck/claimcheck/tokens"
)

// TestSign: the header is "v1a," and the standard base64 of the Ed25519 signature of
// "<id>.<timestamp>.<body>", per Standard Webhooks; a changed id,
// timestamp or body does not verify.
func TestSign(t *testing.T) {
	k, err := tokens.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"type":"job.completed"}`)
	h := delivery.Signature(ed25519.Sign(k.Private, delivery.SignedContent("msg_j_completed", "1796159232", body)))
	b64, ok := strings.CutPrefix(h, "v1a,")
	sig, derr := base64.StdEncoding.DecodeString(b64)
	if !ok || derr != nil || len(sig) != ed25519.SignatureSize {
		t.Fatalf("header %q", h)
	}
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{`msg_j_completed.1796159232.{"type":"job.completed"}`, true},
		{`msg_j_completed.1796159233.{"type":"job.completed"}`, false},
		{`msg_j_started_1.1796159232.{"type":"job.completed"}`, false},
		{`msg_j_completed.1796159232.{"type":"job.completed"} `, false},
	} {
		if got := ed25519.Verify(k.Public, []byte(tc.msg), sig); got != tc.want {
			t.Errorf("verify %q = %v, want %v", tc.msg, got, tc.want)
		}
	}
}
