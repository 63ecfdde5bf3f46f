package authn_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/claimcheck/claimcheck/api/authn"
)

// TestFinding9OriginIsSchemeHostPort: an Origin names this site only if
// scheme, host and port all match (default ports and case aside), Origin:
// null never does, and only a request without any Origin may fall back to
// its Referer.
func TestFinding9OriginIsSchemeHostPort(t *testing.T) {
	for _, tc := range []struct {
		name string
		host string
		tls  bool
		hdr  []string
		want bool
	}{
		{"same", "jobs.example", false, []string{"Origin", "http://jobs.example"}, true},
		{"default port spelled out, other case", "JOBS.example", false, []string{"Origin", "HTTP://jobs.EXAMPLE:80"}, true},
		{"explicit port", "jobs.example:8080", false, []string{"Origin", "http://jobs.example:8080"}, true},
		{"https over TLS", "jobs.example", true, []string{"Origin", "https://jobs.example:443"}, true},
		{"IPv6", "[::1]:8080", false, []string{"Origin", "http://[::1]:8080"}, true},
		{"scheme differs", "jobs.example", false, []string{"Origin", "https://jobs.example"}, false},
		{"http Origin over TLS", "jobs.example", true, []string{"Origin", "http://jobs.example"}, false},
		{"port differs", "jobs.example:8080", false, []string{"Origin", "http://jobs.example:8081"}, false},
		{"default port vs explicit other", "jobs.example", false, []string{"Origin", "http://jobs.example:8080"}, false},
		{"suffix host", "jobs.example", false, []string{"Origin", "http://evil-jobs.example"}, false},
		{"null", "jobs.example", false, []string{"Origin", "null"}, false},
		{"null with same Referer", "jobs.example", false, []string{"Origin", "null", "Referer", "http://jobs.example/"}, false},
		{"empty Origin with same Referer", "jobs.example", false, []string{"Origin", "", "Referer", "http://jobs.example/"}, false},
		{"Origin with a path", "jobs.example", false, []string{"Origin", "http://jobs.example/x"}, false},
		{"Origin with user info", "jobs.example", false, []string{"Origin", "http://a@jobs.example"}, false},
		{"other scheme", "jobs.example", false, []string{"Origin", "ftp://jobs.example"}, false},
		{"no Origin, same Referer", "jobs.example", false, []string{"Referer", "http://jobs.example/ui?x=1"}, true},
		{"no Origin, Referer with other scheme", "jobs.example", false, []string{"Referer", "https://jobs.example/ui"}, false},
		{"nothing", "jobs.example", false, nil, false},
		// What survives package forwarded came from a trusted proxy.
		{"forwarded host and proto", "10.0.0.5:8080", false, []string{"Origin", "https://jobs.example", "X-Forwarded-Host", "jobs.example", "X-Forwarded-Proto", "https"}, true},
		{"forwarded host, nearest proxy's value wins", "10.0.0.5:8080", false, []string{"Origin", "http://jobs.example", "X-Forwarded-Host", "evil, jobs.example"}, true},
	} {
		r := httptest.NewRequest("POST", "http://"+tc.host+"/v1/jobs", nil)
		r.Host = tc.host
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		for i := 0; i+1 < len(tc.hdr); i += 2 {
			r.Header[http.CanonicalHeaderKey(tc.hdr[i])] = []string{tc.hdr[i+1]}
		}
		if got := authn.SameOrigin(r); got != tc.want {
			t.Errorf("%s: SameOrigin = %v, want %v", tc.name, got, tc.want)
		}
	}
}
