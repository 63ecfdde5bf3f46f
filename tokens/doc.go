// Package tokens mints and verifies claimcheck's JWTs and owns the Ed25519
// keys that sign them: key generation, key files, kid (RFC 7638 thumbprint),
// JWKS documents (RFC 7517) and key sets that hold several keys for rotation.
//
// # Token kinds
//
//	kind            typ          issuer → audience    lifetime
//	job token       job+jwt      api → progress       job deadline + retention, capped
//	download link   link+jwt     progress → progress  10 min (≤ 24 h, ≤ the asking token's exp)
//	internal token  at+jwt       gateway → services   ≤ 60 s (MaxAccessLifetime)
//	result receipt  receipt+jwt  workers → anyone     ReceiptLifetime (3650 days)
//
// Every kind is JWS compact with alg EdDSA and an explicit typ, so no token
// can be replayed as another kind (RFC 8725 §3.11). A job token names one job
// (claim "job") and what its holder may do with it ("scope": job:read,
// job:cancel, job:result); "sub" names the owner for audit only — the
// progress service never looks it up.
//
// A result receipt (ReceiptMinter, ReceiptVerifier) is the worker fleet's
// signed statement that one job succeeded: its type and that type's spec
// digest (claim "spec", the digest GET /v1/job-types shows), the SHA-256
// of the input the handler got, the result's SHA-256, size and content
// type, the successful attempt's number, start and finish (RFC 3339, UTC,
// to the millisecond) and the worker's id. Issuer urn:claimcheck:workers,
// audience urn:claimcheck:receipts. Only workers hold receipt keys; their
// public halves are published in the api's JWKS with kind "receipt", and
// a verifier reads keys of that kind only, so no job, link or webhook key
// can sign a receipt that verifies. A receipt is checked offline by anyone
// holding the JWKS; its point is to outlive the result's retention.
//
// # Verification, in order
//
//  1. Size: more than MaxTokenSize bytes is refused before any decoding.
//     Segments must be canonical base64url (no padding, unused trailing
//     bits zero), so a token has exactly one spelling.
//  2. Header: alg must be EdDSA, typ exactly the kind's typ; jku, x5u, jwk,
//     x5c and crit headers are refused outright, so a token can never bring
//     or point at its own key.
//  3. Key: kid must name a key in the verifier's known set (local key files
//     or the api's JWKS); nothing else is ever used to find a key.
//  4. Signature (Ed25519, via golang-jwt).
//  5. Claims: exp required and in the future, nbf and iat not in the future
//     (both with DefaultLeeway), iss and aud equal to the expected values,
//     job and scope present (a receipt: every claim it states present and
//     well formed, lifetime at most ReceiptLifetime).
//  6. Per request (JobClaims.Authorize): the job claim equals the job in the
//     path, and scope holds the route's scope.
//
// Steps 1–5 failing is ErrInvalid (HTTP 401); step 6 is ErrForbidden (403).
// Error texts never contain the token.
//
// # Keys and rotation
//
// A key directory holds <kid>.pem (PKCS#8 private key, mode 0600) and
// <kid>.pub.pem (PKIX public key), and a file "active" naming the kid that
// signs. A KeySet loaded from it verifies with every key and signs with the
// active one, so rotation is RotateDir (a new active key; the old one still
// verifies) and, once every token the old key signed has expired,
// RetireKey. Running processes pick the change up with ReloadDir, which
// swaps the set in place (KeySet.Replace) under everything that holds it. A
// directory holding only .pub.pem files is a verify-only set, which is all
// the progress service needs. The api's job keys and the gateway's keys
// live in separate directories, so neither can mint the other's tokens.
//
// # Revocation window
//
// A job token's signature stays valid until its exp: it is a bearer proof
// of "you started job X" and grants nothing beyond that job. Its exp is the
// job's deadline plus result retention (at most 7 days by default), after
// which the job record itself is gone. Revoking a job's tokens early is the
// job record's business, not a deny-list's: the record holds a token epoch
// (claim "ep"), and the progress service, which reads the record anyway,
// refuses tokens minted under an older one.
//
// A result receipt is not a credential: it grants nothing, so it has no
// revocation window. Its exp is ten years out (ReceiptLifetime says why);
// trust in it ends early only by retiring the key that signed it, and
// receipt keys stay published after rotation precisely so that receipts
// keep verifying.
//
// Nothing derived from a token outlives it: a download link's exp is at
// most the exp of the job token that asked for it (LinkMinter.MintLinkUntil),
// and the progress service ends an open event stream or long-poll at its
// token's exp.
//
// A one-time link (claim "once") is still a bearer URL until its exp; what
// makes it one-time is state the progress service keeps under its jti, not
// anything this package checks, beyond insisting that such a link has a jti.
package tokens
