package luks

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/petrel-vmm/petrel/block"
)

// init registers the standalone "luks" format: a LUKS header and key
// material, then the encrypted disk (QEMU's block/crypto.c). The IV sector
// of payload byte X is X/512, counted from the payload's start.
func init() {
	block.Register(block.Format{
		Name:   "luks",
		Probe:  func(head []byte) bool { return len(head) >= 6 && string(head[:6]) == Magic },
		Open:   func(path string, opts block.Options) (block.Image, error) { return Open(path, opts) },
		Create: Create,
	})
}

// errNoKey is QEMU's message for a luks image opened without key-secret.
var errNoKey = errors.New("Parameter 'key-secret' is required for cipher")

// qapiEnums are the values QEMU 7.2's QAPI accepts for the LUKS creation
// options (QCryptoCipherAlgorithm, QCryptoCipherMode,
// QCryptoIVGenAlgorithm, QCryptoHashAlgorithm), space-separated.
var qapiEnums = map[string]string{
	"cipher-alg":     "aes-128 aes-192 aes-256 des 3des cast5-128 serpent-128 serpent-192 serpent-256 twofish-128 twofish-192 twofish-256",
	"cipher-mode":    "ecb cbc xts ctr",
	"ivgen-alg":      "plain plain64 essiv",
	"ivgen-hash-alg": "md5 sha1 sha224 sha256 sha384 sha512 ripemd160",
	"hash-alg":       "md5 sha1 sha224 sha256 sha384 sha512 ripemd160",
}

// OptionsFrom reads the LUKS creation options (QEMU's names, with prefix:
// "" for the luks format, "encrypt." for qcow2) from extra, and the
// password from the secret key-secret names.
func OptionsFrom(extra map[string]string, prefix string, secrets map[string][]byte) (CreateOptions, []byte, error) {
	o := CreateOptions{
		Spec: Spec{Alg: extra[prefix+"cipher-alg"], Mode: extra[prefix+"cipher-mode"],
			IVGen: extra[prefix+"ivgen-alg"], IVHash: extra[prefix+"ivgen-hash-alg"]},
		HashAlg: extra[prefix+"hash-alg"],
	}
	// Values outside QEMU's QAPI enums are refused as its option
	// visitor refuses them, before anything else is looked at; names
	// QEMU knows but petrel cannot use fail later (NewCipher).
	for _, k := range []string{"cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg"} {
		if v, ok := extra[prefix+k]; ok && !strings.Contains(" "+qapiEnums[k]+" ", " "+v+" ") {
			return o, nil, fmt.Errorf("Parameter '%s' does not accept value '%s'", k, v)
		}
	}
	if v, ok := extra[prefix+"iter-time"]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return o, nil, fmt.Errorf("Parameter '%siter-time' expects a number", prefix)
		}
		o.IterTime = n
	}
	id, ok := extra[prefix+"key-secret"]
	if !ok {
		return o, nil, fmt.Errorf("Parameter '%skey-secret' is required for cipher", prefix)
	}
	pw, err := block.Secret(secrets, id)
	return o, pw, err
}

// Create writes a luks image: the header area, then o.Size bytes of
// payload (sparse: unwritten payload decrypts to noise, as QEMU's).
func Create(path string, o block.CreateOptions) error {
	if p := o.Preallocation; p != "" && p != "off" {
		return &block.CreateError{Format: "luks", Path: path, Reason: fmt.Errorf("Unsupported preallocation mode '%s'", p)}
	}
	co, pw, err := OptionsFrom(o.Extra, "", o.Secrets)
	if err != nil {
		return &block.CreateError{Format: "luks", Path: path, Reason: err}
	}
	_, area, _, err := NewHeader(co, pw)
	if err != nil {
		return &block.CreateError{Format: "luks", Path: path, Reason: err}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(area, 0)
	if err == nil {
		err = f.Truncate(int64(len(area)) + (o.Size+SectorSize-1)&^(SectorSize-1))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Image is an open luks image. The payload starts at off; cipher is nil
// when opened for metadata only (block.Options.NoIO without a key).
type Image struct {
	f        *block.HostFile
	path     string
	hdr      *Header
	cipher   Cipher
	off      int64
	size     int64
	readOnly bool
}

// Open reads the header and unlocks it with the secret opts.KeySecret
// names.
func Open(path string, opts block.Options) (*Image, error) {
	f, err := block.OpenHostFile(path, opts.ReadOnly, false)
	if err != nil {
		return nil, err
	}
	img, err := open(f, path, opts)
	if err != nil {
		f.Close()
		return nil, &block.OpenError{Format: "luks", Path: path, Reason: err}
	}
	return img, nil
}

func open(f *block.HostFile, path string, opts block.Options) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, HeaderBytes)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("reading LUKS header: %w", err)
	}
	h, err := Parse(buf)
	if err != nil {
		return nil, err
	}
	img := &Image{f: f, path: path, hdr: h, off: h.PayloadBytes(), readOnly: opts.ReadOnly}
	if img.off > st.Size() {
		return nil, fmt.Errorf("LUKS payload offset %d lies beyond the end of the file", img.off)
	}
	img.size = (st.Size() - img.off) &^ (SectorSize - 1)
	if opts.NoIO {
		return img, nil // metadata only: the secret is not looked up
	}
	if opts.KeySecret == "" {
		return nil, errNoKey
	}
	pw, err := block.Secret(opts.Secrets, opts.KeySecret)
	if err != nil {
		return nil, err
	}
	img.cipher, err = h.Unlock(func(p []byte, off int64) error {
		_, err := f.ReadAt(p, off)
		if errors.Is(err, io.EOF) {
			return errors.New("key material lies beyond the end of the file")
		}
		return err
	}, pw)
	if err != nil {
		return nil, err
	}
	return img, nil
}

func (img *Image) checkIO(off, n int64) error {
	if img.cipher == nil {
		return errors.New("luks image opened without its key: no data I/O")
	}
	if off < 0 || n < 0 || off+n > img.size {
		return fmt.Errorf("range %d+%d beyond the disk size %d: %w", off, n, img.size, io.EOF)
	}
	return nil
}

// ReadAt reads and decrypts whole sectors around [off, off+len(p)).
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	if err := img.checkIO(off, int64(len(p))); err != nil {
		return 0, err
	}
	start := off &^ (SectorSize - 1)
	buf := make([]byte, (off+int64(len(p))+SectorSize-1)&^(SectorSize-1)-start)
	if _, err := img.f.ReadAt(buf, img.off+start); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	img.cipher.Decrypt(uint64(start/SectorSize), buf)
	return copy(p, buf[off-start:]), nil
}

// WriteAt encrypts whole sectors; partial ones are read and patched.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if img.readOnly {
		return 0, errors.New("luks image is opened read-only")
	}
	if err := img.checkIO(off, int64(len(p))); err != nil {
		return 0, err
	}
	start := off &^ (SectorSize - 1)
	end := (off + int64(len(p)) + SectorSize - 1) &^ (SectorSize - 1)
	buf := make([]byte, end-start)
	if start != off || end != off+int64(len(p)) {
		if _, err := img.ReadAt(buf, start); err != nil {
			return 0, err
		}
	}
	copy(buf[off-start:], p)
	img.cipher.Encrypt(uint64(start/SectorSize), buf)
	if _, err := img.f.WriteAt(buf, img.off+start); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteZeroes writes encrypted zeroes (the file's holes would not
// decrypt to zeroes); Discard does nothing, as the payload has no
// allocation of its own.
func (img *Image) WriteZeroes(off, n int64, unmap bool) error {
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := img.WriteAt(zero[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

func (img *Image) Discard(off, n int64) error { return nil }

// BlockStatus reports every byte as data: ciphertext says nothing about
// what it hides.
func (img *Image) BlockStatus(off, n int64) (block.Extent, error) {
	return block.Extent{Offset: off, Length: min(n, img.size-off), Flags: block.ExtentData | block.ExtentAllocated,
		HostOffset: img.off + off, File: img.path}, nil
}

func (img *Image) Size() int64          { return img.size }
func (img *Image) Flush() error         { return img.f.Sync() }
func (img *Image) Format() string       { return "luks" }
func (img *Image) Backing() block.Image { return nil }
func (img *Image) ReadOnly() bool       { return img.readOnly }
func (img *Image) Close() error         { return img.f.Close() }

// Describe is qemu-img info's format-specific data for a luks image.
func (img *Image) Describe() map[string]any {
	return map[string]any{
		"virtual-size":    img.size,
		"encrypted":       true,
		"format-specific": map[string]any{"type": "luks", "data": img.hdr.Describe()},
	}
}
