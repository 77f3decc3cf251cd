// Command netbench measures TCP between a guest and its host for
// `make bench-boot`'s nested network rows (scripts/bench-nested.sh). It is
// built static (CGO_ENABLED=0) and runs on both sides:
//
//	netbench serve ADDR                 # in L1: answers until killed
//	netbench client ADDR MIB ROUNDS     # in the guest: prints NETBENCH lines
//
// The client measures, each on a connection of its own:
//   - rtt: ROUNDS request/response round trips of 64 bytes (TCP_NODELAY),
//     the mean in microseconds: a small request's latency through the NIC,
//     the VMM's backend and the host's stack;
//   - upload: MIB MiB from the guest to the host, timed until the host has
//     acknowledged every byte;
//   - download: MIB MiB from the host to the guest.
//
// The payload is a fixed pattern and both sides check it, so a backend
// that corrupts or reorders data fails the benchmark rather than winning
// it. Output lines: "NETBENCH rtt us=N", "NETBENCH upload MBps=N",
// "NETBENCH download MBps=N"; any failure prints "NETBENCH-FAILED reason"
// and exits 1.
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

// Commands, the first byte a client sends on a connection.
const (
	cmdEcho     = 'E' // echo every byte back until EOF
	cmdUpload   = 'U' // then u64 length and that many pattern bytes; the server answers the u64 count
	cmdDownload = 'D' // then u64 length; the server sends that many pattern bytes
)

// chunk is the size of each write and read of the bulk transfers, in
// bytes: large enough that system calls do not dominate the figures.
const chunk = 64 << 10

// main prints failures on stdout like the results: scripts/bench-nested.sh
// greps the run's log for NETBENCH-FAILED and NETBENCH lines.
func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Printf("NETBENCH-FAILED %v\n", err)
		os.Exit(1)
	}
}

// run dispatches on the subcommand; MIB and ROUNDS must be positive.
func run(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "serve":
		return serve(args[1])
	case len(args) == 4 && args[0] == "client":
		mib, err1 := strconv.Atoi(args[2])
		rounds, err2 := strconv.Atoi(args[3])
		if err1 != nil || err2 != nil || mib <= 0 || rounds <= 0 {
			return errors.New("usage: netbench client ADDR MIB ROUNDS")
		}
		return client(args[1], int64(mib)<<20, rounds)
	}
	return errors.New("usage: netbench serve ADDR | netbench client ADDR MIB ROUNDS")
}

// pattern fills b with the bytes that belong at stream offset off.
func pattern(b []byte, off int64) {
	// Mixing in higher bits of the offset makes the pattern repeat only
	// every 16 MiB, so a chunk delivered at the wrong place shows.
	for i := range b {
		p := off + int64(i)
		b[i] = byte(p ^ p>>8 ^ p>>16)
	}
}

// checkPattern reports the first stream offset in b that is wrong.
func checkPattern(b []byte, off int64) error {
	for i := range b {
		p := off + int64(i)
		if b[i] != byte(p^p>>8^p>>16) {
			return fmt.Errorf("data corrupted at stream offset %d", p)
		}
	}
	return nil
}

// serve answers each connection on its own goroutine until the listener
// fails; it never returns otherwise (the benchmark kills it). A failed
// connection is logged and does not stop the server.
func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if err := handle(c); err != nil {
				fmt.Fprintf(os.Stderr, "netbench serve: %v: %v\n", c.RemoteAddr(), err)
			}
		}()
	}
}

// handle runs one connection's command. Lengths and the upload's answer
// are little-endian u64s.
func handle(c net.Conn) error {
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:1]); err != nil {
		return err
	}
	switch hdr[0] {
	case cmdEcho:
		// Echo until the client closes: the rtt client sends ROUNDS
		// requests on one connection.
		_, err := io.Copy(c, c)
		return err
	case cmdUpload:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return err
		}
		n := int64(binary.LittleEndian.Uint64(hdr[1:]))
		if err := receive(c, n); err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(hdr[1:], uint64(n))
		_, err := c.Write(hdr[1:])
		return err
	case cmdDownload:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return err
		}
		return send(c, int64(binary.LittleEndian.Uint64(hdr[1:])))
	}
	return fmt.Errorf("unknown command %q", hdr[0])
}

// send writes n pattern bytes.
func send(w io.Writer, n int64) error {
	buf := make([]byte, chunk)
	for off := int64(0); off < n; {
		b := buf[:min(int64(len(buf)), n-off)]
		pattern(b, off)
		if _, err := w.Write(b); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// receive reads n bytes and checks that they are the pattern.
func receive(r io.Reader, n int64) error {
	buf := make([]byte, chunk)
	for off := int64(0); off < n; {
		b := buf[:min(int64(len(buf)), n-off)]
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", off, n, err)
		}
		if err := checkPattern(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// dial retries for a while: a tap's host side may get its address only
// after the guest is up.
func dial(addr string, cmd byte) (*net.TCPConn, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			// TCP_NODELAY: each 64-byte rtt request must leave at once,
			// not wait for Nagle's algorithm; the bulk transfers write
			// whole chunks and are not affected.
			tc := c.(*net.TCPConn)
			tc.SetNoDelay(true)
			if _, err := tc.Write([]byte{cmd}); err != nil {
				tc.Close()
				return nil, err
			}
			return tc, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// client runs the three measurements in order, each on a fresh connection
// so that one's window and congestion state do not carry into the next.
// Rates are in MB/s of payload (10^6 bytes per second), timed from the
// request's first byte to the last byte received or acknowledged.
func client(addr string, n int64, rounds int) error {
	c, err := dial(addr, cmdEcho)
	if err != nil {
		return err
	}
	req := make([]byte, 64)
	resp := make([]byte, 64)
	t0 := time.Now()
	for i := 0; i < rounds; i++ {
		pattern(req, int64(i))
		if _, err := c.Write(req); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return fmt.Errorf("echo round %d: %w", i, err)
		}
		if err := checkPattern(resp, int64(i)); err != nil {
			return fmt.Errorf("echo round %d: %w", i, err)
		}
	}
	rtt := time.Since(t0) / time.Duration(rounds)
	c.Close()
	fmt.Printf("NETBENCH rtt us=%.1f\n", float64(rtt.Nanoseconds())/1e3)

	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(n))
	if c, err = dial(addr, cmdUpload); err != nil {
		return err
	}
	t0 = time.Now()
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	if err := send(c, n); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	// The server answers the byte count only after receiving and checking
	// every byte, so the time includes the last byte's arrival, not just
	// the guest's send buffer filling.
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("upload acknowledgement: %w", err)
	}
	up := time.Since(t0)
	c.Close()
	if got := int64(binary.LittleEndian.Uint64(hdr[:])); got != n {
		return fmt.Errorf("upload: the host acknowledged %d of %d bytes", got, n)
	}
	fmt.Printf("NETBENCH upload MBps=%.1f\n", float64(n)/1e6/up.Seconds())

	binary.LittleEndian.PutUint64(hdr[:], uint64(n))
	if c, err = dial(addr, cmdDownload); err != nil {
		return err
	}
	t0 = time.Now()
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	if err := receive(c, n); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	down := time.Since(t0)
	c.Close()
	fmt.Printf("NETBENCH download MBps=%.1f\n", float64(n)/1e6/down.Seconds())
	return nil
}
