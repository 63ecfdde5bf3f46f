// Package webhook owns what a job's webhook is: the subscription a client
// sends with its job (Spec: a URL and the events it wants) and the rules
// that make such a URL safe to call from inside a deployment (Guard: SSRF
// defence at submit and again at connect time). Delivery itself (signing,
// retries, throttling) lives in package delivery, which runs in workers.
//
// What is refused, and where:
//
//   - At submit (api/enqueue), Spec.Normalize checks the URL's shape
//     (http or https, a host, no user info, no fragment, known events)
//     and Guard.CheckURL resolves the host, bounded by the caller's
//     deadline, and refuses the URL if any of its addresses is not public
//     unicast (loopback, private, link-local, CGNAT, cloud metadata,
//     multicast, broadcast, reserved, and IPv4-in-IPv6 forms of those; the
//     exact list is on Guard.CheckAddr) or if it does not resolve. The
//     client gets a 422 naming the field; nothing is stored.
//   - At delivery, every connection goes through Guard.Transport, whose
//     dialer's Control checks the address actually connected to, after
//     DNS: a name that rebinds to 127.0.0.1 after the submit check, or a
//     redirect to a private address, is refused there. No proxy is used.
//   - The operator's allow flag (--webhook-allow-private,
//     CLAIMCHECK_WEBHOOK_ALLOW_PRIVATE; Guard.AllowPrivate) turns the
//     address checks off at both places, for development and for
//     receivers inside the deployment. Schemes are still enforced and the
//     host must still resolve at submit.
//
// This package never reads a job record and never signs anything.
package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Events a webhook may subscribe to. EventCompleted covers every final
// state: succeeded, failed and canceled.
const (
	EventStarted   = "started"
	EventProgress  = "progress"
	EventLog       = "log"
	EventCompleted = "completed"
)

// Events lists every event, in the order a job emits them.
var Events = []string{EventStarted, EventProgress, EventLog, EventCompleted}

// MaxURLLength bounds a webhook URL.
const MaxURLLength = 2048

// Spec is a job's webhook subscription, as POST /v1/jobs takes it under
// "webhook".
type Spec struct {
	// URL is called with POST for every subscribed event: http or https,
	// with a host, no user info and no fragment.
	URL string `json:"url"`
	// Events are the subscribed events (default ["completed"]).
	Events []string `json:"events,omitempty"`
}

// Normalize checks the spec's shape (not where its URL leads: that is
// Guard's business) and returns it with its events deduplicated in
// canonical order, ["completed"] when none were given.
func (s Spec) Normalize() (Spec, error) {
	if s.URL == "" {
		return Spec{}, errors.New("url is required")
	}
	if len(s.URL) > MaxURLLength {
		return Spec{}, fmt.Errorf("url is longer than %d bytes", MaxURLLength)
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return Spec{}, errors.New("url is not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return Spec{}, errors.New(`url must be http or https`)
	case u.Host == "" || u.Hostname() == "":
		return Spec{}, errors.New("url has no host")
	case u.User != nil:
		return Spec{}, errors.New("url must not carry user info")
	case u.Fragment != "" || strings.Contains(s.URL, "#"):
		return Spec{}, errors.New("url must not carry a fragment")
	}
	// An internationalised name is kept in its ASCII (punycode) form:
	// that is what the resolver at submit and the dialer at delivery both
	// take, so both check the same name (Go's resolver refuses non-ASCII
	// names, which made every such URL "does not resolve").
	if host := u.Hostname(); !isASCII(host) {
		ascii, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return Spec{}, errors.New("url host is not a valid internationalised domain name")
		}
		if port := u.Port(); port != "" {
			u.Host = net.JoinHostPort(ascii, port)
		} else {
			u.Host = ascii
		}
		if len(u.String()) > MaxURLLength {
			return Spec{}, fmt.Errorf("url is longer than %d bytes", MaxURLLength)
		}
	}
	if len(s.Events) > len(Events) {
		return Spec{}, fmt.Errorf("events: at most %d", len(Events))
	}
	var events []string
	for _, e := range Events {
		if slices.Contains(s.Events, e) {
			events = append(events, e)
		}
	}
	for _, e := range s.Events {
		if !slices.Contains(Events, e) {
			return Spec{}, fmt.Errorf("events: unknown event %q (want %s)", e, strings.Join(Events, ", "))
		}
	}
	if len(events) == 0 {
		events = []string{EventCompleted}
	}
	return Spec{URL: u.String(), Events: events}, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Wants reports whether the spec subscribes to event.
func (s *Spec) Wants(event string) bool {
	return s != nil && slices.Contains(s.Events, event)
}
