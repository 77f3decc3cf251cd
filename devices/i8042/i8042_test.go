package i8042

import "testing"

func cmd(c *Controller, b byte)  { c.Write(0, offCommand, []byte{b}) }
func data(c *Controller, b byte) { c.Write(0, offData, []byte{b}) }
func status(c *Controller) byte  { b := []byte{0}; c.Read(0, offCommand, b); return b[0] }
func out(c *Controller) byte     { b := []byte{0}; c.Read(0, offData, b); return b[0] }

func TestResetPaths(t *testing.T) {
	resets := 0
	c := New(func() { resets++ })
	cmd(c, 0xfe)
	if resets != 1 {
		t.Fatal("0xfe to port 0x64 did not reset")
	}
	cmd(c, cmdWriteOutputPort)
	data(c, 0x02) // bit 0 (reset line) low
	if resets != 2 {
		t.Fatal("output port bit 0 low did not reset")
	}
	cmd(c, cmdWriteOutputPort)
	data(c, 0x03)
	cmd(c, 0xff) // pulse nothing
	if resets != 2 {
		t.Fatal("spurious reset")
	}
}

func TestStatusSelfTestCommandByte(t *testing.T) {
	c := New(nil)
	if s := status(c); s&stsSystem == 0 || s&stsOutFull != 0 {
		t.Fatalf("status %#x at reset", s)
	}
	cmd(c, cmdSelfTest)
	if status(c)&stsOutFull == 0 || out(c) != 0x55 {
		t.Fatal("self test did not answer 0x55")
	}
	if status(c)&stsOutFull != 0 {
		t.Fatal("output buffer still full after read")
	}
	cmd(c, cmdWriteCommandByte)
	data(c, 0x47)
	cmd(c, cmdReadCommandByte)
	if out(c) != 0x47 {
		t.Fatal("command byte not kept")
	}
	data(c, 0xff) // keyboard reset: ACK then BAT OK
	if out(c) != 0xfa || out(c) != 0xaa {
		t.Fatal("keyboard reset not acknowledged")
	}
	cmd(c, 0xfe) // nil reset callback must not panic
	b := []byte{0, 0}
	c.Read(0, offData, b)
	if b[0] != 0xff {
		t.Fatal("wide read not all ones")
	}
}

// FuzzController drives random port accesses: no panic, the output queue
// stays bounded, and a reset is only ever requested by a reset command.
func FuzzController(f *testing.F) {
	f.Add([]byte{0x04, 0xaa, 0x00, 0x00, 0x04, 0xd1, 0x00, 0x01})
	f.Fuzz(func(t *testing.T, ops []byte) {
		resets := 0
		c := New(func() { resets++ })
		for i := 0; i+1 < len(ops); i += 2 {
			off := uint64(ops[i] & 7)
			if ops[i]&0x80 != 0 {
				b := make([]byte, 1+int(ops[i]>>5&1))
				c.Read(0, off, b)
			} else {
				c.Write(0, off, []byte{ops[i+1]})
			}
			if len(c.out) > 16 {
				t.Fatalf("output queue grew to %d", len(c.out))
			}
		}
		if resets > len(ops)/2 {
			t.Fatalf("%d resets from %d accesses", resets, len(ops)/2)
		}
	})
}
