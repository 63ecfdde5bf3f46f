package keyslot_test

import (
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/keyslot"
)

// hashTag is what Redis Cluster hashes of a key: the text between the first
// "{" and the next "}" when that is not empty, else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

func TestTagKeepsOneNamesKeysTogether(t *testing.T) {
	for _, name := range []string{"ann", "svc-reports@example", "0192f0c4-7d1e-7a3b-9c4d-5e6f7a8b9c0d", "", "a}b", "{}", "x{y}z", "}{"} {
		tag := keyslot.Tag(name)
		a, b := "cc:user:"+tag, "cc:owner-jobs:"+tag+":more"
		if hashTag(a) != hashTag(b) || hashTag(a) == a {
			t.Errorf("%q: keys %q and %q hash apart (%q, %q)", name, a, b, hashTag(a), hashTag(b))
		}
	}
	if keyslot.Tag("a}b") == keyslot.Tag("a}c") {
		t.Error("two brace names share a tag")
	}
	if keyslot.Tag("ann") != "{ann}" {
		t.Errorf("plain name tag %q", keyslot.Tag("ann"))
	}
}
