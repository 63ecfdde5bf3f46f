// Package jsonbody reads request bodies strictly: Content-Type
// application/json (415 otherwise), a size limit (413 past it), one JSON
// object, no unknown fields, nothing after it. Every JSON endpoint reads
// through it so they all refuse bad input the same way.
//
// The media type is required, not guessed, because it is what makes a
// cross-site request need a CORS preflight: a page on another site can POST
// text/plain, form or multipart bodies without one, never application/json.
// Only exactly application/json is taken (with a charset parameter, which
// must say UTF-8, RFC 8259 §8.1); "+json" types such as
// application/merge-patch+json mean more than plain JSON and no route here
// speaks them.
package jsonbody

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
)

// ContentType is the one media type a JSON body may be sent as.
const ContentType = "application/json"

// ErrUnsupportedMediaType answers a non-empty body sent as anything but
// application/json.
var ErrUnsupportedMediaType = problem.New(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type",
	"send the body as Content-Type: "+ContentType).WithHeader("Accept-Post", ContentType)

// Read reads a body of at most limit bytes into v and returns the raw body.
// Errors are a *problem.Problem (400, or 415 for a non-empty body that is
// not application/json) or wrap *http.MaxBytesError (413).
func Read(c *gin.Context, v any, limit int64) ([]byte, error) {
	body, err := ReadRaw(c, limit)
	if err != nil {
		return nil, err
	}
	return body, Decode(body, v)
}

// ReadRaw reads a body of at most limit bytes without decoding it, for a
// handler that looks at its size first; errors are as Read's.
func ReadRaw(c *gin.Context, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	// An empty body is left to the decoder (400): there is nothing whose
	// type could be wrong.
	if len(body) > 0 && !IsJSON(c.Request.Header.Get("Content-Type")) {
		return nil, ErrUnsupportedMediaType
	}
	return body, nil
}

// Decode decodes one JSON object from body into v, refusing unknown fields
// and anything after the object (400 problems).
func Decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return problem.BadRequest("body is not a valid request: " + err.Error())
	}
	// Not dec.More(): it answers false before a stray '}' or ']', so
	// `{…}}` passed. Only JSON whitespace may follow the object.
	if len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) > 0 {
		return problem.BadRequest("body has data after the JSON object")
	}
	return nil
}

// IsJSON reports whether a Content-Type value is application/json, with at
// most a UTF-8 charset parameter besides (case does not matter).
func IsJSON(contentType string) bool {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != ContentType {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}
