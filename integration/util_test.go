package integration

import (
	"encoding/json"

	"github.com/coder/websocket"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func websocketStatus(err error) int { return int(websocket.CloseStatus(err)) }
