package server

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPI is the OpenAPI 3.1 description of the HTTP API: docs/API.md in
// machine-readable form. TestOpenAPI_MatchesRoutes keeps its paths and the
// routes registered in step.
//
//go:embed openapi.json
var openAPI []byte

// handleOpenAPI serves the OpenAPI document (GET /v1/openapi.json, no
// token needed).
func (s *Server) handleOpenAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", openAPI)
}
