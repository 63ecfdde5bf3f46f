package registry_test

import (
	"testing"

	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/registry"
)

// TestDigestOfAReadBackSpecIsTheAnnouncedOne: the api computes each type's
// spec_digest (GET /v1/job-types) from the spec it read back, and a result
// receipt names the digest its worker announced; the two must agree for
// any spelling of the schema and whatever defaults the spec left out.
func TestDigestOfAReadBackSpecIsTheAnnouncedOne(t *testing.T) {
	rdb := redistest.Client(t)
	c := newClock()
	spaced := spec("spaced", "", "{ \"type\" : \"object\",\n \"properties\": {\"n\": {\"maximum\": 1e3, \"type\": \"integer\"}, \"s\": {\"pattern\": \"<a&b>\"}} }")
	bare := spec("bare", "", ``)
	bare.MaxTimeout, bare.Description = 0, ""
	a := start(t, rdb, config(c, "w1"), spec("count", "cpu", schemaN), spaced, bare)
	cat, _ := fresh(t, rdb, c)
	announced := a.Digests()
	for _, name := range []string{"count", "spaced", "bare"} {
		s, ok := cat.Lookup(name)
		if !ok {
			t.Fatalf("%s not read back", name)
		}
		d, err := registry.Digest(s)
		if err != nil || d != announced[name] || d == "" {
			t.Errorf("%s: digest of the read-back spec %q (%v), announced %q", name, d, err, announced[name])
		}
	}
}
