package svc

import (
	"strings"
	"testing"

	"github.com/sysops-squad/sysops"
)

func TestCheckNamesEachProblem(t *testing.T) {
	cases := []struct {
		name  string
		check func(c *Check)
		want  string // "" when the value passes
	}{
		{"required empty", func(c *Check) { c.Required("name", " ", 10) }, `field "name" is required`},
		{"required long", func(c *Check) { c.Required("name", "ééééééééééé", 10) }, `field "name" is longer than 10 characters`},
		{"required ok", func(c *Check) { c.Required("name", "éééééééééé", 10) }, ""},
		{"optional long", func(c *Check) { c.Optional("note", "abc", 2) }, `field "note" is longer than 2 characters`},
		{"optional empty", func(c *Check) { c.Optional("note", "", 2) }, ""},
		{"one of missing", func(c *Check) { c.OneOf("plan", "", "basic", "premium") }, `field "plan" is required: one of basic, premium`},
		{"one of wrong", func(c *Check) { c.OneOf("plan", "gold", "basic", "premium") }, `field "plan" must be one of basic, premium, not "gold"`},
		{"one of empty allowed", func(c *Check) { c.OneOf("plan", "", "", "basic") }, ""},
		{"email missing", func(c *Check) { c.Email("email", "") }, `field "email" is required: an e-mail address`},
		{"email wrong", func(c *Check) { c.Email("email", "Ann <ann@example.com>") }, `field "email" must be an e-mail address, not "Ann <ann@example.com>"`},
		{"email ok", func(c *Check) { c.Email("email", "ann@example.com") }, ""},
		{"zip missing", func(c *Check) { c.Zip("zip", "") }, `field "zip" is required: a 5-digit zip code`},
		{"zip wrong", func(c *Check) { c.Zip("zip", "1234a") }, `field "zip" must be a 5-digit zip code, not "1234a"`},
		{"zip ok", func(c *Check) { c.Zip("zip", "10001") }, ""},
		{"range", func(c *Check) { c.Range("rating", 0, 1, 5) }, `field "rating" must be between 1 and 5, not 0`},
	}
	for _, tc := range cases {
		var c Check
		tc.check(&c)
		err := c.Err()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want no error", tc.name, err)
		case tc.want != "" && (err == nil || sysops.MessageOf(err) != tc.want):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		case err != nil && sysops.CodeOf(err) != sysops.EInvalid:
			t.Errorf("%s: code %s, want invalid", tc.name, sysops.CodeOf(err))
		}
	}

	// Several problems come back together, in the order checked.
	var c Check
	c.Required("name", "", 10)
	c.Zip("zip", "")
	if got := c.Err(); got == nil || !strings.Contains(got.Error(), `field "name" is required; field "zip" is required`) {
		t.Errorf("two problems: %v", got)
	}
}
