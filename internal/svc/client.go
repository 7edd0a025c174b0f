package svc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/outbox"
)

// Client calls one peer service's HTTP API. Errors keep the peer's code
// and message (a peer's 404 is a not_found here too); a peer that cannot
// be reached is [sysops.EUnavailable], naming the peer.
//
// A POST carries an Idempotency-Key: derived from the incoming request's
// key when there is one (so that a client's retry of a whole workflow
// repeats no step), or a fresh one; either way the client retries a POST
// that failed in transit with the same key, so the peer applies it once.
type Client struct {
	peer    string
	peers   Peers
	http    *http.Client
	noRetry bool
}

// WithoutRetries returns a copy of c that calls once: for callers that
// retry with their own budget (a saga step), so that retries do not
// multiply.
func (c *Client) WithoutRetries() *Client {
	cp := *c
	cp.noRetry = true
	return &cp
}

// transport is shared by every client of the process: it keeps enough idle
// connections per peer for a service under load (the default keeps two,
// and a busy caller would open and close a connection per call).
var transport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	return t
}()

// NewClient returns a client for the named peer, found in peers at each
// call.
func NewClient(peers Peers, peer string) *Client {
	return &Client{peer: peer, peers: peers, http: &http.Client{Timeout: 10 * time.Second, Transport: transport}}
}

// Peer returns the peer's name.
func (c *Client) Peer() string { return c.peer }

// Get calls GET path and decodes the JSON answer into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// Post calls POST path with in as JSON and decodes the answer into out.
func (c *Client) Post(ctx context.Context, path string, in, out any) error {
	return c.Do(ctx, http.MethodPost, path, in, out)
}

// PostStatus is Post that also returns the peer's success status (200,
// 201, 202...).
func (c *Client) PostStatus(ctx context.Context, path string, in, out any) (int, error) {
	var status int
	err := c.do(ctx, http.MethodPost, path, in, out, &status)
	return status, err
}

// Do calls the peer. in and out may be nil.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, in, out, nil)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any, status *int) error {
	base := c.peers.URL(c.peer)
	if base == "" {
		return sysops.Errorf(sysops.EUnavailable, "%s service: no address known (is it running?)", c.peer)
	}
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	key := ""
	if method == http.MethodPost {
		if k := IdempotencyKey(ctx); k != "" {
			key = PeerKey(k, c.peer, path)
		} else {
			key = outbox.NewID()
		}
	}
	attempts := 1
	if (method == http.MethodGet || key != "") && !c.noRetry {
		attempts = 3 // safe to repeat
	}
	var err error
	for i := range attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(i*50) * time.Millisecond):
			}
		}
		var retry bool
		retry, err = c.once(ctx, method, base, path, body, key, out, status)
		if err == nil || !retry {
			return err
		}
	}
	return err
}

func (c *Client) once(ctx context.Context, method, base, path string, body []byte, key string, out any, status *int) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if id := RequestID(ctx); id != "" {
		req.Header.Set(RequestIDHeader, id)
	}
	req.Header.Set(ActorHeader, Actor(ctx))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return ctx.Err() == nil, sysops.Errorf(sysops.EUnavailable, "%s service unavailable: %v", c.peer, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return true, sysops.Errorf(sysops.EUnavailable, "%s service: read answer: %v", c.peer, err)
	}
	if resp.StatusCode >= 300 {
		return c.answerError(resp.StatusCode, resp.Header.Get("Retry-After") != "", b)
	}
	if status != nil {
		*status = resp.StatusCode
	}
	if out != nil && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return false, fmt.Errorf("%s service: decode answer to %s %s: %w", c.peer, method, path, err)
		}
	}
	return false, nil
}

// answerError is the error a peer's answer of status (300 or more) with
// body means, and whether the call may be retried.
func (c *Client) answerError(status int, retryAfter bool, body []byte) (retry bool, err error) {
	var eb struct {
		Error sysops.Error `json:"error"`
	}
	if json.Unmarshal(body, &eb) == nil && eb.Error.Code != "" {
		if status == http.StatusConflict && retryAfter {
			// A conflict that passes (the same Idempotency-Key still in
			// progress): transient, not a refusal.
			return true, sysops.Errorf(sysops.EUnavailable, "%s service: %s", c.peer, eb.Error.Message)
		}
		if eb.Error.Code == sysops.EInternal {
			eb.Error.Message = c.peer + " service: " + eb.Error.Message
		}
		return status >= 500 && eb.Error.Code == sysops.EUnavailable, &eb.Error
	}
	code := sysops.EInternal
	if status >= 500 {
		code = sysops.EUnavailable
	}
	return status >= 500, sysops.Errorf(code, "%s service answered %d %s", c.peer, status, http.StatusText(status))
}

// PeerKey is the Idempotency-Key a [Client] derives from the incoming
// request's key for its POST to path on peer: key/peer/path, or, where
// that would be longer than a key may be (a client's key near the
// limit), "sha256:" and that string's hash, so that every key a client
// may send gives a key the peer accepts, the same on every retry.
func PeerKey(key, peer, path string) string {
	k := key + "/" + peer + path
	if len(k) <= idempotency.MaxKeyLength {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// SagaID is the id of the saga of definition that the orchestrator begins
// for a POST carrying Idempotency-Key key (as it receives it): a caller
// can look for that saga with GET /sagas/{id}.
func SagaID(definition, key string) string {
	sum := sha256.Sum256([]byte(definition + "\x00" + key))
	return definition + "-" + hex.EncodeToString(sum[:12])
}

// BatchCall is one POST of [Client.PostBatch]. Key is the key the call
// would carry alone from a context with [WithIdempotencyKey]: the peer
// sees the same key either way, so a call made in a batch and retried
// alone (or the other way round) is applied once.
type BatchCall struct {
	Key  string
	Path string
	Body any
}

// PostBatch sends calls to the peer's POST /batch, applied there in one
// transaction (see [idempotency.Store.BatchHandler]). It returns each
// call's answer body, or the error Post would have returned for it; err
// is for the batch as a whole (the peer cannot be reached, say). It is
// sent once: callers retry with their own budget.
func (c *Client) PostBatch(ctx context.Context, calls []BatchCall) (answers []json.RawMessage, errs []error, err error) {
	if len(calls) > idempotency.MaxBatchCalls {
		// More than the peer takes at once: in parts, in order.
		for part := range slices.Chunk(calls, idempotency.MaxBatchCalls) {
			a, e, err := c.PostBatch(ctx, part)
			if err != nil {
				return nil, nil, err
			}
			answers, errs = append(answers, a...), append(errs, e...)
		}
		return answers, errs, nil
	}
	req := idempotency.BatchRequest{Calls: make([]idempotency.BatchCall, len(calls))}
	for i, bc := range calls {
		req.Calls[i] = idempotency.BatchCall{Key: bc.Key + "/" + c.peer + bc.Path, Path: bc.Path}
		if bc.Body != nil { // as Post sends it: no body at all for nil
			body, err := json.Marshal(bc.Body)
			if err != nil {
				return nil, nil, fmt.Errorf("POST %s: %w", bc.Path, err)
			}
			req.Calls[i].Body = body
		}
	}
	var resp idempotency.BatchResponse
	if err := c.WithoutRetries().Post(ctx, idempotency.BatchPath, req, &resp); err != nil {
		return nil, nil, err
	}
	if len(resp.Results) != len(calls) {
		return nil, nil, sysops.Errorf(sysops.EUnavailable, "%s service answered %d results to %d calls", c.peer, len(resp.Results), len(calls))
	}
	answers, errs = make([]json.RawMessage, len(calls)), make([]error, len(calls))
	for i, r := range resp.Results {
		if r.Status >= 300 {
			_, errs[i] = c.answerError(r.Status, false, r.Body)
			continue
		}
		answers[i] = r.Body
	}
	return answers, errs, nil
}
