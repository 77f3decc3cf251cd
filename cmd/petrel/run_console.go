package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// console is COM1's host side for `petrel run`.
type console struct {
	// in is what the guest's COM1 reads: nil for -serial none and file:,
	// os.Stdin for a pipe, an escapeReader over it for a terminal.
	in io.Reader
	// out gets COM1's output: nil for -serial none.
	out io.Writer
	// onQuit is called for Ctrl-a x; runMain sets it to cancel the run
	// after openConsole returns, hence the indirection in escapeReader.quit.
	onQuit func()
	// restore puts the terminal back in the mode it had; nil if stdin is
	// not a terminal.
	restore func()
	// file is the -serial file:PATH output, closed by Close.
	file *os.File
	// once makes Close idempotent: runMain closes the console early on
	// an error (so the message reaches a sane terminal) and again by defer.
	once sync.Once
}

// openConsole sets up -serial stdio|none|file:PATH. On a terminal, stdin is
// put in raw mode and filtered for QEMU's escapes (Ctrl-a x quits, Ctrl-a h
// helps, Ctrl-a Ctrl-a sends Ctrl-a).
func openConsole(mode string) (*console, error) {
	c := &console{onQuit: func() {}}
	switch {
	case mode == "none":
		return c, nil
	case strings.HasPrefix(mode, "file:"):
		f, err := os.OpenFile(mode[5:], os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("-serial %s: %w", mode, err)
		}
		c.file, c.out = f, f
		return c, nil
	}
	c.out = os.Stdout
	c.in = os.Stdin
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return c, nil // not a terminal: plain pipe, no escapes
	}
	// cfmakeraw(3)'s settings but OPOST: no line editing or echo, no
	// signals (Ctrl-C and Ctrl-Z go to the guest, as under QEMU; Ctrl-a x
	// quits), 8-bit clean input. VMIN 1 and VTIME 0: a read returns as
	// soon as one byte is there, so keys reach the guest at once.
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Oflag |= unix.OPOST // keep "\n" -> "\r\n" as QEMU's stdio does
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("setting the terminal to raw mode: %w", err)
	}
	c.restore = func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }
	c.in = &escapeReader{r: os.Stdin, out: os.Stderr, quit: func() { c.onQuit() }}
	return c, nil
}

// Close restores the terminal and closes a -serial file.
func (c *console) Close() {
	c.once.Do(func() {
		if c.restore != nil {
			c.restore()
		}
		if c.file != nil {
			c.file.Close()
		}
	})
}

const escapeChar = 0x01 // Ctrl-a

// escapeHelp is printed for Ctrl-a h; the terminal is raw, so each line
// ends in "\r\n".
const escapeHelp = "\r\nC-a h    print this help\r\nC-a x    exit petrel\r\nC-a C-a  send C-a\r\n"

// escapeReader filters QEMU's Ctrl-a escapes out of terminal input.
type escapeReader struct {
	r   io.Reader // the raw terminal (os.Stdin)
	out io.Writer // where help and the "terminated" notice go (stderr)
	// quit is called for Ctrl-a x; the bytes after it in the same read
	// still go to the guest, which is about to stop anyway.
	quit func()
	// esc is set after a Ctrl-a until the next byte; it survives across
	// Reads, since the two bytes of an escape may arrive in two reads.
	esc bool
}

// Read returns only bytes meant for the guest. A read that was all escape
// is not returned as (0, nil), which io.Reader discourages: it reads again.
func (e *escapeReader) Read(p []byte) (int, error) {
	for {
		n, err := e.r.Read(p)
		n = e.filter(p[:n])
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// filter rewrites p in place and returns the bytes that go to the guest.
func (e *escapeReader) filter(p []byte) int {
	w := 0
	for _, b := range p {
		if !e.esc {
			if b == escapeChar {
				e.esc = true
				continue
			}
			p[w] = b
			w++
			continue
		}
		e.esc = false
		switch b {
		case 'x', 'X':
			fmt.Fprint(e.out, "\r\npetrel: terminated\r\n")
			e.quit()
		case 'h', 'H', '?':
			fmt.Fprint(e.out, escapeHelp)
		case escapeChar:
			p[w] = escapeChar
			w++
		}
	}
	return w
}

// inputHub reads the console input on one goroutine for the whole life of
// `petrel run`: the machine reads it through a session that ends (io.EOF)
// when closed, so no reader is left blocked on the console once the
// machine is gone.
type inputHub struct {
	// ch carries each chunk read from the console (a fresh buffer each, so
	// a session may hold it); it is closed when the console reads fail,
	// EOF included. Unbuffered: the reader goroutine waits for a session
	// to take a chunk, so no input is read ahead of the guest.
	ch chan []byte
}

// newInputHub starts the goroutine that reads r until it fails. That
// goroutine is never stopped: it may be blocked in a read of stdin, which
// cannot be interrupted, and it ends with the process.
func newInputHub(r io.Reader) *inputHub {
	h := &inputHub{ch: make(chan []byte)}
	go func() {
		defer close(h.ch)
		for {
			buf := make([]byte, 256)
			n, err := r.Read(buf)
			if n > 0 {
				h.ch <- buf[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	return h
}

// session is one machine's view of the hub; it ends (io.EOF) when closed.
type session struct {
	hub  *inputHub     // the console reader this session takes chunks from
	done chan struct{} // closed by Close
	// pending is the rest of the last chunk taken from the hub, returned
	// by the next Reads before another chunk is taken.
	pending []byte
	once    sync.Once
}

// session starts a new reader of the hub's input. Only one session should
// read at a time: two would split the input between them.
func (h *inputHub) session() *session { return &session{hub: h, done: make(chan struct{})} }

// Read blocks until console input arrives, the console ends or the session
// is closed; the latter two return io.EOF. A chunk taken from the hub but
// not yet read when the session closes is lost.
func (s *session) Read(p []byte) (int, error) {
	if len(s.pending) == 0 {
		select {
		case b, ok := <-s.hub.ch:
			if !ok {
				return 0, io.EOF
			}
			s.pending = b
		case <-s.done:
			return 0, io.EOF
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

// Close ends the session: a Read blocked in it returns io.EOF. It may be
// called more than once.
func (s *session) Close() { s.once.Do(func() { close(s.done) }) }
