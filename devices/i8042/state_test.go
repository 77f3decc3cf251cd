package i8042

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil/statetest"
	"github.com/petrel-vmm/petrel/vmstate"
)

func save(c *Controller) []byte          { return statetest.Save(c) }
func load(c *Controller, b []byte) error { return statetest.Load(c, b) }

// busyController is a controller a guest has used: command byte 0x67
// (auxiliary port disabled), A20 off in the output port, four bytes
// queued (self test, command byte, keyboard ACK and BAT), and a "write
// output port" command waiting for its data byte.
func busyController(reset func()) *Controller {
	c := New(reset)
	cmd(c, cmdWriteCommandByte)
	data(c, 0x47)
	cmd(c, cmdDisableAux)
	cmd(c, cmdWriteOutputPort)
	data(c, 0x01) // reset line high, A20 off
	cmd(c, cmdSelfTest)
	cmd(c, cmdReadCommandByte)
	data(c, 0xff)
	cmd(c, cmdWriteOutputPort)
	return c
}

// readAll shows the controller's state through its ports: the status,
// the output queue, the pending command (the next data byte goes to it),
// the output port and the command byte.
func readAll(c *Controller) string {
	var b bytes.Buffer
	for i := 0; i <= outQueueLen; i++ {
		fmt.Fprintf(&b, "%#x:%#x ", status(c), out(c))
	}
	data(c, 0x03)
	for _, q := range []byte{cmdReadOutputPort, cmdReadCommandByte} {
		cmd(c, q)
		fmt.Fprintf(&b, "%#x:%#x:%#x ", status(c), out(c), status(c))
	}
	return b.String()
}

func TestStateRoundTrip(t *testing.T) {
	var resets int
	c := busyController(func() { resets++ })
	st := save(c)
	var resets2 int
	v := New(func() { resets2++ })
	if err := load(v, st); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(save(v), st) {
		t.Fatal("state saved again differs")
	}
	if got, want := readAll(v), readAll(c); got != want {
		t.Fatalf("registers after load:\n%s\nwant\n%s", got, want)
	}
	if resets != 0 || resets2 != 0 {
		t.Fatalf("resets %d / %d", resets, resets2)
	}
}

func TestReset(t *testing.T) {
	resets := 0
	c := busyController(func() { resets++ })
	c.Reset()
	if got, want := readAll(c), readAll(New(nil)); got != want {
		t.Fatalf("after Reset:\n%s\nwant power-on\n%s", got, want)
	}
	if resets != 0 {
		t.Fatal("Reset pulsed the reset line")
	}
}

func TestLoadStateBadInput(t *testing.T) {
	st := save(busyController(nil))
	fresh := func() vmstate.Stater { return New(func() { t.Fatal("loading pulsed the reset line") }) }
	statetest.CheckBadInput(t, st, stateVersion, fresh)
	// Offsets: status 4, command byte 5, output port 6, pending 7, queue
	// length 8.
	statetest.CheckRefused(t, st, fresh, [][2]int{
		{4, stsOutFull}, {4, 0x80}, {7, cmdSelfTest}, {8, outQueueLen + 1},
	})
}

// FuzzLoadState: any payload loads to an error marked corrupt or to a
// state that saves back to the same bytes, never pulsing the reset line.
func FuzzLoadState(f *testing.F) {
	f.Add(save(New(nil)))
	f.Add(save(busyController(nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := New(func() { t.Fatal("loading pulsed the reset line") })
		if err := statetest.Canonical(t, c, b); err != nil && !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("error not marked corrupt: %v", err)
		}
	})
}
