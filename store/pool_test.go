package store

import (
	"context"
	"strings"
	"testing"

	"github.com/chatstream/chatstream/internal/testenv"
)

// The pool is DefaultMaxConns wide unless the URL or Config says otherwise;
// Config wins over the URL.
func TestOpen_PoolSize(t *testing.T) {
	url := testenv.DatabaseURL(t)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	cases := []struct {
		name string
		url  string
		cfg  Config
		want int32
	}{
		{"Default", url, Config{}, DefaultMaxConns},
		{"FromURL", url + sep + "pool_max_conns=7", Config{}, 7},
		{"FromConfig", url + sep + "pool_max_conns=7", Config{MaxConns: 3}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(context.Background(), tc.url, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got := db.pool.Config().MaxConns; got != tc.want {
				t.Fatalf("pool of %d connections, want %d", got, tc.want)
			}
		})
	}
}
