package webhook_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/webhook"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      webhook.Spec
		events  []string
		wantErr string
	}{
		{name: "default events", in: webhook.Spec{URL: "https://example.org/hook"}, events: []string{"completed"}},
		{name: "dedup and order", in: webhook.Spec{URL: "http://example.org/h", Events: []string{"completed", "log", "started", "log"}}, events: []string{"started", "log", "completed"}},
		{name: "missing url", in: webhook.Spec{}, wantErr: "required"},
		{name: "bad internationalised name", in: webhook.Spec{URL: "https://b\u00fc_cher.example/"}, wantErr: "internationalised"},
		{name: "ftp", in: webhook.Spec{URL: "ftp://example.org/"}, wantErr: "http or https"},
		{name: "no host", in: webhook.Spec{URL: "https:///x"}, wantErr: "no host"},
		{name: "user info", in: webhook.Spec{URL: "https://u:p@example.org/"}, wantErr: "user info"},
		{name: "fragment", in: webhook.Spec{URL: "https://example.org/#x"}, wantErr: "fragment"},
		{name: "unknown event", in: webhook.Spec{URL: "https://example.org/", Events: []string{"finished"}}, wantErr: "unknown event"},
		{name: "too long", in: webhook.Spec{URL: "https://example.org/" + strings.Repeat("a", webhook.MaxURLLength)}, wantErr: "longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.Normalize()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Normalize(%+v) = %v, want error containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Events, tc.events) {
				t.Fatalf("events %v, want %v", got.Events, tc.events)
			}
			if !got.Wants(tc.events[0]) || got.Wants("nope") {
				t.Fatalf("Wants disagrees with events %v", got.Events)
			}
		})
	}
	// An internationalised name becomes its ASCII form, port kept, which
	// is the name both the submit check and the dialer resolve.
	idn, err := webhook.Spec{URL: "https://b\u00fccher.example:8443/h?x=\u00e9"}.Normalize()
	if err != nil || !strings.HasPrefix(idn.URL, "https://xn--bcher-kva.example:8443/h?") {
		t.Fatalf("IDN URL normalized to %q (%v), want the punycode host", idn.URL, err)
	}
	var none *webhook.Spec
	if none.Wants(webhook.EventCompleted) {
		t.Fatal("a nil spec wants nothing")
	}
}
