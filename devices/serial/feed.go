package serial

import (
	"io"
	"time"
)

// feedPoll is how often Feed retries while the guest has not drained the
// FIFO (a real UART would overrun; a console should not lose keystrokes).
const feedPoll = 2 * time.Millisecond

// Feed copies r into the receive FIFO until r ends or done closes, waiting
// for room instead of dropping input. Run it on its own goroutine.
func (u *UART) Feed(r io.Reader, done <-chan struct{}) error {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			k := u.Input(p)
			p = p[k:]
			if len(p) > 0 {
				select {
				case <-done:
					return nil
				case <-time.After(feedPoll):
				}
			}
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		select {
		case <-done:
			return nil
		default:
		}
	}
}
