package qmp

import (
	"bufio"
	"errors"
)

// Limits on one QMP input message. QEMU's parser limits token size and
// nesting; Petrel bounds the whole message so a client cannot make the VMM
// buffer without limit.
const (
	MaxMessageSize = 4 << 20
	MaxNesting     = 1024
)

var (
	errTooLarge = errors.New("JSON message too large")
	errTooDeep  = errors.New("JSON nesting too deep")
)

// splitter cuts a byte stream into top-level JSON texts without parsing them:
// objects and arrays by bracket depth (outside strings), scalars up to the next
// white space. A message over the limits is skipped to its end and reported
// once as an error, so the connection stays in step.
type splitter struct {
	r   *bufio.Reader
	buf []byte
}

func newSplitter(r *bufio.Reader) *splitter { return &splitter{r: r} }

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

func (s *splitter) finish(overflow error) ([]byte, error) {
	if overflow != nil {
		return nil, overflow
	}
	return s.buf, nil
}
