// Package sysops holds the vocabulary shared by every part of the Sysops
// Squad toolkit and system: the error type that crosses every boundary
// ([Error], with the codes in [ErrorCode]) and the event envelope that every
// service publishes ([Event], CloudEvents 1.0 with Sysops extensions).
//
// Nothing else lives here. The patterns are in their own packages: outbox
// and inbox, natsjs (the broker adapter), saga, twopc, reconcile, eventstore,
// projection and ownership; storage is in sqldb; the services of the Sysops
// Squad system are under services/, one package each; the binary is
// cmd/sysops.
package sysops
