package server

import (
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream"
)

const ctxUser = "user"

// authenticate accepts a request carrying a valid HS256 access token, as an
// Authorization bearer header or, for WebSocket upgrades from browsers, as
// the access_token query parameter. The token's sub is the user id.
func (s *Server) authenticate(c *gin.Context) {
	raw := bearer(c.Request)
	if raw == "" {
		writeError(c, chatstream.Errorf(chatstream.EUNAUTHORIZED, "An access token is required."))
		return
	}
	user, err := s.verifyToken(raw)
	if err != nil {
		writeError(c, chatstream.Errorf(chatstream.EUNAUTHORIZED, "The access token is not valid: %s.", err))
		return
	}
	c.Set(ctxUser, user)
	c.Next()
}

func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

var errNoSubject = errors.New("no subject")

// verifyToken checks an access token and returns its subject. The reason it
// returns is safe to show to the client.
func (s *Server) verifyToken(raw string) (string, error) {
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return s.cfg.AuthSecret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithLeeway(5*time.Second))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", errors.New("expired")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "", errors.New("bad signature or algorithm")
	case err != nil:
		return "", errors.New("malformed")
	case claims.Subject == "":
		return "", errNoSubject
	}
	return claims.Subject, nil
}

// issueToken signs an access token for user.
func (s *Server) issueToken(user string, ttl time.Duration) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}).SignedString(s.cfg.AuthSecret)
}

// handleDevToken issues a token for any user name. It is routed only with
// AUTH_DEV=true: a local demo convenience, never for production.
func (s *Server) handleDevToken(c *gin.Context) {
	var req struct {
		User string `json:"user"`
	}
	if !bindJSON(c, &req, 4096) {
		return
	}
	if err := validUserName(req.User); err != nil {
		writeError(c, err)
		return
	}
	tok, err := s.issueToken(req.User, s.cfg.DevTokenTTL)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"token": tok, "user": req.User, "expires_in": int(s.cfg.DevTokenTTL.Seconds())})
}

func validUserName(u string) error {
	if u == "" || len(u) > 64 {
		return chatstream.Errorf(chatstream.EINVALID, "Field \"user\" must be 1 to 64 bytes.")
	}
	for _, r := range u {
		if !unicode.IsPrint(r) {
			return chatstream.Errorf(chatstream.EINVALID, "Field \"user\" must be printable.")
		}
	}
	return nil
}
