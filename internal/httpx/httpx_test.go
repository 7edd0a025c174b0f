package httpx_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
)

func TestStatus(t *testing.T) {
	tests := map[error]int{
		sysops.Errorf(sysops.EInvalid, "x"):     400,
		sysops.Errorf(sysops.ENotFound, "x"):    404,
		sysops.Errorf(sysops.EConflict, "x"):    409,
		sysops.Errorf(sysops.EUnavailable, "x"): 503,
		sysops.Errorf(sysops.EInternal, "x"):    500,
		errors.New("disk on fire"):              500,
	}
	for err, want := range tests {
		if got := httpx.Status(err); got != want {
			t.Errorf("Status(%v) = %d, want %d", err, got, want)
		}
	}
}

type order struct {
	Item     string `json:"item"`
	Quantity int    `json:"quantity"`
	Express  bool   `json:"express"`
}

func TestDecodeJSON(t *testing.T) {
	srv := httptest.NewServer(httpx.Handle(nil, func(w http.ResponseWriter, r *http.Request) error {
		var o order
		if err := httpx.DecodeJSON(w, r, &o); err != nil {
			return err
		}
		httpx.WriteJSON(w, 200, o)
		return nil
	}))
	defer srv.Close()
	tests := []struct {
		name, body, ctype string
		status            int
		want              string
	}{
		{"ok", `{"item":"disk","quantity":2}`, "application/json", 200, `"quantity":2`},
		{"unknown field", `{"item":"disk","colour":"red"}`, "", 400, `unknown field \"colour\"`},
		{"wrong type", `{"item":"disk","quantity":"two"}`, "", 400, `field \"quantity\" must be a whole number, not string`},
		{"fraction", `{"item":"disk","quantity":2.5}`, "", 400, `field \"quantity\" must be a whole number, not 2.5`},
		{"out of range", `{"item":"disk","quantity":1e99}`, "", 400, `field \"quantity\" must be a whole number, not 1e99`},
		{"wrong bool", `{"express":"yes"}`, "", 400, `field \"express\" must be true or false`},
		{"malformed", `{"item":`, "", 400, "malformed JSON"},
		{"empty", ``, "", 400, "empty"},
		{"trailing", `{"item":"a"} {"item":"b"}`, "", 400, "after the JSON value"},
		{"not UTF-8", "{\"item\":\"caf\xe9\"}", "", 400, "not valid UTF-8 (byte 12)"},
		{"stray bracket", `{"item":"a"}]`, "", 400, "after the JSON value"},
		{"stray brace", "{\"item\":\"a\"}\n}", "", 400, "after the JSON value"},
		{"trailing space", "{\"item\":\"a\"} \r\n", "", 200, `"item":"a"`},
		{"not an object", `[1,2]`, "", 400, "body must be an object, not array"},
		{"oversized", `{"item":"` + strings.Repeat("x", httpx.MaxBodyBytes) + `"}`, "", 400, "exceeds"},
		{"form post", `item=disk`, "application/x-www-form-urlencoded", 400, "Content-Type"},
		{"charset", `{"item":"disk"}`, "application/json; charset=UTF-8", 200, `"item":"disk"`},
		{"other charset", `{"item":"disk"}`, "application/json; charset=latin1", 400, `charset must be utf-8`},
		{"json-like type", `{"item":"disk"}`, "application/json-patch+json", 400, "Content-Type must be application/json"},
		{"malformed type", `{"item":"disk"}`, "application/json; =", 400, "Content-Type must be application/json"},
		{"repeated field", `{"item":"disk","quantity":2,"item":"tape"}`, "", 400, `field \"item\" appears more than once`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL, tt.ctype, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.want) {
				t.Errorf("= %d %s, want %d containing %s", resp.StatusCode, b, tt.status, tt.want)
			}
			if tt.status != 200 {
				var e httpx.ErrorBody
				if err := json.Unmarshal(b, &e); err != nil || e.Error.Code != sysops.EInvalid {
					t.Errorf("error body %s: %v", b, err)
				}
			}
		})
	}
}

func TestHandleHidesInternalErrors(t *testing.T) {
	srv := httptest.NewServer(httpx.Handle(nil, func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Path == "/panic" {
			panic("nil map")
		}
		return errors.New("pq: password authentication failed for user admin")
	}))
	defer srv.Close()
	for _, path := range []string{"/err", "/panic"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 || string(b) != `{"error":{"code":"internal","message":"internal error"}}`+"\n" {
			t.Errorf("GET %s = %d %s", path, resp.StatusCode, b)
		}
	}
}

// TestUnmarshalRefusesMembers: a member name twice in one object is
// refused, naming its path, and so is a string holding \u0000; the same
// name in different objects is not.
func TestUnmarshalRefusesMembers(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"a":1,"b":2}`, ""},
		{`{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}`, ""},
		{`{"a":[1,{"x":[]},"s"],"b":{"c":null},"d":true}`, ""},
		{`{"a":1,"a":1}`, `field "a" appears more than once`},
		{`{"x":{"b":1,"c":{},"b":2}}`, `field "x.b" appears more than once`},
		{`{"l":[0,{"k":1},[{"k":1,"k":2}]]}`, `field "l[2][0].k" appears more than once`},
		{`{"l":[{"k":[1,2]},{"k":{"z":1},"m":[],"k":3}]}`, `field "l[1].k" appears more than once`},
		{`{"a":{},"a":{}}`, `field "a" appears more than once`},
		{`{"a\"b":1,"a":{"q":"\"a\":","r":2}}`, ""},
		{`{"a":1,"\u0061":2}`, `field "a" appears more than once`},
		{`{"":0,"":1}`, `field "" appears more than once`},
		{`{"a":"x\u0000"}`, `field "a" contains the NUL character (\u0000)`},
		{`{"a":"ok","l":[1,"\u0000"]}`, `field "l[1]" contains the NUL character (\u0000)`},
		{`{"a\u0000":1}`, `field "a\x00" has a name that contains the NUL character (\u0000)`},
		{`"\u0000"`, `field "" contains the NUL character (\u0000)`},
		{`{"a":"\\u0000","b":"\u00000"}`, `field "b" contains the NUL character (\u0000)`},
		{`{"a":"\\u0000","b":"\u0001"}`, ""},
		{`{"x":{"\ud800":0,"\ufffd":1}}`, `field "x.` + "\ufffd" + `" appears more than once`},
		{many(20) + `}`, ""},
		{many(20) + `,"k3":true}`, `field "k3" appears more than once`},
		{`{"deep":` + many(17) + `,"k16":0}}`, `field "deep.k16" appears more than once`},
	} {
		var v any
		err := httpx.Unmarshal([]byte(tc.body), &v)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.body, err)
		case tc.want != "" && (err == nil || sysops.MessageOf(err) != tc.want):
			t.Errorf("%s: %v, want %q", tc.body, err, tc.want)
		}
	}
}

// many is an object of n members k0, k1... left open.
func many(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	return b.String()
}

func TestQuery(t *testing.T) {
	for _, tc := range []struct {
		query string
		known []string
		want  string // "" for accepted, else words of the error
	}{
		{"", nil, ""},
		{"state=committed&limit=5", []string{"state", "limit"}, ""},
		{"state=", []string{"state"}, ""},
		{"x=1", nil, `"x": this endpoint takes none`},
		{"status=dead", []string{"state", "limit"}, `unknown query parameter "status" (known: state, limit)`},
		{"b=1&a=1", []string{"c"}, `"a"`}, // the first in name order, every time
		{"state=a&state=b", []string{"state"}, `"state" is given 2 times`},
		{"state=%zz", []string{"state"}, "malformed query string"},
		{"state=a%00", []string{"state"}, `"state" contains the NUL character`},
		{"state=caf%e9", []string{"state"}, `"state" is not valid UTF-8`},
		{"state=caf%C3%A9", []string{"state"}, ""},
	} {
		r := httptest.NewRequest("GET", "/x?"+tc.query, nil)
		q, err := httpx.Query(r, tc.known...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("?%s: %v", tc.query, err)
		case tc.want == "" && q.Encode() != r.URL.Query().Encode():
			t.Errorf("?%s: got %v", tc.query, q)
		case tc.want != "" && (sysops.CodeOf(err) != sysops.EInvalid || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("?%s: err = %v, want an invalid error with %q", tc.query, err, tc.want)
		}
	}
}

func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  int // -1 for refused
	}{
		{"", 100}, {"limit=1", 1}, {"limit=1000", 1000}, {"limit=0", -1}, {"limit=1001", -1},
		{"limit=-3", -1}, {"limit=ten", -1}, {"limit=05", -1}, {"limit=+5", -1},
	} {
		r := httptest.NewRequest("GET", "/x?"+tc.query, nil)
		n, err := httpx.Limit(r.URL.Query(), 100, 1000)
		switch {
		case tc.want < 0 && (err == nil || !strings.Contains(err.Error(), "from 1 to 1000")):
			t.Errorf("?%s: %d, %v; want it refused naming the range", tc.query, n, err)
		case tc.want >= 0 && (err != nil || n != tc.want):
			t.Errorf("?%s: %d, %v; want %d", tc.query, n, err, tc.want)
		}
	}
}

// TestCanonical: a path that is not canonical, or not text, is a 400
// naming it; any other reaches the handler.
func TestCanonical(t *testing.T) {
	h := httpx.Canonical(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for _, tc := range []struct {
		path string
		want string // "" for passed on
	}{
		{"/tickets/tk-1", ""},
		{"/tickets/caf%C3%A9", ""},
		{"/tickets//cancel", "not in canonical form"},
		{"/tickets/a%00b", `contains the NUL character`},
		{"/tickets/caf%e9", `is not valid UTF-8`},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", tc.path, nil))
		switch {
		case tc.want == "" && w.Code != 204:
			t.Errorf("%s: %d %s, want it passed on", tc.path, w.Code, w.Body)
		case tc.want != "" && (w.Code != 400 || !strings.Contains(w.Body.String(), tc.want)):
			t.Errorf("%s: %d %s, want 400 with %q", tc.path, w.Code, w.Body, tc.want)
		}
	}
}
