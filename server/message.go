package server

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/protocol"
)

// validateContent checks a user message against the configured limit.
func (s *Server) validateContent(content string) error {
	if strings.TrimSpace(content) == "" {
		return chatstream.Errorf(chatstream.EINVALID, "Field \"content\" must not be empty.")
	}
	if strings.IndexByte(content, 0) >= 0 {
		return chatstream.Errorf(chatstream.EINVALID, "Field \"content\" must not contain U+0000.")
	}
	if len(content) > s.cfg.MaxContentBytes {
		return chatstream.Errorf(chatstream.ETOOLARGE, "The message is %d bytes; the limit is %d.", len(content), s.cfg.MaxContentBytes)
	}
	return nil
}

// bodyLimit is the largest request body that can carry a message of
// MaxContentBytes: JSON may escape a byte as six (\u00XX).
func (s *Server) bodyLimit() int64 { return int64(6*s.cfg.MaxContentBytes + 1024) }

func (s *Server) handleSendMessage(c *gin.Context) {
	s.startTurn(c, chatstream.TurnSend)
}

func (s *Server) handleEdit(c *gin.Context) {
	s.startTurn(c, chatstream.TurnEdit)
}

func (s *Server) handleRegenerate(c *gin.Context) {
	s.startTurn(c, chatstream.TurnRegenerate)
}

// startTurn serves a send (on /conversations/:id), an edit or a regenerate
// (on /messages/:id): 202 with the messages stored and the stream id.
func (s *Server) startTurn(c *gin.Context, kind chatstream.TurnKind) {
	t := chatstream.Turn{Kind: kind, UserID: c.GetString(ctxUser)}
	if kind == chatstream.TurnSend {
		t.ConversationID = c.Param("id")
	} else {
		t.MessageID = c.Param("id")
	}
	if kind != chatstream.TurnRegenerate {
		var req struct {
			Content         *string `json:"content"`
			ClientMessageID *string `json:"client_message_id"`
		}
		if !bindJSON(c, &req, s.bodyLimit()) {
			return
		}
		if err := s.validateTurn(req.Content, req.ClientMessageID); err != nil {
			writeError(c, err)
			return
		}
		t.Content = *req.Content
		if req.ClientMessageID != nil {
			t.ClientMessageID = *req.ClientMessageID
		}
	}
	st, err := s.gens.Start(c, t)
	if err != nil {
		writeError(c, err)
		return
	}
	body := gin.H{"assistant_message": st.Assistant, "stream_id": st.Assistant.ID}
	if st.User != nil {
		body["user_message"] = st.User
	}
	c.JSON(http.StatusAccepted, body)
}

// validateTurn checks the fields of a send or edit.
func (s *Server) validateTurn(content, clientMessageID *string) error {
	if content == nil {
		return chatstream.Errorf(chatstream.EINVALID, "Field \"content\" is required.")
	}
	if err := s.validateContent(*content); err != nil {
		return err
	}
	if clientMessageID != nil && !chatstream.ValidClientMessageID(*clientMessageID) {
		return chatstream.Errorf(chatstream.EINVALID, "Field \"client_message_id\" must be 1 to 64 of A-Z a-z 0-9 _ -.")
	}
	return nil
}

func (s *Server) handleCancel(c *gin.Context) {
	id := c.Param("stream_id")
	if !validID(id) {
		writeError(c, protocol.ErrStreamNotFound)
		return
	}
	if err := s.gens.Cancel(c, c.GetString(ctxUser), id); err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{})
}

func (s *Server) handleApprove(c *gin.Context) {
	id := c.Param("stream_id")
	if !validID(id) {
		writeError(c, protocol.ErrStreamNotFound)
		return
	}
	var req struct {
		CallID   *string `json:"call_id"`
		Approved *bool   `json:"approved"`
	}
	if !bindJSON(c, &req, 4096) {
		return
	}
	if err := validateApproval(req.CallID, req.Approved); err != nil {
		writeError(c, err)
		return
	}
	if err := s.gens.Approve(c, c.GetString(ctxUser), id, *req.CallID, *req.Approved); err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{})
}

// maxCallID bounds a call id; the worker never makes a longer one.
const maxCallID = 256

// validateApproval checks the fields of an approval.
func validateApproval(callID *string, approved *bool) error {
	switch {
	case callID == nil || *callID == "":
		return chatstream.Errorf(chatstream.EINVALID, "Field \"call_id\" is required.")
	case len(*callID) > maxCallID || strings.IndexByte(*callID, 0) >= 0:
		return chatstream.Errorf(chatstream.EINVALID, "Field \"call_id\" is not a tool call id.")
	case approved == nil:
		return chatstream.Errorf(chatstream.EINVALID, "Field \"approved\" is required (true or false).")
	}
	return nil
}
