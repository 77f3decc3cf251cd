package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"

	"github.com/petrel-vmm/petrel/block"
)

// Defaults as qemu-img create: 64 KiB clusters and 16-bit refcounts (the
// only width version 2 knows).
const (
	defaultClusterSize  = 64 << 10
	defaultRefcountBits = 16
)

// Create writes a new, empty qcow2 image in a new host file at path (see
// layOut); a failed create leaves no file behind.
func Create(path string, o block.CreateOptions) error {
	h, size, crypt, err := createSettings(path, o)
	if err != nil {
		return &block.CreateError{Format: "qcow2", Path: path, Reason: err}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	block.SetExtentSizeHint(f, o.ExtentSizeHint)
	hf, err := block.NewHostFile(f, false)
	if err != nil {
		f.Close()
		os.Remove(path)
		return &block.CreateError{Format: "qcow2", Path: path, Reason: err}
	}
	if err := layOut(hf, path, h, size, crypt, o); err != nil {
		os.Remove(path)
		return &block.CreateError{Format: "qcow2", Path: path, Reason: err}
	}
	return nil
}

// CreateOn writes a new, empty qcow2 image into f, a file that exists
// already (an NBD export: QEMU's qcow2 over an nbd protocol node), and
// closes f. The file keeps its size; the image grows inside it.
func CreateOn(f block.File, path string, o block.CreateOptions) error {
	h, size, crypt, err := createSettings(path, o)
	if err == nil {
		err = layOut(f, path, h, size, crypt, o)
	} else {
		f.Close()
	}
	if err != nil {
		return &block.CreateError{Format: "qcow2", Path: path, Reason: err}
	}
	return nil
}

// createSettings validates the options before any file is touched: the
// header, the virtual size and the encryption to set up.
func createSettings(path string, o block.CreateOptions) (*header, int64, *cryptoCreate, error) {
	h, size, err := createHeader(path, o)
	if err != nil {
		return nil, 0, nil, err
	}
	crypt, err := parseCryptoCreate(o)
	if err != nil {
		return nil, 0, nil, err
	}
	return h, size, crypt, nil
}

// layOut writes the image into f and closes f: header, a one-cluster
// refcount table and one refcount block; the L1 table, preallocation and
// everything else are then laid out by the engine itself (Resize,
// allocation), so the created file follows the same rules as any later
// change. An external data file it made is removed again on failure.
func layOut(f block.File, path string, h *header, size int64, crypt *cryptoCreate, o block.CreateOptions) (err error) {
	madeData := false
	opened := false
	defer func() {
		if err != nil {
			if !opened {
				f.Close()
			}
			if madeData {
				os.Remove(h.dataFile)
			}
		}
	}()
	cs := int64(1) << h.clusterBits
	hb, err := h.encode()
	if err != nil {
		return err
	}
	// Cluster 0: header, 1: refcount table, 2: refcount block.
	buf := make([]byte, 3*cs)
	copy(buf, hb)
	binary.BigEndian.PutUint64(buf[cs:], uint64(2*cs))
	img := &Image{rcBits: 1 << h.refcountOrder}
	for i := int64(0); i < 3; i++ {
		img.setRefcountAt(buf[2*cs:], i, 1)
	}
	if _, err := f.WriteAt(buf, 0); err != nil {
		return err
	}
	prealloc := o.Preallocation
	if h.dataFile != "" {
		// The data file is laid out by the file driver with the
		// requested preallocation; with raw data, whose clusters must all
		// be mapped, the image gets at least metadata preallocation
		// (qcow2_co_create).
		if err := createDataFile(h.dataFile, size, o.Preallocation, o.ExtentSizeHint); err != nil {
			return err
		}
		madeData = true
		if o.DataFileRaw && (prealloc == "" || prealloc == "off") {
			prealloc = "metadata"
		}
	}
	im, err := openFile(f, path, block.Options{NoBacking: true})
	if err != nil {
		return err
	}
	opened = true
	if err := im.Resize(size); err != nil {
		im.Close()
		return err
	}
	if crypt != nil {
		if err := im.setUpEncryption(crypt); err != nil {
			im.Close()
			return err
		}
	}
	if err := im.preallocate(prealloc, 0); err != nil {
		im.Close()
		return err
	}
	return im.Close()
}

// createHeader validates the options and builds the header (with size 0;
// Create grows it to the returned size with Resize). compat 1.1 (the
// default) is version 3, 0.10 version 2; the features version 2 lacks
// (other refcount widths, lazy refcounts, extended L2, zstd) are refused
// there with qemu-img's messages. A backing file with no size, or no
// format, is opened to take them from it.
func createHeader(path string, o block.CreateOptions) (*header, int64, error) {
	if o.Size < 0 {
		return nil, 0, fmt.Errorf("invalid size %d", o.Size)
	}
	cs := o.ClusterSize
	if cs == 0 {
		cs = defaultClusterSize
	}
	if cs < 1<<minClusterBits || cs > 1<<maxClusterBits || cs&(cs-1) != 0 {
		return nil, 0, fmt.Errorf("cluster size must be a power of two between 512 and 2M, not %d", cs)
	}
	if o.ExtendedL2 && cs < 16<<10 {
		return nil, 0, errors.New("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
	}
	// The option errors below are qcow2_co_create's, in its order and
	// words, which qemu-img prints (iotests 049, 112, 271).
	h := &header{version: 3, clusterBits: uint32(bits.TrailingZeros64(uint64(cs))), refcountOrder: 4}
	switch o.Compat {
	case "", "1.1", "v3":
	case "0.10", "v2":
		h.version = 2
	default:
		return nil, 0, fmt.Errorf("Parameter 'version' does not accept value '%s'", o.Compat)
	}
	switch o.Preallocation {
	case "", "off", "metadata", "falloc", "full":
	default:
		return nil, 0, fmt.Errorf("Parameter 'preallocation' does not accept value '%s'", o.Preallocation)
	}
	switch o.CompressionType {
	case "", "zlib", "zstd":
	default:
		return nil, 0, fmt.Errorf("Parameter 'compression-type' does not accept value '%s'", o.CompressionType)
	}
	if h.version == 2 && o.LazyRefcounts {
		return nil, 0, errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	rb := o.RefcountBits
	if rb == 0 {
		rb = defaultRefcountBits
	}
	if rb < 1 || rb > 64 || rb&(rb-1) != 0 {
		return nil, 0, errors.New("Refcount width must be a power of two and may not exceed 64 bits")
	}
	h.refcountOrder = uint32(bits.TrailingZeros(uint(rb)))
	if h.version == 2 && rb != 16 {
		return nil, 0, errors.New("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
	}
	if err := dataFileOptions(h, o); err != nil {
		return nil, 0, err
	}
	if h.version == 2 && o.CompressionType == "zstd" {
		return nil, 0, errors.New("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	if h.version == 2 && o.ExtendedL2 {
		return nil, 0, errors.New("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	if o.LazyRefcounts {
		h.compat |= compatLazyRefcounts
	}
	if o.ExtendedL2 {
		h.incompat |= incompatExtendedL2
	}
	if o.CompressionType == "zstd" {
		h.incompat |= incompatCompressed
		h.compressionType = compressionZstd
	}
	h.rtOff, h.rtClusters = uint64(cs), 1
	if o.BackingFile != "" {
		h.backingFile = o.BackingFile
		h.backingFormat = o.BackingFormat
		if o.Size == 0 || h.backingFormat == "" {
			b, err := block.Open(block.ResolveBacking(path, o.BackingFile), block.Options{ReadOnly: true, NoIO: true, Format: o.BackingFormat})
			if err != nil {
				return nil, 0, fmt.Errorf("could not open backing file: %w", err)
			}
			if h.backingFormat == "" {
				h.backingFormat = b.Format()
			}
			if o.Size == 0 {
				o.Size = b.Size()
			}
			b.Close()
		}
	}
	// Preallocated clusters of an extended L2 image have every subcluster
	// unallocated (bitmap 0), so they still read the backing file; without
	// subclusters they would hide it.
	if o.Preallocation != "" && o.Preallocation != "off" && o.BackingFile != "" && !o.ExtendedL2 {
		return nil, 0, errors.New("Backing file and preallocation can only be used at the same time if extended_l2 is on")
	}
	if len(h.backingFile) > maxBackingNameLen {
		return nil, 0, fmt.Errorf("backing file name is too long (%d bytes)", len(h.backingFile))
	}
	// qemu-img rounds the size up to whole 512-byte sectors.
	return h, (o.Size + 511) &^ 511, nil
}

// preallocate allocates (and for falloc/full, reserves or writes) a host
// cluster for every guest cluster, in large contiguous runs: "metadata"
// only allocates them and sets the L2 entries (the clusters read as the
// file's holes, zeroes), "falloc" also reserves the blocks, "full" writes
// zeroes into them. With extended
// L2 entries the subcluster bitmaps stay 0 (all unallocated), as QEMU
// writes them: the clusters read as before (backing data or zeroes), and
// subcluster writes fill them in place.
func (img *Image) preallocate(mode string, from int64) error {
	if mode == "" || mode == "off" {
		return nil
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	cs := img.clusterSize
	size := int64(img.hdr.size)
	var end int64
	// From the cluster holding from: clusters already allocated (the one
	// a grown image's old end cuts) keep their entries, as QEMU's
	// preallocate_co.
	for off := from &^ (cs - 1); off < size; {
		l1i, l2i := img.l2Index(off)
		k := min((size-off+cs-1)/cs, img.l2Entries-l2i)
		l2off, err := img.l2ForWrite(l1i)
		if err != nil {
			return err
		}
		e, err := img.l2c.get(l2off)
		if err != nil {
			return err
		}
		free := func(i int64) bool { ent, _ := img.l2Entry(e.data, l2i+i); return ent == 0 }
		for i := int64(0); i < k; {
			if !free(i) {
				// The cluster a grown image's old end cuts, allocated
				// before (say by metadata preallocation): falloc and
				// full reserve its space too, so that writes to the new
				// area do not allocate (iotest 125).
				ent, _ := img.l2Entry(e.data, l2i+i)
				if host := int64(ent & l2OffsetMask); mode != "metadata" && host != 0 && ent&oflagCompressed == 0 && !img.external {
					if err := img.f.Fallocate(0, host, cs); err != nil {
						return fmt.Errorf("reserving cluster at %#x: %w", host, err)
					}
				}
				i++
				continue
			}
			j := i + 1
			for j < k && free(j) {
				j++
			}
			host, err := img.allocData(off>>img.clusterBits+i, j-i)
			if err != nil {
				return err
			}
			if e, err = img.l2c.get(l2off); err != nil {
				return err
			}
			for x := i; x < j; x++ {
				img.setL2Entry(e.data, l2i+x, uint64(host+(x-i)*cs)|oflagCopied)
			}
			e.dirty = true
			end = max(end, host+(j-i)*cs)
			if img.external {
				end = min(end, size) // the data file ends with the disk
			}
			if mode == "full" && !img.external {
				if err := writeZeroRange(img.f, host, (j-i)*cs); err != nil {
					return err
				}
			}
			i = j
		}
		off += k * cs
	}
	if img.external {
		// Only the data file's missing tail is reserved, as QEMU's
		// preallocate_co (Create made it whole already).
		if err := img.extendData(end, mode); err != nil {
			return err
		}
	} else if st, err := img.f.Stat(); err == nil && st.Size() < end {
		// The data clusters must lie inside the file (qemu-img check
		// counts references beyond the end as errors).
		if mode == "falloc" {
			err = img.f.Fallocate(0, 0, end)
		} else {
			err = img.f.Truncate(end)
		}
		if err != nil {
			return fmt.Errorf("extending the file for preallocation: %w", err)
		}
	}
	return img.flushLocked()
}

// writeZeroRange writes literal zeroes to the file at host offset off, in
// chunks of at most 1 MiB, so that the blocks are really allocated
// (preallocation=full).
func writeZeroRange(f block.File, off, n int64) error {
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(zero)))
		if _, err := f.WriteAt(zero[:c], off); err != nil {
			return fmt.Errorf("writing zeroes at %#x: %w", off, err)
		}
		off, n = off+c, n-c
	}
	return nil
}
