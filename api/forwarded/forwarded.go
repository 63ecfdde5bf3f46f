// Package forwarded decides, in one place, whether a request's forwarding
// headers may be believed: the ones a proxy uses to tell the service behind
// it what the client asked for (its address, the host and scheme it used, and
// for forward-auth the method and URI being authorised).
//
// Anyone can send these headers. They mean something only when a proxy we
// were told about (--trusted-proxy) set them, so Handler deletes every one of
// them from a request whose TCP peer is not such a proxy, before any other
// code sees it. Downstream code — the CSRF check, the Secure cookie flag,
// forward-auth's method, client addresses for rate limits — may then believe
// whatever survives. A trusted proxy must set or clear each header itself
// (docs/gateway/nginx.conf does); this package cannot tell a header the proxy
// set from one it passed along.
//
// Trusted proxies are matched by the connection's address only: one hop. A
// chain of proxies is trusted by naming each of them.
package forwarded

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Headers are the forwarding headers Handler deletes from untrusted
// requests.
var Headers = []string{
	"Forwarded", // RFC 7239
	"X-Forwarded-For",
	"X-Forwarded-Host",
	"X-Forwarded-Proto",
	"X-Forwarded-Port",
	"X-Forwarded-Prefix",
	"X-Forwarded-Method", // Traefik, Envoy forward-auth
	"X-Forwarded-Uri",
	"X-Original-Method", // nginx auth_request, by our config
	"X-Original-URI",
	"X-Real-Ip",
}

// Proxies is a set of trusted proxy addresses. The zero value and nil trust
// nobody.
type Proxies struct {
	prefixes []netip.Prefix
}

// Parse reads addresses ("10.0.0.7", "::1") and CIDRs ("172.16.0.0/12").
func Parse(list []string) (*Proxies, error) {
	p := &Proxies{}
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR", s)
			}
			p.prefixes = append(p.prefixes, pfx.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR", s)
		}
		a = a.Unmap()
		p.prefixes = append(p.prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	return p, nil
}

// Trusts reports whether remoteAddr (an http.Request's RemoteAddr,
// "host:port") is a trusted proxy.
func (p *Proxies) Trusts(remoteAddr string) bool {
	if p == nil || len(p.prefixes) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, pfx := range p.prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// Handler deletes the forwarding headers of every request whose peer p does
// not trust, then calls h. Wrap each process's whole handler with it.
func (p *Proxies) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.Trusts(r.RemoteAddr) {
			Strip(r.Header)
		}
		h.ServeHTTP(w, r)
	})
}

// ClientIP is the client's address: from a trusted proxy, the address that
// proxy put last in X-Forwarded-For (the peer it saw; one hop, as Trusts
// is); from anyone else, the connection's own address. It is what a plain
// net/http handler uses where gin's ClientIP is not at hand.
func (p *Proxies) ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if p.Trusts(r.RemoteAddr) {
		if ip := nearest(r.Header, "X-Forwarded-For"); ip != "" {
			if _, err := netip.ParseAddr(ip); err == nil {
				return ip
			}
		}
	}
	return host
}

// Strip deletes every forwarding header from h.
func Strip(h http.Header) {
	for _, k := range Headers {
		h.Del(k)
	}
}

// Proto is the scheme the client used: https when the connection is TLS or
// a (trusted, surviving) X-Forwarded-Proto says so, else http.
func Proto(r *http.Request) string {
	if r.TLS != nil || strings.EqualFold(nearest(r.Header, "X-Forwarded-Proto"), "https") {
		return "https"
	}
	return "http"
}

// Host is the host (and port, if any) the client asked for: a surviving
// X-Forwarded-Host, else the request's Host.
func Host(r *http.Request) string {
	if h := nearest(r.Header, "X-Forwarded-Host"); h != "" {
		return h
	}
	return r.Host
}

// nearest is the last element of a list-valued header: the one the proxy
// nearest us set. A trusted proxy that appends to what its client sent,
// rather than replacing it, still cannot be overruled by that client.
func nearest(h http.Header, key string) string {
	vs := h.Values(key)
	if len(vs) == 0 {
		return ""
	}
	v := vs[len(vs)-1]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(v)
}

// AddressKey is the key that per-address limits count a client address
// under: an IPv4 address as it is, an IPv6 address as its /64. One IPv6
// host is routinely given a whole /64, so counting each /128 would hand a
// single client 2^64 budgets. Anything that is not an address is returned
// unchanged.
func AddressKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}
