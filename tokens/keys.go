package tokens

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Key is one Ed25519 key; Private is nil for a verify-only key.
type Key struct {
	// ID is the RFC 7638 thumbprint of the public key, base64url.
	ID      string
	Public  ed25519.PublicKey
	Private ed25519.PrivateKey
}

// GenerateKey makes a new Ed25519 key pair.
func GenerateKey() (*Key, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return &Key{ID: Thumbprint(pub), Public: pub, Private: priv}, nil
}

// Thumbprint is the RFC 7638 JWK thumbprint of an Ed25519 public key: the
// SHA-256 of its canonical JWK {"crv","kty","x"} (RFC 8037 §2), base64url.
func Thumbprint(pub ed25519.PublicKey) string {
	// The members are fixed and in lexical order, and base64url needs no
	// JSON escaping, so the canonical form is a plain concatenation.
	canonical := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// KeySource is what a verifier needs: a public key by kid from a known set.
// An unknown kid is an error wrapping ErrUnknownKey.
type KeySource interface {
	PublicKey(kid string) (ed25519.PublicKey, error)
}

// KeySet holds several keys and names one active signer. It is safe for
// concurrent use.
type KeySet struct {
	mu     sync.RWMutex
	keys   map[string]*Key
	active *Key
}

// NewKeySet returns a set that signs with active (which may be nil for a
// verify-only set) and verifies with active and others.
func NewKeySet(active *Key, others ...*Key) (*KeySet, error) {
	s := &KeySet{keys: map[string]*Key{}}
	if active != nil {
		if len(active.Private) != ed25519.PrivateKeySize {
			return nil, errors.New("active key has no private half")
		}
		s.active = active
		others = append(others, active)
	}
	for _, k := range others {
		if len(k.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %s: not an Ed25519 public key", k.ID)
		}
		if k.ID != Thumbprint(k.Public) {
			return nil, fmt.Errorf("key %s: kid is not the key's thumbprint", k.ID)
		}
		s.keys[k.ID] = k
	}
	return s, nil
}

// Signer returns the active signing key.
func (s *KeySet) Signer() (*Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.active == nil {
		return nil, errors.New("key set has no active signing key")
	}
	return s.active, nil
}

// PublicKey implements KeySource.
func (s *KeySet) PublicKey(kid string) (ed25519.PublicKey, error) {
	s.mu.RLock()
	k, ok := s.keys[kid]
	s.mu.RUnlock()
	if !ok {
		return nil, ErrUnknownKey
	}
	return k.Public, nil
}

// KIDs lists the set's key ids, sorted.
func (s *KeySet) KIDs() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.kidsLocked()
}

// JWK is one public key in a JWKS document (RFC 7517, RFC 8037).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	// Kind says what the key signs (KindJob, KindReceipt, …): see JWKSAs.
	Kind string `json:"kind,omitempty"`
}

// JWKS is a JSON Web Key Set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWKS returns the public halves of the set's keys, never private material.
func (s *KeySet) JWKS() JWKS {
	s.mu.RLock()
	defer s.mu.RUnlock()
	doc := JWKS{Keys: make([]JWK, 0, len(s.keys))}
	for _, id := range s.kidsLocked() {
		k := s.keys[id]
		doc.Keys = append(doc.Keys, JWK{
			Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k.Public),
			Kid: k.ID, Use: "sig", Alg: "EdDSA",
		})
	}
	return doc
}

func (s *KeySet) kidsLocked() []string {
	ids := make([]string, 0, len(s.keys))
	for id := range s.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// maxJWKSSize bounds a JWKS document we are willing to parse.
const maxJWKSSize = 64 << 10

// ParseJWKS reads a JWKS document into a verify-only key set of job-token
// keys (ParseJWKSOf with KindJob). Keys that are not OKP/Ed25519, or of
// another kind, are ignored (a JWKS may serve other services too); a key
// whose kid is not its thumbprint is refused, because kid is how verifiers
// find keys and must not be chosen freely. Private members are never read.
func ParseJWKS(data []byte) (*KeySet, error) { return parseJWKS(data, KindJob) }

func parseJWKS(data []byte, kind string) (*KeySet, error) {
	if len(data) > maxJWKSSize {
		return nil, fmt.Errorf("jwks: document over %d bytes", maxJWKSSize)
	}
	var doc JWKS
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var keys []*Key
	for _, j := range doc.Keys {
		if j.Kty != "OKP" || j.Crv != "Ed25519" || (j.Use != "" && j.Use != "sig") || (j.Kind != "" && j.Kind != kind) {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("jwks: key %q: bad x", j.Kid)
		}
		pub := ed25519.PublicKey(x)
		if j.Kid != Thumbprint(pub) {
			return nil, fmt.Errorf("jwks: key %q: kid is not the key's RFC 7638 thumbprint", j.Kid)
		}
		keys = append(keys, &Key{ID: j.Kid, Public: pub})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("jwks: no Ed25519 keys of kind %s", kind)
	}
	return NewKeySet(nil, keys...)
}
