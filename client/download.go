package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// Download writes a succeeded job's result to w and returns how many bytes
// it wrote. If the connection drops mid-body it asks for the rest with
// Range and If-Range (the result's ETag), so w receives every byte once; it
// gives up after five interruptions. A job that succeeded without a result
// writes nothing.
func (c *Client) Download(ctx context.Context, id, token string, w io.Writer) (int64, error) {
	var written int64
	etag := ""
	for tries := 0; ; tries++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.jobURL(id, "/result"), nil)
		if err != nil {
			return written, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		if written > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(written, 10)+"-")
			req.Header.Set("If-Range", etag)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if tries < 5 && ctx.Err() == nil && written > 0 {
				continue
			}
			return written, fmt.Errorf("download: %w", err)
		}
		switch {
		case resp.StatusCode == http.StatusNoContent:
			resp.Body.Close()
			return 0, nil
		case resp.StatusCode == http.StatusOK && written > 0:
			// The result changed under us (If-Range failed): what w holds
			// cannot be completed.
			resp.Body.Close()
			return written, errors.New("download: the result changed while resuming")
		case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent:
			err := errorFrom(resp)
			resp.Body.Close()
			return written, err
		}
		if etag == "" {
			etag = resp.Header.Get("ETag")
		}
		sink := &countingWriter{w: w}
		_, err = io.Copy(sink, resp.Body)
		resp.Body.Close()
		written += sink.n
		switch {
		case err == nil:
			return written, nil
		case sink.err != nil:
			return written, fmt.Errorf("download: write: %w", sink.err)
		case tries >= 5 || ctx.Err() != nil || etag == "":
			return written, fmt.Errorf("download: %w", err)
		}
		// A read failed mid-body: resume where it stopped.
	}
}

// countingWriter counts what reached w and keeps w's own error apart from
// the network's.
type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		c.err = err
	}
	return n, err
}
