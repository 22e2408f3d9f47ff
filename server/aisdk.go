package server

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
	"github.com/chatstream/chatstream/aisdk"
)

// The AI SDK's chat protocol (see the contract's "AI SDK" and package
// aisdk): a chat id names one of the user's conversations; a submit is a
// send, a regenerate a regenerate; the answer streams as a UI message
// stream, read from the same chunk log as every other client.

// Chats maps the AI SDK's chat ids onto conversations.
type Chats interface {
	// Chat returns the conversation userID's chat chatID names; "" if none.
	Chat(ctx context.Context, userID, chatID string) (string, error)
	// BindChat returns it, naming one first (the user's conversation of
	// that id, or a new one titled title) if there is none.
	BindChat(ctx context.Context, userID, chatID, title string) (conv string, created bool, err error)
}

// aiChatBodyLimit bounds a chat request: the transport sends the whole
// history with every message.
const aiChatBodyLimit = 8 << 20

// uiStream encodes a stream's frames as the UI message stream of its
// answer.
type uiStream struct{ tr *aisdk.Translator }

func (u uiStream) headers() map[string]string          { return aisdk.Headers }
func (u uiStream) head(out []byte) []byte              { return u.tr.Start(out) }
func (u uiStream) encode(out, f []byte) ([]byte, bool) { return u.tr.Frame(out, f) }
func (uiStream) ping() []byte                          { return []byte(": keep-alive\n\n") }

func (s *Server) handleAIChat(c *gin.Context) {
	user := c.GetString(ctxUser)
	var req aisdk.Request
	if !bindJSON(c, &req, aiChatBodyLimit) {
		return
	}
	if err := req.Validate(); err != nil {
		writeError(c, err)
		return
	}
	t := chatstream.Turn{UserID: user}
	switch req.Trigger {
	case aisdk.TriggerSubmit:
		m, text := req.LastUserMessage()
		if m == nil {
			writeError(c, chatstream.Errorf(chatstream.EINVALID, "The chat request has no user message."))
			return
		}
		if err := s.validateContent(text); err != nil {
			writeError(c, err)
			return
		}
		conv, err := s.bindChat(c, user, req.ID, text)
		if err != nil {
			writeError(c, err)
			return
		}
		t.Kind, t.ConversationID, t.Content = chatstream.TurnSend, conv, text
		if id := "ai-sdk-" + m.ID; m.ID != "" && chatstream.ValidClientMessageID(id) {
			// The client's message id: a retried request is answered
			// with the first one's stream, not a second answer.
			t.ClientMessageID = id
		}
	case aisdk.TriggerRegenerate:
		answer, err := s.chatAnswer(c, user, req.ID, req.MessageID)
		if err != nil {
			writeError(c, err)
			return
		}
		t.Kind, t.MessageID = chatstream.TurnRegenerate, answer
	}
	st, err := s.gens.Start(c, t)
	if err != nil {
		writeError(c, err)
		return
	}
	s.serveUIStream(c, user, st.Assistant.ID)
}

// bindChat returns the conversation of chat chatID, making it (counted
// against the user's conversation rate) on the chat's first message.
func (s *Server) bindChat(ctx context.Context, user, chatID, firstMessage string) (string, error) {
	conv, err := s.chats.Chat(ctx, user, chatID)
	if err != nil || conv != "" {
		return conv, err
	}
	if err := s.limits.AllowConversation(ctx, user); err != nil {
		return "", err
	}
	conv, _, err = s.chats.BindChat(ctx, user, chatID, chatstream.TitleOf(firstMessage))
	return conv, err
}

// chatAnswer returns the answer a regenerate of chat chatID replaces:
// messageID if the client named one of ours, else the answer its
// conversation shows last.
func (s *Server) chatAnswer(ctx context.Context, user, chatID, messageID string) (string, error) {
	conv, err := s.chats.Chat(ctx, user, chatID)
	if err != nil {
		return "", err
	}
	if conv == "" {
		return "", chatstream.Errorf(chatstream.ENOTFOUND, "No such chat.")
	}
	if validID(messageID) {
		return messageID, nil // StartTurn checks that it is an answer of the user's
	}
	leaf, err := s.chatLeaf(ctx, user, conv)
	if err != nil {
		return "", err
	}
	if leaf == nil || leaf.Role != chatstream.RoleAssistant {
		return "", chatstream.Errorf(chatstream.EINVALID, "The chat has no answer to regenerate.")
	}
	return leaf.ID, nil
}

// chatLeaf returns the last message of the branch conversation conv shows;
// nil if it has none.
func (s *Server) chatLeaf(ctx context.Context, user, conv string) (*chatstream.Message, error) {
	_, page, err := s.store.BranchPage(ctx, user, conv, "", 1)
	if err != nil {
		return nil, err
	}
	if len(page.Messages) == 0 {
		return nil, nil
	}
	return page.Messages[len(page.Messages)-1], nil
}

// handleAIChatStream serves reconnectToStream: the answer being generated
// in the chat, from its start, then live; 204 when none is.
func (s *Server) handleAIChatStream(c *gin.Context) {
	user := c.GetString(ctxUser)
	chatID := c.Param("id")
	if err := aisdk.ValidChatID(chatID); err != nil {
		writeError(c, err)
		return
	}
	conv, err := s.chats.Chat(c, user, chatID)
	if err != nil {
		writeError(c, err)
		return
	}
	var leaf *chatstream.Message
	if conv != "" {
		if leaf, err = s.chatLeaf(c, user, conv); err != nil && chatstream.ErrorCode(err) != chatstream.ENOTFOUND {
			writeError(c, err)
			return
		}
	}
	if leaf == nil || leaf.Role != chatstream.RoleAssistant || leaf.Status.Final() {
		c.Status(http.StatusNoContent)
		return
	}
	s.serveUIStream(c, user, leaf.ID)
}

// serveUIStream answers with the UI message stream of answer streamID,
// from its first chunk.
func (s *Server) serveUIStream(c *gin.Context, user, streamID string) {
	s.serveEvents(c, user, uiStream{aisdk.NewTranslator(streamID)}, s.followInto(streamID, -1))
}
