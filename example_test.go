package sysops_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sysops-squad/sysops"
)

func ExampleEvent() {
	ev := sysops.Event{
		ID:            "ev-1",
		Source:        "/sysops/ticket",
		Type:          "sysops.ticket.created.v1",
		AggregateType: "ticket",
		AggregateID:   "T-1",
		Sequence:      1,
		Data:          json.RawMessage(`{"priority":"high"}`),
	}
	b, _ := json.Marshal(ev)
	fmt.Println(string(b))
	fmt.Println("subject:", sysops.NATSSubject(ev.Type))

	_, err := sysops.ParseEvent([]byte(`{"specversion":"1.0","id":"ev-2","source":"/x"}`))
	fmt.Println(err)
	// Output:
	// {"specversion":"1.0","id":"ev-1","source":"/sysops/ticket","type":"sysops.ticket.created.v1","data":{"priority":"high"},"aggregatetype":"ticket","aggregateid":"T-1","sequence":1}
	// subject: sysops.ticket.created
	// invalid: event: type is required
}

func ExampleCodeOf() {
	err := fmt.Errorf("create ticket: %w", sysops.Errorf(sysops.ENotFound, "customer C-9 not found"))
	fmt.Println(sysops.CodeOf(err), "-", sysops.MessageOf(err))

	err = errors.New("dial tcp 10.0.0.5:5432: connection refused")
	fmt.Println(sysops.CodeOf(err), "-", sysops.MessageOf(err))
	// Output:
	// not_found - customer C-9 not found
	// internal - internal error
}
