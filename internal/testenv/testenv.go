// Package testenv gives tests their share of the real Redis and Postgres that
// `make test` starts: a fresh database per call and a unique key namespace, so
// packages and tests run side by side without seeing each other's data.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DatabaseURL returns DATABASE_URL, failing the test when it is unset: the
// tests need the Postgres that `make test` starts.
func DatabaseURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("DATABASE_URL")
	if u == "" {
		tb.Fatal("DATABASE_URL is not set: run the tests with `make test`, which starts Postgres and Redis")
	}
	return u
}

// RedisURL returns REDIS_URL, failing the test when it is unset.
func RedisURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("REDIS_URL")
	if u == "" {
		tb.Fatal("REDIS_URL is not set: run the tests with `make test`, which starts Postgres and Redis")
	}
	return u
}

// Name returns a short random lowercase name with the given prefix.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// NewDatabase creates an empty database for the test and returns its URL; the
// database is dropped when the test ends.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	base := DatabaseURL(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("connect to postgres: %v", err)
	}
	defer conn.Close(ctx)
	name := Name("cs_test_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Errorf("connect to postgres: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("parse DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Namespace returns a unique Redis key prefix for the test, ending in ':'.
func Namespace(tb testing.TB) string {
	tb.Helper()
	return strings.ToLower(Name("t")) + ":"
}
