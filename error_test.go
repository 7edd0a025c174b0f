package sysops_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/sysops-squad/sysops"
)

func TestCodeOfAndMessageOf(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode sysops.ErrorCode
		wantMsg  string
	}{
		{"nil", nil, "", ""},
		{"plain", errors.New("db password is hunter2"), sysops.EInternal, "internal error"},
		{"direct", sysops.Errorf(sysops.ENotFound, "zip %q not found", "99999"), sysops.ENotFound, `zip "99999" not found`},
		{"wrapped", fmt.Errorf("get zip: %w", sysops.Errorf(sysops.EInvalid, "zip must be 5 digits")), sysops.EInvalid, "zip must be 5 digits"},
		{"joined", errors.Join(errors.New("x"), sysops.Errorf(sysops.EConflict, "dup")), sysops.EConflict, "dup"},
		{"unknown code", &sysops.Error{Code: "teapot", Message: "secret"}, sysops.EInternal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sysops.CodeOf(tt.err); got != tt.wantCode {
				t.Errorf("CodeOf = %q, want %q", got, tt.wantCode)
			}
			if got := sysops.MessageOf(tt.err); got != tt.wantMsg {
				t.Errorf("MessageOf = %q, want %q", got, tt.wantMsg)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	err := sysops.Errorf(sysops.EUnavailable, "location is down")
	if got, want := err.Error(), "unavailable: location is down"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
