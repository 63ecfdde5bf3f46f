package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxReceiptBytes bounds a receipt's body: a receipt is a JWT of well under
// the 4 KiB every claimcheck token is held to (tokens.MaxTokenSize).
const maxReceiptBytes = 8 << 10

// Receipt downloads a succeeded job's signed result receipt, a compact JWS
// (typ receipt+jwt): the worker fleet's statement of the job's type and
// spec digest, the SHA-256 of its input, its result's SHA-256, size and
// content type, and when and where it ran. Keep it: it verifies offline
// (tokens.ReceiptVerifier, or any JOSE library, with the api's JWKS keys
// of kind "receipt") long after the job's record and result have expired.
// A job without a receipt (not succeeded, or run by a worker that signs
// none) is an *Error with status 404 and type …:no-receipt.
func (c *Client) Receipt(ctx context.Context, id, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.jobURL(id, "/receipt"), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("receipt: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", errorFrom(resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReceiptBytes+1))
	if err != nil {
		return "", fmt.Errorf("receipt: %w", err)
	}
	if len(body) > maxReceiptBytes {
		return "", fmt.Errorf("receipt: over %d bytes", maxReceiptBytes)
	}
	return strings.TrimSpace(string(body)), nil
}
