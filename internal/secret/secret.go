// Package secret holds a string type for credentials (job tokens, API keys,
// session ids) that refuses to be printed: fmt and log/slog see a redacted
// form, so a credential passed to a logger by mistake does not leak.
package secret

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strings"
)

// Secret is a credential. Use Reveal only where the raw value must leave the
// process (an HTTP response that hands the credential to its owner).
type Secret string

// String redacts; it keeps a short fingerprint so log lines can be correlated.
func (s Secret) String() string {
	if s == "" {
		return "[empty]"
	}
	return "[redacted " + s.Fingerprint() + "]"
}

// GoString redacts for %#v too.
func (s Secret) GoString() string { return s.String() }

// LogValue makes slog print the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Reveal returns the raw credential.
func (s Secret) Reveal() string { return string(s) }

// Fingerprint is the first 8 hex digits of the SHA-256 of the secret: enough
// to tell two apart in logs, useless for guessing one.
func (s Secret) Fingerprint() string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// FromAuthorization extracts the credential of an "Authorization: Bearer …"
// header value (RFC 6750 §2.1; the scheme is case-insensitive).
func FromAuthorization(header string) (Secret, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	v := strings.TrimSpace(header[len(scheme):])
	if v == "" {
		return "", false
	}
	return Secret(v), true
}
