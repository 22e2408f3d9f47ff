package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream"
)

const (
	ctxUser     = "user"
	ctxTokenExp = "token_exp" // time.Time: when the request's token expires
)

// authenticate accepts a request carrying a valid HS256 access token in an
// Authorization bearer header. The token's sub is the user id.
func (s *Server) authenticate(c *gin.Context) { s.authenticateFrom(c, false) }

// authenticateUpgrade is authenticate for the routes a browser opens
// without setting headers (the WebSocket upgrade, an EventSource's SSE):
// the token may also come as the access_token query parameter. Other routes refuse it there, so
// that tokens do not spread into URLs that get logged and shared.
func (s *Server) authenticateUpgrade(c *gin.Context) { s.authenticateFrom(c, true) }

func (s *Server) authenticateFrom(c *gin.Context, query bool) {
	raw := bearer(c.Request, query)
	if raw == "" {
		msg := "An access token is required."
		if !query && c.Request.URL.Query().Has("access_token") {
			msg = "Send the access token in the Authorization header; ?access_token= is only taken on the WebSocket upgrade and the SSE routes."
		}
		writeError(c, chatstream.Errorf(chatstream.EUNAUTHORIZED, "%s", msg))
		return
	}
	user, exp, err := s.verifyToken(raw)
	if err != nil {
		writeError(c, chatstream.Errorf(chatstream.EUNAUTHORIZED, "The access token is not valid: %s.", err))
		return
	}
	c.Set(ctxUser, user)
	c.Set(ctxTokenExp, exp)
	c.Next()
}

// bearer returns the request's token: the Authorization header's, or with
// query the access_token parameter's when there is no header.
func bearer(r *http.Request, query bool) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	if !query {
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// maxSubjectBytes bounds a token's sub, the user id stored with every
// conversation.
const maxSubjectBytes = 256

// verifyToken checks an access token and returns its subject and expiry.
// The reason it returns is safe to show to the client.
func (s *Server) verifyToken(raw string) (string, time.Time, error) {
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return s.cfg.AuthSecret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithLeeway(5*time.Second),
		jwt.WithExpirationRequired())
	switch {
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "", time.Time{}, errors.New("it has no exp (expiry) claim")
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", time.Time{}, errors.New("expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "", time.Time{}, errors.New("not valid yet (nbf is in the future)")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "", time.Time{}, errors.New("bad signature or algorithm")
	case err != nil:
		return "", time.Time{}, errors.New("malformed")
	case claims.Subject == "":
		return "", time.Time{}, errNoSubject
	case !validSubject(claims.Subject):
		return "", time.Time{}, fmt.Errorf("sub must be 1 to %d bytes without control characters", maxSubjectBytes)
	}
	return claims.Subject, claims.ExpiresAt.Time, nil
}

// validSubject reports whether sub can be a user id: short, and without
// control characters (U+0000 cannot even be stored).
func validSubject(sub string) bool {
	if len(sub) > maxSubjectBytes {
		return false
	}
	for _, r := range sub {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

var errNoSubject = errors.New("no subject")

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
	if err := s.limits.AllowDevToken(c, c.ClientIP()); err != nil {
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
