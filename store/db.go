// Package store keeps conversations and messages in Postgres through pgx.
// It is written when a message is created and when a generation ends; nothing
// polls it while chunks stream.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/chatstream/chatstream"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Config tunes the pool. Zero values take the defaults.
type Config struct {
	// MaxConns caps the pool; 0 takes the URL's pool_max_conns if it sets
	// one, else DefaultMaxConns.
	MaxConns int32
	// Logger receives migration progress; nil discards it.
	Logger *slog.Logger
}

// DefaultMaxConns is the pool size when neither Config nor the URL set one.
// pgx's own default, max(4, NumCPU), queued sends behind each other at a few
// hundred generations a second (TTFB p90 1.6 s in the steady load run; 0.5 s
// with 16-20 connections).
const DefaultMaxConns = 16

// DB is the Postgres store.
type DB struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
}

// Open connects to Postgres at url and checks that it answers.
func Open(ctx context.Context, url string, cfg Config) (*DB, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	switch {
	case cfg.MaxConns > 0:
		pcfg.MaxConns = cfg.MaxConns
	case !strings.Contains(url, "pool_max_conns"):
		pcfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres pool: %w", err)
	}
	// NewWithConfig does not connect: ping so that a wrong URL fails now.
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping postgres: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &DB{pool: pool, logger: logger}, nil
}

// Close closes every connection of the pool.
func (db *DB) Close() { db.pool.Close() }

// Ping checks that Postgres answers.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// Migrate applies the embedded migrations that are not applied yet. It holds
// a Postgres advisory lock meanwhile, so nodes starting at once take turns.
func (db *DB) Migrate(ctx context.Context) error {
	sqldb := stdlib.OpenDBFromPool(db.pool)
	defer sqldb.Close()
	p, err := db.provider(sqldb)
	if err != nil {
		return err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		db.logger.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return nil
}

// MigrateTo applies the migrations up to version and no further: how a
// test builds a database as an older release left it.
func (db *DB) MigrateTo(ctx context.Context, version int64) error {
	sqldb := stdlib.OpenDBFromPool(db.pool)
	defer sqldb.Close()
	p, err := db.provider(sqldb)
	if err != nil {
		return err
	}
	if _, err := p.UpTo(ctx, version); err != nil {
		return fmt.Errorf("migrate to %d: %w", version, err)
	}
	return nil
}

// SchemaVersion returns the version of the newest applied migration.
func (db *DB) SchemaVersion(ctx context.Context) (int64, error) {
	sqldb := stdlib.OpenDBFromPool(db.pool)
	defer sqldb.Close()
	p, err := db.provider(sqldb)
	if err != nil {
		return 0, err
	}
	return p.GetDBVersion(ctx)
}

func (db *DB) provider(sqldb *sql.DB) (*goose.Provider, error) {
	// Retry the lock every second for up to 5 minutes: a node starting
	// beside another that is migrating waits for it.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("migration locker: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("migrations dir: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqldb, sub,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return nil, fmt.Errorf("migration provider: %w", err)
	}
	return p, nil
}

// isCode reports whether err is a Postgres error with the given SQLSTATE.
func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// codeUniqueViolation is the SQLSTATE of a unique index refusing a row.
const codeUniqueViolation = "23505"

// notFound is the error for a row that does not exist or belongs to someone
// else: both answer the same, so ids of other users' rows leak nothing.
func notFound(what string) error {
	return chatstream.Errorf(chatstream.ENOTFOUND, "%s not found.", what)
}

// errRefusedValue is what a client sees when Postgres refuses a value
// itself (a character a text column cannot hold, a constraint): a retry of
// the same statement can never succeed.
var errRefusedValue = chatstream.Errorf(chatstream.EINVALID, "The request holds a value that cannot be stored.")

// refusedError is a statement Postgres refused for its data. It unwraps to
// both the client's invalid_request error and the Postgres error, so that
// callers see a permanent error and the log sees the cause.
type refusedError struct {
	op  string
	err error
}

func (e *refusedError) Error() string   { return e.op + ": " + e.err.Error() }
func (e *refusedError) Unwrap() []error { return []error{errRefusedValue, e.err} }

// queryError adds the operation to a query's error. Data exceptions (class
// 22) and constraint violations (class 23) are refusals of the data: they
// become invalid_request errors, never retried.
func queryError(err error, format string, args ...any) error {
	op := fmt.Sprintf(format, args...)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23")) {
		return &refusedError{op: op, err: err}
	}
	return fmt.Errorf("%s: %w", op, err)
}
