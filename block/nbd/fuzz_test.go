package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// scriptConn plays a server from a byte stream: reads come from what the
// server "sent", writes (the client's requests) are recorded.
type scriptConn struct {
	r    io.Reader
	sent bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) { return c.sent.Write(p) }
func (c *scriptConn) Close() error                { return nil }

// exercise is the fuzz body's fixed session: the handshake, a read, block
// status, a small write, a flush, a zero write and a disconnect. Seeds
// recorded from qemu-nbd running the same session replay exactly.
func exercise(conn io.ReadWriteCloser) error {
	c, err := NewClient(conn, "exp", "base:allocation", false)
	if err != nil {
		return err
	}
	img := &Image{c: c, cfg: Config{Unix: "fuzz"}, format: "raw", ro: c.flag(tfReadOnly)}
	defer img.Close()
	buf := make([]byte, min(img.Size(), 4096))
	if _, err := img.ReadAt(buf, 0); err != nil {
		return err
	}
	if img.Size() > 0 {
		if _, err := img.BlockStatus(0, img.Size()); err != nil {
			return err
		}
	}
	if img.Size() >= 4096 && !img.ReadOnly() {
		if _, err := img.WriteAt(bytes.Repeat([]byte{0x5a}, 700), 100); err != nil {
			return err
		}
		if err := img.Flush(); err != nil {
			return err
		}
		if err := img.WriteZeroes(1024, 2048, false); err != nil {
			return err
		}
	}
	return nil
}

// FuzzServerReplies feeds arbitrary server streams to the client: a
// hostile server must get an error, never a panic, a hang (the stream
// ends) or an allocation it chose the size of. Seeds in
// testdata/fuzz/FuzzServerReplies are qemu-nbd sessions (testdata/README.md).
func FuzzServerReplies(f *testing.F) {
	f.Add(fallbackStream(t512()))
	f.Fuzz(func(t *testing.T, data []byte) {
		done := make(chan bool)
		go func() { exercise(&scriptConn{r: bytes.NewReader(data)}); close(done) }()
		select {
		case <-done:
		case <-time.After(testutil.Timeout(10 * time.Second)):
			t.Fatal("the client did not finish a session over a finite stream")
		}
	})
}

// TestWriteFuzzSeeds records qemu-nbd's side of exercise's session for
// a few exports, as seeds: NBD_WRITE_SEEDS=1 go test -run
// TestWriteFuzzSeeds ./block/nbd/.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("NBD_WRITE_SEEDS") == "" {
		t.Skip("set NBD_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzServerReplies")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzServerReplies")
	os.MkdirAll(dir, 0o755)
	exports := map[string][]string{
		"qcow2-data":   {"-f", "qcow2", qemuImage(t, "1M", "write -P 1 0 20k", "write -z 40k 8k")},
		"qcow2-ro":     {"-f", "qcow2", "-r", qemuImage(t, "1M", "write -P 2 8k 64k")},
		"raw-small":    {"-f", "raw", writeFile(t, bytes.Repeat([]byte{9}, 3000))},
		"qcow2-ad":     {"-f", "qcow2", "-A", qemuImage(t, "256k", "write -P 3 0 4k")},
		"qcow2-nodisc": {"-f", "qcow2", "--discard=unmap", "--detect-zeroes=unmap", qemuImage(t, "128k")},
	}
	for name, args := range exports {
		sock, _ := serve(t, args...)
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recordConn{Conn: conn}
		if err := exercise(rec); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		seed := "go test fuzz v1\n[]byte(" + strconv.Quote(rec.got.String()) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// recordConn keeps what the server sent.
type recordConn struct {
	net.Conn
	got bytes.Buffer
}

func (c *recordConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.got.Write(p[:n])
	return n, err
}

func writeFile(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Scripted server messages.

func greeting(flags uint16) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicInit)
	b = binary.BigEndian.AppendUint64(b, magicOption)
	return binary.BigEndian.AppendUint16(b, flags)
}

func optReplyMsg(opt, typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func simpleReply(cookie uint64, errno uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicSimple)
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return append(b, data...)
}

func chunk(cookie uint64, flags, typ uint16, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// t512 is the content of the fallback test's 8 KiB export's first block.
func t512() []byte { return bytes.Repeat([]byte{0xe1}, 512) }

// fallbackStream is a fixed-newstyle server that knows neither
// structured replies nor NBD_OPT_GO: the client must use
// NBD_OPT_EXPORT_NAME, then simple replies carry a 512-byte read.
func fallbackStream(block0 []byte) []byte {
	s := greeting(flagFixedNew | flagNoZeroes)
	s = append(s, optReplyMsg(optStructured, repErrUnsup, nil)...)
	s = append(s, optReplyMsg(optGo, repErrUnsup, nil)...)
	s = binary.BigEndian.AppendUint64(s, 8192)
	s = binary.BigEndian.AppendUint16(s, tfHasFlags|tfReadOnly)
	return append(s, simpleReply(1, 0, block0)...)
}

// Without NBD_OPT_GO the client falls back to NBD_OPT_EXPORT_NAME and
// reads with simple replies; block status without a context is all data.
func TestExportNameFallback(t *testing.T) {
	conn := &scriptConn{r: bytes.NewReader(fallbackStream(t512()))}
	c, err := NewClient(conn, "exp", "base:allocation", false)
	if err != nil {
		t.Fatal(err)
	}
	img := &Image{c: c, ro: true}
	if img.Size() != 8192 || !c.flag(tfReadOnly) || c.ex.structured || c.ex.hasMeta {
		t.Fatalf("export %+v", c.ex)
	}
	got := make([]byte, 512)
	if _, err := img.ReadAt(got, 0); err != nil || !bytes.Equal(got, t512()) {
		t.Fatalf("read: %v", err)
	}
	if e, err := img.BlockStatus(0, 8192); err != nil || e.Length != 8192 || e.Flags != block.ExtentData|block.ExtentAllocated {
		t.Fatalf("block status %+v %v", e, err)
	}
	if !bytes.Contains(conn.sent.Bytes(), append(binary.BigEndian.AppendUint32(nil, optExportName), 0, 0, 0, 3, 'e', 'x', 'p')) {
		t.Fatal("no NBD_OPT_EXPORT_NAME sent")
	}
}

// goStream negotiates structured replies and NBD_OPT_GO with a 512-byte
// minimum block size for an 8 KiB writable export.
func goStream() []byte {
	s := greeting(flagFixedNew | flagNoZeroes)
	s = append(s, optReplyMsg(optStructured, repAck, nil)...)
	s = append(s, optReplyMsg(optSetMetaContext, repMetaContext, append([]byte{0, 0, 0, 7}, "base:allocation"...))...)
	s = append(s, optReplyMsg(optSetMetaContext, repAck, nil)...)
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, 8192)
	info = binary.BigEndian.AppendUint16(info, tfHasFlags|tfSendFlush|tfWriteZeroes)
	s = append(s, optReplyMsg(optGo, repInfo, info)...)
	bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
	bs = binary.BigEndian.AppendUint32(bs, 512)
	bs = binary.BigEndian.AppendUint32(bs, 4096)
	bs = binary.BigEndian.AppendUint32(bs, 1<<20)
	s = append(s, optReplyMsg(optGo, repInfo, bs)...)
	return append(s, optReplyMsg(optGo, repAck, nil)...)
}

// A write smaller than the server's minimum block is a read-modify-write
// of the whole block; the server sees only aligned requests.
func TestMinimumBlockReadModifyWrite(t *testing.T) {
	s := goStream()
	old := bytes.Repeat([]byte{0x11}, 512)
	s = append(s, chunk(1, replyFlagDone, chunkOffsetData, append(binary.BigEndian.AppendUint64(nil, 0), old...))...)
	s = append(s, simpleReply(2, 0, nil)...)
	conn := &scriptConn{r: bytes.NewReader(s)}
	c, err := NewClient(conn, "exp", "base:allocation", false)
	if err != nil {
		t.Fatal(err)
	}
	if c.ex.minBlock != 512 || !c.ex.structured || !c.ex.hasMeta || c.ex.metaID != 7 {
		t.Fatalf("export %+v", c.ex)
	}
	img := &Image{c: c}
	mark := conn.sent.Len()
	if _, err := img.WriteAt([]byte("hello"), 10); err != nil {
		t.Fatal(err)
	}
	sent := conn.sent.Bytes()[mark:]
	read := request{typ: cmdRead, cookie: 1, length: 512}.encode()
	want := append(old[:10:10], "hello"...)
	want = append(want, old[15:]...)
	write := append(request{typ: cmdWrite, cookie: 2, length: 512}.encode(), want...)
	if !bytes.Equal(sent, append(read, write...)) {
		t.Fatalf("requests sent:\n%x\nwant\n%x", sent, append(read, write...))
	}
}

// Replies that break the protocol are errors, and the connection is
// unusable afterwards.
func TestHostileReplies(t *testing.T) {
	data := func(off uint64, n int) []byte {
		return append(binary.BigEndian.AppendUint64(nil, off), make([]byte, n)...)
	}
	for name, reply := range map[string][]byte{
		"wrong cookie":         chunk(9, replyFlagDone, chunkOffsetData, data(0, 512)),
		"data past the read":   chunk(1, replyFlagDone, chunkOffsetData, data(256, 512)),
		"data before the read": chunk(1, replyFlagDone, chunkOffsetData, data(1<<62, 16)),
		"short read":           chunk(1, replyFlagDone, chunkOffsetData, data(0, 100)),
		"overlapping chunks":   append(chunk(1, 0, chunkOffsetData, data(0, 512)), chunk(1, replyFlagDone, chunkOffsetData, data(0, 512))...),
		"hole of 4 GiB":        chunk(1, replyFlagDone, chunkOffsetHole, append(binary.BigEndian.AppendUint64(nil, 0), 0xff, 0xff, 0xff, 0xff)),
		"huge error message":   chunk(1, replyFlagDone, chunkError, append([]byte{0, 0, 0, 5, 0xff, 0xff}, make([]byte, 100)...)),
		"unknown chunk type":   chunk(1, replyFlagDone, 77, nil),
		"none with payload":    chunk(1, replyFlagDone, chunkNone, []byte{1}),
		"bad magic":            bytes.Repeat([]byte{0xee}, 64),
		"cut short":            chunk(1, replyFlagDone, chunkOffsetData, data(0, 512))[:100],
		"4 GiB chunk":          chunk(1, replyFlagDone, chunkOffsetData, nil)[:16],
	} {
		if name == "4 GiB chunk" {
			reply = append(reply, 0xff, 0xff, 0xff, 0xff)
		}
		c, err := NewClient(&scriptConn{r: bytes.NewReader(append(goStream(), reply...))}, "exp", "base:allocation", false)
		if err != nil {
			t.Fatal(err)
		}
		img := &Image{c: c}
		if _, err := img.ReadAt(make([]byte, 512), 0); err == nil {
			t.Errorf("%s: read succeeded", name)
		}
		if _, err := img.ReadAt(make([]byte, 512), 0); err == nil {
			t.Errorf("%s: connection still used after the error", name)
		}
	}
	// A server error is the request's error; the connection stays.
	s := append(goStream(), chunk(1, replyFlagDone, chunkError, append([]byte{0, 0, 0, 5, 0, 3}, "bad"...))...)
	s = append(s, chunk(2, replyFlagDone, chunkOffsetHole, append(binary.BigEndian.AppendUint64(nil, 0), 0, 0, 2, 0))...)
	c, _ := NewClient(&scriptConn{r: bytes.NewReader(s)}, "exp", "base:allocation", false)
	img := &Image{c: c}
	if _, err := img.ReadAt(make([]byte, 512), 0); !errors.Is(err, syscall.EIO) || !strings.HasSuffix(fmt.Sprint(err), "input/output error (server: bad)") {
		t.Errorf("server error: %v", err)
	}
	if _, err := img.ReadAt(make([]byte, 512), 0); err != nil {
		t.Errorf("read after a server error: %v", err)
	}
}
