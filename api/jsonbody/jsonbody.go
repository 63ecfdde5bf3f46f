// Package jsonbody reads request bodies strictly: a size limit (413 past
// it), one JSON object, no unknown fields, nothing after it. Every JSON
// endpoint reads through it so they all refuse bad input the same way.
package jsonbody

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
)

// Read reads a body of at most limit bytes into v and returns the raw body.
// Errors are a *problem.Problem (400) or wrap *http.MaxBytesError (413).
func Read(c *gin.Context, v any, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, problem.BadRequest("body is not a valid request: " + err.Error())
	}
	// Not dec.More(): it answers false before a stray '}' or ']', so
	// `{…}}` passed. Only JSON whitespace may follow the object.
	if len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) > 0 {
		return nil, problem.BadRequest("body has data after the JSON object")
	}
	return body, nil
}
