package server

import (
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/chatstream/chatstream"
)

const (
	maxTitleRunes = 200
	// Page sizes: conversations and messages per page, by default and at
	// most; a conversation opens with its newest conversationMessages.
	defaultPage          = 50
	maxPage              = 200
	conversationMessages = 100
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

// pageLimit reads the query's limit: 1 to maxPage, default defaultPage.
func pageLimit(c *gin.Context) (int, error) {
	v, ok := c.GetQuery("limit")
	if !ok {
		return defaultPage, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPage {
		return 0, chatstream.Errorf(chatstream.EINVALID, "Parameter \"limit\" must be a whole number from 1 to %d.", maxPage)
	}
	return n, nil
}

func (s *Server) handleListConversations(c *gin.Context) {
	limit, err := pageLimit(c)
	if err != nil {
		writeError(c, err)
		return
	}
	p, err := s.store.ListConversations(c, c.GetString(ctxUser), limit, c.Query("before"))
	if err != nil {
		writeError(c, err)
		return
	}
	var next *string
	if p.NextCursor != "" {
		next = &p.NextCursor
	}
	c.JSON(http.StatusOK, gin.H{"conversations": p.Conversations, "next_cursor": next})
}

func (s *Server) handleGetConversation(c *gin.Context) {
	conv, p, err := s.store.BranchPage(c, c.GetString(ctxUser), c.Param("id"), "", conversationMessages)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{
		"id": conv.ID, "title": conv.Title, "created_at": conv.CreatedAt, "current_message_id": nullable(conv.CurrentMessageID),
		"messages": p.Messages, "has_more": p.HasMore,
	})
}

func (s *Server) handleListMessages(c *gin.Context) {
	limit, err := pageLimit(c)
	if err != nil {
		writeError(c, err)
		return
	}
	_, p, err := s.store.BranchPage(c, c.GetString(ctxUser), c.Param("id"), c.Query("before"), limit)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

func (s *Server) handleUpdateConversation(c *gin.Context) {
	var req struct {
		Title            *string `json:"title"`
		CurrentMessageID *string `json:"current_message_id"`
	}
	if !bindJSON(c, &req, 16<<10) {
		return
	}
	if req.Title != nil {
		if err := validTitle(*req.Title); err != nil {
			writeError(c, err)
			return
		}
	}
	conv, err := s.convs.Update(c, c.GetString(ctxUser), c.Param("id"), chatstream.ConversationChange{Title: req.Title, Show: req.CurrentMessageID})
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, conv)
}

func (s *Server) handleDeleteConversation(c *gin.Context) {
	if err := s.convs.Delete(c, c.GetString(ctxUser), c.Param("id")); err != nil {
		writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// nullable is s, or JSON null for "".
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
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
