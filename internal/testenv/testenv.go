// Package testenv decides what a test does when the outside infrastructure
// it needs is not configured: skip with a message on a developer's machine,
// fail in CI (CI=true), where every path must run.
package testenv

import (
	"os"
	"testing"
)

// CI reports whether the tests run in continuous integration (CI=true).
func CI() bool { return os.Getenv("CI") == "true" }

// Require returns the value of the environment variable name. When it is
// unset the test is skipped, or, in CI, failed: what names the
// infrastructure, for the message.
func Require(t testing.TB, name, what string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		Unavailable(t, "%s is not set: the %s tests need it", name, what)
	}
	return v
}

// Unavailable skips the test with the formatted message, or fails it in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if CI() {
		t.Fatalf(format+" (CI=true: failing instead of skipping)", args...)
	}
	t.Skipf(format, args...)
}
