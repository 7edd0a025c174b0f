package httpx_test

import (
	"encoding/json"
	"errors"
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
		{"wrong type", `{"item":"disk","quantity":"two"}`, "", 400, `field \"quantity\" must be a number`},
		{"wrong bool", `{"express":"yes"}`, "", 400, `field \"express\" must be true or false`},
		{"malformed", `{"item":`, "", 400, "malformed JSON"},
		{"empty", ``, "", 400, "empty"},
		{"trailing", `{"item":"a"} {"item":"b"}`, "", 400, "after the JSON value"},
		{"not an object", `[1,2]`, "", 400, "body must be an object, not array"},
		{"oversized", `{"item":"` + strings.Repeat("x", httpx.MaxBodyBytes) + `"}`, "", 400, "exceeds"},
		{"form post", `item=disk`, "application/x-www-form-urlencoded", 400, "Content-Type"},
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
