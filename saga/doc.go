// Package saga runs orchestrated sagas: a workflow across services that
// each own their data, made of local steps, each with a compensation (a
// business reversal: cancel, refund, release) that undoes it if a later
// step fails.
//
// What it guarantees:
//
//   - Durability: every saga is logged in the orchestrator's own database
//     (tables saga and saga_step, see [Migrations]) before each step is
//     called and after it returns. An orchestrator that crashes loses
//     nothing: on [Orchestrator.Start] an instance resumes every
//     unfinished saga, and several instances share the work through
//     leases in the database — a dead instance's sagas are taken over when
//     its lease expires. A saga finishes on the [Definition] version it
//     started with.
//   - Every saga ends committed (every action applied) or compensated
//     (every step that was called undone, last first) — or, when a
//     compensation keeps failing past its retry budget, needs_attention,
//     keeping the error, for a person to [Retry], [Skip] or [Resolve]
//     (also over HTTP, [Handler], and `sysops saga ...`).
//   - Every call carries an idempotency key derived from the saga id and
//     the step ([ActionKey], [CompensationKey]), the same on every retry
//     and after any crash. A step may be called more than once (a crash
//     between the call and its log write, a timeout); a participant that
//     honours the key applies it once.
//   - Compensations run for every step whose action was called, including
//     the one that failed (it may have applied before failing), so a
//     participant must treat a compensation that arrives before its action
//     as "nothing to undo" and then refuse the late action.
//   - No retry storms: retries back off exponentially with full jitter;
//     each participant has a circuit breaker (calls it refuses do not use
//     up retry budgets, they wait for its cooldown) and a concurrency
//     limit.
//   - A saga that is cancelled ([Cancel]) or runs past its deadline turns
//     back and compensates — unless it has passed a Forward step (the
//     pivot), after which it only goes forward.
//   - Log writes of concurrent sagas share commits: a write joins the
//     transaction being assembled while the previous one commits, so one
//     fsync covers many sagas' steps ([Orchestrator.Stats]). On
//     PostgreSQL every log write is one statement (a saga's state, its
//     lease fence and its step records together), and a shared
//     transaction goes to the server in one round trip, its BEGIN, writes
//     and COMMIT pipelined.
//   - Calls of concurrent sagas can share a participant call: a step with
//     an ActionBatch (or CompensateBatch) gets, in one call, the calls of
//     that step that all the sagas of this instance made while its
//     previous batch was in flight (at most [Config.MaxBatch]). A lone
//     saga's call goes at once, in a batch of one. Each call keeps its
//     own key, log writes, outcome and retries; a batch is one call for
//     the breaker and the concurrency limit ([Stats] counts both). A
//     participant that applies a batch in one transaction (see package
//     idempotency, POST /batch) pays one round trip, one commit and, with
//     set-based statements, one statement for all of them.
//
// # Measured
//
// The create-ticket saga of the Sysops Squad (4 steps: open the ticket,
// count it on the customer, assign an expert, mark the ticket assigned),
// its participants real services with their own databases called over
// loopback HTTP, on the project's machine (2 cores), with
//
//	go run ./cmd/sysops bench saga --postgres 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
//	go run ./cmd/sysops bench saga
//
//	                                PostgreSQL (fsync on)            SQLite (synchronous=FULL)
//	committed,   concurrency 1      139-150 sagas/s, p50 6.4-7.0 ms, 183-206 sagas/s, p50 4.8-5.4 ms,
//	                                p99 10.7-11.7                    p99 7.0-7.8
//	committed,   concurrency 16     300-378 sagas/s, p50 42-53 ms    345-357 sagas/s, p50 42-43 ms
//	committed,   concurrency 64     385-476 sagas/s, p50 132-162 ms, 341-357 sagas/s, p50 155-165 ms,
//	                                p99 196-243 ms                   p99 518-519
//	compensated, concurrency 64     308-318 sagas/s, p50 198-206 ms  342-368 sagas/s, p50 161-175 ms
//
// (three runs on PostgreSQL and two on SQLite, 5 seconds a level. Run
// for run against the previous round's build, alternated (five pairs),
// committed sagas at concurrency 64 went from 326-389 to 436-494 a
// second, and the two cores' busy time per saga (both scenarios, set-up
// included) from 5.3-6.1 ms to 4.6-5.2 ms. The previous round measured 267-331 committed
// sagas/s at concurrency 64 and 101-118 at 1. What changed, all in the
// statements and round trips per saga:
//
//   - On PostgreSQL a transaction's BEGIN travels with its first
//     statement, and a participant claims the Idempotency-Key with that
//     statement instead of looking it up first (packages sqldb,
//     idempotency).
//   - The assignment service reads where experts with the skill live at
//     most every 5 seconds and takes the least loaded expert of the
//     nearest zips in one statement, instead of reading every expert with
//     the skill (1,000 in the bench) at each assignment.
//   - Steps about to start share one read of the cancel requests
//     (cancelReader), instead of a read each.
//   - A transaction's outbox events are one statement at its COMMIT;
//     opening a ticket is one insert; a status change with one source, and
//     a customer's open-ticket count, one update returning the row; a
//     customer's open-ticket op is locked by inserting its own row first,
//     instead of an advisory lock and a read.
//   - One log writer by default instead of four on PostgreSQL: 3.4 log
//     writes per commit instead of 1.7 (the figures above are with one;
//     the alternated pairs before it were with four).
//
// Two attempts of the previous rounds to remove the cancel check were
// not kept: reading the request in the step's log write, and hearing of
// it by LISTEN/NOTIFY, which ran at 263-292 against 294-305 sagas/s in
// alternated runs.)
//
// Against the target of 1,500 committed sagas/s at concurrency 64 on
// PostgreSQL this is 3.3 to 3.7 times short, and the machine is the
// limit: the two cores are busy all the time, about half of it in
// PostgreSQL and most of the rest in the services' Go code (HTTP both
// ways, JSON, database/sql, the relays and the embedded JetStream).
// pg_stat_statements over 10 seconds at concurrency 64 (both scenarios)
// counted about 38 statements per saga besides BEGIN and COMMIT (56 in
// the previous round, 71 before it): the orchestrator's log 10.5 (a
// saga's begin, its step starts and ends, the shared cancel reads, the
// final read: two statements then, one since), the ticket 10.2, the assignment 9.1, the customer 8.6 —
// each participant call a key claim and its response, the business
// statements, one outbox statement, and the relay that publishes. Their
// execution alone is about 2.2 ms per saga; with the protocol, the round
// trips and about 150 context switches per saga on each side, 1,500
// sagas/s on two cores (1.33 ms of CPU per saga in all) would need a
// handful of statements per saga with its four participants over HTTP,
// which no design that keeps each participant's database, its outbox and
// the orchestrator's durable log per saga can reach. Getting there would
// take batching across sagas: a participant applying many sagas' steps
// in one transaction with set-based statements, and the orchestrator
// sending them in one call.
//
// What it does not promise: isolation. Other requests see a saga's
// intermediate states (a ticket created but not yet assigned); a
// compensated saga leaves its traces (a cancelled ticket, a refund), as a
// business reversal does.
package saga
