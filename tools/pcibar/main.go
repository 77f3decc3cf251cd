// Command pcibar lets a shell script in a Linux guest use a PCI device's
// memory BARs and its uio interrupt, which busybox cannot: it maps a sysfs
// resource file (/sys/bus/pci/devices/D/resourceN) and reads or writes it.
// The slow tier copies it, built static, into the guest's initramfs to
// drive ivshmem devices.
//
//	pcibar RESOURCE r32 OFF           print the 32-bit value at OFF
//	pcibar RESOURCE w32 OFF VALUE     store a 32-bit value
//	pcibar RESOURCE read OFF LEN      print LEN bytes as text (up to a NUL)
//	pcibar RESOURCE write OFF TEXT    store TEXT and a NUL
//	pcibar RESOURCE fill OFF LEN SEED store LEN bytes of the pattern SEED
//	pcibar RESOURCE check OFF LEN SEED compare with the pattern; status 1 if not
//	pcibar UIODEV wait SECONDS CONFIG [RESOURCE OFF VALUE]
//	    open the uio device, clear INTx Disable in the function's sysfs
//	    CONFIG file (uio_pci_generic masks INTx in its handler and leaves
//	    unmasking to user space), store the 32-bit VALUE at OFF in RESOURCE
//	    if given (the signal that makes a peer interrupt us: opened first,
//	    nothing is missed), wait for an interrupt and print its count;
//	    status 1 on timeout
//
// Numbers take Go syntax (0x prefix for hex).
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// main exits 2 for too few arguments and 1 for any failure, a failed
// check or a wait that timed out included.
func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: pcibar RESOURCE r32|w32|read|write|fill|check ARGS... | pcibar UIODEV wait SECONDS")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3:]); err != nil {
		fmt.Fprintln(os.Stderr, "pcibar:", err)
		os.Exit(1)
	}
}

// num parses one number in Go syntax (decimal, 0x hex, 0o octal, 0b).
func num(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return v, nil
}

// nums parses the first n of args as numbers; extra arguments are left
// to the caller (write's TEXT, wait's paths).
func nums(args []string, n int) ([]uint64, error) {
	if len(args) < n {
		return nil, fmt.Errorf("want %d numeric arguments, got %d", n, len(args))
	}
	out := make([]uint64, n)
	for i := range out {
		v, err := num(args[i])
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// run performs op on the resource file at path (or, for wait, on the uio
// device at path). The resource file is mapped whole; sysfs maps a
// resourceN file uncached (resourceN_wc would combine writes), so every
// load and store below reaches the BAR, and a 32-bit access is one
// aligned access as long as OFF is 4-aligned (the caller's to ensure).
func run(path, op string, args []string) error {
	if op == "wait" {
		if len(args) != 2 && len(args) != 5 {
			return errors.New("wait wants SECONDS CONFIG [RESOURCE OFF VALUE]")
		}
		secs, err := nums(args, 1)
		if err != nil {
			return err
		}
		return uioWait(path, args[1], time.Duration(secs[0])*time.Second, args[2:])
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mapping %s: %w", path, err)
	}
	defer unix.Munmap(mem)
	off, err := nums(args, 1)
	if err != nil {
		return err
	}
	at := off[0]
	span := func(n uint64) ([]byte, error) {
		if at > uint64(len(mem)) || n > uint64(len(mem))-at {
			return nil, fmt.Errorf("%#x+%#x is beyond the %#x-byte BAR", at, n, len(mem))
		}
		return mem[at : at+n], nil
	}
	switch op {
	case "r32":
		b, err := span(4)
		if err != nil {
			return err
		}
		fmt.Printf("%#x\n", binary.LittleEndian.Uint32(b))
	case "w32":
		v, err := nums(args, 2)
		if err != nil {
			return err
		}
		b, err := span(4)
		if err != nil {
			return err
		}
		binary.LittleEndian.PutUint32(b, uint32(v[1]))
	case "read":
		v, err := nums(args, 2)
		if err != nil {
			return err
		}
		b, err := span(v[1])
		if err != nil {
			return err
		}
		text := append([]byte(nil), b...)
		for i, c := range text {
			if c == 0 {
				text = text[:i]
				break
			}
		}
		fmt.Printf("%s\n", text)
	case "write":
		if len(args) < 2 {
			return errors.New("write wants OFF TEXT")
		}
		b, err := span(uint64(len(args[1]) + 1))
		if err != nil {
			return err
		}
		copy(b, args[1]+"\x00")
	case "fill", "check":
		v, err := nums(args, 3)
		if err != nil {
			return err
		}
		b, err := span(v[1])
		if err != nil {
			return err
		}
		want := make([]byte, len(b))
		pattern(want, v[2])
		if op == "fill" {
			copy(b, want)
			return nil
		}
		for i := range b {
			if b[i] != want[i] {
				return fmt.Errorf("pattern %#x differs at %#x: %#x, want %#x", v[2], at+uint64(i), b[i], want[i])
			}
		}
		fmt.Printf("pattern %#x ok (%d bytes)\n", v[2], len(b))
	default:
		return fmt.Errorf("unknown operation %q", op)
	}
	return nil
}

// pattern fills b with a xorshift64 stream seeded by seed (never zero: the
// low bit is forced, as xorshift stays at 0 forever). fill and check, run
// in different guests, agree byte for byte for the same seed.
func pattern(b []byte, seed uint64) {
	x := seed | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x >> 32)
	}
}

// uioWait opens the uio device, unmasks INTx through the command register
// (PCI 3.0 6.2.2, bit 10), runs the optional then-store, and reads the
// 32-bit event count once an interrupt arrives.
func uioWait(path, config string, limit time.Duration, then []string) error {
	// Order matters: uio counts interrupts from the moment the device is
	// opened (a read waits for the count to move past its value at open),
	// so opening before the then-store means the interrupt the store
	// provokes cannot be missed, however fast the peer answers.
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := clearINTxDisable(config); err != nil {
		return err
	}
	if len(then) == 3 {
		if err := run(then[0], "w32", then[1:]); err != nil {
			return err
		}
	}
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
	for {
		// After EINTR the whole limit starts again; signals are rare in
		// the guest's init scripts, so the bound is loose but finite.
		n, err := unix.Poll(fds, int(limit/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("polling %s: %w", path, err)
		}
		if n == 0 {
			return fmt.Errorf("no interrupt on %s within %v", path, limit)
		}
		break
	}
	// A uio read returns the interrupt count since the device was opened
	// as a 32-bit integer in host byte order (little-endian on the x86
	// guests this runs in).
	var count [4]byte
	if _, err := f.Read(count[:]); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	fmt.Printf("interrupt %d\n", binary.LittleEndian.Uint32(count[:]))
	return nil
}

// clearINTxDisable clears bit 10 of the command register (offset 4) in a
// sysfs config file. uio_pci_generic's interrupt handler masks INTx by
// setting that bit, and user space clears it to take the next interrupt.
// Only the 16-bit command register is read and written back, so the
// status register above it (whose bits clear on a write of 1) is left
// alone.
func clearINTxDisable(config string) error {
	f, err := os.OpenFile(config, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var cmd [2]byte
	if _, err := f.ReadAt(cmd[:], 4); err != nil {
		return fmt.Errorf("reading the command register: %w", err)
	}
	v := binary.LittleEndian.Uint16(cmd[:]) &^ (1 << 10)
	binary.LittleEndian.PutUint16(cmd[:], v)
	if _, err := f.WriteAt(cmd[:], 4); err != nil {
		return fmt.Errorf("writing the command register: %w", err)
	}
	return nil
}
