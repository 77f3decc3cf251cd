package netdev

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxSegs bounds the scatter list of one frame (a virtqueue chain has at
// most 1024 descriptors; UIO_MAXIOV is 1024 too).
const maxSegs = 1024

// FDLink moves frames over a file descriptor that carries one frame per
// read and write: a tap device, or one end of a SOCK_SEQPACKET socket
// pair. Reads go through the Go poller on a goroutine of its own that
// delivers to the Port; writes are one writev of the guest's buffers.
type FDLink struct {
	Port
	f       *os.File
	rc      syscall.RawConn
	vnetHdr bool

	// writev state: Send is called from one goroutine at a time (the
	// transmit queue's), so one iovec array and a prebuilt closure serve
	// every frame without allocating.
	iov     [maxSegs]unix.Iovec
	niov    int
	werr    unix.Errno
	writeFn func(fd uintptr) bool

	done chan struct{}
}

// NewFDLink starts serving fd (which it owns from now on; it is made
// non-blocking). name names the file in errors.
func NewFDLink(fd int, name string, vnetHdr bool) (*FDLink, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: set non-blocking: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	l := &FDLink{f: f, rc: rc, vnetHdr: vnetHdr, done: make(chan struct{})}
	l.writeFn = l.writev
	go l.readLoop()
	return l, nil
}

// VnetHdr implements Backend.
func (l *FDLink) VnetHdr() bool { return l.vnetHdr }

// MaxFrame implements Backend: a link reads frames of up to MaxFrame bytes.
func (l *FDLink) MaxFrame() int { return MaxFrame }

func (l *FDLink) readLoop() {
	defer close(l.done)
	buf := make([]byte, MaxFrame)
	for {
		n, err := l.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EBADFD) {
				return // tap device gone
			}
			continue // EAGAIN races and the like: the poller waits again
		}
		if n == 0 {
			continue
		}
		l.Deliver(buf[:n])
	}
}

// Send implements Backend: one writev of segs.
func (l *FDLink) Send(segs [][]byte) error {
	n := 0
	for _, s := range segs {
		if len(s) == 0 {
			continue
		}
		if n == maxSegs {
			l.stats.TxErrors.Add(1)
			return errors.New("netdev: frame in too many pieces")
		}
		l.iov[n].Base = unsafe.SliceData(s)
		l.iov[n].SetLen(len(s))
		n++
	}
	if n == 0 {
		l.stats.TxErrors.Add(1)
		return errors.New("netdev: empty frame")
	}
	l.niov = n
	var total uint64
	for i := range n {
		total += l.iov[i].Len
	}
	err := l.rc.Write(l.writeFn)
	clear(l.iov[:n]) // drop the references into guest memory
	if err == nil && l.werr != 0 {
		err = l.werr
	}
	if err != nil {
		l.stats.TxErrors.Add(1)
		return err
	}
	l.stats.TxFrames.Add(1)
	l.stats.TxBytes.Add(total)
	return nil
}

// writev runs under the poller's write lock; it returns false to wait for
// the descriptor to become writable.
func (l *FDLink) writev(fd uintptr) bool {
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&l.iov[0])), uintptr(l.niov))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		l.werr = e
		return true
	}
}

// Close implements Backend: the read goroutine ends.
func (l *FDLink) Close() error {
	err := l.f.Close()
	<-l.done
	return err
}

// Control runs fn with the descriptor (for ioctls).
func (l *FDLink) Control(fn func(fd uintptr)) error { return l.rc.Control(fn) }
