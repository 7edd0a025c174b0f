package httpx

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sysops-squad/sysops"
)

// Query returns r's query parameters after refusing, as [sysops.EInvalid]
// errors naming the parameter, a malformed query string, a parameter not
// in known, one given more than once, and a value that is not text
// ([badText]). Without this, a mistyped filter
// (?status= where the endpoint reads ?state=) would be ignored and the
// unfiltered answer look filtered.
func Query(r *http.Request, known ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, sysops.Errorf(sysops.EInvalid, "malformed query string: %v", err)
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the same parameter named first every time
	for _, k := range keys {
		switch {
		case !slices.Contains(known, k) && len(known) == 0:
			return nil, sysops.Errorf(sysops.EInvalid, "unknown query parameter %q: this endpoint takes none", k)
		case !slices.Contains(known, k):
			return nil, sysops.Errorf(sysops.EInvalid, "unknown query parameter %q (known: %s)", k, strings.Join(known, ", "))
		case len(q[k]) > 1:
			return nil, sysops.Errorf(sysops.EInvalid, "query parameter %q is given %d times; give it once", k, len(q[k]))
		}
		if why := badText(q[k][0]); why != "" {
			return nil, sysops.Errorf(sysops.EInvalid, "query parameter %q %s", k, why)
		}
	}
	return q, nil
}

// Limit parses the "limit" query parameter: def when absent, otherwise a
// whole number from 1 to max.
func Limit(q url.Values, def, max int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max || strconv.Itoa(n) != s {
		return 0, sysops.Errorf(sysops.EInvalid, "query parameter limit must be a whole number from 1 to %d, not %q", max, s)
	}
	return n, nil
}
