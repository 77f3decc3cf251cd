package qmp

import (
	"bufio"
	"errors"
)

// Limits on one QMP input message. QEMU's parser limits token size and
// nesting; Petrel bounds the whole message so a client cannot make the VMM
// buffer without limit.
const (
	// MaxMessageSize is the largest message in bytes, its white space
	// inside included.
	MaxMessageSize = 4 << 20
	// MaxNesting is the deepest nesting of objects and arrays (QEMU's
	// json-streamer has the same MAX_NESTING).
	MaxNesting = 1024
)

// The splitter's errors for an over-limit message; ServeConn answers them
// with an error reply and goes on with the next message.
var (
	errTooLarge = errors.New("JSON message too large")
	errTooDeep  = errors.New("JSON nesting too deep")
)

// splitter cuts a byte stream into top-level JSON texts without parsing them:
// objects and arrays by bracket depth (outside strings), scalars up to the next
// white space. A message over the limits is skipped to its end and reported
// once as an error, so the connection stays in step.
type splitter struct {
	r *bufio.Reader
	// buf holds the message being cut; next reuses it, so a message is
	// valid only until the following call.
	buf []byte
}

// newSplitter returns a splitter reading r.
func newSplitter(r *bufio.Reader) *splitter { return &splitter{r: r} }

// isSpace is JSON's white space (RFC 8259 §2), which separates messages.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// next returns the next message. Errors other than errTooLarge and errTooDeep
// come from the reader and end the stream.
func (s *splitter) next() ([]byte, error) {
	s.buf = s.buf[:0]
	var (
		depth    int
		inString bool
		escaped  bool
		scalar   bool
		overflow error
	)
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			if scalar && len(s.buf) > 0 && overflow == nil {
				return s.buf, nil
			}
			return nil, err
		}
		if depth == 0 && !scalar && !inString {
			if isSpace(c) {
				continue
			}
		}
		if overflow == nil {
			if len(s.buf) >= MaxMessageSize {
				overflow = errTooLarge
				s.buf = s.buf[:0]
			} else {
				s.buf = append(s.buf, c)
			}
		}
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
				if depth == 0 && !scalar {
					return s.finish(overflow)
				}
			}
		case scalar:
			if isSpace(c) || c == '{' || c == '[' {
				// The scalar ended; a bracket starts the next message,
				// which QEMU would also treat as a new token.
				if c == '{' || c == '[' {
					_ = s.r.UnreadByte()
				}
				if overflow == nil {
					s.buf = s.buf[:len(s.buf)-1]
				}
				return s.finish(overflow)
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > MaxNesting && overflow == nil {
				overflow = errTooDeep
			}
		case c == '}' || c == ']':
			depth--
			if depth <= 0 {
				return s.finish(overflow)
			}
		default:
			if depth == 0 {
				scalar = true
			}
		}
	}
}

// finish ends a message: the overflow error if it exceeded a limit (its
// bytes were dropped), else the bytes collected.
func (s *splitter) finish(overflow error) ([]byte, error) {
	if overflow != nil {
		return nil, overflow
	}
	return s.buf, nil
}
