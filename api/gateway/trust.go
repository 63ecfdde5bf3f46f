package gateway

import (
	"context"
	"fmt"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/claimcheck/claimcheck/tokens"
)

// TokenAuthenticator authenticates requests by the gateway's internal token
// alone: what a service behind the gateway uses (`claimcheck api
// --trust-gateway`). It reads no session store, so it costs no Redis call
// on the hot path; sessions and API keys sent to it directly are refused,
// so the gateway is the only way in.
//
// An internal token with a sid acts for that session (Via "session"), one
// without acts for an API key. That the session is still live is known only
// as of the token's minting, up to its lifetime ago: routes that manage
// credentials confirm the sid against the session store themselves
// (authn.RequireSession), so a copied token cannot outlive its session.
type TokenAuthenticator struct {
	Verifier *tokens.AccessVerifier
}

// Authenticate implements authn.Authenticator.
func (a TokenAuthenticator) Authenticate(_ context.Context, s secret.Secret) (*identity.Principal, error) {
	claims, err := a.Verifier.VerifyAccess(s.Reveal())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", identity.ErrUnauthenticated, err)
	}
	p := &identity.Principal{UserID: claims.Subject, Via: "api_key", Scopes: claims.Scopes(), ExpiresAt: claims.Expires()}
	if claims.SessionID != "" {
		p.Via, p.CredentialID = "session", claims.SessionID
	} else {
		p.CredentialID = claims.KeyID // "" from a gateway before key ids
	}
	return p, nil
}
