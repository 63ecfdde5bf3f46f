// Package web is claimcheck's browser UI: plain HTML, CSS and JavaScript
// embedded in the binary, so the dev and api processes serve it with no
// build step and no CDN. The pages run under a strict Content-Security-Policy
// (scripts, styles, images and connections from this origin only; no inline
// code), and talk to the same routes as any client: sessions, /v1/jobs, job
// tokens, event streams and download links. The event stream and download
// links live on the progress service, so the UI expects it on the same
// origin (as in `claimcheck dev`, or behind one proxy).
package web

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/gin-gonic/gin"
)

//go:embed static
var static embed.FS

// CSP is the pages' Content-Security-Policy.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Service serves the UI: the page at / and its assets under /ui/.
type Service struct{}

// Register adds the UI's routes to r.
func (Service) Register(r gin.IRouter) {
	assets, _ := fs.Sub(static, "static")
	files := http.FileServer(http.FS(assets))
	secure := func(c *gin.Context) {
		h := c.Writer.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
	}
	r.GET("/", func(c *gin.Context) {
		page, err := static.ReadFile("static/index.html")
		if err != nil {
			c.Status(http.StatusInternalServerError)
			return
		}
		secure(c)
		c.Data(http.StatusOK, "text/html; charset=utf-8", page)
	})
	r.GET("/ui/*file", func(c *gin.Context) {
		secure(c)
		c.Request.URL.Path = c.Param("file")
		files.ServeHTTP(c.Writer, c.Request)
	})
}
