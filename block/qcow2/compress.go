package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"

	"github.com/petrel-vmm/petrel/block"
)

// Compressed clusters: raw deflate (as QEMU's qcow2_zlib_compress, window
// bits -12) or zstd frames (compression_type 1).

// deflateWindow is the window of QEMU's raw deflate streams (window bits
// -12: 4 KiB, no zlib header), which the compressor must not exceed for
// QEMU to read Petrel's clusters.
const deflateWindow = 1 << 12

// The zstd codecs are created once and shared: a decoder or encoder holds
// sizeable tables, and their DecodeAll/EncodeAll are safe for concurrent
// use.
var (
	zstdDecOnce sync.Once
	zstdDec     *zstd.Decoder
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
)

// zstdDecoder returns the shared decoder. A compressed cluster decodes to
// at most one cluster (2 MiB at most), so memory is capped at four times
// the largest cluster; a frame asking for more fails instead.
func zstdDecoder() *zstd.Decoder {
	zstdDecOnce.Do(func() {
		// Cap the window so a hostile frame cannot make us allocate much.
		zstdDec, _ = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(4<<maxClusterBits), zstd.WithDecoderConcurrency(0))
	})
	return zstdDec
}

// zstdEncoder returns the shared encoder. WithZeroFrames makes even an
// empty input produce a full frame, as the reference zstd does.
func zstdEncoder() *zstd.Encoder {
	zstdEncOnce.Do(func() {
		zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
	})
	return zstdEnc
}

// readCompressed decompresses the cluster described by l2e into buf
// (cluster sized). The descriptor is bounded before anything is read: the
// data must start after the header cluster, and its size cannot exceed
// two clusters and a sector (the most the descriptor's cluster_bits - 8
// bits of sector count can express), so a corrupt entry cannot make us
// allocate or read without limit.
func (img *Image) readCompressed(buf []byte, l2e uint64) error {
	off, size := img.compressedRange(l2e)
	if off < img.clusterSize || size <= 0 || size > 2*img.clusterSize+512 {
		return corruptf("compressed cluster descriptor %#x is out of range", l2e)
	}
	cp := make([]byte, size)
	n, err := img.f.ReadAt(cp, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading compressed cluster at %#x: %w", off, err)
	}
	// QEMU tolerates a short read at the end of the file: the sector count
	// is rounded up.
	cp = cp[:n]
	if err := decompress(img.hdr.compressionType, buf, cp); err != nil {
		return fmt.Errorf("decompressing cluster at %#x: %w", off, err)
	}
	return nil
}

// decompress fills out exactly from the compressed bytes in. Trailing bytes
// after the stream are ignored (the descriptor's sector count rounds up),
// but a stream that yields less than out is an error: a compressed cluster
// always decompresses to a whole cluster.
func decompress(ctype uint8, out, in []byte) error {
	switch ctype {
	case compressionZlib:
		r := flate.NewReader(bytes.NewReader(in))
		defer r.Close()
		if _, err := io.ReadFull(r, out); err != nil {
			return fmt.Errorf("deflate data: %w", err)
		}
		return nil
	case compressionZstd:
		d := zstdDecoder()
		if d == nil {
			return errors.New("zstd decoder unavailable")
		}
		// Decode frame by frame into a bounded buffer.
		res, err := d.DecodeAll(in, make([]byte, 0, len(out)))
		if err != nil && len(res) < len(out) {
			return fmt.Errorf("zstd data: %w", err)
		}
		if len(res) < len(out) {
			return fmt.Errorf("zstd data decompresses to %d bytes, want %d", len(res), len(out))
		}
		copy(out, res)
		return nil
	}
	return fmt.Errorf("unknown compression type %d", ctype)
}

// compress returns the compressed form of a cluster, or nil when it does
// not shrink (QEMU then writes the cluster uncompressed): raw deflate
// limited to QEMU's 4 KiB window, or one zstd frame.
func compress(ctype uint8, in []byte) ([]byte, error) {
	var out []byte
	switch ctype {
	case compressionZlib:
		var b bytes.Buffer
		// QEMU inflates with a 4 KiB window (inflateInit2(-12)), so no
		// back-reference may reach further.
		w, err := flate.NewWriterWindow(&b, deflateWindow)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(in); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		out = b.Bytes()
	case compressionZstd:
		out = zstdEncoder().EncodeAll(in, nil)
	default:
		return nil, fmt.Errorf("unknown compression type %d", ctype)
	}
	if len(out) >= len(in) {
		return nil, nil
	}
	return out, nil
}

// writeCompressed writes one whole cluster compressed at a cluster-aligned
// guest offset (the last cluster of the disk may be short). The target
// cluster is overwritten whatever it held, as qemu-img convert -c does.
func (img *Image) writeCompressed(p []byte, off int64) error {
	if img.readOnly {
		return errReadOnly
	}
	if img.external {
		// No compressed clusters in an external data file (spec,
		// incompatible bit 2); QEMU fails the write with ENOTSUP.
		return errNotSupported
	}
	cs := img.clusterSize
	if off&(cs-1) != 0 || int64(len(p)) > cs {
		return fmt.Errorf("compressed write at %d+%d is not one aligned cluster", off, len(p))
	}
	if err := img.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	if int64(len(p)) < cs && off+int64(len(p)) != img.Size() {
		return fmt.Errorf("short compressed write at %d+%d must end at the disk end", off, len(p))
	}
	in := p
	if int64(len(p)) < cs {
		in = make([]byte, cs)
		copy(in, p)
	}
	data, err := compress(img.hdr.compressionType, in)
	if err != nil {
		return err
	}
	if data == nil {
		_, err := img.WriteAt(p, off)
		return err
	}
	img.quiesce()
	defer img.unquiesce()
	hostOff, err := img.allocBytes(int64(len(data)))
	if err != nil {
		return err
	}
	img.event(block.EventWriteCompressed)
	if _, err := img.f.WriteAt(data, hostOff); err != nil {
		return fmt.Errorf("writing compressed cluster at %#x: %w", hostOff, err)
	}
	l1i, l2i := img.l2Index(off)
	l2off, err := img.l2ForWrite(l1i)
	if err != nil {
		return err
	}
	e, err := img.l2c.get(l2off)
	if err != nil {
		return err
	}
	old, _ := img.l2Entry(e.data, l2i)
	// The descriptor counts the 512-byte sectors after the one holding
	// hostOff (see compressedRange); the offset is stored as is, not
	// aligned.
	x := 62 - (img.clusterBits - 8)
	sectors := (hostOff+int64(len(data))-1)>>9 - hostOff>>9
	img.setL2Entry(e.data, l2i, oflagCompressed|uint64(sectors)<<x|uint64(hostOff))
	if img.extL2 {
		img.setL2Bitmap(e.data, l2i, 0) // must be zero for compressed clusters
	}
	e.dirty = true
	if old&oflagCompressed != 0 || old&l2OffsetMask != 0 {
		if err := img.l2c.writeThrough(e); err != nil {
			return err
		}
		if err := img.barrier(); err != nil {
			return err
		}
		return img.releaseEntry(old)
	}
	return nil
}

// allocBytes reserves n bytes for compressed data, packing them after the
// previous compressed cluster like qcow2_alloc_bytes: every host cluster
// the range touches gets one more reference. freeByte is the next free
// byte in a partly used cluster (0: none); data that does not fit in its
// remainder starts in fresh clusters. A shared host cluster is thus
// referenced once per compressed cluster in it, which is how
// releaseEntry and check count it.
func (img *Image) allocBytes(n int64) (int64, error) {
	cs := img.clusterSize
	if fb := img.freeByte; fb != 0 && fb&(cs-1) != 0 {
		room := cs - fb&(cs-1)
		rc, err := img.getRefcount(fb >> img.clusterBits)
		if err != nil {
			return 0, err
		}
		if n <= room && rc < img.maxRefcount() {
			if err := img.addRefcount(fb>>img.clusterBits, 1); err != nil {
				return 0, err
			}
			img.freeByte = fb + n
			return fb, nil
		}
	}
	clusters := (n + cs - 1) / cs
	off, err := img.allocClusters(clusters)
	if err != nil {
		return 0, err
	}
	img.freeByte = off + n
	return off, nil
}
