// Package api owns claimcheck's HTTP contract: the OpenAPI 3.1 document
// (openapi.yaml, next to this file) that describes every route, schema,
// error and security scheme, served at /openapi.yaml. Its sub-packages
// implement the routes; a contract test in app validates every
// response of the end-to-end tests against the document, so the two cannot
// drift apart.
package api

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// OpenAPI is the document.
//
//go:embed openapi.yaml
var OpenAPI []byte

// OpenAPIService serves the document.
type OpenAPIService struct{}

// Register adds GET /openapi.yaml.
func (OpenAPIService) Register(r gin.IRouter) {
	r.GET("/openapi.yaml", func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=300")
		c.Data(http.StatusOK, "application/yaml", OpenAPI)
	})
}
