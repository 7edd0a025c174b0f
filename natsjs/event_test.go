package natsjs_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
)

func sampleEvent() sysops.Event {
	return sysops.Event{
		ID:              "ev-1",
		Source:          "/sysops/ticket",
		Type:            "sysops.ticket.created.v1",
		Subject:         "T-1",
		Time:            time.Date(2026, 11, 23, 10, 0, 0, 5, time.UTC),
		DataContentType: sysops.ContentTypeJSON,
		Data:            json.RawMessage(`{"ticket_id":"T-1"}`),
		AggregateType:   "ticket",
		AggregateID:     "T-1",
		Sequence:        7,
		CorrelationID:   "c-1",
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:      "k=v",
	}
}

func TestEventMessageRoundTrip(t *testing.T) {
	ev := sampleEvent()
	m, err := natsjs.EventMessage(ev)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != ev.ID || m.Subject != "sysops.ticket.created" || string(m.Data) != string(ev.Data) {
		t.Errorf("message = id %q subject %q data %s", m.ID, m.Subject, m.Data)
	}
	for h, want := range map[string]string{
		"ce-specversion": "1.0", "ce-id": "ev-1", "ce-type": "sysops.ticket.created.v1", "ce-aggregateid": "T-1",
		"ce-sequence": "7", "ce-traceparent": ev.TraceParent, "Content-Type": "application/json",
	} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	got, err := natsjs.ParseEvent(m)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ev, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestParseEventRejects(t *testing.T) {
	good, err := natsjs.EventMessage(sampleEvent())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(m *natsjs.Message)
		want   string
	}{
		{"no id", func(m *natsjs.Message) { m.Header.Del("ce-id") }, "id is required"},
		{"no type", func(m *natsjs.Message) { m.Header.Del("ce-type") }, "type is required"},
		{"unknown spec", func(m *natsjs.Message) { m.Header.Set("ce-specversion", "0.3") }, "specversion"},
		{"bad time", func(m *natsjs.Message) { m.Header.Set("ce-time", "noon") }, "ce-time"},
		{"bad sequence", func(m *natsjs.Message) { m.Header.Set("ce-sequence", "seven") }, "ce-sequence"},
		{"repeated id", func(m *natsjs.Message) { m.Header.Add("ce-id", "ev-2") }, "appears 2 times"},
		{"bad json", func(m *natsjs.Message) { m.Data = []byte("{") }, "not valid JSON"},
		{"wrong subject", func(m *natsjs.Message) { m.Subject = "sysops.billing.charged" }, "belongs on subject"},
		{"id not UTF-8", func(m *natsjs.Message) { m.Header.Set("ce-id", "ev-\xff") }, `id "ev-\xff" is not valid UTF-8`},
		{"NUL in aggregate id", func(m *natsjs.Message) { m.Header.Set("ce-aggregateid", "t\x00") }, "control character U+0000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			m.Header = nats.Header{}
			for k, v := range good.Header {
				m.Header[k] = append([]string(nil), v...)
			}
			tt.mutate(&m)
			_, err := natsjs.ParseEvent(m)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if sysops.CodeOf(err) != sysops.EInvalid {
				t.Errorf("code = %q, want invalid", sysops.CodeOf(err))
			}
		})
	}
}

// FuzzParseEvent feeds the header decoder arbitrary attribute values: it
// must never panic, and what it accepts must re-encode to the same event.
func FuzzParseEvent(f *testing.F) {
	f.Add("ev-1", "/s", "sysops.ticket.created.v1", "2026-11-23T10:00:00Z", "3", `{"a":1}`, "application/json")
	f.Add("", "", "", "", "", "", "")
	f.Add("x", "y", "sysops.a.b.v1", "bad", "-1", "[", "text/plain")
	f.Fuzz(func(t *testing.T, id, source, typ, tm, seq, data, ct string) {
		h := nats.Header{}
		for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": id, "ce-source": source, "ce-type": typ,
			"ce-time": tm, "ce-sequence": seq, "Content-Type": ct} {
			if v != "" {
				h.Set(k, v)
			}
		}
		ev, err := natsjs.ParseEvent(natsjs.Message{Header: h, Data: []byte(data)})
		if err != nil {
			if sysops.CodeOf(err) != sysops.EInvalid {
				t.Fatalf("rejection has code %q, want invalid: %v", sysops.CodeOf(err), err)
			}
			return
		}
		m, err := natsjs.EventMessage(ev)
		if err != nil {
			t.Fatalf("accepted event does not encode: %v", err)
		}
		again, err := natsjs.ParseEvent(m)
		if err != nil {
			t.Fatalf("own encoding rejected: %v", err)
		}
		if diff := cmp.Diff(ev, again); diff != "" {
			t.Fatalf("round trip changed the event:\n%s", diff)
		}
	})
}
