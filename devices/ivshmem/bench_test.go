package ivshmem

import (
	"encoding/binary"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkEventfdPingPong is the physical limit the doorbell round trip
// is compared with (scripts/bench-ivshmem.sh): two host threads bounce a
// signal through two blocking eventfds, as two guests' doorbells do
// through the ivshmem server's eventfds. One op is one round trip.
func BenchmarkEventfdPingPong(b *testing.B) {
	ping, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(ping)
	pong, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(pong)
	one := make([]byte, 8)
	binary.NativeEndian.PutUint64(one, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		buf := make([]byte, 8)
		for i := 0; i < b.N; i++ {
			if _, err := unix.Read(ping, buf); err != nil {
				done <- err
				return
			}
			if _, err := unix.Write(pong, one); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 8)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := unix.Write(ping, one); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(pong, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRegisterRead is the cost of a BAR0 register read in the VMM
// (the exit handling itself is measured by scripts/bench-exit.sh).
func BenchmarkRegisterRead(b *testing.B) {
	sock := startServer(b, 1)
	d, err := NewDoorbell(sock, 1, Interrupts{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Release()
	data := make([]byte, 4)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d.Read(0, RegIVPosition, data)
	}
}
