package svc

import (
	"fmt"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/sysops-squad/sysops"
)

// Check collects validation failures; each names its field.
type Check struct{ problems []string }

// Required fails when value is empty or longer than max characters.
func (c *Check) Required(field, value string, max int) {
	switch {
	case strings.TrimSpace(value) == "":
		c.problems = append(c.problems, fmt.Sprintf("field %q is required", field))
	case utf8.RuneCountInString(value) > max:
		c.problems = append(c.problems, fmt.Sprintf("field %q is longer than %d characters", field, max))
	}
}

// Optional fails when value is longer than max characters.
func (c *Check) Optional(field, value string, max int) {
	if utf8.RuneCountInString(value) > max {
		c.problems = append(c.problems, fmt.Sprintf("field %q is longer than %d characters", field, max))
	}
}

// OneOf fails when value is not one of allowed; an empty value that is
// not allowed is reported as missing.
func (c *Check) OneOf(field, value string, allowed ...string) {
	if value == "" && !slices.Contains(allowed, "") {
		c.problems = append(c.problems, fmt.Sprintf("field %q is required: one of %s", field, strings.Join(allowed, ", ")))
		return
	}
	if !slices.Contains(allowed, value) {
		c.problems = append(c.problems, fmt.Sprintf("field %q must be one of %s, not %q", field, strings.Join(allowed, ", "), value))
	}
}

// Email fails when value is not an e-mail address.
func (c *Check) Email(field, value string) {
	if value == "" {
		c.problems = append(c.problems, fmt.Sprintf("field %q is required: an e-mail address", field))
		return
	}
	if a, err := mail.ParseAddress(value); err != nil || a.Address != value {
		c.problems = append(c.problems, fmt.Sprintf("field %q must be an e-mail address, not %q", field, value))
	}
}

var zipPattern = regexp.MustCompile(`^[0-9]{5}$`)

// Zip fails when value is not five digits.
func (c *Check) Zip(field, value string) {
	if value == "" {
		c.problems = append(c.problems, fmt.Sprintf("field %q is required: a 5-digit zip code", field))
		return
	}
	if !zipPattern.MatchString(value) {
		c.problems = append(c.problems, fmt.Sprintf("field %q must be a 5-digit zip code, not %q", field, value))
	}
}

// Range fails when value is outside [min, max].
func (c *Check) Range(field string, value, min, max int) {
	if value < min || value > max {
		c.problems = append(c.problems, fmt.Sprintf("field %q must be between %d and %d, not %d", field, min, max, value))
	}
}

// Fail records a failure in the check's words.
func (c *Check) Fail(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// Err returns the failures as one [sysops.EInvalid] error, or nil.
func (c *Check) Err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return sysops.Errorf(sysops.EInvalid, "%s", strings.Join(c.problems, "; "))
}

// Skills are the kinds of work a ticket needs and an expert offers.
var Skills = []string{"hardware", "software", "network", "printer", "mobile"}

// Priorities are a ticket's priorities, lowest first.
var Priorities = []string{"low", "medium", "high", "critical"}
