package outbox_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
)

func TestOpsEndpoints(t *testing.T) {
	db := newDB(t, sqldb.SQLite)
	write(t, db, event("a1", "A"))
	write(t, db, event("b1", "B"))
	pub := &recorder{fail: func(natsjs.Message) error { return errors.New("stream not found") }}
	r := newRelay(t, db, pub, outbox.RelayConfig{MaxAttempts: 1, Backoff: func(int) time.Duration { return 0 }})
	runOnce(t, r)

	srv := httptest.NewServer(outbox.Handler("/ops/outbox", db, nil))
	defer srv.Close()
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %s", method, path, b)
		}
		return resp.StatusCode, m
	}

	code, body := call("GET", "/ops/outbox", "")
	if rows, _ := body["rows"].([]any); code != 200 || len(rows) != 2 {
		t.Fatalf("list dead = %d %v", code, body)
	}
	if code, body = call("GET", "/ops/outbox/stats", ""); code != 200 || body["dead"] != 2.0 {
		t.Errorf("stats = %d %v", code, body)
	}
	rows, _ := outbox.List(t.Context(), db, outbox.ListOptions{})
	if code, body = call("POST", "/ops/outbox/retry", `{"seqs":[`+itoa(rows[0].Seq)+`]}`); code != 200 || body["retried"] != 1.0 {
		t.Errorf("retry one = %d %v", code, body)
	}
	// Every row is asked for in so many words, never by an empty body.
	for _, b := range []string{"", `{}`, `{"seqs":[]}`, `{"all":false}`} {
		if code, body = call("POST", "/ops/outbox/purge", b); code != 400 || !strings.Contains(fmt.Sprint(body), `{"all":true} for every one`) {
			t.Errorf("purge with %q = %d %v, want a 400 saying how to name rows", b, code, body)
		}
	}
	if code, body = call("POST", "/ops/outbox/purge", `{"seqs":[1],"all":true}`); code != 400 || !strings.Contains(fmt.Sprint(body), "not both") {
		t.Errorf("purge with seqs and all = %d %v", code, body)
	}
	if code, body = call("POST", "/ops/outbox/retry", ""); code != 400 {
		t.Errorf("retry with no body = %d %v", code, body)
	}
	if st, _ := outbox.GetStats(t.Context(), db); st.Dead != 1 {
		t.Errorf("dead rows after the refused calls = %d, want 1", st.Dead)
	}
	if code, body = call("POST", "/ops/outbox/purge", `{"all":true}`); code != 200 || body["purged"] != 1.0 {
		t.Errorf("purge all = %d %v", code, body)
	}
	if code, _ = call("GET", "/ops/outbox?status=lost", ""); code != 400 {
		t.Errorf("bad status = %d, want 400", code)
	}
	if code, _ = call("POST", "/ops/outbox/retry", `{"seq":[1]}`); code != 400 {
		t.Errorf("unknown field = %d, want 400", code)
	}
	if code, _ = call("GET", "/ops/outbox?limit=many", ""); code != 400 {
		t.Errorf("bad limit = %d, want 400", code)
	}
	// A mistyped filter is refused, not answered with every dead row.
	if code, body = call("GET", "/ops/outbox?state=pending", ""); code != 400 || !strings.Contains(fmt.Sprint(body), `"state"`) {
		t.Errorf("unknown parameter = %d %v, want 400 naming it", code, body)
	}
	if code, _ = call("GET", "/ops/outbox/stats?verbose=1", ""); code != 400 {
		t.Errorf("stats with a parameter = %d, want 400", code)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
