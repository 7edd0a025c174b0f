package sysops

import (
	"errors"
	"fmt"
)

// ErrorCode classifies an [Error]. The set is closed: every error that leaves
// a service carries one of these codes, and the HTTP edge maps each code to
// one status.
type ErrorCode string

// The error codes.
const (
	// EInvalid: the request is malformed or breaks a rule; the caller must change it.
	EInvalid ErrorCode = "invalid"
	// ENotFound: the named entity does not exist.
	ENotFound ErrorCode = "not_found"
	// EConflict: the request clashes with the current state (a duplicate, a
	// state transition that is not allowed, a key reused with another body).
	EConflict ErrorCode = "conflict"
	// EUnavailable: a dependency is down or overloaded; the caller may retry.
	EUnavailable ErrorCode = "unavailable"
	// EInternal: a bug or an unexpected failure; details are logged, never sent.
	EInternal ErrorCode = "internal"
)

// Valid reports whether c is one of the defined codes.
func (c ErrorCode) Valid() bool {
	switch c {
	case EInvalid, ENotFound, EConflict, EUnavailable, EInternal:
		return true
	}
	return false
}

// Error is an error meant for the caller: a code from the closed set and a
// message a person can act on. Any other error is internal; its text is
// logged and replaced by a generic message before it leaves a service.
type Error struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf returns an [*Error] with the given code and a formatted message.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of the first [*Error] in err's chain, nil for a nil
// error's empty code, and [EInternal] for any other error.
func CodeOf(err error) ErrorCode {
	if err == nil {
		return ""
	}
	if e, ok := errors.AsType[*Error](err); ok && e.Code.Valid() {
		return e.Code
	}
	return EInternal
}

// MessageOf returns the message of the first [*Error] in err's chain. Any
// other error yields "internal error": its text may hold details that must
// not leave the process.
func MessageOf(err error) string {
	if err == nil {
		return ""
	}
	if e, ok := errors.AsType[*Error](err); ok && e.Code.Valid() {
		return e.Message
	}
	return "internal error"
}
