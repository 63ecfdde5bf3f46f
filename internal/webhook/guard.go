package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every error that refuses a webhook URL or a
// connection because of where it leads (or, for CheckURL, its scheme).
var ErrRefused = errors.New("webhook address refused")

// ErrNotResolved is wrapped by CheckURL's error when the URL's host does not
// resolve (no such name, no address, or the lookup failed or timed out). It
// is distinct from ErrRefused: the URL may be fine, only not reachable now.
var ErrNotResolved = errors.New("webhook host does not resolve")

// RefusedError says which address of a host was refused and why. It wraps
// ErrRefused.
type RefusedError struct {
	Host   string     // the URL's host, or the dialed address for Control
	Addr   netip.Addr // the refused address (zero for a refused scheme or network)
	Reason string     // "loopback", "private", "link-local", "cloud metadata", …
}

func (e *RefusedError) Error() string {
	if !e.Addr.IsValid() {
		return fmt.Sprintf("webhook %s: %s", e.Host, e.Reason)
	}
	if e.Host == e.Addr.String() {
		return fmt.Sprintf("webhook address %s is %s %s address", e.Addr, article(e.Reason), e.Reason)
	}
	return fmt.Sprintf("webhook host %s resolves to %s %s address (%s)", e.Host, article(e.Reason), e.Reason, e.Addr)
}

func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// Unwrap makes errors.Is(err, ErrRefused) hold.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// Guard decides which webhook URLs and connections are allowed: the SSRF
// defence of webhooks. The api calls CheckURL when a job is submitted (a
// clear 422 for the client); the deliverer dials through Transport, whose
// Control repeats the address check on the address actually connected to,
// after DNS, so DNS rebinding and redirects gain nothing. A zero Guard
// refuses non-public addresses and uses net.DefaultResolver.
type Guard struct {
	AllowPrivate bool          // the operator's explicit allow flag
	Resolver     *net.Resolver // nil: net.DefaultResolver
}

// CheckURL resolves the URL's host and refuses (error wrapping ErrRefused) a
// URL with any address that is not a public unicast address: loopback,
// private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10),
// multicast, unspecified, broadcast, CGNAT 100.64/10, cloud metadata
// (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192), the
// IPv4-mapped, IPv4-compatible, IPv4-translated, 6to4 and NAT64 forms of
// those, and the other reserved ranges (see CheckAddr for the list). One
// refused address refuses the URL, even if others are public: the dialer
// could pick any of them. It also refuses non-http(s) schemes (ErrRefused)
// and hosts that do not resolve (ErrNotResolved). The caller bounds the
// lookup with ctx.
//
// With AllowPrivate the address checks are off, but the scheme is checked
// and the host must still resolve.
func (g *Guard) CheckURL(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		// Not %w: url.Error quotes the URL, which may carry the
		// receiver's secret, into logs.
		return errors.New("webhook url: not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return &RefusedError{Host: u.Host, Reason: fmt.Sprintf("scheme %q is not http or https", u.Scheme)}
	}
	host := u.Hostname()
	if host == "" {
		return errors.New("webhook url: no host")
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		// A literal is checked as written: there is nothing to resolve.
		return g.checkAddr(host, addr)
	}
	addrs, err := g.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("webhook host %s: %w: %w", host, ErrNotResolved, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("webhook host %s: %w: no address", host, ErrNotResolved)
	}
	for _, addr := range addrs {
		// The resolver may hand IPv4 answers back in their mapped form;
		// the error should name the address as DNS (or the hosts file) did.
		if err := g.checkAddr(host, addr.Unmap()); err != nil {
			return err
		}
	}
	return nil
}

// CheckAddr refuses (error wrapping ErrRefused, a *RefusedError) an address
// a webhook must not be delivered to, unless AllowPrivate is set.
//
// The list: an address is allowed only if it is globally reachable unicast.
// For IPv4 that is everything outside the IANA IPv4 Special-Purpose Address
// Registry's blocks that are not globally reachable (RFC 6890 and updates),
// plus multicast and the reserved 240/4 (with broadcast): 0/8, 10/8,
// 100.64/10, 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24,
// 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4,
// 240/4. For IPv6 it is an allow list rather than a deny list: only the
// global unicast block 2000::/3 is allowed, minus its special blocks
// (2001::/23 IETF protocol assignments, Teredo among them; 2001:db8::/32
// and 3fff::/20 documentation), because everything outside 2000::/3 is
// reserved, local or special (::1, fc00::/7, fe80::/10, ff00::/8, 100::/64,
// 5f00::/16 …) and a deny list of IPv6 would have to be complete to be
// safe. Forms that embed an
// IPv4 address are judged by that address: IPv4-mapped ::ffff:0:0/96 and
// NAT64 64:ff9b::/96 (RFC 6052; a public address through a NAT64 gateway is
// a real route on IPv6-only networks), 6to4 2002::/16. The local-use NAT64
// prefix 64:ff9b:1::/48, IPv4-compatible ::/96 and IPv4-translated
// ::ffff:0:0:0/96 lie outside 2000::/3 and are refused whatever they embed.
// Cloud metadata addresses are in those ranges already; they are named so
// the error says what the URL reached for.
func (g *Guard) CheckAddr(addr netip.Addr) error {
	return g.checkAddr(addr.String(), addr)
}

func (g *Guard) checkAddr(host string, addr netip.Addr) error {
	if g.AllowPrivate {
		return nil
	}
	if reason := refusal(addr); reason != "" {
		return &RefusedError{Host: host, Addr: addr, Reason: reason}
	}
	return nil
}

// Control is a net.Dialer.Control that refuses to connect to a refused
// address: the check at connect time, after DNS, so a name that resolved to
// a public address at submit and to 127.0.0.1 now (DNS rebinding) is still
// refused. Only TCP is dialed; an address that does not parse is refused.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return &RefusedError{Host: address, Reason: fmt.Sprintf("network %q is not tcp", network)}
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Host: address, Reason: "not an IP address and port"}
	}
	return g.checkAddr(ap.Addr().String(), ap.Addr())
}

// Transport returns an *http.Transport for webhook delivery: a dialer with
// Control and the connect timeout, the connect timeout also bounding the
// TLS handshake, the response timeout bounding the wait for response
// headers, no proxy (a proxy from the environment would make Control check
// the proxy's address instead of the receiver's), HTTP/1.1 and HTTP/2, and
// a small idle pool. Every connection, redirects included, goes through
// Control. The caller still bounds the whole request with a context.
func (g *Guard) Transport(connectTimeout, responseTimeout time.Duration) *http.Transport {
	d := &net.Dialer{
		Timeout:   connectTimeout,
		KeepAlive: 30 * time.Second,
		Resolver:  g.Resolver,
		Control:   g.Control,
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    connectTimeout,
		ResponseHeaderTimeout:  responseTimeout,
		ExpectContinueTimeout:  time.Second,
		ForceAttemptHTTP2:      true,
		Protocols:              &protocols,
		MaxIdleConns:           16,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        30 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
	}
}

func (g *Guard) resolver() *net.Resolver {
	if g.Resolver != nil {
		return g.Resolver
	}
	return net.DefaultResolver
}

type block struct {
	prefix netip.Prefix
	reason string
}

func blocks(reason string, prefixes ...string) []block {
	out := make([]block, len(prefixes))
	for i, p := range prefixes {
		out[i] = block{netip.MustParsePrefix(p), reason}
	}
	return out
}

// metadata are the cloud instance-metadata endpoints, named so the error
// says so; each also lies in a refused range.
var metadata = map[netip.Addr]bool{
	netip.MustParseAddr("169.254.169.254"): true, // AWS, GCP, Azure, OCI, DigitalOcean …
	netip.MustParseAddr("169.254.170.2"):   true, // AWS ECS task metadata
	netip.MustParseAddr("fd00:ec2::254"):   true, // AWS IMDS over IPv6
	netip.MustParseAddr("100.100.100.200"): true, // Alibaba Cloud
	netip.MustParseAddr("192.0.0.192"):     true, // Oracle Cloud (classic)
}

// v4Refused are the IPv4 blocks refused; the first match names the reason.
var v4Refused = slices.Concat(
	blocks("unspecified", "0.0.0.0/32"),
	blocks("reserved", "0.0.0.0/8"), // "this network"
	blocks("loopback", "127.0.0.0/8"),
	blocks("private", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
	blocks("shared (CGNAT)", "100.64.0.0/10"),
	blocks("link-local", "169.254.0.0/16"),
	blocks("reserved", "192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15"),
	blocks("documentation", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"),
	blocks("multicast", "224.0.0.0/4"),
	blocks("broadcast", "255.255.255.255/32"),
	blocks("reserved", "240.0.0.0/4"),
)

// v6Refused are the IPv6 blocks that get a reason of their own; anything
// else outside 2000::/3 is "reserved".
var v6Refused = slices.Concat(
	blocks("unspecified", "::/128"),
	blocks("loopback", "::1/128"),
	blocks("private", "fc00::/7"),
	blocks("link-local", "fe80::/10"),
	blocks("site-local", "fec0::/10"),
	blocks("multicast", "ff00::/8"),
	blocks("reserved", "2001::/23"), // IETF protocol assignments, Teredo among them
	blocks("documentation", "2001:db8::/32", "3fff::/20"),
)

var (
	globalUnicast = netip.MustParsePrefix("2000::/3")
	nat64         = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour     = netip.MustParsePrefix("2002::/16")
)

// refusal returns why addr is refused, "" if it is allowed.
func refusal(addr netip.Addr) string {
	addr = addr.WithZone("")
	if !addr.IsValid() {
		return "invalid"
	}
	if metadata[addr] {
		return "cloud metadata"
	}
	if addr.Is4In6() {
		return refusal(addr.Unmap())
	}
	if addr.Is4() {
		for _, b := range v4Refused {
			if b.prefix.Contains(addr) {
				return b.reason
			}
		}
		return ""
	}
	b := addr.As16()
	switch {
	case nat64.Contains(addr):
		return refusal(netip.AddrFrom4([4]byte(b[12:16])))
	case sixToFour.Contains(addr):
		return refusal(netip.AddrFrom4([4]byte(b[2:6])))
	}
	for _, blk := range v6Refused {
		if blk.prefix.Contains(addr) {
			return blk.reason
		}
	}
	if !globalUnicast.Contains(addr) {
		return "reserved"
	}
	return ""
}
