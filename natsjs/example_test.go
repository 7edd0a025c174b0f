package natsjs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
)

// A service publishes an event to its own stream; another consumes it with
// a durable consumer and acks it by returning nil.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "natsjs-example")
	defer os.RemoveAll(dir)
	srv, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()

	b, err := natsjs.Connect(ctx, natsjs.Config{URL: srv.ClientURL()})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	_ = b.EnsureDeadLetterStream(ctx)
	_ = b.EnsureStream(ctx, natsjs.ServiceStream("ticket"))

	msg, _ := natsjs.EventMessage(sysops.Event{
		ID:     "ev-1",
		Source: "/sysops/ticket",
		Type:   "sysops.ticket.created.v1",
		Data:   json.RawMessage(`{"ticket_id":"T-1"}`),
	})
	ack, _ := b.Publish(ctx, msg)
	fmt.Println("stored as", ack.Stream, ack.Sequence)
	again, _ := b.Publish(ctx, msg)
	fmt.Println("published again, duplicate:", again.Duplicate)

	got := make(chan sysops.Event)
	sub, _ := b.Subscribe(ctx, natsjs.ConsumerSpec{Stream: "SYSOPS_TICKET", Durable: "assignment"},
		func(ctx context.Context, d *natsjs.Delivery) error {
			ev, err := natsjs.ParseEvent(d.Message)
			if err != nil {
				return natsjs.Permanent(err) // malformed: dead-letter it
			}
			got <- ev
			return nil
		})
	ev := <-got
	_ = sub.Stop()
	fmt.Println("received", ev.Type, string(ev.Data))
	// Output:
	// stored as SYSOPS_TICKET 1
	// published again, duplicate: true
	// received sysops.ticket.created.v1 {"ticket_id":"T-1"}
}
