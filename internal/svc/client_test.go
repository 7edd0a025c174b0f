package svc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
)

// TestPostBatch: calls go under the keys they would carry alone, answers
// and refusals come back in order, and a batch larger than a peer takes
// goes in parts.
func TestPostBatch(t *testing.T) {
	var requests atomic.Int32
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		var in idempotency.BatchRequest
		if r.URL.Path != idempotency.BatchPath || json.NewDecoder(r.Body).Decode(&in) != nil || len(in.Calls) > idempotency.MaxBatchCalls {
			httpx.WriteJSON(w, http.StatusBadRequest, httpx.ErrorBody{Error: sysops.Error{Code: sysops.EInvalid, Message: "bad batch"}})
			return
		}
		out := idempotency.BatchResponse{}
		for _, c := range in.Calls {
			res := idempotency.BatchResult{Status: 200, Body: json.RawMessage(fmt.Sprintf(`{"key":%q,"body":%q}`, c.Key, c.Body))}
			if c.Path == "/refuse" {
				res = idempotency.BatchResult{Status: 409, Body: json.RawMessage(`{"error":{"code":"conflict","message":"no"}}`)}
			}
			out.Results = append(out.Results, res)
		}
		httpx.WriteJSON(w, http.StatusOK, out)
	}))
	defer peer.Close()
	client := svc.NewClient(svc.NewPeers(map[string]string{"p": peer.URL}), "p")

	answers, errs, err := client.PostBatch(context.Background(), []svc.BatchCall{
		{Key: "s1", Path: "/things", Body: map[string]int{"n": 1}},
		{Key: "s2", Path: "/refuse"},
		{Key: "s3", Path: "/things/x/cancel"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(answers[0]); got != `{"key":"s1/p/things","body":"{\"n\":1}"}` {
		t.Errorf("answer 0 = %s", got)
	}
	if sysops.CodeOf(errs[1]) != sysops.EConflict || answers[1] != nil {
		t.Errorf("call 1: %s, %v; want the conflict", answers[1], errs[1])
	}
	if got := string(answers[2]); got != `{"key":"s3/p/things/x/cancel","body":""}` {
		t.Errorf("answer 2 = %s (a call without a body sends none)", got)
	}

	requests.Store(0)
	many := make([]svc.BatchCall, idempotency.MaxBatchCalls+44)
	for i := range many {
		many[i] = svc.BatchCall{Key: fmt.Sprint("k", i), Path: "/things"}
	}
	answers, errs, err = client.PostBatch(context.Background(), many)
	if err != nil || len(answers) != len(many) || requests.Load() != 2 {
		t.Fatalf("%d calls: %d answers, %v, in %d requests; want all, in 2", len(many), len(answers), err, requests.Load())
	}
	for i, a := range answers {
		if want := fmt.Sprintf(`{"key":"k%d/p/things","body":""}`, i); string(a) != want || errs[i] != nil {
			t.Fatalf("answer %d = %s %v, want %s", i, a, errs[i], want)
		}
	}
}
