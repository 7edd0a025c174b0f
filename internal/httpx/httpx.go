// Package httpx is the HTTP edge shared by the services: the one table
// that maps [sysops.ErrorCode] to a status, JSON responses and errors,
// strict JSON request decoding, and the checks of query parameters
// ([Query], [Limit]) and paths ([Canonical]). Handlers return errors; this
// package turns them into responses and logs the internal ones, once.
package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/sqldb"
)

// MaxBodyBytes caps every request body.
const MaxBodyBytes = 1 << 20

// statusOf is the one mapping from error code to HTTP status.
var statusOf = map[sysops.ErrorCode]int{
	sysops.EInvalid:     http.StatusBadRequest,
	sysops.ENotFound:    http.StatusNotFound,
	sysops.EConflict:    http.StatusConflict,
	sysops.EUnavailable: http.StatusServiceUnavailable,
	sysops.EInternal:    http.StatusInternalServerError,
}

// Status returns the HTTP status for an error's code.
func Status(err error) int {
	if s, ok := statusOf[sysops.CodeOf(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error sysops.Error `json:"error"`
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteError writes err as the JSON error body. Internal errors are logged
// with their detail and answered with a generic message.
//
// An error of the service's database refusing work for a state of its own
// ([sqldb.IsUnavailable]: read-only after a failover, out of disk, its
// session ended) is answered 503 "unavailable" with Retry-After, so that
// callers retry it, and logged as a warning.
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	code := sysops.CodeOf(err)
	if code == sysops.EInternal && sqldb.IsUnavailable(err) {
		if logger != nil {
			logger.WarnContext(r.Context(), "request failed: database unavailable", "method", r.Method, "path", r.URL.Path, "error", err)
		}
		w.Header().Set("Retry-After", "1")
		err = ErrDatabaseUnavailable
		code = sysops.EUnavailable
	}
	if code == sysops.EInternal && logger != nil {
		logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	WriteJSON(w, Status(err), ErrorBody{Error: sysops.Error{Code: code, Message: sysops.MessageOf(err)}})
}

// ErrDatabaseUnavailable is the answer to a request that failed because
// the service's database refused the work for a state of its own.
var ErrDatabaseUnavailable = sysops.Errorf(sysops.EUnavailable, "the service's database is unavailable just now; retry")

// NoRouteHeader marks a service's answer that no route matched the
// request, so that a proxy in front of it (the gateway's ops endpoints)
// can tell "this service does not serve that path" from a 404 about a
// resource.
const NoRouteHeader = "Sysops-No-Route"

// NoRoute answers that no route matches r: a 404 JSON error, marked with
// [NoRouteHeader].
func NoRoute(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(NoRouteHeader, "1")
	WriteError(w, r, nil, sysops.Errorf(sysops.ENotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// HandlerFunc is an HTTP handler that returns an error instead of writing
// it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts fn to an http.Handler: a returned error becomes the JSON
// error response, and a panic a 500, logged.
func Handle(logger *slog.Logger, fn HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				WriteError(w, r, logger, fmt.Errorf("panic: %v", p))
			}
		}()
		if err := fn(w, r); err != nil {
			WriteError(w, r, logger, err)
		}
	})
}

// DecodeJSON reads r's body, at most [MaxBodyBytes], into dst. Unknown
// fields, wrong types, a member name twice in one object, trailing data,
// bytes that are not UTF-8 and oversized bodies are [sysops.EInvalid]
// errors that name the field or the problem.
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		switch {
		case err != nil || mt != "application/json":
			return sysops.Errorf(sysops.EInvalid, "Content-Type must be application/json, not %q", ct)
		case params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8"):
			return sysops.Errorf(sysops.EInvalid, "Content-Type charset must be utf-8 (JSON is UTF-8), not %q", params["charset"])
		}
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	b, err := io.ReadAll(body)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return sysops.Errorf(sysops.EInvalid, "request body exceeds %d bytes", MaxBodyBytes)
		}
		return sysops.Errorf(sysops.EInvalid, "read request body: %v", err)
	}
	return Unmarshal(b, dst)
}

// Unmarshal decodes one JSON value strictly into dst; see [DecodeJSON].
func Unmarshal(b []byte, dst any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return sysops.Errorf(sysops.EInvalid, "request body is empty; a JSON object is required")
	}
	// JSON between systems is UTF-8 (RFC 8259); encoding/json would turn
	// each bad byte into U+FFFD and store that in place of what was sent.
	if !utf8.Valid(b) {
		return sysops.Errorf(sysops.EInvalid, "request body is not valid UTF-8 (byte %d)", firstInvalidUTF8(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return sysops.Errorf(sysops.EInvalid, "%s", describeJSONError(err))
	}
	// Anything but JSON's white space after the value is refused.
	// (Decoder.More would not do: it says false before a stray ']' or '}'.)
	value := b[:dec.InputOffset()]
	if len(bytes.TrimLeft(b[len(value):], " \t\r\n")) > 0 {
		return sysops.Errorf(sysops.EInvalid, "request body has data after the JSON value")
	}
	if f, why, ok := badMember(value); ok {
		return sysops.Errorf(sysops.EInvalid, "field %q %s", f, why)
	}
	return nil
}

// firstInvalidUTF8 returns the offset of the first byte of b that does not
// start a valid UTF-8 sequence.
func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// badText says why s cannot be stored as text — it is not UTF-8, or it
// holds the NUL character, which PostgreSQL's text refuses — or "" when
// it can. Everything a request hands to a database (path segments, query
// values, JSON strings) must be text, or the database's refusal would be
// an internal error where the client's input is at fault.
func badText(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains the NUL character"
	}
	return ""
}

// nulText is why a string holding \u0000 is refused (see [badText]).
const nulText = "contains the NUL character (\\u0000)"

// badMember finds the first member of b that is refused: a name that
// appears twice in one object (encoding/json keeps the last; what a client
// meant by two is anyone's guess, and RFC 8259 leaves it open), or a
// string holding \u0000. It returns the member's path (a.b[2].c; "" for
// the body itself or an empty name at the top), why, and whether there is
// one. b must be one valid JSON value and nothing else (it has just been
// decoded): this only walks its bytes, without allocating on the common
// path.
func badMember(b []byte) (path, why string, found bool) {
	var stack []jsonFrame
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			stack = append(stack, jsonFrame{object: b[i] == '{', name: b[i] == '{'})
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ',':
			if top := &stack[len(stack)-1]; top.object {
				top.name = true
			} else {
				top.n++
			}
		case '"':
			j := i + 1
			nul := false
			for b[j] != '"' {
				if b[j] == '\\' {
					j++
					nul = nul || b[j] == 'u' && string(b[j+1:j+5]) == "0000"
				}
				j++
			}
			raw := b[i+1 : j]
			i = j
			if len(stack) == 0 {
				if nul {
					return "", nulText, true
				}
				continue
			}
			top := &stack[len(stack)-1]
			if !top.object || !top.name {
				if nul {
					return fieldPath(stack), nulText, true
				}
				continue
			}
			top.name = false
			if bytes.IndexByte(raw, '\\') >= 0 {
				var name string
				if json.Unmarshal(b[i-len(raw)-1:i+1], &name) == nil {
					raw = []byte(name)
				}
			}
			top.member = raw
			if nul {
				return fieldPath(stack), "has a name that " + nulText, true
			}
			if seen(top.names, top.index, raw) {
				return fieldPath(stack), "appears more than once", true
			}
			if top.index != nil {
				top.index[string(raw)] = struct{}{}
			} else if top.names = append(top.names, raw); len(top.names) > 16 {
				top.index = make(map[string]struct{}, 32)
				for _, n := range top.names {
					top.index[string(n)] = struct{}{}
				}
			}
		}
	}
	return "", "", false
}

// jsonFrame is an object or array that badMember is inside.
type jsonFrame struct {
	object bool
	names  [][]byte            // an object's names so far (escapes resolved)
	index  map[string]struct{} // the same, once there are many
	name   bool                // an object's next string is a member name
	n      int                 // an array's current element
	member []byte              // an object's current member
}

// seen reports whether name is among names, or in index once there is one.
func seen(names [][]byte, index map[string]struct{}, name []byte) bool {
	if index != nil {
		_, ok := index[string(name)]
		return ok
	}
	for _, n := range names {
		if bytes.Equal(n, name) {
			return true
		}
	}
	return false
}

// fieldPath is the path of the member being read, from the frames
// outermost first.
func fieldPath(stack []jsonFrame) string {
	var p strings.Builder
	for _, f := range stack {
		if !f.object {
			fmt.Fprintf(&p, "[%d]", f.n)
			continue
		}
		if p.Len() > 0 {
			p.WriteByte('.')
		}
		p.Write(f.member)
	}
	return p.String()
}

func describeJSONError(err error) string {
	if e, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		// A number that does not fit (4.5 or -1 for a whole number, 1e99
		// for an int) is named by its value, any other by its kind.
		got := strings.TrimPrefix(e.Value, "number ")
		if field := e.Field; field != "" {
			return fmt.Sprintf("field %q must be %s, not %s", field, jsonKind(e.Type.Kind().String()), got)
		}
		return fmt.Sprintf("body must be %s, not %s", jsonKind(e.Type.Kind().String()), got)
	}
	if e, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("malformed JSON at byte %d: %v", e.Offset, e)
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + f
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "malformed JSON: unexpected end of body"
	}
	return strings.TrimPrefix(msg, "json: ")
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"):
		return "a whole number"
	case strings.HasPrefix(goKind, "uint"):
		return "a whole number, 0 or more"
	case strings.HasPrefix(goKind, "float"):
		return "a number"
	case goKind == "string":
		return "a string"
	case goKind == "bool":
		return "true or false"
	case goKind == "slice", goKind == "array":
		return "an array"
	}
	return "an object"
}

// Canonical answers a request whose path is not in canonical form (an
// empty segment, "." or "..") with a 400 naming the path, where
// http.ServeMux would redirect it: a redirected POST loses its body, and
// an API client is better told its URL is wrong. So is a path that is not
// text ([badText]): its segments are ids that reach a database.
func Canonical(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		c := path.Clean("/" + p)
		if strings.HasSuffix(p, "/") && c != "/" {
			c += "/"
		}
		if c != p {
			WriteError(w, r, nil, sysops.Errorf(sysops.EInvalid, "path %q is not in canonical form (did you mean %q?)", p, c))
			return
		}
		if why := badText(p); why != "" {
			WriteError(w, r, nil, sysops.Errorf(sysops.EInvalid, "path %q %s", p, why))
			return
		}
		next.ServeHTTP(w, r)
	})
}
