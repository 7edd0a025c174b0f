package sysops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// SpecVersion is the CloudEvents specification version of every [Event].
const SpecVersion = "1.0"

// ContentTypeJSON is the data content type of every event the system emits.
const ContentTypeJSON = "application/json"

// Event is the envelope of every event in the system: the CloudEvents 1.0
// context attributes, JSON data, and extension attributes for the
// aggregate the event belongs to, its position in that aggregate's history,
// the correlation id of the workflow that caused it, and W3C trace context.
//
// On the wire it is CloudEvents' structured JSON form (see [Event.MarshalJSON])
// or, on NATS, the binary form with ce- headers (see package natsjs).
type Event struct {
	// ID identifies the event; with Source it is unique. Consumers
	// de-duplicate on it.
	ID string
	// Source is the URI-reference of the producer, e.g. "/sysops/ticket".
	Source string
	// Type is "sysops.<service>.<event>.v<N>".
	Type string
	// Subject is the entity the event is about, e.g. a ticket id. Optional.
	Subject string
	// Time is when the occurrence happened. Optional (zero means unset).
	Time time.Time
	// DataContentType is the media type of Data; empty means application/json.
	DataContentType string
	// Data is the payload, a JSON value. Optional.
	Data json.RawMessage

	// AggregateType and AggregateID name the aggregate (the consistency
	// boundary) the event belongs to. Optional.
	AggregateType string
	AggregateID   string
	// Sequence is the event's position in its aggregate's history, from 1.
	// Zero means unset.
	Sequence int64
	// CorrelationID ties together the events of one workflow. Optional.
	CorrelationID string
	// TraceParent and TraceState are W3C trace context. Optional.
	TraceParent string
	TraceState  string
}

// The extension attribute names of [Event], as they appear in JSON and, with
// the "ce-" prefix, in NATS headers. CloudEvents allows only lower-case
// letters and digits.
const (
	ExtAggregateType = "aggregatetype"
	ExtAggregateID   = "aggregateid"
	ExtSequence      = "sequence"
	ExtCorrelationID = "correlationid"
	ExtTraceParent   = "traceparent"
	ExtTraceState    = "tracestate"
)

var (
	typePattern        = regexp.MustCompile(`^sysops\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.v[1-9][0-9]*$`)
	traceParentPattern = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)
)

// NATSSubject returns the broker subject for an event type: the type
// without its version, "sysops.<service>.<event>". It returns "" for a type
// that does not follow the naming convention.
func NATSSubject(eventType string) string {
	if !typePattern.MatchString(eventType) {
		return ""
	}
	return eventType[:strings.LastIndexByte(eventType, '.')]
}

// Validate reports the first attribute of e that breaks the envelope's
// rules, as an [EInvalid] [*Error] naming the attribute.
func (e *Event) Validate() error {
	switch {
	case e.ID == "":
		return Errorf(EInvalid, "event: id is required")
	case e.Source == "":
		return Errorf(EInvalid, "event: source is required")
	case e.Type == "":
		return Errorf(EInvalid, "event: type is required")
	case !typePattern.MatchString(e.Type):
		return Errorf(EInvalid, "event: type %q does not match sysops.<service>.<event>.v<N>", e.Type)
	case e.Sequence < 0:
		return Errorf(EInvalid, "event: sequence %d is negative", e.Sequence)
	case e.TraceParent != "" && !traceParentPattern.MatchString(e.TraceParent):
		return Errorf(EInvalid, "event: traceparent %q is not W3C trace context", e.TraceParent)
	case e.DataContentType != "" && e.DataContentType != ContentTypeJSON:
		return Errorf(EInvalid, "event: datacontenttype %q is not supported (only %s)", e.DataContentType, ContentTypeJSON)
	case len(e.Data) > 0 && !json.Valid(e.Data):
		return Errorf(EInvalid, "event: data is not valid JSON")
	}
	for _, a := range []struct{ name, v string }{
		{"id", e.ID}, {"source", e.Source}, {"subject", e.Subject}, {ExtAggregateType, e.AggregateType},
		{ExtAggregateID, e.AggregateID}, {ExtCorrelationID, e.CorrelationID}, {ExtTraceState, e.TraceState},
	} {
		if why := badString(a.v); why != "" {
			return Errorf(EInvalid, "event: %s %q %s", a.name, a.v, why)
		}
	}
	return nil
}

// badString says why s is not a CloudEvents String — which is a sequence
// of Unicode characters without the control characters (U+0000-U+001F,
// U+007F-U+009F) and the noncharacters — or "" when it is one. Consumers
// store these attributes as text (PostgreSQL refuses U+0000), and NATS
// headers cannot carry a line break.
func badString(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case r < 0x20 || r >= 0x7f && r <= 0x9f:
			return fmt.Sprintf("holds the control character %U", r)
		case r >= 0xfdd0 && r <= 0xfdef || r&0xfffe == 0xfffe:
			return fmt.Sprintf("holds the noncharacter %U", r)
		}
	}
	return ""
}

// wireEvent is the structured-mode JSON form. Pointers mark optional
// attributes so that absent and empty can be told apart on decode.
type wireEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            *time.Time      `json:"time,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	DataBase64      *string         `json:"data_base64,omitempty"`
	AggregateType   string          `json:"aggregatetype,omitempty"`
	AggregateID     string          `json:"aggregateid,omitempty"`
	Sequence        int64           `json:"sequence,omitempty"`
	CorrelationID   string          `json:"correlationid,omitempty"`
	TraceParent     string          `json:"traceparent,omitempty"`
	TraceState      string          `json:"tracestate,omitempty"`
}

// MarshalJSON encodes e in CloudEvents' structured JSON form. It fails if e
// does not pass [Event.Validate].
func (e Event) MarshalJSON() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	w := wireEvent{
		SpecVersion:     SpecVersion,
		ID:              e.ID,
		Source:          e.Source,
		Type:            e.Type,
		Subject:         e.Subject,
		DataContentType: e.DataContentType,
		Data:            e.Data,
		AggregateType:   e.AggregateType,
		AggregateID:     e.AggregateID,
		Sequence:        e.Sequence,
		CorrelationID:   e.CorrelationID,
		TraceParent:     e.TraceParent,
		TraceState:      e.TraceState,
	}
	if !e.Time.IsZero() {
		t := e.Time.UTC()
		w.Time = &t
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes CloudEvents' structured JSON form. Unknown
// attributes, a specversion other than 1.0, data_base64 and anything that
// fails [Event.Validate] are rejected with an error naming the attribute.
func (e *Event) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var w wireEvent
	if err := dec.Decode(&w); err != nil {
		return Errorf(EInvalid, "event: %v", err)
	}
	if dec.More() {
		return Errorf(EInvalid, "event: trailing data after the JSON object")
	}
	if w.SpecVersion != SpecVersion {
		return Errorf(EInvalid, "event: specversion %q is not supported (only %s)", w.SpecVersion, SpecVersion)
	}
	if w.DataBase64 != nil {
		return Errorf(EInvalid, "event: data_base64 is not supported; data must be JSON")
	}
	if bytes.Equal(w.Data, []byte("null")) {
		w.Data = nil
	}
	if len(w.Data) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, w.Data); err != nil {
			return Errorf(EInvalid, "event: data: %v", err)
		}
		w.Data = buf.Bytes()
	}
	ev := Event{
		ID:              w.ID,
		Source:          w.Source,
		Type:            w.Type,
		Subject:         w.Subject,
		DataContentType: w.DataContentType,
		Data:            w.Data,
		AggregateType:   w.AggregateType,
		AggregateID:     w.AggregateID,
		Sequence:        w.Sequence,
		CorrelationID:   w.CorrelationID,
		TraceParent:     w.TraceParent,
		TraceState:      w.TraceState,
	}
	if w.Time != nil {
		ev.Time = w.Time.UTC()
	}
	if err := ev.Validate(); err != nil {
		return err
	}
	*e = ev
	return nil
}

// String returns a short description for logs: type, id and aggregate.
func (e Event) String() string {
	if e.AggregateID == "" {
		return fmt.Sprintf("%s %s", e.Type, e.ID)
	}
	return fmt.Sprintf("%s %s (%s %s #%d)", e.Type, e.ID, e.AggregateType, e.AggregateID, e.Sequence)
}

// ParseEvent decodes one event in structured JSON form. Unlike
// json.Unmarshal it reports malformed JSON as an [EInvalid] [*Error] too, so
// every rejection carries the same code.
func ParseEvent(b []byte) (Event, error) {
	var e Event
	err := e.UnmarshalJSON(b)
	return e, err
}
