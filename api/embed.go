// Package api holds the public API's description, api/openapi.yaml, the
// contract the gateway's handlers are tested against.
package api

import _ "embed"

// OpenAPI is the OpenAPI 3 description of the public API.
//
//go:embed openapi.yaml
var OpenAPI []byte
