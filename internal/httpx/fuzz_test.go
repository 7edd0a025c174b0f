package httpx_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
)

// FuzzUnmarshal: whatever the body, Unmarshal answers without panicking,
// with nil or an EInvalid error; it accepts exactly the bodies that are
// one valid JSON value, in UTF-8, with no member name twice in an object
// and no U+0000, and names the same refused member as a decoder-based
// reading of the body does.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"a":1}`, `{"a":1}]`, `{"a":1}}`, `[1,2]]`, `{"a":1} {"b":2}`, `{"a":1,"a":2}`,
		`{"l":[0,{"k":1},[{"k":1,"k":2}]]}`, `{"a\"b":1,"a":{"q":"\"a\":","r":2}}`, `{"a":1,"\u0061":2}`,
		`"x"`, `3`, `null`, ` `, `{`, `}`, `]`, `[{}]]`, "{\"a\":1}\n\t", `{"é":1,"\u00e9":2}`,
		`{"a":"\u0000"}`, `["x",{"\u0000":1}]`, `{"a":"\\u0000"}`,
		// Found by fuzzing once.
		`{"":0,"":0}`, "0\v", "{\"\xa9\":0,\"\xa7\":0}", `1e400`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v any
		err := httpx.Unmarshal(b, &v)
		if err != nil && (sysops.CodeOf(err) != sysops.EInvalid || sysops.MessageOf(err) == "") {
			t.Fatalf("%q: error %v is not an invalid-input error with a message", b, err)
		}
		if !json.Valid(b) || !utf8.Valid(b) {
			if err == nil {
				t.Fatalf("%q is not valid JSON in UTF-8, and was accepted", b)
			}
			return
		}
		want, found := refusedMember(b)
		switch {
		case found && (err == nil || sysops.MessageOf(err) != want):
			t.Fatalf("%q: Unmarshal said %v, want %q", b, err, want)
		case !found && err != nil && json.Unmarshal(b, new(any)) == nil:
			// (A number beyond float64, say, encoding/json refuses too.)
			t.Fatalf("%q is valid with no name repeated; Unmarshal said %v", b, err)
		}
	})
}

// refusedMember reads valid JSON b token by token and returns the error
// Unmarshal should give for its first refused member, in its words: a
// member name repeated in one object, or a string holding U+0000.
func refusedMember(b []byte) (string, bool) {
	type frame struct {
		object   bool
		names    map[string]bool
		member   string
		wantName bool
		n        int
	}
	var stack []*frame
	path := func() string {
		var p strings.Builder
		for _, f := range stack {
			if !f.object {
				fmt.Fprintf(&p, "[%d]", f.n)
				continue
			}
			if p.Len() > 0 {
				p.WriteByte('.')
			}
			p.WriteString(f.member)
		}
		return p.String()
	}
	// A value starts in the frame on top (an array counts it), and ends
	// (an object then waits for its next name).
	starts := func() {
		if len(stack) > 0 && !stack[len(stack)-1].object {
			stack[len(stack)-1].n++
		}
	}
	ends := func() {
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].wantName = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				starts()
				stack = append(stack, &frame{object: t == '{', names: map[string]bool{}, wantName: t == '{', n: -1})
			default:
				stack = stack[:len(stack)-1]
				ends()
			}
		case string:
			nul := strings.ContainsRune(t, 0)
			if top := len(stack) - 1; top >= 0 && stack[top].object && stack[top].wantName {
				stack[top].member, stack[top].wantName = t, false
				switch {
				case nul:
					return fmt.Sprintf(`field %q has a name that contains the NUL character (\u0000)`, path()), true
				case stack[top].names[t]:
					return fmt.Sprintf("field %q appears more than once", path()), true
				}
				stack[top].names[t] = true
				continue
			}
			starts()
			if nul {
				return fmt.Sprintf(`field %q contains the NUL character (\u0000)`, path()), true
			}
			ends()
		default:
			starts()
			ends()
		}
	}
}
