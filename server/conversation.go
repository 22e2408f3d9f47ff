package server

import (
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
)

const (
	maxTitleRunes      = 200
	listConversationsN = 200
)

func (s *Server) handleCreateConversation(c *gin.Context) {
	var req struct {
		Title string `json:"title"`
	}
	if c.Request.ContentLength != 0 && !bindJSON(c, &req, 16<<10) {
		return
	}
	if err := validTitle(req.Title); err != nil {
		writeError(c, err)
		return
	}
	if err := s.limits.AllowConversation(c, c.GetString(ctxUser)); err != nil {
		writeError(c, err)
		return
	}
	conv, err := s.store.CreateConversation(c, c.GetString(ctxUser), req.Title)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusCreated, conv)
}

func (s *Server) handleListConversations(c *gin.Context) {
	list, err := s.store.ListConversations(c, c.GetString(ctxUser), listConversationsN)
	if err != nil {
		writeError(c, err)
		return
	}
	if list == nil {
		list = []*chatstream.Conversation{}
	}
	c.JSON(http.StatusOK, gin.H{"conversations": list})
}

func (s *Server) handleGetConversation(c *gin.Context) {
	user := c.GetString(ctxUser)
	conv, err := s.store.FindConversation(c, user, c.Param("id"))
	if err != nil {
		writeError(c, err)
		return
	}
	msgs, err := s.store.ListMessages(c, user, conv.ID)
	if err != nil {
		writeError(c, err)
		return
	}
	if msgs == nil {
		msgs = []*chatstream.Message{}
	}
	c.JSON(http.StatusOK, gin.H{
		"id": conv.ID, "title": conv.Title, "created_at": conv.CreatedAt, "messages": msgs,
	})
}

// validTitle checks a conversation title: at most maxTitleRunes characters,
// none of them U+0000 (which Postgres cannot store).
func validTitle(title string) error {
	if utf8.RuneCountInString(title) > maxTitleRunes {
		return chatstream.Errorf(chatstream.EINVALID, "Field \"title\" must be at most %d characters.", maxTitleRunes)
	}
	if strings.IndexByte(title, 0) >= 0 {
		return chatstream.Errorf(chatstream.EINVALID, "Field \"title\" must not contain U+0000.")
	}
	return nil
}
