package vmstate

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// Magic opens every stream; Version is the format version this package
// writes and the newest it reads.
const (
	Magic   = "PETRELVM"
	Version = 1
)

const (
	tagEnd     = 0
	tagSection = 1
	headerLen  = 16
	// MaxSection is the largest section a Reader loads into memory
	// (Section); larger ones must be streamed (Stream).
	MaxSection = 64 << 20
	maxName    = 256
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Writer writes a stream. Sections are written in order; Close writes the
// end tag and the checksum.
//
// Errors are sticky: after the first failure every write is skipped and
// Close returns the error, so callers write a whole state and check once.
type Writer struct {
	w   *bufio.Writer
	crc hash.Hash32 // CRC-32C of every byte written before the checksum
	n   int64       // bytes written, for Len
	err error
	// open is the section Begin started, until its length is written.
	open *sectionWriter
}

// NewWriter writes the header to w.
func NewWriter(w io.Writer) *Writer {
	sw := &Writer{w: bufio.NewWriterSize(w, 1<<20), crc: crc32.New(castagnoli)}
	var h [headerLen]byte
	copy(h[:], Magic)
	binary.LittleEndian.PutUint32(h[8:], Version)
	sw.write(h[:])
	return sw
}

// write appends p to the stream and the checksum, unless a write failed.
func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	_, w.err = w.w.Write(p)
	w.crc.Write(p)
	w.n += int64(len(p))
}

// sectionHeader writes a section's tag, name, version and payload length,
// and fails the stream if the previous Begin section is incomplete or the
// name is empty or longer than maxName.
func (w *Writer) sectionHeader(name string, version uint32, length uint64) {
	if w.open != nil && w.err == nil {
		w.err = fmt.Errorf("vmstate: section %q started before %q was complete", name, w.open.name)
	}
	if len(name) == 0 || len(name) > maxName {
		w.err = fmt.Errorf("vmstate: bad section name %q", name)
	}
	h := []byte{tagSection}
	h = binary.LittleEndian.AppendUint16(h, uint16(len(name)))
	h = append(h, name...)
	h = binary.LittleEndian.AppendUint32(h, version)
	h = binary.LittleEndian.AppendUint64(h, length)
	w.write(h)
}

// Section writes a whole section.
func (w *Writer) Section(name string, version uint32, payload []byte) {
	w.sectionHeader(name, version, uint64(len(payload)))
	w.write(payload)
}

// Begin starts a section of exactly length bytes, written through the
// returned writer; the next Begin, Section or Close fails unless all
// length bytes were written. The section counts as complete only after a
// Write brings it to length, so a Begin with length 0 leaves it open and
// the next call fails: use Section for an empty payload.
func (w *Writer) Begin(name string, version uint32, length uint64) io.Writer {
	w.sectionHeader(name, version, length)
	w.open = &sectionWriter{w: w, name: name, left: length}
	return w.open
}

// sectionWriter is the io.Writer of a Begin section: left is how many of
// the announced bytes are still to come.
type sectionWriter struct {
	w    *Writer
	name string
	left uint64
}

// Write refuses to go beyond the announced length, which would desync the
// stream, and returns the stream's sticky error.
func (s *sectionWriter) Write(p []byte) (int, error) {
	if uint64(len(p)) > s.left {
		return 0, fmt.Errorf("vmstate: section %q: %d bytes more than announced", s.name, uint64(len(p))-s.left)
	}
	s.w.write(p)
	if s.w.err != nil {
		return 0, s.w.err
	}
	s.left -= uint64(len(p))
	if s.left == 0 {
		s.w.open = nil
	}
	return len(p), nil
}

// Close ends the stream (end tag and checksum) and flushes it; it returns
// the first error of any write. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.open != nil && w.err == nil {
		w.err = fmt.Errorf("vmstate: section %q ended %d bytes short", w.open.name, w.open.left)
	}
	w.write([]byte{tagEnd})
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], w.crc.Sum32())
	if w.err == nil {
		_, w.err = w.w.Write(sum[:])
		w.n += 4
	}
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// Len is the number of bytes written so far (after Close: the stream's size).
func (w *Writer) Len() int64 { return w.n }

// Reader reads a stream written by Writer from at most limit bytes.
type Reader struct {
	r       *bufio.Reader
	crc     hash.Hash32 // CRC-32C of the bytes read so far
	left    int64       // bytes of the limit not yet read
	version uint32      // the stream's format version (1..Version)
	// current section
	name    string
	secVer  uint32          // its version
	secLeft uint64          // its payload bytes not yet consumed
	seen    map[string]bool // section names met so far: each may appear once
	done    bool            // the end tag and a good checksum were read
}

// NewReader reads and checks the header. limit is the stream's size as
// recorded outside it (a qcow2 snapshot's vm_state_size): no section may
// claim more.
func NewReader(r io.Reader, limit int64) (*Reader, error) {
	rd := &Reader{r: bufio.NewReaderSize(r, 64<<10), crc: crc32.New(castagnoli), left: limit, seen: map[string]bool{}}
	var h [headerLen]byte
	if err := rd.full(h[:]); err != nil {
		return nil, err
	}
	if string(h[:8]) != Magic {
		return nil, fmt.Errorf("%w: not a Petrel machine state (magic %q)", ErrCorrupt, h[:8])
	}
	rd.version = binary.LittleEndian.Uint32(h[8:])
	if rd.version == 0 || rd.version > Version {
		return nil, fmt.Errorf("%w: format version %d; this Petrel reads versions 1 to %d", ErrCorrupt, rd.version, Version)
	}
	if f := binary.LittleEndian.Uint32(h[12:]); f != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, f)
	}
	return rd, nil
}

// full reads exactly len(p) bytes into p and the checksum, within the
// limit; a stream that ends early is ErrCorrupt, not io.EOF.
func (r *Reader) full(p []byte) error {
	if int64(len(p)) > r.left {
		return fmt.Errorf("%w: the state ends early (%d bytes wanted, %d left)", ErrCorrupt, len(p), r.left)
	}
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: the state ends early", ErrCorrupt)
		}
		return err
	}
	r.crc.Write(p)
	r.left -= int64(len(p))
	return nil
}

// Next moves to the next section and returns its name, version and
// length; the name is "" at the end, after the checksum was checked.
// An unread rest of the current section is skipped.
func (r *Reader) Next() (name string, version uint32, length uint64, err error) {
	if r.done {
		return "", 0, 0, nil
	}
	if r.secLeft > 0 {
		if _, err := io.Copy(io.Discard, r.Stream()); err != nil {
			return "", 0, 0, err
		}
	}
	var tag [1]byte
	if err := r.full(tag[:]); err != nil {
		return "", 0, 0, err
	}
	switch tag[0] {
	case tagEnd:
		want := r.crc.Sum32()
		var sum [4]byte
		if int64(len(sum)) > r.left {
			return "", 0, 0, fmt.Errorf("%w: the state ends before its checksum", ErrCorrupt)
		}
		if _, err := io.ReadFull(r.r, sum[:]); err != nil {
			return "", 0, 0, fmt.Errorf("%w: the state ends before its checksum", ErrCorrupt)
		}
		r.left -= 4
		if got := binary.LittleEndian.Uint32(sum[:]); got != want {
			return "", 0, 0, fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", ErrCorrupt, got, want)
		}
		r.done = true
		return "", 0, 0, nil
	case tagSection:
	default:
		return "", 0, 0, fmt.Errorf("%w: unknown tag %d", ErrCorrupt, tag[0])
	}
	var nl [2]byte
	if err := r.full(nl[:]); err != nil {
		return "", 0, 0, err
	}
	n := binary.LittleEndian.Uint16(nl[:])
	if n == 0 || n > maxName {
		return "", 0, 0, fmt.Errorf("%w: section name of %d bytes", ErrCorrupt, n)
	}
	b := make([]byte, int(n)+12)
	if err := r.full(b); err != nil {
		return "", 0, 0, err
	}
	r.name = string(b[:n])
	if r.seen[r.name] {
		return "", 0, 0, fmt.Errorf("%w: section %q appears twice", ErrCorrupt, r.name)
	}
	r.seen[r.name] = true
	r.secVer = binary.LittleEndian.Uint32(b[n:])
	r.secLeft = binary.LittleEndian.Uint64(b[n+4:])
	if r.secLeft > uint64(r.left) {
		return "", 0, 0, fmt.Errorf("%w: section %q claims %d bytes, only %d remain", ErrCorrupt, r.name, r.secLeft, r.left)
	}
	return r.name, r.secVer, r.secLeft, nil
}

// Section reads the whole current section (at most MaxSection bytes).
func (r *Reader) Section() ([]byte, error) {
	if r.secLeft > MaxSection {
		return nil, fmt.Errorf("%w: section %q is %d bytes, more than %d", ErrCorrupt, r.name, r.secLeft, MaxSection)
	}
	b := make([]byte, r.secLeft)
	if err := r.full(b); err != nil {
		return nil, err
	}
	r.secLeft = 0
	return b, nil
}

// Stream reads the current section in pieces; it returns io.EOF at the
// section's end.
func (r *Reader) Stream() io.Reader { return sectionReader{r} }

// sectionReader is Stream's reader; it hands out at most 1 MiB per Read.
type sectionReader struct{ r *Reader }

// Read reads the current section's payload; io.EOF at its end.
func (s sectionReader) Read(p []byte) (int, error) {
	if s.r.secLeft == 0 {
		return 0, io.EOF
	}
	if uint64(len(p)) > s.r.secLeft {
		p = p[:s.r.secLeft]
	}
	if len(p) > 1<<20 {
		p = p[:1<<20]
	}
	if err := s.r.full(p); err != nil {
		return 0, err
	}
	s.r.secLeft -= uint64(len(p))
	return len(p), nil
}

// Verify reads a whole stream and checks its structure and checksum
// without acting on it.
func Verify(r io.Reader, limit int64) error {
	rd, err := NewReader(r, limit)
	if err != nil {
		return err
	}
	for {
		name, _, _, err := rd.Next()
		if err != nil {
			return err
		}
		if name == "" {
			return nil
		}
	}
}
