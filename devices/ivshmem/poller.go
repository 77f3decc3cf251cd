package ivshmem

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// poller waits on our own eventfds that no irqfd consumes (MSI-X disabled,
// or no event router) and hands each event to the device. One goroutine,
// one epoll set; add and remove may be called from any goroutine.
type poller struct {
	d    *Device
	epfd int
	wake int // eventfd that stops the loop
	done chan struct{}
}

func newPoller(d *Device) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll set: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake), Pad: -1}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("adding to epoll set: %w", err)
	}
	p := &poller{d: d, epfd: epfd, wake: wake, done: make(chan struct{})}
	go p.loop()
	return p, nil
}

// add watches fd for vector v. The fd is made non-blocking so that an
// event someone else consumed first cannot block the loop.
func (p *poller) add(fd, v int) {
	unix.SetNonblock(fd, true)
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd), Pad: int32(v)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); errors.Is(err, unix.EEXIST) {
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	}
}

// remove stops watching fd.
func (p *poller) remove(fd int) {
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

func (p *poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 16)
	var buf [8]byte
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			p.d.ServerErrors.Add(1)
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == p.wake {
				return
			}
			if _, err := unix.Read(int(ev.Fd), buf[:]); err != nil {
				continue // consumed elsewhere (an irqfd took over), or closed
			}
			p.d.vectorFired(int(ev.Pad))
		}
	}
}

// close stops the loop and closes the epoll set.
func (p *poller) close() error {
	unix.Write(p.wake, eventfdOne[:])
	<-p.done
	err := unix.Close(p.epfd)
	if cerr := unix.Close(p.wake); err == nil {
		err = cerr
	}
	return err
}

var eventfdOne = [8]byte{1}
