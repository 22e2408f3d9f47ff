package streaming

import (
	"strings"
	"testing"
)

func TestClusterVersionOK(t *testing.T) {
	for _, tc := range []struct {
		info string
		ok   bool
	}{
		{"# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n", true},
		{"# Server\r\nredis_version:8.2.1\r\n", true},
		{"# Server\r\nredis_version:6.2.14\r\nredis_mode:cluster\r\n", false},
		{"# Server\r\nredis_mode:cluster\r\n", false},
	} {
		err := clusterVersionOK(tc.info)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v, want ok=%v", tc.info, err, tc.ok)
		}
		if err != nil && !tc.ok && strings.Contains(tc.info, "6.2.14") && !strings.Contains(err.Error(), "7.0 or later") {
			t.Errorf("refusal does not say what is needed: %v", err)
		}
	}
}
