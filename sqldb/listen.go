package sqldb

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotPostgres is returned by [Listen] on a database that is not
// PostgreSQL.
var ErrNotPostgres = errors.New("sqldb: LISTEN/NOTIFY needs PostgreSQL")

// Listen subscribes to a PostgreSQL notification channel on a connection of
// its own and returns a channel that receives a value (coalesced: at most
// one waits) after each notification, until ctx ends. A lost connection is
// re-established with backoff; a wake-up is sent after each reconnect,
// since notifications may have been missed meanwhile.
func Listen(ctx context.Context, db *DB, channel string) (<-chan struct{}, error) {
	if db.dialect != Postgres {
		return nil, ErrNotPostgres
	}
	cfg, err := pgx.ParseConfig(db.url)
	if err != nil {
		return nil, err
	}
	connect := func() (*pgx.Conn, error) {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, err
		}
		return conn, nil
	}
	conn, err := connect()
	if err != nil {
		return nil, err
	}
	out := make(chan struct{}, 1)
	wake := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		defer func() {
			if conn != nil {
				conn.Close(context.WithoutCancel(ctx))
			}
		}()
		delay := 100 * time.Millisecond
		for ctx.Err() == nil {
			if conn == nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(delay):
				}
				if conn, err = connect(); err != nil {
					conn = nil
					delay = min(2*delay, 5*time.Second)
					continue
				}
				delay = 100 * time.Millisecond
				wake()
			}
			if _, err := conn.WaitForNotification(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
				continue
			}
			wake()
		}
	}()
	return out, nil
}
