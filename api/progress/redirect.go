package progress

import (
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/internal/blob"
	"github.com/claimcheck/claimcheck/internal/jobs"
)

// MaxRedirectFor caps Config.RedirectFor: a signed URL outlives every
// revocation (a token epoch raised, a user blocked), so it should not
// live long.
const MaxRedirectFor = 15 * time.Minute

// redirect answers a result download with a 307 to a URL the results
// store signed, when Config.RedirectFor asks for it, and reports whether
// it did. The URL lives at most RedirectFor and never past notAfter, the
// expiry of the token or link that asked, so it derives no more than that
// credential gave. HEAD and conditional requests are answered here: the
// store's URL is signed for a GET, and a client that has the result
// already is told so without a round trip. When signing fails the result
// is served here instead.
func (s *Service) redirect(c *gin.Context, j *jobs.Job, disposition, filename string, notAfter time.Time) bool {
	r := c.Request
	if s.cfg.RedirectFor <= 0 || r.Method != http.MethodGet ||
		r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" || r.Header.Get("If-Range") != "" {
		return false
	}
	// Whole seconds, rounded down: the URL's X-Amz-Expires is in seconds.
	ttl := min(s.cfg.RedirectFor, notAfter.Sub(s.cfg.Now())).Truncate(time.Second)
	if ttl < time.Second {
		return false
	}
	u, err := s.cfg.Blobs.SignedURL(r.Context(), j.ID, blob.SignOptions{
		Expiry:             ttl,
		ContentType:        j.Result.ContentType,
		ContentDisposition: mime.FormatMediaType(disposition, map[string]string{"filename": filename}),
	})
	if err != nil {
		s.log.Warn("result URL not signed; serving the result here", "job", j.ID, "err", blob.Detail(err))
		return false
	}
	h := c.Writer.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	c.Redirect(http.StatusTemporaryRedirect, u)
	return true
}

// singleRange reads a Range header of one range against a blob of size
// bytes: its offset and length. ok is false for anything else (no range,
// several, one that does not apply), which is then http.ServeContent's
// to answer; this is only a hint to the store of what will be read.
func singleRange(h string, size int64) (off, n int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if first == "" {
		k, err := strconv.ParseInt(last, 10, 64)
		if err != nil || k <= 0 {
			return 0, 0, false
		}
		k = min(k, size)
		return size - k, k, true
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end := size - 1
	if last != "" {
		if end, err = strconv.ParseInt(last, 10, 64); err != nil || end < start {
			return 0, 0, false
		}
		end = min(end, size-1)
	}
	return start, end - start + 1, true
}
