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
