package pseries

import (
	"encoding/binary"
	"io"
	"sync"
)

// VTYReg is the reg (unit address) of the hypervisor console in /vdevice,
// the termno H_PUT_TERM_CHAR and H_GET_TERM_CHAR name (QEMU uses the same).
const VTYReg = 0x71000000

// vtyInputMax bounds buffered console input; further input waits for the
// guest to drain it.
const vtyInputMax = 4096

// VTY is the PAPR virtual terminal: output goes to an io.Writer, input is
// buffered until the guest polls it with H_GET_TERM_CHAR.
//
// outMu and inMu are never held together: a vCPU writing output never
// waits for the host's input side, and Feed, which blocks while the
// buffer is full, holds only inMu (its Cond releases it while waiting).
type VTY struct {
	outMu  sync.Mutex
	out    io.Writer
	outBuf [16]byte // H_PUT_TERM_CHAR bytes; a field so writes do not allocate

	inMu   sync.Mutex
	in     []byte
	space  *sync.Cond // signalled when the guest drains input
	closed bool
}

// NewVTY returns a console writing to out (nil discards output).
func NewVTY(out io.Writer) *VTY {
	if out == nil {
		out = io.Discard
	}
	v := &VTY{out: out}
	v.space = sync.NewCond(&v.inMu)
	return v
}

// Put writes guest output. A host write error is not the guest's concern:
// the bytes are dropped, as a disconnected terminal would drop them.
func (v *VTY) Put(p []byte) {
	v.outMu.Lock()
	v.out.Write(p)
	v.outMu.Unlock()
}

// putPacked writes the first n bytes of hi, lo packed big-endian.
func (v *VTY) putPacked(hi, lo uint64, n int) {
	v.outMu.Lock()
	binary.BigEndian.PutUint64(v.outBuf[0:], hi)
	binary.BigEndian.PutUint64(v.outBuf[8:], lo)
	v.out.Write(v.outBuf[:n])
	v.outMu.Unlock()
}

// Feed queues input for the guest, blocking while the buffer is full. It
// returns false if the VTY was closed.
func (v *VTY) Feed(p []byte) bool {
	v.inMu.Lock()
	defer v.inMu.Unlock()
	for len(p) > 0 {
		for len(v.in) >= vtyInputMax && !v.closed {
			v.space.Wait()
		}
		if v.closed {
			return false
		}
		n := min(len(p), vtyInputMax-len(v.in))
		v.in = append(v.in, p[:n]...)
		p = p[n:]
	}
	return true
}

// ReadFrom feeds everything read from r to the guest until r ends or the
// VTY is closed; run it in its own goroutine.
func (v *VTY) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 256)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			total += int64(n)
			if !v.Feed(buf[:n]) {
				return total, nil
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close releases a Feed blocked on a full buffer.
func (v *VTY) Close() {
	v.inMu.Lock()
	v.closed = true
	v.inMu.Unlock()
	v.space.Broadcast()
}

// get moves up to len(p) buffered input bytes into p.
func (v *VTY) get(p []byte) int {
	v.inMu.Lock()
	n := copy(p, v.in)
	v.in = v.in[:copy(v.in, v.in[n:])]
	v.inMu.Unlock()
	if n > 0 {
		v.space.Broadcast()
	}
	return n
}

// vtyFor resolves a termno: the VTY's reg, or 0, which early Linux debug
// code uses for the default console (QEMU's vty_lookup accepts it too).
func (m *Machine) vtyFor(termno uint64) *VTY {
	if termno == VTYReg || termno == 0 {
		return m.vty
	}
	return nil
}

// hPutTermChar is H_PUT_TERM_CHAR: r4 termno, r5 length (0..16), r6 and
// r7 the bytes packed big-endian (the first byte in r6's most significant
// byte).
func hPutTermChar(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	v := m.vtyFor(args[0])
	n := args[1]
	if v == nil || n > 16 {
		return HParameter
	}
	if n > 0 {
		v.putPacked(args[2], args[3], int(n))
	}
	return HSuccess
}

// hGetTermChar is H_GET_TERM_CHAR: r4 termno -> r4 count (0..16), r5 and
// r6 the bytes packed as for H_PUT_TERM_CHAR.
func hGetTermChar(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	v := m.vtyFor(args[0])
	if v == nil {
		return HParameter
	}
	var buf [16]byte
	n := v.get(buf[:])
	args[0] = uint64(n)
	args[1] = binary.BigEndian.Uint64(buf[0:])
	args[2] = binary.BigEndian.Uint64(buf[8:])
	return HSuccess
}
