package qcow2

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/luks"
)

// Encryption (header field crypt_method, spec "Header"; the LUKS header
// area from spec "Full disk encryption header pointer"). Data clusters
// hold ciphertext, 512-byte sector by sector; metadata is in the clear.
// The IV's sector number is the host offset's for LUKS and the guest
// offset's for legacy AES, as QEMU's crypt_physical_offset says: a LUKS
// cluster moved by copy-on-write is re-encrypted for its new place.
const (
	cryptNone = 0
	cryptAES  = 1
	cryptLUKS = 2
)

// errNoKey is QEMU's complaint about an encrypted image opened without
// encrypt.key-secret.
var errNoKey = errors.New("Parameter 'encrypt.key-secret' is required for cipher")

// checkCrypto validates crypt_method and the LUKS header area's placement
// (cluster aligned, inside the file, past the header cluster).
func (h *header) checkCrypto(cs uint64, fileSize int64) error {
	switch h.cryptMethod {
	case cryptNone, cryptAES:
		if h.cryptoOff != 0 || h.cryptoLen != 0 {
			return corruptf("encryption header extension present without LUKS encryption")
		}
		return nil
	case cryptLUKS:
		if h.cryptoLen < luks.HeaderBytes {
			return corruptf("LUKS header area of %d bytes is too small", h.cryptoLen)
		}
		return validateTable(h.cryptoOff, h.cryptoLen, cs, fileSize, "LUKS header area")
	}
	return fmt.Errorf("Unsupported encryption method: %d", h.cryptMethod)
}

// openCrypto reads the LUKS header (or takes the legacy AES password) and
// unlocks it with the secret opts names. With opts.NoIO and no secret the
// image opens for metadata only: luksHdr is set, cipher stays nil.
func (img *Image) openCrypto(opts block.Options) error {
	h := img.hdr
	if h.cryptMethod == cryptNone {
		return nil
	}
	var password []byte
	// Opened for metadata only (qemu-img info), the secret is not even
	// looked up, as QEMU's BDRV_O_NO_IO.
	if opts.KeySecret != "" && !opts.NoIO {
		var err error
		if password, err = block.Secret(opts.Secrets, opts.KeySecret); err != nil {
			return err
		}
	}
	if h.cryptMethod == cryptAES {
		if password == nil {
			if opts.NoIO {
				return nil
			}
			return errNoKey
		}
		c, err := luks.NewLegacyAES(password)
		img.cipher = c
		return err
	}
	buf := make([]byte, luks.HeaderBytes)
	if err := img.readMeta(buf, int64(h.cryptoOff)); err != nil {
		return err
	}
	lh, err := luks.Parse(buf)
	if err != nil {
		return err
	}
	if lh.PayloadBytes() > int64(h.cryptoLen) {
		return corruptf("LUKS key material runs past the header area (%d > %d bytes)", lh.PayloadBytes(), h.cryptoLen)
	}
	img.luksHdr = lh
	if password == nil {
		if opts.NoIO {
			return nil
		}
		return errNoKey
	}
	img.cipher, err = lh.Unlock(func(p []byte, off int64) error {
		return img.readMeta(p, int64(h.cryptoOff)+off)
	}, password)
	return err
}

// cryptSector is the IV sector of the data at host offset host, guest
// offset guest.
func (img *Image) cryptSector(host, guest int64) uint64 {
	if img.hdr.cryptMethod == cryptLUKS {
		return uint64(host) / luks.SectorSize
	}
	return uint64(guest) / luks.SectorSize
}

// errNoCipher refuses data I/O on an image opened for metadata only.
var errNoCipher = errors.New("encrypted image opened without its key: no data I/O")

// sectorSpan widens [host, host+n) to whole sectors: the aligned start
// and length.
func sectorSpan(host, n int64) (int64, int64) {
	start := host &^ (luks.SectorSize - 1)
	end := (host + n + luks.SectorSize - 1) &^ (luks.SectorSize - 1)
	return start, end - start
}

// readEncrypted reads guest bytes p at guest offset guest from data at
// host, decrypting whole sectors.
func (img *Image) readEncrypted(p []byte, guest, host int64) error {
	if img.cipher == nil {
		return errNoCipher
	}
	start, n := sectorSpan(host, int64(len(p)))
	buf := make([]byte, n)
	if _, err := img.data.ReadAt(buf, start); err != nil {
		if errors.Is(err, io.EOF) {
			return corruptf("data at host offset %#x lies beyond the end of the file", host)
		}
		return fmt.Errorf("reading data at %#x: %w", start, err)
	}
	img.cipher.Decrypt(img.cryptSector(start, guest-(host-start)), buf)
	copy(p, buf[host-start:])
	return nil
}

// writeEncrypted writes guest bytes p (guest offset guest) to allocated
// data at host: whole sectors, the partial first and last ones read,
// decrypted and patched first. p is not modified.
func (img *Image) writeEncrypted(p []byte, guest, host int64) error {
	if img.cipher == nil {
		return errNoCipher
	}
	start, n := sectorSpan(host, int64(len(p)))
	buf := make([]byte, n)
	sector := img.cryptSector(start, guest-(host-start))
	if start != host || n != int64(len(p)) {
		if _, err := img.data.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading data at %#x: %w", start, err)
		}
		img.cipher.Decrypt(sector, buf)
	}
	copy(buf[host-start:], p)
	img.cipher.Encrypt(sector, buf)
	if _, err := img.data.WriteAt(buf, start); err != nil {
		return fmt.Errorf("writing data at %#x: %w", start, err)
	}
	return nil
}

// writeData writes guest data p (guest offset guest) at host offset host,
// encrypting it when the image is encrypted.
func (img *Image) writeData(p []byte, guest, host int64) error {
	if img.hdr.cryptMethod != cryptNone {
		return img.writeEncrypted(p, guest, host)
	}
	if _, err := img.data.WriteAt(p, host); err != nil {
		return fmt.Errorf("writing data at %#x: %w", host, err)
	}
	return nil
}

// cryptoCreate is the encryption qemu-img create asked for in -o
// (encryption=on, encrypt.format=aes or luks, encrypt.key-secret and the
// LUKS encrypt.* options), validated in qcow2_co_create's words.
type cryptoCreate struct {
	method   uint32
	password []byte
	luks     luks.CreateOptions
}

// parseCryptoCreate reads the encryption options from o.Extra.
func parseCryptoCreate(o block.CreateOptions) (*cryptoCreate, error) {
	x := o.Extra
	format, hasFormat := x["encrypt.format"]
	if v, ok := x["encryption"]; ok {
		on, err := strconv.ParseBool(map[string]string{"on": "true", "off": "false", "yes": "true", "no": "false"}[v])
		if err != nil {
			return nil, fmt.Errorf("Parameter 'encryption' expects 'on' or 'off'")
		}
		if on && hasFormat && format != "aes" {
			return nil, errors.New("Encryption option 'encryption' is not compatible with 'encrypt.format'")
		}
		if on {
			format, hasFormat = "aes", true
		}
	}
	luksKeys := []string{"encrypt.cipher-alg", "encrypt.cipher-mode", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "encrypt.iter-time"}
	if !hasFormat {
		for _, k := range append(luksKeys, "encrypt.key-secret") {
			if _, ok := x[k]; ok {
				return nil, fmt.Errorf("Parameter '%s' is unexpected", k)
			}
		}
		return nil, nil
	}
	c := &cryptoCreate{}
	switch format {
	case "aes":
		c.method = cryptAES
		for _, k := range luksKeys {
			if _, ok := x[k]; ok {
				return nil, fmt.Errorf("Parameter '%s' is unexpected", k)
			}
		}
	case "luks":
		c.method = cryptLUKS
		var err error
		c.luks, c.password, err = luks.OptionsFrom(x, "encrypt.", o.Secrets)
		return c, err
	default:
		return nil, fmt.Errorf("Parameter 'encrypt.format' does not accept value '%s'", format)
	}
	id, ok := x["encrypt.key-secret"]
	if !ok {
		return nil, errNoKey
	}
	pw, err := block.Secret(o.Secrets, id)
	if err != nil {
		return nil, err
	}
	c.password = pw
	return c, nil
}

// setUpEncryption turns a new, empty image into an encrypted one: for
// LUKS a header area is created, allocated as whole clusters (zero filled
// past the key material, as QEMU's qcow2_crypto_hdr_init_func) and
// written before the header names it, so a crash leaves at worst a leak.
func (img *Image) setUpEncryption(c *cryptoCreate) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	h := img.hdr
	if c.method == cryptAES {
		ci, err := luks.NewLegacyAES(c.password)
		if err != nil {
			return err
		}
		img.cipher = ci
		h.cryptMethod = cryptAES
		return img.writeHeader()
	}
	lh, area, ci, err := luks.NewHeader(c.luks, c.password)
	if err != nil {
		return err
	}
	n := (int64(len(area)) + img.clusterSize - 1) >> img.clusterBits
	off, err := img.allocClusters(n)
	if err != nil {
		return err
	}
	full := make([]byte, n<<img.clusterBits)
	copy(full, area)
	if err := img.writeMeta(full, off); err != nil {
		return err
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	h.cryptMethod, h.cryptoOff, h.cryptoLen = cryptLUKS, uint64(off), uint64(len(area))
	img.cipher, img.luksHdr = ci, lh
	return img.writeHeader()
}

// cryptoDescribe is the "encrypt" part of qemu-img info's format-specific
// data (QEMU's QCryptoBlockInfo), nil for a plain image.
func (img *Image) cryptoDescribe() map[string]any {
	switch img.hdr.cryptMethod {
	case cryptAES:
		return map[string]any{"format": "aes"}
	case cryptLUKS:
		if img.luksHdr == nil {
			return nil
		}
		m := img.luksHdr.Describe()
		m["format"] = "luks"
		return m
	}
	return nil
}

// HasZeroInit reports whether a new image reads zeroes without being
// written, as QEMU's qcow2_has_zero_init: always when no cluster is
// allocated yet; with preallocated clusters not when it is encrypted
// (their zero bytes decrypt to noise), and otherwise when the file they
// lie in starts out zeroed (a new host file does; an NBD export holds
// what it held), so qemu-img convert writes the zeroes explicitly.
func (img *Image) HasZeroInit() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	preallocated := false
	for _, e := range img.l1 {
		if e != 0 {
			preallocated = true
			break
		}
	}
	switch {
	case !preallocated:
		return true
	case img.hdr.cryptMethod != cryptNone:
		return false
	}
	zi, ok := img.data.(interface{ HasZeroInit() bool })
	return !ok || zi.HasZeroInit()
}
