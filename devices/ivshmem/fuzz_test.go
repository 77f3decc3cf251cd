package ivshmem

import (
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/proto"
	"golang.org/x/sys/unix"
)

// FuzzRegisters drives BAR0 with guest accesses at every offset and width:
// ops are 7-byte records (op, offset, width selector, 32-bit value). The
// device must not panic, reads outside the registers must return 0, the
// mask must read back what was written, IVPosition must stay the server's
// ID, and INTA# must always equal status & mask.
func FuzzRegisters(f *testing.F) {
	sock := startServer(f, 2)
	irq := &line{}
	d, err := NewDoorbell(sock, 2, Interrupts{IRQ: irq, Signaler: &signaler{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Release() })
	id := uint32(d.ID())
	f.Add([]byte{1, 0, 2, 1, 0, 0, 0, 1, 4, 2, 1, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0})
	f.Add([]byte{1, 12, 2, 0, 0, 1, 0, 1, 12, 2, 1, 0, 0, 0, 0, 8, 2, 0, 0, 0, 0})
	f.Add([]byte{1, 3, 0, 0xff, 0, 0, 0, 0, 255, 3, 0, 0, 0, 0, 1, 8, 1, 9, 9, 9, 9})
	widths := [4]int{1, 2, 4, 8}
	f.Fuzz(func(t *testing.T, ops []byte) {
		for len(ops) >= 7 {
			op, off, w := ops[0], uint64(ops[1]), widths[ops[2]&3]
			val := binary.LittleEndian.Uint32(ops[3:7])
			ops = ops[7:]
			buf := make([]byte, w)
			for i := range buf {
				buf[i] = byte(val >> (8 * (i % 4)))
			}
			if off+uint64(w) > RegsSize {
				continue // the bus never delivers these
			}
			reg := w == 4 && off%4 == 0 && off <= RegDoorbell
			if op&1 == 0 {
				d.Read(0, off, buf)
				got := uint32(0)
				if w >= 4 {
					got = binary.LittleEndian.Uint32(buf)
				}
				switch {
				case !reg:
					for _, b := range buf {
						if b != 0 {
							t.Fatalf("read of %d bytes at %#x returned %x", w, off, buf)
						}
					}
				case off == RegIVPosition && got != id:
					t.Fatalf("IVPosition %d, want %d", got, id)
				case off == RegDoorbell && got != 0:
					t.Fatalf("doorbell reads %#x", got)
				}
				continue
			}
			d.Write(0, off, buf)
			if reg && off == RegIntrMask {
				if got := rd(d, RegIntrMask); got != val {
					t.Fatalf("mask reads %#x after writing %#x", got, val)
				}
			}
			d.mu.Lock()
			want := d.intrStatus&d.intrMask != 0
			lvl, _ := irq.get()
			d.mu.Unlock()
			if lvl != want {
				t.Fatalf("INTA# %v with status %#x mask %#x", lvl, d.intrStatus, d.intrMask)
			}
		}
	})
}

// FuzzServerMessages runs a doorbell device against a hostile server: a
// valid handshake (ID from the first byte) followed by 9-byte records (flag
// bit 0: attach an eventfd; little-endian value). The device must not
// panic, must keep its KVM registrations consistent (the fake router fails
// the test on a stale or unknown fd), and must close every fd on Release.
func FuzzServerMessages(f *testing.F) {
	// A silent fuzzed server must not cost a second per input.
	setupWait = 50 * time.Millisecond
	dir := f.TempDir()
	shm, err := hostmem.Anonymous("fuzz", 1<<16)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { shm.Close() })
	rec := func(flag byte, v int64) []byte {
		b := make([]byte, 9)
		b[0] = flag
		binary.LittleEndian.PutUint64(b[1:], uint64(v))
		return b
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	f.Add(cat([]byte{0}, rec(1, 1), rec(1, 1), rec(1, 0), rec(1, 0), rec(0, 1)))
	f.Add(cat([]byte{2}, rec(1, 2), rec(1, 2), rec(1, 2), rec(1, 5), rec(0, 2), rec(0, 5), rec(1, 65535)))
	f.Add(cat([]byte{1}, rec(0, -1), rec(1, -1), rec(1, 70000), rec(0, 9)))
	n := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 || len(data) > 1+9*64 {
			return
		}
		n++
		sock := filepath.Join(dir, fmt.Sprintf("s%d", n))
		before := countFDs(t)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			defer c.Close()
			proto.Send(c, proto.Version, -1)
			proto.Send(c, int64(data[0]%4), -1)
			proto.Send(c, proto.ShmMessage, int(shm.Fd()))
			for r := data[1:]; len(r) >= 9; r = r[9:] {
				fd := -1
				if r[0]&1 != 0 {
					fd = ev
				}
				if proto.Send(c, int64(binary.LittleEndian.Uint64(r[1:9])), fd) != nil {
					return
				}
			}
		}()
		d, err := NewDoorbell(sock, 2, Interrupts{Router: newRouter(t), IRQ: &line{}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		b := plug(t, d)
		enableMSIX(b, d, 0, 0xfee00000, 0x30)
		<-served // the server hung up: the device's loop ends
		d.events.Wait()
		wr(d, RegDoorbell, 1<<16)
		if err := b.Remove(slot); err != nil {
			t.Fatal(err)
		}
		ln.Close()
		unix.Close(ev)
		if got := countFDs(t); got != before {
			t.Fatalf("%d fds open after release, %d before", got, before)
		}
	})
}
