package natsjs

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sysops-squad/sysops"
)

// CloudEvents NATS binding (binary content mode): each context attribute
// is a header named "ce-<attribute>"; datacontenttype is Content-Type.
const (
	headerPrefix      = "ce-"
	headerContentType = "Content-Type"
)

// EventMessage encodes ev in the CloudEvents NATS binding: its data is the
// payload, its attributes are headers, its id is the message id, and its
// subject is [sysops.NATSSubject] of its type.
func EventMessage(ev sysops.Event) (Message, error) {
	if err := ev.Validate(); err != nil {
		return Message{}, err
	}
	h := nats.Header{}
	set := func(name, v string) {
		if v != "" {
			h[headerPrefix+name] = []string{v}
		}
	}
	set("specversion", sysops.SpecVersion)
	set("id", ev.ID)
	set("source", ev.Source)
	set("type", ev.Type)
	set("subject", ev.Subject)
	if !ev.Time.IsZero() {
		set("time", ev.Time.UTC().Format(time.RFC3339Nano))
	}
	set(sysops.ExtAggregateType, ev.AggregateType)
	set(sysops.ExtAggregateID, ev.AggregateID)
	if ev.Sequence != 0 {
		set(sysops.ExtSequence, strconv.FormatInt(ev.Sequence, 10))
	}
	set(sysops.ExtCorrelationID, ev.CorrelationID)
	set(sysops.ExtTraceParent, ev.TraceParent)
	set(sysops.ExtTraceState, ev.TraceState)
	if ev.DataContentType != "" {
		h[headerContentType] = []string{ev.DataContentType}
	}
	return Message{ID: ev.ID, Subject: sysops.NATSSubject(ev.Type), Header: h, Data: ev.Data}, nil
}

// ParseEvent decodes a message in the CloudEvents NATS binding. Anything
// malformed — a missing or repeated attribute, a bad time or sequence,
// data that is not JSON — is an [sysops.EInvalid] error naming it, for the
// dead-letter reason.
func ParseEvent(m Message) (sysops.Event, error) {
	get := func(name string) (string, error) {
		v := m.Header[headerPrefix+name]
		switch len(v) {
		case 0:
			return "", nil
		case 1:
			return v[0], nil
		}
		return "", sysops.Errorf(sysops.EInvalid, "event: header %s%s appears %d times", headerPrefix, name, len(v))
	}
	var ev sysops.Event
	var errs []error
	str := func(name string, dst *string) {
		v, err := get(name)
		if err != nil {
			errs = append(errs, err)
		}
		*dst = v
	}
	var spec, tm, seq string
	str("specversion", &spec)
	str("id", &ev.ID)
	str("source", &ev.Source)
	str("type", &ev.Type)
	str("subject", &ev.Subject)
	str("time", &tm)
	str(sysops.ExtAggregateType, &ev.AggregateType)
	str(sysops.ExtAggregateID, &ev.AggregateID)
	str(sysops.ExtSequence, &seq)
	str(sysops.ExtCorrelationID, &ev.CorrelationID)
	str(sysops.ExtTraceParent, &ev.TraceParent)
	str(sysops.ExtTraceState, &ev.TraceState)
	if len(errs) > 0 {
		return sysops.Event{}, errs[0]
	}
	if spec != sysops.SpecVersion {
		return sysops.Event{}, sysops.Errorf(sysops.EInvalid, "event: header ce-specversion is %q, want %s", spec, sysops.SpecVersion)
	}
	if tm != "" {
		t, err := time.Parse(time.RFC3339Nano, tm)
		if err != nil {
			return sysops.Event{}, sysops.Errorf(sysops.EInvalid, "event: header ce-time %q is not RFC 3339", tm)
		}
		ev.Time = t.UTC()
	}
	if seq != "" {
		n, err := strconv.ParseInt(seq, 10, 64)
		if err != nil {
			return sysops.Event{}, sysops.Errorf(sysops.EInvalid, "event: header ce-sequence %q is not an integer", seq)
		}
		ev.Sequence = n
	}
	if ct := m.Header.Get(headerContentType); ct != "" {
		ev.DataContentType = ct
	}
	if len(m.Data) > 0 {
		if !json.Valid(m.Data) {
			return sysops.Event{}, sysops.Errorf(sysops.EInvalid, "event: data is not valid JSON")
		}
		ev.Data = append(json.RawMessage(nil), m.Data...)
	}
	if err := ev.Validate(); err != nil {
		return sysops.Event{}, err
	}
	if want := sysops.NATSSubject(ev.Type); m.Subject != "" && m.Subject != want {
		return sysops.Event{}, sysops.Errorf(sysops.EInvalid, "event: type %s belongs on subject %s, not %s", ev.Type, want, m.Subject)
	}
	return ev, nil
}
