package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// redisTarget is a parsed REDIS_URL: one server, a Redis Cluster (seed
// nodes), or a Sentinel group and the name of the master it watches.
//
// The forms, with rediss… for TLS:
//
//	redis://[user:password@]host:port[/0]
//	redis+cluster://[user:password@]h1:7000,h2:7001,h3:7002
//	redis+sentinel://[user:password@]s1:26379,s2:26379?master=mymaster[&sentinel_user=u&sentinel_password=p]
//
// Several hosts go in the authority, comma-separated, as in other URL
// schemes that name a group of servers; the user and password are those
// of the data nodes (every node loads the same ACL file), a Sentinel's own
// credentials, when it has any, are query parameters. There is no database
// number: claimcheck keeps its keys apart by prefix, and a cluster has
// only database 0, so "/0" is accepted and anything else refused.
type redisTarget struct {
	mode     string // "single", "cluster" or "sentinel"
	addrs    []string
	user     string
	password string
	hasPass  bool // the URL carried a password (a lone user counts, as go-redis reads it)
	tls      bool
	master   string // sentinel: the master's name
	sUser    string // sentinel: its own credentials
	sPass    string
}

// errRedisURL never echoes the URL: it may hold a password.
func errRedisURL(why string) error {
	return fmt.Errorf("REDIS_URL is not valid: %s (forms: redis://host:port, redis+cluster://h1:p1,h2:p2, redis+sentinel://s1:p1,s2:p2?master=name)", why)
}

func parseRedisURL(raw string) (redisTarget, error) {
	var t redisTarget
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return t, errRedisURL("no scheme")
	}
	switch scheme {
	case "redis", "rediss":
		t.mode = "single"
	case "redis+cluster", "rediss+cluster":
		t.mode = "cluster"
	case "redis+sentinel", "rediss+sentinel":
		t.mode = "sentinel"
	default:
		return t, errRedisURL("unknown scheme")
	}
	t.tls = strings.HasPrefix(scheme, "rediss")
	rest, query, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	if path != "" && path != "0" {
		return t, errRedisURL("a database number other than 0 (claimcheck separates its data by key prefix; a cluster has only database 0)")
	}
	hosts := authority
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		// Reuse net/url's percent-decoding of the user information.
		u, err := url.Parse("redis://" + authority[:at] + "@x")
		if err != nil || u.User == nil {
			return t, errRedisURL("unreadable user information")
		}
		t.user = u.User.Username()
		t.password, t.hasPass = u.User.Password()
		if !t.hasPass && t.user != "" {
			// redis://password@host: go-redis reads a lone user as the password.
			t.password, t.user, t.hasPass = t.user, "", true
		}
		hosts = authority[at+1:]
	}
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			return t, errRedisURL("an empty host")
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, "6379")
		}
		t.addrs = append(t.addrs, h)
	}
	if t.mode == "single" && len(t.addrs) != 1 {
		return t, errRedisURL("several hosts in a redis:// URL (use redis+cluster:// or redis+sentinel://)")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return t, errRedisURL("unreadable query")
	}
	for k := range q {
		switch {
		case t.mode == "sentinel" && (k == "master" || k == "sentinel_user" || k == "sentinel_password"):
		default:
			// The name is not echoed: an unencoded '?' in a password
			// (redis://u:pa?ss@h) or '&' in a sentinel_password makes
			// the password's tail a parameter name.
			return t, errRedisURL("an unknown parameter (a Sentinel URL takes master, sentinel_user and sentinel_password; " +
				"a '?', '&', '#' or '@' in a password must be percent-encoded)")
		}
	}
	if t.mode == "sentinel" {
		t.master, t.sUser, t.sPass = q.Get("master"), q.Get("sentinel_user"), q.Get("sentinel_password")
		if t.master == "" {
			return t, errRedisURL("a Sentinel URL needs ?master=<name>")
		}
	}
	return t, nil
}

// tlsConfig is the client TLS configuration for t, or nil.
func (t redisTarget) tlsConfig() *tls.Config {
	if !t.tls {
		return nil
	}
	host, _, _ := net.SplitHostPort(t.addrs[0])
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}
