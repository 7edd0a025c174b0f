package sysops_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sysops-squad/sysops"
)

func fullEvent() sysops.Event {
	return sysops.Event{
		ID:              "01J9ZK7V8M5Q2R3S4T5V6W7X8Y",
		Source:          "/sysops/ticket",
		Type:            "sysops.ticket.created.v1",
		Subject:         "T-42",
		Time:            time.Date(2026, 11, 23, 9, 30, 0, 123456789, time.UTC),
		DataContentType: sysops.ContentTypeJSON,
		Data:            json.RawMessage(`{"ticket_id":"T-42","priority":"high"}`),
		AggregateType:   "ticket",
		AggregateID:     "T-42",
		Sequence:        3,
		CorrelationID:   "saga-7",
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:      "sysops=1",
	}
}

func TestEventJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ev   sysops.Event
	}{
		{"full", fullEvent()},
		{"minimal", sysops.Event{ID: "1", Source: "/s", Type: "sysops.location.zip_added.v2"}},
		{"array data", sysops.Event{ID: "2", Source: "/s", Type: "sysops.a.b.v1", Data: json.RawMessage(`[1,2,3]`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.ev)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			var got sysops.Event
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if diff := cmp.Diff(tt.ev, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEventMarshalUsesCloudEventsNames(t *testing.T) {
	b, err := json.Marshal(fullEvent())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data",
		"aggregatetype", "aggregateid", "sequence", "correlationid", "traceparent", "tracestate"} {
		if _, ok := m[k]; !ok {
			t.Errorf("attribute %q missing from %s", k, b)
		}
	}
	if m["specversion"] != "1.0" {
		t.Errorf("specversion = %v, want 1.0", m["specversion"])
	}
}

func TestEventUnmarshalRejects(t *testing.T) {
	tests := []struct {
		name, in, wantInMsg string
	}{
		{"not json", `{`, "event:"},
		{"trailing", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1"} {}`, "trailing"},
		{"unknown attribute", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","colour":"red"}`, "colour"},
		{"missing id", `{"specversion":"1.0","source":"/s","type":"sysops.a.b.v1"}`, "id is required"},
		{"missing source", `{"specversion":"1.0","id":"1","type":"sysops.a.b.v1"}`, "source is required"},
		{"missing type", `{"specversion":"1.0","id":"1","source":"/s"}`, "type is required"},
		{"bad type", `{"specversion":"1.0","id":"1","source":"/s","type":"ticket.created"}`, "does not match"},
		{"old spec", `{"specversion":"0.3","id":"1","source":"/s","type":"sysops.a.b.v1"}`, "specversion"},
		{"base64", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","data_base64":"AA=="}`, "data_base64"},
		{"wrong type for sequence", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","sequence":"x"}`, "sequence"},
		{"negative sequence", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","sequence":-1}`, "negative"},
		{"bad traceparent", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","traceparent":"xyz"}`, "traceparent"},
		{"xml", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","datacontenttype":"text/xml"}`, "datacontenttype"},
		{"bad time", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","time":"yesterday"}`, "event:"},
		// CloudEvents Strings hold no control characters or noncharacters.
		{"NUL in id", `{"specversion":"1.0","id":"1\u0000","source":"/s","type":"sysops.a.b.v1"}`, `id "1\x00" holds the control character U+0000`},
		{"line break in aggregate id", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","aggregateid":"a\nb"}`, "aggregateid"},
		{"C1 control in subject", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","subject":"\u0085"}`, "control character U+0085"},
		{"noncharacter in source", `{"specversion":"1.0","id":"1","source":"/s\uffff","type":"sysops.a.b.v1"}`, "noncharacter U+FFFF"},
		{"noncharacter in correlation id", `{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","correlationid":"\ufdd0"}`, "noncharacter U+FDD0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sysops.ParseEvent([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseEvent(%s) succeeded, want error", tt.in)
			}
			if !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantInMsg)
			}
			if code := sysops.CodeOf(err); code != sysops.EInvalid {
				t.Errorf("error %v has code %q, want invalid", err, code)
			}
		})
	}
}

func TestNATSSubject(t *testing.T) {
	tests := map[string]string{
		"sysops.ticket.created.v1":      "sysops.ticket.created",
		"sysops.location.zip_added.v12": "sysops.location.zip_added",
		"sysops.ticket.created":         "",
		"ticket.created.v1":             "",
		"sysops.Ticket.created.v1":      "",
	}
	for in, want := range tests {
		if got := sysops.NATSSubject(in); got != want {
			t.Errorf("NATSSubject(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzEventUnmarshal checks that the decoder never panics and that whatever
// it accepts survives an encode/decode round trip unchanged.
func FuzzEventUnmarshal(f *testing.F) {
	full, _ := json.Marshal(fullEvent())
	f.Add(full)
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","data":null}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"sysops.a.b.v1","data": { "x" : [1, 2] }}`))
	f.Add([]byte(`{"specversion":"1.0","id":"","source":"/s"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := sysops.ParseEvent(b)
		if err != nil {
			if sysops.CodeOf(err) != sysops.EInvalid {
				t.Fatalf("rejection of %q has code %q, want invalid", b, sysops.CodeOf(err))
			}
			return
		}
		out, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", b, err)
		}
		var again sysops.Event
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatalf("cannot decode own encoding %s: %v", out, err)
		}
		if diff := cmp.Diff(ev, again); diff != "" {
			t.Fatalf("round trip changed the event (-first +second):\n%s", diff)
		}
	})
}
