package forwarded_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/claimcheck/claimcheck/api/forwarded"
)

func TestUntrustedForwardingHeadersAreDropped(t *testing.T) {
	p, err := forwarded.Parse([]string{"10.0.0.0/8", "::1", " 192.168.1.7 "})
	if err != nil {
		t.Fatal(err)
	}
	var seen http.Header
	h := p.Handler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = r.Header.Clone() }))
	for _, tc := range []struct {
		remote string
		keep   bool
	}{
		{"10.1.2.3:5000", true},
		{"[::1]:5000", true},
		{"[::ffff:10.0.0.1]:5000", true}, // IPv4-mapped
		{"192.168.1.7:80", true},
		{"192.168.1.8:80", false},
		{"127.0.0.1:80", false},
		{"garbage", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		for _, k := range forwarded.Headers {
			r.Header.Set(k, "x")
		}
		r.Header.Set("Origin", "http://a")
		h.ServeHTTP(httptest.NewRecorder(), r)
		for _, k := range forwarded.Headers {
			if got := seen.Get(k) != ""; got != tc.keep {
				t.Errorf("from %s: %s kept %v, want %v", tc.remote, k, got, tc.keep)
			}
		}
		if seen.Get("Origin") == "" {
			t.Errorf("from %s: Origin dropped", tc.remote)
		}
	}
	var none *forwarded.Proxies
	if none.Trusts("10.0.0.1:1") {
		t.Error("nil Proxies trusts someone")
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "1.2.3"} {
		if _, err := forwarded.Parse([]string{bad}); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestAddressKeyGroupsIPv6By64(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                      "192.0.2.7",
		"::ffff:192.0.2.7":               "192.0.2.7",
		"2001:db8:1:2::1":                "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff:ffff:ff": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":                "2001:db8:1:3::/64",
		"not an address":                 "not an address",
	} {
		if got := forwarded.AddressKey(in); got != want {
			t.Errorf("AddressKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClientIPBelievesOnlyTrustedProxies(t *testing.T) {
	trusted, err := forwarded.Parse([]string{"10.0.0.7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, remote, xff, want string
		proxies                 *forwarded.Proxies
	}{
		{"trusted proxy: the peer it saw", "10.0.0.7:4000", "203.0.113.9, 198.51.100.4", "198.51.100.4", trusted},
		{"trusted proxy, no header", "10.0.0.7:4000", "", "10.0.0.7", trusted},
		{"trusted proxy, garbage", "10.0.0.7:4000", "not-an-ip", "10.0.0.7", trusted},
		{"anyone else's header is ignored", "192.0.2.1:4000", "198.51.100.4", "192.0.2.1", trusted},
		{"no trusted proxies", "10.0.0.7:4000", "198.51.100.4", "10.0.0.7", nil},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := tc.proxies.ClientIP(r); got != tc.want {
			t.Errorf("%s: ClientIP = %q, want %q", tc.name, got, tc.want)
		}
	}
}
