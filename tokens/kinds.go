package tokens

import (
	"crypto/ed25519"
	"errors"
)

// Key kinds. Every public key claimcheck publishes is tagged in its JWKS
// entry (member "kind") with what it signs, and every verifier reads only
// keys of its own kind from a JWKS document: the api publishes one document
// with the job keys beside the worker fleet's and the webhook deliverer's,
// and the progress service fetching it must never take a receipt key for a
// job-token key. A key without a kind (a document from before kinds) counts
// as every kind's, as it did then.
const (
	KindJob     = "job"     // job+jwt, the api's keys
	KindAccess  = "access"  // at+jwt, the gateway's keys
	KindLink    = "link"    // link+jwt minted outside the progress service (webhook links)
	KindWebhook = "webhook" // Standard Webhooks v1a signatures
	KindReceipt = "receipt" // receipt+jwt, the worker fleet's keys
)

// JWKSAs is JWKS with every key tagged as kind.
func (s *KeySet) JWKSAs(kind string) JWKS {
	doc := s.JWKS()
	for i := range doc.Keys {
		doc.Keys[i].Kind = kind
	}
	return doc
}

// ParseJWKSOf is ParseJWKS keeping only keys of kind (and keys with no
// kind at all). A document with none of them is an error.
func ParseJWKSOf(data []byte, kind string) (*KeySet, error) {
	return parseJWKS(data, kind)
}

// MergeJWKS joins documents into one, as the api publishes them.
func MergeJWKS(docs ...JWKS) JWKS {
	out := JWKS{Keys: []JWK{}}
	for _, d := range docs {
		out.Keys = append(out.Keys, d.Keys...)
	}
	return out
}

// AnyKey is a KeySource that looks in each source in turn: the progress
// service verifies download links with its own keys and with the webhook
// deliverer's. Only ErrUnknownKey moves on to the next source; any other
// error (keys not loaded yet) is returned, so a missing source is never
// mistaken for an unknown kid.
type AnyKey []KeySource

// PublicKey implements KeySource.
func (a AnyKey) PublicKey(kid string) (ed25519.PublicKey, error) {
	var firstErr error
	for _, src := range a {
		pub, err := src.PublicKey(kid)
		if err == nil {
			return pub, nil
		}
		if !errors.Is(err, ErrUnknownKey) && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, ErrUnknownKey
}

var _ KeySource = AnyKey(nil)
