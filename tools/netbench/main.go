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

const chunk = 64 << 10

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Printf("NETBENCH-FAILED %v\n", err)
		os.Exit(1)
	}
}

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

func handle(c net.Conn) error {
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:1]); err != nil {
		return err
	}
	switch hdr[0] {
	case cmdEcho:
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
