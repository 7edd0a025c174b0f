// Package natsjs is the broker adapter: NATS JetStream, embedded in the
// process ([RunServer]) or reached by URL ([Connect]), used the way the
// toolkit needs it.
//
//   - One stream per owning service ([ServiceStream]: "SYSOPS_TICKET" holds
//     "sysops.ticket.>") plus one dead-letter stream; [Broker.EnsureStream]
//     is idempotent. A broker remembers the streams it ensured and creates
//     them again, empty, when a publish or a subscription finds one gone
//     (a server back without its store), rather than failing until the
//     process restarts.
//   - [Broker.Publish] and [Broker.PublishBatch] send a [Message] with its ID
//     as the JetStream message id, so a re-published id inside the
//     stream's duplicate window is stored once, and return only after the
//     server has acknowledged storing it. A refusal says whose it is:
//     [IsRejected] for the message (too large for the stream), which no
//     retry can store, [IsUnavailable] for the broker's state (out of
//     storage, a stream at its limits), which passes.
//   - [Broker.Subscribe] runs a durable pull consumer with explicit acks.
//     A [Handler] that returns nil acks the message; one that returns an
//     error gets it again after a delay that grows with each delivery; one
//     that returns [Permanent] sends it to the dead-letter stream at once.
//     After [ConsumerSpec.MaxDeliver] deliveries a failing message is
//     dead-lettered too, so a poison message never blocks the ones behind
//     it. A dead letter keeps the original subject, data and headers and
//     adds the reason, the delivery count, the stream, sequence and
//     consumer it came from (the Dlq* header names).
//   - On a cluster of three or more nodes, the streams are replicated on
//     three ([Config.Replicas] says otherwise), so they outlive a node:
//     when the node leading a stream dies, another takes over and nothing
//     stored is lost. [RunServer] can start a node of a cluster
//     ([ServerConfig.Cluster]), which is how the tests run one.
//   - [EventMessage] and [ParseEvent] carry a [sysops.Event] in the
//     CloudEvents NATS binding: data as the payload, attributes as "ce-"
//     headers.
//
// # What it does not promise
//
// Delivery is at least once: a handler may see a message again after a
// crash, a timeout or a lost ack, so handlers must be idempotent (package
// inbox makes them so). Order is kept per subject while messages succeed; a
// message that is retried is redelivered after later ones. De-duplication
// of publishes holds only inside the stream's duplicate window (default 10
// minutes).
//
// # In process
//
// [Config.InProcess] connects a broker to a server embedded in the same
// process through a pipe instead of loopback TCP. Measured with
// `go test -run - -bench PublishBatch ./natsjs` (batches of 100 messages
// to a file-store stream, the project's 2-core machine on a slow day, ten
// runs each): in process 16.0-19.6 µs of the process's CPU per message
// (median 18.1) and 66,000-76,000 messages/s; over loopback TCP 17.3-21.3
// µs (median 20.6) and 55,000-68,000. The
// end-to-end outbox bench, whose events cost about 1 ms of machine CPU
// each that day, showed no difference outside its noise. The Sysops Squad
// system keeps TCP: its services reach the broker over the network, so
// that its failure modes are the real ones.
package natsjs
