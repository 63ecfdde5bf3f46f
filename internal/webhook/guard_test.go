package webhook_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/claimcheck/claimcheck/internal/webhook"
)

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		reason string // "" = allowed
	}{
		// public
		{"8.8.8.8", ""},
		{"93.184.215.14", ""},
		{"1.1.1.1", ""},
		{"100.63.255.255", ""}, // just below CGNAT
		{"100.128.0.0", ""},    // just above CGNAT
		{"172.32.0.1", ""},     // just above 172.16/12
		{"2606:4700:4700::1111", ""},
		{"2a00:1450:4001::200e", ""},
		{"::ffff:8.8.8.8", ""},       // mapped public
		{"64:ff9b::808:808", ""},     // NAT64 of 8.8.8.8
		{"2002:808:808::1", ""},      // 6to4 of 8.8.8.8
		{"2001:4860:4860::8888", ""}, // outside 2001::/23
		// IPv4
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "reserved"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"10.0.0.1", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"100.64.0.1", "shared (CGNAT)"},
		{"169.254.1.1", "link-local"},
		{"169.254.169.254", "cloud metadata"},
		{"169.254.170.2", "cloud metadata"},
		{"100.100.100.200", "cloud metadata"},
		{"192.0.0.192", "cloud metadata"},
		{"192.0.0.8", "reserved"},
		{"192.0.2.1", "documentation"},
		{"198.18.0.1", "reserved"},
		{"198.51.100.7", "documentation"},
		{"203.0.113.9", "documentation"},
		{"192.88.99.1", "reserved"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "broadcast"},
		// IPv6
		{"::", "unspecified"},
		{"::1", "loopback"},
		{"fc00::1", "private"},
		{"fd12:3456::1", "private"},
		{"fd00:ec2::254", "cloud metadata"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"fec0::1", "site-local"},
		{"ff02::1", "multicast"},
		{"100::1", "reserved"},  // discard-only
		{"5f00::1", "reserved"}, // SRv6 SIDs
		{"2001::1", "reserved"}, // Teredo
		{"2001:db8::1", "documentation"},
		{"3fff::1", "documentation"},
		{"4000::1", "reserved"}, // unallocated, outside 2000::/3
		// IPv4 in IPv6
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:10.0.0.1", "private"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"::127.0.0.1", "reserved"},              // IPv4-compatible (deprecated)
		{"::ffff:0:127.0.0.1", "reserved"},       // IPv4-translated
		{"64:ff9b::7f00:1", "loopback"},          // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", "cloud metadata"}, // NAT64 of 169.254.169.254
		{"64:ff9b:1::808:808", "reserved"},       // local-use NAT64
		{"2002:7f00:1::1", "loopback"},           // 6to4 of 127.0.0.1
		{"2002:a00:1::1", "private"},             // 6to4 of 10.0.0.1
	} {
		t.Run(tc.addr, func(t *testing.T) {
			addr := netip.MustParseAddr(tc.addr)
			err := (&webhook.Guard{}).CheckAddr(addr)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("CheckAddr(%s) = %v, want allowed", addr, err)
				}
			} else {
				var re *webhook.RefusedError
				if !errors.Is(err, webhook.ErrRefused) || !errors.As(err, &re) || re.Reason != tc.reason {
					t.Fatalf("CheckAddr(%s) = %v, want refused as %q", addr, err, tc.reason)
				}
			}
			// The allow flag lets every address through, and Control agrees
			// with CheckAddr on the same address.
			if err := (&webhook.Guard{AllowPrivate: true}).CheckAddr(addr); err != nil {
				t.Fatalf("AllowPrivate: CheckAddr(%s) = %v", addr, err)
			}
			ctlErr := (&webhook.Guard{}).Control("tcp", netip.AddrPortFrom(addr, 443).String(), nil)
			if (ctlErr == nil) != (tc.reason == "") || (ctlErr != nil && !errors.Is(ctlErr, webhook.ErrRefused)) {
				t.Fatalf("Control(%s) = %v, CheckAddr = %v", addr, ctlErr, err)
			}
		})
	}
}

func TestControlRefusesOtherNetworks(t *testing.T) {
	g := &webhook.Guard{AllowPrivate: false}
	for _, tc := range []struct{ network, address string }{
		{"udp", "8.8.8.8:53"},
		{"unix", "/run/redis.sock"},
		{"tcp", "example.org:443"}, // Control always sees an IP; a name is a bug upstream
	} {
		if err := g.Control(tc.network, tc.address, nil); !errors.Is(err, webhook.ErrRefused) {
			t.Errorf("Control(%s, %s) = %v, want refused", tc.network, tc.address, err)
		}
	}
	if err := g.Control("tcp6", "[2606:4700:4700::1111]:443", nil); err != nil {
		t.Errorf("Control to a public IPv6 address: %v", err)
	}
}

// dnsServer is a UDP DNS responder on loopback answering A and AAAA
// queries from answers; a name it does not know gets NXDOMAIN. A name's A
// answers are served in turn (the last one repeats), so a test can make a
// name resolve differently the second time.
type dnsServer struct {
	mu      sync.Mutex
	a       map[string][]netip.Addr // queried name → successive A answers
	aaaa    map[string]netip.Addr
	aCount  map[string]int
	pc      net.PacketConn
	stalled map[string]bool // names never answered (a slow DNS)
}

// startDNS starts a responder whose answers setup fills in before it
// serves (it must not change them afterwards).
func startDNS(t *testing.T, setup func(s *dnsServer)) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{a: map[string][]netip.Addr{}, aaaa: map[string]netip.Addr{}, aCount: map[string]int{}, stalled: map[string]bool{}, pc: pc}
	t.Cleanup(func() { pc.Close() })
	setup(s)
	go s.serve()
	return s
}

func (s *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := s.answer(buf[:n]); resp != nil {
			s.pc.WriteTo(resp, from)
		}
	}
}

func (s *dnsServer) answer(req []byte) []byte {
	var p dnsmessage.Parser
	hdr, err := p.Start(req)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled[name] {
		return nil
	}
	_, knownA := s.a[name]
	_, knownAAAA := s.aaaa[name]
	rcode := dnsmessage.RCodeSuccess
	if !knownA && !knownAAAA {
		rcode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionDesired: hdr.RecursionDesired, RecursionAvailable: true, RCode: rcode})
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
	switch q.Type {
	case dnsmessage.TypeA:
		if answers := s.a[name]; len(answers) > 0 {
			i := min(s.aCount[name], len(answers)-1)
			s.aCount[name]++
			b.AResource(rh, dnsmessage.AResource{A: answers[i].As4()})
		}
	case dnsmessage.TypeAAAA:
		if addr, ok := s.aaaa[name]; ok {
			b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: addr.As16()})
		}
	}
	resp, err := b.Finish()
	if err != nil {
		return nil
	}
	return resp
}

// queries returns how many A queries for name were answered.
func (s *dnsServer) queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.aCount[name]
}

func (s *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", s.pc.LocalAddr().String())
		},
	}
}

func TestCheckURL(t *testing.T) {
	dns := startDNS(t, func(dns *dnsServer) {
		dns.a["public.test"] = []netip.Addr{netip.MustParseAddr("93.184.215.14")}
		dns.aaaa["public.test"] = netip.MustParseAddr("2606:2800:21f:cb07:6820:80da:af6b:8b2c")
		dns.a["mixed.test"] = []netip.Addr{netip.MustParseAddr("8.8.8.8")}
		dns.aaaa["mixed.test"] = netip.MustParseAddr("fd00::1")
		dns.a["private.test"] = []netip.Addr{netip.MustParseAddr("10.1.2.3")}
		dns.a["metadata.test"] = []netip.Addr{netip.MustParseAddr("169.254.169.254")}
		dns.aaaa["v6only.test"] = netip.MustParseAddr("::1")
		dns.a["empty.test"] = nil // a known name with no address: empty answers
		dns.stalled["slow.test"] = true
	})

	for _, tc := range []struct {
		name    string
		url     string
		allow   bool
		want    error  // nil: allowed
		message string // in the error
	}{
		{name: "public name", url: "https://public.test/hook"},
		{name: "public literal", url: "http://8.8.8.8:8080/x"},
		{name: "public literal v6", url: "https://[2606:4700:4700::1111]/x"},
		{name: "one private address of several", url: "https://mixed.test/", want: webhook.ErrRefused, message: "resolves to a private address (fd00::1)"},
		{name: "private name", url: "https://private.test/", want: webhook.ErrRefused, message: "private address (10.1.2.3)"},
		{name: "metadata name", url: "http://metadata.test/latest/meta-data", want: webhook.ErrRefused, message: "cloud metadata"},
		{name: "loopback AAAA only", url: "http://v6only.test/", want: webhook.ErrRefused, message: "loopback address (::1)"},
		{name: "localhost via hosts file", url: "http://localhost:8080/", want: webhook.ErrRefused, message: "loopback address (127.0.0.1)"},
		{name: "loopback literal", url: "http://127.0.0.1/", want: webhook.ErrRefused, message: "127.0.0.1 is a loopback address"},
		{name: "loopback v6 literal", url: "http://[::1]:9000/", want: webhook.ErrRefused, message: "loopback"},
		{name: "mapped literal", url: "http://[::ffff:127.0.0.1]/", want: webhook.ErrRefused, message: "loopback"},
		{name: "metadata literal", url: "http://169.254.169.254/", want: webhook.ErrRefused, message: "cloud metadata"},
		{name: "ftp", url: "ftp://public.test/", want: webhook.ErrRefused, message: "not http or https"},
		{name: "ftp allowed private", url: "ftp://127.0.0.1/", allow: true, want: webhook.ErrRefused, message: "not http or https"},
		{name: "nxdomain", url: "https://nowhere.test/", want: webhook.ErrNotResolved},
		{name: "no addresses", url: "https://empty.test/", want: webhook.ErrNotResolved},
		{name: "slow dns", url: "https://slow.test/", want: webhook.ErrNotResolved},
		{name: "nxdomain allowed private", url: "https://nowhere.test/", allow: true, want: webhook.ErrNotResolved},
		{name: "allowed private name", url: "https://private.test/", allow: true},
		{name: "allowed loopback literal", url: "http://127.0.0.1:8080/", allow: true},
		{name: "allowed localhost", url: "http://localhost/", allow: true},
		// Red-team spellings: each reaches the same verdict as its plain
		// form, or does not resolve (a 422 as well); none is let through.
		{name: "trailing dot", url: "https://private.test./", want: webhook.ErrRefused, message: "private address (10.1.2.3)"},
		{name: "upper case", url: "https://PRIVATE.Test/", want: webhook.ErrRefused, message: "private address (10.1.2.3)"},
		{name: "upper case scheme", url: "HTTP://127.0.0.1/", want: webhook.ErrRefused, message: "loopback"},
		{name: "decimal IPv4", url: "http://2130706433/", want: webhook.ErrNotResolved},
		{name: "hex IPv4", url: "http://0x7f.1/", want: webhook.ErrNotResolved},
		{name: "octal IPv4", url: "http://017700000001/", want: webhook.ErrNotResolved},
		{name: "leading-zero IPv4", url: "http://0177.0.0.1/", want: webhook.ErrNotResolved},
		{name: "short IPv4", url: "http://127.1/", want: webhook.ErrNotResolved},
		{name: "unspecified v6", url: "http://[::]/", want: webhook.ErrRefused, message: "unspecified"},
		{name: "unspecified v4 with port", url: "http://0.0.0.0:8080/", want: webhook.ErrRefused, message: "unspecified"},
		{name: "zone id", url: "http://[fe80::1%25eth0]:80/", want: webhook.ErrRefused, message: "link-local"},
		{name: "mapped hex literal", url: "http://[::ffff:7f00:1]/", want: webhook.ErrRefused, message: "loopback"},
		{name: "long hostname", url: "http://" + strings.Repeat("a", 300) + ".test/", want: webhook.ErrNotResolved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &webhook.Guard{AllowPrivate: tc.allow, Resolver: dns.resolver()}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			err := g.CheckURL(ctx, tc.url)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckURL(%s) = %v, want allowed", tc.url, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("CheckURL(%s) = %v, want %v containing %q", tc.url, err, tc.want, tc.message)
			}
			other := webhook.ErrNotResolved
			if tc.want == webhook.ErrNotResolved {
				other = webhook.ErrRefused
			}
			if errors.Is(err, other) {
				t.Fatalf("CheckURL(%s) = %v is both refused and not resolved", tc.url, err)
			}
		})
	}
}

// hitCounter is an httptest server on loopback counting the requests it got.
func hitCounter(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func post(t *testing.T, tr *http.Transport, target string) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if resp != nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestTransportRefusesLoopback(t *testing.T) {
	srv, hits := hitCounter(t)
	tr := (&webhook.Guard{}).Transport(2*time.Second, 2*time.Second)
	defer tr.CloseIdleConnections()
	_, err := post(t, tr, srv.URL)
	if !errors.Is(err, webhook.ErrRefused) {
		t.Fatalf("POST %s through the guarded transport: %v, want refused", srv.URL, err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests", n)
	}

	// The same server is reachable when the operator allows private
	// addresses: the refusal above is the guard's, not a broken transport.
	open := (&webhook.Guard{AllowPrivate: true}).Transport(2*time.Second, 2*time.Second)
	defer open.CloseIdleConnections()
	resp, err := post(t, open, srv.URL)
	if err != nil || resp.StatusCode != http.StatusNoContent || hits.Load() != 1 {
		t.Fatalf("allowed: %v %v, hits %d", resp, err, hits.Load())
	}
}

// TestTransportRefusesRebinding: a name resolves to a public address when
// the URL is checked and to 127.0.0.1 when the deliverer connects; the
// connection is refused and the loopback server sees nothing.
func TestTransportRefusesRebinding(t *testing.T) {
	srv, hits := hitCounter(t)
	dns := startDNS(t, func(dns *dnsServer) {
		dns.a["rebind.test"] = []netip.Addr{netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("127.0.0.1")}
	})
	g := &webhook.Guard{Resolver: dns.resolver()}

	u, _ := url.Parse(srv.URL)
	target := "http://rebind.test:" + u.Port() + "/hook"
	if err := g.CheckURL(t.Context(), target); err != nil {
		t.Fatalf("CheckURL at submit (public answer): %v", err)
	}
	tr := g.Transport(2*time.Second, 2*time.Second)
	defer tr.CloseIdleConnections()
	_, err := post(t, tr, target)
	if !errors.Is(err, webhook.ErrRefused) || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("POST after rebinding: %v, want refused naming 127.0.0.1", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests", n)
	}
	if n := dns.queries("rebind.test"); n < 2 {
		t.Fatalf("the name was resolved %d times; the transport did not resolve again", n)
	}
}

func TestTransportIgnoresProxyEnvironment(t *testing.T) {
	// A proxy on loopback would be refused by Control anyway; the point is
	// that the transport never asks the environment, so a public proxy
	// cannot stand in for a private receiver either.
	t.Setenv("HTTP_PROXY", "http://8.8.8.8:3128")
	t.Setenv("HTTPS_PROXY", "http://8.8.8.8:3128")
	tr := (&webhook.Guard{}).Transport(time.Second, time.Second)
	if tr.Proxy != nil {
		t.Fatal("the webhook transport takes a proxy")
	}
	if tr.Protocols == nil || !tr.Protocols.HTTP1() || !tr.Protocols.HTTP2() {
		t.Fatalf("protocols %v, want HTTP/1.1 and HTTP/2", tr.Protocols)
	}
	if tr.ResponseHeaderTimeout != time.Second || tr.TLSHandshakeTimeout != time.Second {
		t.Fatalf("timeouts not applied: %v %v", tr.ResponseHeaderTimeout, tr.TLSHandshakeTimeout)
	}
}
